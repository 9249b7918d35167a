"""The samples every section compares with real music: continuations of real openings.

Each sample continues the opening `primer_notes` notes of a piece of the split, drawn
uniformly (with its genre), for `num_notes` notes; the real set is the true
continuation of every piece long enough to prime. Each sample is cut to the length of
its piece's real continuation, so that length-dependent statistics (pitch range and
count, ...) compare like with like; how often samples end early (EOS) is reported
beside how often real pieces do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxmusic import inference, sampler, windows
from jaxmusic.errors import UsageError
from jaxmusic.evaluation import statistics


def line_ups(generator: inference.Generator, pieces: windows.Pieces, picked: np.ndarray,
             line_up: str) -> np.ndarray | None:  # fmt: skip
    """bool[len(picked), K]: for line_up "piece", the instruments each picked piece plays
    anywhere (K: the codec's instruments); None for "primer" (the settings decide).

    Raises:
      UsageError: "piece" with a merged codec.
    """
    if line_up == "primer":
        return None
    codec = generator.codec
    if not codec.instruments.has_drums:
        raise UsageError("line_up piece needs a codec with instruments (this one is merged)")
    table = sampler.instrument_table(codec)
    out = np.zeros((len(picked), codec.instruments.count), bool)
    for row, i in enumerate(picked):
        played = table[pieces.sequences[i]]
        out[row, played[played >= 0]] = True
    return out


def load_splits(generator: inference.Generator, data_dir: str | None, split: str):
    """(the dataset folder, the evaluated split's pieces, the train split's pieces) of
    `data_dir` (None: the model's own dataset), checked to hold the model's codec.

    Raises:
      UsageError: the split cannot be read (naming it and the dataset).
      codec.CodecError: the dataset has another codec.
    """
    from jaxmusic import input_pipeline

    data_dir = data_dir or generator.config.data_dir
    try:
        input_pipeline.load_codec(data_dir, expected_fingerprint=generator.codec.fingerprint)
        pieces = input_pipeline.load_pieces(data_dir, split)
        train_pieces = input_pipeline.load_pieces(data_dir, "train")
    except input_pipeline.DataError as e:
        raise UsageError(f"split {split} of {data_dir}: {e}") from None
    return input_pipeline.dataset_dir(data_dir), pieces, train_pieces


def continuations(
    pieces: windows.Pieces, primer_notes: int, num_notes: int
) -> tuple[list[int], list[np.ndarray]]:
    """(the pieces with more than `primer_notes` notes, as indices; each one's next
    `num_notes` note ids, int32[<= num_notes], EOS cut)."""
    chosen, ids = [], []
    for i, seq in enumerate(pieces.sequences):
        notes = seq[1:-1]  # without BOS and EOS
        if notes.shape[0] > primer_notes:
            chosen.append(i)
            ids.append(notes[primer_notes : primer_notes + num_notes])
    return chosen, ids


@dataclasses.dataclass
class Continuations:
    """Samples and the real music they are compared with (ids per piece, notes only)."""

    real_idx: list[int]  # pieces of the split long enough to prime with
    real_ids: list[np.ndarray]  # each one's true continuation
    picked: np.ndarray  # the piece each sample continues
    primers: list[np.ndarray]
    genres: np.ndarray  # the genre each sample was asked for
    sample_ids: list[np.ndarray]  # cut to the length of their piece's real continuation
    ended: list[bool]  # wrote EOS before num_notes
    written: list[np.ndarray]  # the samples as written, uncut
    line_ups: np.ndarray | None  # the instruments each sample was asked to play (`line_ups`)

    def degenerate_share(self) -> float:
        """The share of degenerate samples, each judged as written: a cut to a 2-note real
        continuation says nothing of the sample (`statistics.degenerate_share`)."""
        return statistics.degenerate_share(self.written)

    @classmethod
    def draw(cls, generator: inference.Generator, pieces: windows.Pieces, options: Any, primer_notes: int,
             settings: sampler.Settings) -> Continuations:  # fmt: skip
        """options.num_samples samples continuing the openings of pieces drawn from the split
        (options: `evaluator.Options`).

        Raises:
          UsageError: no piece is long enough to prime with.
        """
        real_idx, real_ids = continuations(pieces, primer_notes, options.num_notes)
        if not real_idx:
            raise UsageError(
                f"split {options.split}: no piece has more than {primer_notes} notes to prime with; "
                "lower primer_notes"
            )
        picked = np.random.default_rng(options.seed).choice(real_idx, size=options.num_samples, replace=True)
        primers = [pieces.sequences[i][1 : 1 + primer_notes] for i in picked]
        genres = pieces.genres[picked]
        batch = min(options.batch, options.num_samples)
        bands = line_ups(generator, pieces, picked, options.line_up)
        written = generator.continuations(primers, genres, num_notes=options.num_notes, settings=settings,
                                          seed=options.seed, batch=batch, line_ups=bands)  # fmt: skip
        real_length = dict(zip(real_idx, (ids.shape[0] for ids in real_ids), strict=True))
        cut = [ids[: real_length[i]] for ids, i in zip(written, picked, strict=True)]
        ended = [ids.shape[0] < options.num_notes for ids in written]
        return cls(real_idx, real_ids, picked, primers, genres, cut, ended, written, bands)


def section(c: Continuations, options: Any, primer_notes: int, settings: sampler.Settings) -> dict:
    """The report's `samples` section: how the samples were made, their lengths and endings."""
    return {
        "num_samples": options.num_samples,
        "num_notes": options.num_notes,
        "primer_notes": primer_notes,
        "settings": settings.to_dict(),
        "line_up": options.line_up,
        "seed": options.seed,
        "ended_share": float(np.mean(c.ended)),
        "real_continuations": len(c.real_idx),
        "real_ended_share": float(np.mean([ids.shape[0] < options.num_notes for ids in c.real_ids])),
        "mean_notes_generated": float(np.mean([ids.shape[0] for ids in c.sample_ids])),
        "mean_notes_real": float(np.mean([ids.shape[0] for ids in c.real_ids])),
        "degenerate_share": c.degenerate_share(),
        "real_degenerate_share": statistics.degenerate_share(c.real_ids),
    }
