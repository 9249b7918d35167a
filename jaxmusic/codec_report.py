"""CLI: fit a codec on a folder of MIDI files and measure how faithfully it survives.

  python -m jaxmusic.codec_report MIDI_DIR [--onset_bins 8] [--onset_fit lloyd] \\
      [--duration_bins 4] [--velocity_bins 4] [--min_count 2] [--json report.json] \\
      [--codec_out codec.json] [--workers N]

Reads every MIDI file of the folder (a rejected file is a row, not a stop), fits a
codec on 90% of the files, and reports the vocabulary, the UNK rate on the held-out
10%, and the encode -> decode round trip: onset precision, recall and F1 (mir_eval's
50 ms convention, exact pitch), onset, duration and velocity errors.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tqdm

from jaxmusic import cli, midi_io, music_stats
from jaxmusic.codec import Codec, CodecError, fit

ONSET_TOLERANCE = 0.05  # seconds, mir_eval's transcription convention


def _fidelity_one(args: tuple[Codec, np.ndarray]) -> dict:
    """Round-trip measures of one piece (notes and decoded notes align by index)."""
    codec, notes = args
    decoded = codec.decode(codec.encode(notes))
    onset_error = np.abs(decoded["start"] - notes["start"])
    return {
        "match": music_stats.match_onsets(notes, decoded, tolerance=ONSET_TOLERANCE),
        "onset_error": onset_error,
        "duration_error": np.abs((decoded["end"] - decoded["start"]) - (notes["end"] - notes["start"])),
        "velocity_error": np.abs(decoded["velocity"].astype(np.int64) - notes["velocity"]),
    }


def report(
    midi_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = True,
    **fit_kwargs,
) -> tuple[dict, Codec]:
    """Fits a codec on a folder of MIDI files and measures encode -> decode.

    Args:
      midi_dir: a folder searched recursively for .mid/.midi/.kar files.
      workers: processes for reading and measuring (default: every core).
      progress: show progress bars on stderr.
      **fit_kwargs: passed to `fit` (bins, onset_fit, min_count, ...).

    Returns:
      (report dict, as written by `--json`; the codec fitted on every read file).
    """
    t0 = time.perf_counter()
    paths = midi_io.find_midi_files(midi_dir)
    if not paths:
        raise CodecError(f"{midi_dir}: no MIDI files (*.mid, *.midi, *.kar) found")
    workers = workers or os.cpu_count() or 1
    bar = dict(disable=not progress, unit="file", leave=False)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        hashed = list(
            tqdm.tqdm(pool.map(midi_io.read_hashed, paths, chunksize=8), total=len(paths), desc="read", **bar)
        )
        reads = [r for _, r in hashed]
        ok = [(p, r) for p, r in zip(paths, reads, strict=True) if isinstance(r, midi_io.MidiRead)]
        sha1_of = {p: sha1 for p, (sha1, _) in zip(paths, hashed, strict=True)}
        if not ok:
            raise CodecError(f"{midi_dir}: none of the {len(paths)} MIDI files could be read")
        pieces = [r.notes for _, r in ok]
        codec = fit(pieces, **fit_kwargs)
        # UNK rate on unseen pieces: fit on 90% of files, chosen by content hash.
        held = [int(sha1_of[p], 16) % 10 == 0 for p, _ in ok]
        train = [x for x, h in zip(pieces, held, strict=True) if not h]
        test = [x for x, h in zip(pieces, held, strict=True) if h]
        unk_heldout = None
        if train and test:
            codec90 = fit(train, **fit_kwargs)
            unk_heldout = float(np.mean(np.concatenate([codec90.unknown_mask(x) for x in test])))
        jobs = ((codec, x) for x in pieces)
        per_piece = list(
            tqdm.tqdm(pool.map(_fidelity_one, jobs, chunksize=8), total=len(pieces), desc="round trip", **bar)
        )
    match = sum((m["match"] for m in per_piece), music_stats.OnsetMatch(0, 0, 0))
    onset_error = np.concatenate([m["onset_error"] for m in per_piece])
    all_notes = np.concatenate(pieces)
    result = {
        "midi_dir": str(midi_dir),
        "files_found": len(paths),
        "files_read": len(ok),
        "files_rejected": len(paths) - len(ok),
        "rejected": [
            {"path": str(p), "reason": r.reason}
            for p, r in zip(paths, reads, strict=True)
            if isinstance(r, midi_io.MidiError)
        ],
        "internal_errors": [
            {"path": str(p), "reason": r.reason}
            for p, r in zip(paths, reads, strict=True)
            if isinstance(r, midi_io.InternalReadError)
        ],
        "recovered": [{"path": str(p), "recovered": list(r.recovered)} for p, r in ok if r.recovered],
        "notes": int(all_notes.shape[0]),
        "dropped_zero_length_notes": sum(r.dropped_zero_length for _, r in ok),
        "dropped_drum_notes": sum(r.dropped_drums for _, r in ok),
        "codec": {
            "fingerprint": codec.fingerprint,
            "vocab_size": codec.vocab_size,
            "pseudo_notes": int(codec.vocabulary.shape[0]),
            "velocity_values": list(codec.velocity_values),
            "duration_values": [round(x, 4) for x in codec.duration_values],
            "onset_values": [round(x, 4) for x in codec.onset_values],
            **{k: v for k, v in fit_kwargs.items() if k != "genres"},
        },
        "unk_rate": float(np.mean(np.concatenate([codec.unknown_mask(x) for x in pieces]))),
        "unk_rate_heldout": unk_heldout,
        "fidelity": {
            "onset_tolerance_s": ONSET_TOLERANCE,
            "onset_precision": match.precision,
            "onset_recall": match.recall,
            "onset_f1": match.f1,
            "onset_f1_mean_per_file": float(np.mean([m["match"].f1 for m in per_piece])),
            "onset_error_median_s": float(np.median(onset_error)),
            "onset_error_p95_s": float(np.percentile(onset_error, 95)),
            "duration_mae_s": float(np.mean(np.concatenate([m["duration_error"] for m in per_piece]))),
            "velocity_mae": float(np.mean(np.concatenate([m["velocity_error"] for m in per_piece]))),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return result, codec


def _print_report(r: dict) -> None:
    f, c = r["fidelity"], r["codec"]
    rows = [
        ("files found / read / rejected", f"{r['files_found']} / {r['files_read']} / {r['files_rejected']}"),
        ("files recovered by a tolerant read", len(r["recovered"])),
        ("notes", r["notes"]),
        ("vocabulary (ids / pseudo-notes)", f"{c['vocab_size']} / {c['pseudo_notes']}"),
        (
            "UNK rate (fitted files / held-out 10%)",
            f"{r['unk_rate']:.4%} / "
            + ("n/a" if r["unk_rate_heldout"] is None else f"{r['unk_rate_heldout']:.4%}"),
        ),
        (
            f"onset P / R / F1 ({f['onset_tolerance_s'] * 1000:.0f} ms, exact pitch)",
            f"{f['onset_precision']:.4f} / {f['onset_recall']:.4f} / {f['onset_f1']:.4f}",
        ),
        ("onset F1, mean per file", f"{f['onset_f1_mean_per_file']:.4f}"),
        (
            "onset error median / p95",
            f"{f['onset_error_median_s'] * 1000:.1f} ms / {f['onset_error_p95_s'] * 1000:.1f} ms",
        ),
        ("duration mean abs error", f"{f['duration_mae_s'] * 1000:.1f} ms"),
        ("velocity mean abs error", f"{f['velocity_mae']:.2f}"),
        ("time", f"{r['seconds']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"codec report: {r['midi_dir']}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    for x in r["rejected"][:20]:
        print(f"  rejected: {x['path']}: {x['reason']}")
    if len(r["rejected"]) > 20:
        print(f"  ... and {len(r['rejected']) - 20} more rejected (see --json)")
    internal = [(x["path"], x["reason"]) for x in r["internal_errors"]]
    for line in midi_io.InternalReadError.report_lines(internal):
        print(line, file=sys.stderr)


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    flags.DEFINE_integer("onset_bins", 8, "positive onset-gap bins; 0 = the seed", flag_values=fv)
    flags.DEFINE_enum(
        "onset_fit", "lloyd", ["lloyd", "quantile"], "how onset-gap values are fitted", flag_values=fv
    )
    flags.DEFINE_integer("duration_bins", 4, "duration bins", flag_values=fv)
    flags.DEFINE_integer("velocity_bins", 4, "velocity bins", flag_values=fv)
    flags.DEFINE_integer("min_count", 2, "occurrences a pseudo-note needs to get an id", flag_values=fv)
    flags.DEFINE_string("json", None, "write the report here as JSON", flag_values=fv)
    flags.DEFINE_string("codec_out", None, "write the fitted codec.json here", flag_values=fv)
    flags.DEFINE_integer("workers", None, "processes (default: every core)", flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    f, (midi_dir,) = cli.parse_flags(
        argv, _define_flags, prog="python -m jaxmusic.codec_report MIDI_DIR", doc=__doc__, positional=1
    )
    midi_dir = Path(midi_dir)
    if not midi_dir.is_dir():
        raise cli.UsageError(f"{midi_dir}: not a directory")
    outputs = [Path(p) for p in (f.json, f.codec_out) if p is not None]
    for out in outputs:
        if not out.parent.is_dir():
            raise cli.UsageError(f"{out}: its folder {out.parent} does not exist")
    if f.workers is not None and f.workers < 1:
        raise cli.UsageError(f"--workers must be >= 1, got {f.workers}")
    result, codec = report(
        midi_dir,
        workers=f.workers,
        progress=sys.stderr.isatty(),
        onset_bins=f.onset_bins,
        onset_fit=f.onset_fit,
        duration_bins=f.duration_bins,
        velocity_bins=f.velocity_bins,
        min_count=f.min_count,
    )
    _print_report(result)
    if f.json is not None:
        cli.atomic_write(f.json, json.dumps(result, indent=1))
    if f.codec_out is not None:
        codec.save(f.codec_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
