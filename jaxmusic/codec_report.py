"""CLI: fit a codec on a folder of MIDI files and measure how faithfully it survives.

  python -m jaxmusic.codec_report MIDI_DIR [--onset_bins 8] [--onset_fit lloyd] \\
      [--duration_bins 4] [--velocity_bins 4] [--min_count 2] [--json report.json] \\
      [--codec_out codec.json] [--workers N]

Reads every MIDI file of the folder (a rejected file is a row, not a stop), fits a
codec on 90% of the files, and reports the vocabulary, the UNK rate on the held-out
10%, and the encode -> decode round trip: onset precision, recall and F1 (mir_eval's
50 ms convention, exact pitch), onset, duration and velocity errors. The library is
`jaxmusic.fidelity`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxmusic import cli, fidelity, fileio, midi_io
from jaxmusic.errors import UsageError


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
    per = f["per_instrument"]
    if len(per) > 1:
        print("  per instrument: notes, onset F1, share written as the same instrument")
        for name, v in per.items():
            print(f"    {name:<20} {v['notes']:>9}  {v['onset_f1']:.4f}  {v['same_instrument']:.4f}")
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
    flags.DEFINE_enum("instruments", "merged", ["merged", "family", "program"],
                      "the pseudo-note's instrument (data_pipeline.build's --instruments)",
                      flag_values=fv)  # fmt: skip
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
        raise UsageError(f"{midi_dir}: not a directory")
    outputs = [Path(p) for p in (f.json, f.codec_out) if p is not None]
    for out in outputs:
        if not out.parent.is_dir():
            raise UsageError(f"{out}: its folder {out.parent} does not exist")
    if f.workers is not None and f.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {f.workers}")
    result, codec = fidelity.report(
        midi_dir,
        workers=f.workers,
        progress=sys.stderr.isatty(),
        onset_bins=f.onset_bins,
        onset_fit=f.onset_fit,
        duration_bins=f.duration_bins,
        velocity_bins=f.velocity_bins,
        min_count=f.min_count,
        instruments=f.instruments,
    )
    _print_report(result)
    if f.json is not None:
        fileio.atomic_write(f.json, json.dumps(result, indent=1))
    if f.codec_out is not None:
        codec.save(f.codec_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
