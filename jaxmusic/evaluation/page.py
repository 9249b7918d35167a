"""One page per run: the evaluation as a self-contained HTML file a person opens.

Everything is inside the file (plots and piano rolls as base64 PNG, audio as base64
Ogg/Opus: `render.compressed`), so it opens from the disk with no server and no network
and can be mailed or dropped in a bucket. It holds the headline figures (NLL against
the baselines, the statistics table), the whole text report, the plots, and every
sample with a player and its piano roll beside the real continuation of the same
primer; the long samples of the form section, when they were drawn, likewise.
"""

from __future__ import annotations

import base64
import concurrent.futures
import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import render
from jaxmusic.evaluation import report as report_lib

LONG_SHOWN = 2  # long samples (form section) on the page, each beside its real continuation

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; }
.plots img { width: 370px; margin: 4px; border: 1px solid #eee; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; margin: 10px 0 22px; }
.pair figure { margin: 0; } .pair img { max-width: 100%; border: 1px solid #eee; image-rendering: pixelated; }
.pair figcaption { font-size: 13px; color: #555; } audio { width: 100%; height: 32px; }
"""


def write(path: str | os.PathLike, result: dict, codec: codec_lib.Codec, listen: dict[str, list],
          plots: str | os.PathLike | None) -> int:  # fmt: skip
    """Writes the page; returns its size in bytes.

    Args:
      path: the HTML file (local or in a bucket; written whole).
      result: the JSON report (`evaluator.run`).
      codec: the model's codec (ids -> notes).
      listen: {section title: [(caption, sample ids, caption, real ids or None), ...]}:
        what is played, each sample beside its real continuation (None: a caption only).
      plots: the local folder the report's plots were drawn in (their names: result["plots"]).
    """
    from jaxmusic import fileio

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(_title(result))}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{_e(_title(result))}</h1>"]  # fmt: skip
    parts.append(_headline(result))
    if plots is not None and result.get("plots"):
        images = [_img((Path(plots) / name).read_bytes(), name) for name in result["plots"]]
        parts.append("<h2>Plots</h2><div class='plots'>" + "".join(images) + "</div>")
    # Encoding audio is most of the page's time, and soundfile lets go of the GIL.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        for title, pairs in listen.items():
            parts.append(f"<h2>{_e(title)}</h2>")
            figures = pool.map(lambda p: _figure(codec, p[0], p[1]) + _figure(codec, p[2], p[3]), pairs)
            parts.extend(f"<div class='pair'>{f}</div>" for f in figures)
    parts.append("<h2>The whole report</h2><pre>" + _e(report_lib.format_report(result)) + "</pre>")
    parts.append("</body></html>")
    text = "\n".join(parts)
    fileio.atomic_write(path, text)
    return len(text.encode())


def listening(c: Any, long: Any, settings: str) -> dict[str, list]:
    """`write`'s `listen` of an evaluation: every sample of `c` (`samples.Continuations`)
    beside its piece's real continuation, and the first long samples of `long`
    (`form.Long`, or None) beside theirs."""
    real_by_piece = dict(zip(c.real_idx, c.real_ids, strict=True))
    pairs, first = [], {}
    for k, (piece, ids) in enumerate(zip(c.picked, c.written, strict=True)):
        piece = int(piece)
        caption = f"sample {k + 1}: piece {piece}, {len(ids)} notes ({settings})"
        if piece in first:  # a piece drawn again: its real music is played once, above
            pairs.append((caption, ids, f"real continuation: piece {piece}, as beside sample {first[piece]}",
                          None))  # fmt: skip
            continue
        first[piece] = k + 1
        real = real_by_piece[piece]
        pairs.append((caption, ids, f"real continuation: piece {piece}, {len(real)} notes", real))
    out = {"Samples, each beside the real music of the same primer": pairs}
    if long is not None:
        shown = min(LONG_SHOWN, len(long.real_ids))
        out["Long samples (form), each beside the real music of the same primer"] = [
            (f"long sample {k + 1}: {len(long.sample_ids[k])} notes", long.sample_ids[k],
             f"real continuation: {len(long.real_ids[k])} notes", long.real_ids[k])
            for k in range(shown)
        ]  # fmt: skip
    return out


def _title(r: dict) -> str:
    return f"jaxmusic: {r['workdir']}, checkpoint {r['checkpoint_step']}"


def _e(text: Any) -> str:
    return html.escape(str(text))


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _figure(codec: codec_lib.Codec, caption: str, ids: np.ndarray | None) -> str:
    if ids is None:
        return f"<figure><figcaption>{_e(caption)}</figcaption></figure>"
    notes = codec.decode(np.asarray(ids))
    if not notes.shape[0]:
        return f"<figure><figcaption>{_e(caption)}: no notes</figcaption></figure>"
    audio = base64.b64encode(render.compressed(notes)).decode()
    roll = render.png(render.roll_pixels(notes))
    return (f"<figure><figcaption>{_e(caption)}</figcaption>"
            f"<audio controls preload='metadata' src='data:audio/ogg;base64,{audio}'></audio>"
            f"{_img(roll, caption)}</figure>")  # fmt: skip


def _headline(r: dict) -> str:
    """The likelihood against the baselines, and the statistics table."""
    rows = [("LSTM", r["likelihood"]["overall"])]
    rows += [(name, b["overall"]) for name, b in r.get("baselines", {}).items()]
    out = [f"<p>{_e(r['dataset'])}, split {_e(r['split'])}: {r['pieces']} pieces, "
           f"{r['likelihood']['overall']['notes']:,.0f} notes.</p>",
           "<h2>Per-note likelihood</h2><table><tr><th>model</th><th>nats</th><th>bits</th>"
           "<th>perplexity</th></tr>"]  # fmt: skip
    for name, v in rows:
        out.append(f"<tr><td>{_e(name)}</td><td>{v['nll_nats']:.3f}</td><td>{v['nll_bits']:.3f}</td>"
                   f"<td>{v['perplexity']:.1f}</td></tr>")  # fmt: skip
    out.append("</table>")
    stats = r.get("statistics") or {}
    if stats:
        out.append("<h2>Statistics of the samples against the real continuations</h2><table><tr>"
                   "<th>statistic</th><th>real mean</th><th>samples' mean</th><th>overlap</th><th>KL</th>"
                   "<th>real music in the samples' place</th></tr>")  # fmt: skip
        for name, row in stats.items():
            cells = [name, _num(row.get("real_mean")), _num(row.get("generated_mean")),
                     f"{row['overlap_area']:.3f}", f"{row['kl_divergence']:.3f}",
                     _num(row.get("reference_overlap"), "")]  # fmt: skip
            out.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def _num(v: Any, other: str = "(hist.)") -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else other


def default_path(json_path: str | os.PathLike) -> str:
    """The page beside a JSON report: the same name with .html."""
    text = os.fspath(json_path)
    return text[: -len(Path(text).suffix)] + ".html" if Path(text).suffix else text + ".html"
