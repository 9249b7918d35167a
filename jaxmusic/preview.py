"""Samples heard and seen in TensorBoard as training goes.

At every evaluation the trainer asks `Preview` for `config.preview_samples` samples of
`config.preview_notes` notes (EOS never drawn), each continuing the opening of a piece
of the evaluation split: the same pieces, the same seed and the run's own sampling
settings each time, so that a user hears the model change and nothing else. Each comes
as audio (`render.synthesize`, mono at PREVIEW_RATE; TensorBoard tags sample_audio/piece_N)
and as a piano roll (sample_roll/piece_N); the real continuations of the same openings
come once, at the first evaluation (real_audio/..., real_roll/...).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import inference, render
from jaxmusic.windows import Pieces

PREVIEW_RATE = 16_000  # TensorBoard keeps 16-bit PCM: about 32 KB a second of mono


@dataclasses.dataclass
class Media:
    """What `MetricWriter.media` takes: audio float32[frames, 1] and images
    uint8[height, width, 3] by name, and the seconds it took to make them."""

    audio: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    seconds: float


class Preview:
    """The samples of a run's evaluations (`__call__`) and, once, their real music (`real`)."""

    def __init__(
        self, config: ml_collections.ConfigDict, codec: codec_lib.Codec, pieces: Pieces, params: Any
    ):
        te, n = config.encoder_len, config.preview_notes
        long = [i for i, s in enumerate(pieces.sequences) if s.shape[0] - 2 > te]  # notes after the opening
        picked = np.random.default_rng(config.seed).permutation(long)[: config.preview_samples]
        self.pieces = sorted(int(i) for i in picked)
        self.primers = [pieces.sequences[i][1 : 1 + te] for i in self.pieces]
        self.genres = pieces.genres[self.pieces]
        real = [pieces.sequences[i][1 + te : 1 + te + n] for i in self.pieces]
        self.real_ids = [r[r != codec_lib.EOS] for r in real]
        self.codec, self.seed, self.num_notes = codec, config.seed, n
        self.generator = inference.Generator(config, _local(params), codec=codec)
        self.settings = dataclasses.replace(self.generator.settings, fixed_length=True)

    def __len__(self) -> int:
        return len(self.pieces)

    def __call__(self, params: Any) -> Media:
        """The samples of the model with `params` (replicated arrays: this process's copy)."""
        start = time.perf_counter()
        self.generator.params = _local(params)
        written = self.generator.generate(self.primers, self.genres, num_notes=self.num_notes,
                                          settings=self.settings, seed=self.seed)  # fmt: skip
        return self._media("sample", list(written), start)

    def real(self) -> Media:
        """The real continuations of the same openings."""
        return self._media("real", self.real_ids, time.perf_counter())

    def _media(self, kind: str, rows: list[np.ndarray], start: float) -> Media:
        audio, images = {}, {}
        for piece, ids in zip(self.pieces, rows, strict=True):
            notes = self.codec.decode(np.asarray(ids))
            audio[f"{kind}_audio/piece_{piece}"] = render.synthesize(notes, PREVIEW_RATE).mean(
                axis=1, keepdims=True
            )
            images[f"{kind}_roll/piece_{piece}"] = render.roll_pixels(notes)
        return Media(audio, images, time.perf_counter() - start)


def _local(params: Any) -> Any:
    """This process's copy of replicated parameters, as numpy (sampled on one device)."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, params
    )
