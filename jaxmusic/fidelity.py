"""How faithfully a folder of MIDI files survives the codec (the library of
`python -m jaxmusic.codec_report`): a codec fitted on the folder, the UNK rate on the
held-out 10%, and the encode -> decode round trip (onset precision, recall and F1 at
mir_eval's 50 ms convention, exact pitch; onset, duration and velocity errors).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import time

import numpy as np
import tqdm

from jaxmusic import midi_io, music_stats
from jaxmusic.codec import Codec, CodecError
from jaxmusic.codec_fit import fit

ONSET_TOLERANCE = 0.05  # seconds, mir_eval's transcription convention


def _fidelity_one(args: tuple[Codec, np.ndarray]) -> dict:
    """Round-trip measures of one piece (notes in the codec's order and decoded notes
    align by index), overall and per instrument."""
    codec, notes = args
    notes = codec.instruments.order(notes) if codec.instruments.has_drums else notes
    decoded = codec.decode(codec.encode(notes))
    onset_error = np.abs(decoded["start"] - notes["start"])
    played, written = midi_io.instrument_index(notes), midi_io.instrument_index(decoded)
    per_instrument = {}
    for i in np.unique(played).tolist():
        match = music_stats.match_onsets(notes[played == i], decoded[played == i], tolerance=ONSET_TOLERANCE)
        per_instrument[i] = (match, int((written[played == i] == i).sum()))
    return {
        "per_instrument": per_instrument,
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
        drums = fit_kwargs.get("instruments", "merged") != "merged"
        read = functools.partial(midi_io.read_hashed, include_drums=drums)
        hashed = list(tqdm.tqdm(pool.map(read, paths, chunksize=8), total=len(paths), desc="read", **bar))
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
    result = _summary(midi_dir, paths, reads, ok, pieces, codec, fit_kwargs, unk_heldout, per_piece)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result, codec


def _summary(midi_dir, paths, reads, ok, pieces, codec: Codec, fit_kwargs: dict, unk_heldout,
             per_piece) -> dict:  # fmt: skip
    """The report of `report`'s reads and round trips."""
    match = sum((m["match"] for m in per_piece), music_stats.OnsetMatch(0, 0, 0))
    onset_error = np.concatenate([m["onset_error"] for m in per_piece])
    all_notes = np.concatenate(pieces)
    return {
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
            "per_instrument": _per_instrument(per_piece),
        },
    }


def _per_instrument(per_piece: list[dict]) -> dict[str, dict]:
    """{General MIDI family or "drums": its notes, onset F1 and the share of its notes that
    come back as the same family} over every piece."""
    out = {}
    for i in sorted({i for m in per_piece for i in m["per_instrument"]}):
        rows = [m["per_instrument"][i] for m in per_piece if i in m["per_instrument"]]
        match = sum((r[0] for r in rows), music_stats.OnsetMatch(0, 0, 0))
        notes = sum(r[0].num_ref for r in rows)
        out[midi_io.INSTRUMENT_NAMES[i]] = {"notes": notes, "onset_f1": match.f1,
                                            "same_instrument": sum(r[1] for r in rows) / notes}  # fmt: skip
    return out
