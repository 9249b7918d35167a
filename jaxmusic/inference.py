"""A trained model that writes and scores music: the one inference object that
`jaxmusic.sample`, `jaxmusic.evaluate`, `jaxmusic.bench` and training's samples use.

`Generator.load(workdir)` rebuilds everything from a workdir's best (or latest) checkpoint (its
config, codec and parameters); `Generator(config, params, codec=...)` wraps a model in
hand. `generate` continues primers through the compiled sampler (`jaxmusic.sampler`),
a batch at a time, with the condition the model was trained with (`conditioning`):
the key and density of each row's whole primer and of what it wrote so far, the
window moved to the common key and the notes moved back for a model trained in one.
`likelihood` scores pieces as training's evaluation does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmusic import checkpoint as checkpoint_lib
from jaxmusic import codec as codec_lib
from jaxmusic import conditioning, lookback, models, parallel, run_config, sampler, steps, windows
from jaxmusic.errors import UsageError

# jax.random.fold_in op by op costs about 0.5 ms a call on a CPU, jitted 0.01 ms (the
# same key): 3% of a 256-note batch-1 sampling call of the default model.
_fold_in = jax.jit(jax.random.fold_in)


class Generator:
    """A model with its config, codec (or none: synthetic ids) and parameters.

    Attributes:
      config: the complete config (`run_config.complete`); config.sampling holds how the
        run samples by default (`settings`).
      codec: the codec, or None (benchmarks on synthetic ids: no key is ever told).
      model, params, step: the model, its parameters and its checkpoint's step (or None);
        a factored model's are the plain model of its folded rows (`models.fold_factors`).
      checkpoint: which checkpoint of its workdir (`load`): "best", "latest", or None.
      conditioner: the model's `conditioning.Conditioner`.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params: Any,
        *,
        codec: codec_lib.Codec | None = None,
        vocab_size: int | None = None,
        num_genres: int | None = None,
        step: int | None = None,
        checkpoint: str | None = None,
    ):
        self.config, self.codec, self.step = run_config.complete(config), codec, step
        self.checkpoint = checkpoint
        vocab_size = codec.vocab_size if codec is not None else vocab_size
        num_genres = len(codec.genres) if codec is not None else num_genres
        self.first_note_id = codec_lib.NUM_SPECIAL + num_genres
        self.lookback = lookback.Spec.of(self.config, self.first_note_id)
        # A factored model writes and scores as the plain model of its folded rows (the same
        # logits): `params` is set through `fold_factors`, here and by training's previews.
        parts = codec_lib.factors(codec) if codec is not None else None
        self._factored = models.from_config(self.config, vocab_size, num_genres, parts)
        self.model = models.plain_of(self._factored)
        self.params = params
        self.conditioner = conditioning.Conditioner.from_config(self.config, codec)
        self._groups = sampler.rhythm_groups(codec) if codec is not None else None
        self._instruments = sampler.instrument_table(codec) if codec is not None else None

    @classmethod
    def load(cls, workdir: str | os.PathLike, dtype: str | None = None, checkpoint: str = "best"
             ) -> Generator:  # fmt: skip
        """A workdir's checkpoint: "best", of the lowest validation NLL (the latest for a run
        without one), or "latest" (`checkpoint.restore_run`). dtype: the products' input
        type for this use (`models.DTYPES`: a float32-trained model sampled in bfloat16);
        None: the checkpoint's. Parameters, state and logits stay float32 either way.

        Raises:
          checkpoint.CheckpointError: the workdir has no checkpoint, or none can be read.
          UsageError: dtype is not a name in `models.DTYPES`.
        """
        if dtype is not None and dtype not in models.DTYPES:
            raise UsageError(f"dtype {dtype!r} is not one of {', '.join(models.DTYPES)}")
        restored = checkpoint_lib.restore_run(workdir, checkpoint)
        config = run_config.complete(restored.config)
        if dtype is not None:
            config.model.dtype = dtype
        codec = codec_lib.from_dict(restored.codec, source=f"{workdir} checkpoint {restored.step}")
        params = restored.state["params"]
        return cls(config, params, codec=codec, step=restored.step, checkpoint=restored.kind)

    @property
    def params(self) -> Any:
        """The parameters of `model` (a factored model's folded: `models.fold_factors`)."""
        return self._params

    @params.setter
    def params(self, params: Any) -> None:
        self._params = models.fold_factors(self._factored, params)

    @property
    def settings(self) -> sampler.Settings:
        """How the run samples by default (its config's `sampling`)."""
        return sampler.Settings.from_config(self.config.sampling)

    @functools.cache  # noqa: B019 - one sampler (and its compiled programs) per length, for its lifetime
    def sampler(self, num_notes: int, phrase_len: int | None = None) -> sampler.Sampler:
        """The compiled sampler writing phrases of `phrase_len` notes (default decoder_len,
        as trained), at least `num_notes` a call, re-encoding as the model was trained (each
        phrase from the whole sample so far, for a model of carried windows)."""
        encode, step, complete, encode_from = sampler.model_functions(self.model, self.conditioner)
        phrase = phrase_len or self.config.decoder_len
        return sampler.make_sampler(
            encode, step, complete, vocab_size=self.model.vocab_size, first_note_id=self.first_note_id,
            phrase_len=phrase, num_phrases=math.ceil(num_notes / phrase),
            encode_from=encode_from if self.config.carried_windows else None, groups=self._groups,
            lookback_spec=self.lookback, instruments=self._instruments,
            recent_spec=models.recent_spec(self.model),
        )  # fmt: skip

    def generate(
        self,
        primers: Sequence[Sequence[int]],
        genres: Sequence[int] | np.ndarray,
        *,
        num_notes: int,
        settings: sampler.Settings,
        seed: int,
        batch: int | None = None,
        max_calls: int = 1,
        done: Callable[[np.ndarray], bool] | None = None,
        phrase_len: int | None = None,
        line_ups: np.ndarray | None = None,
    ) -> np.ndarray:
        """int32[len(primers), calls * num_notes]: notes continuing each primer (PAD after EOS).

        Rows go through the compiled sampler `batch` at a time (all at once by default;
        the last batch padded with copies of its last row, so every call compiles once).
        A call writes `num_notes` notes per row; with `max_calls` > 1 the rows are
        continued, the encoder window sliding over what was written, until
        `done(written)` or `max_calls` calls. The call for the rows from index s,
        continuation c draws with `fold_in(key(seed), s * max_calls + c)`: the same seed,
        primers and settings give the same notes.

        Args:
          primers: note ids per row (any length; the last encoder_len - 1 are read).
          genres: a genre index per row.
          phrase_len: notes written per encoding (`sampler`; default decoder_len).
          line_ups: None, or bool[len(primers), K] each row's instruments (`sampler.Sampler`).
        """
        n, batch = len(primers), batch or len(primers)
        genres, out = np.asarray(genres, np.int32), []
        for start in range(0, n, batch):
            rows = list(range(start, min(start + batch, n)))
            padded = rows + [rows[-1]] * (batch - len(rows))
            stop = None if done is None else functools.partial(_done_of_rows, done, len(rows))
            written = self._continue(
                [np.asarray(primers[i], np.int32) for i in padded], genres[padded], num_notes=num_notes,
                settings=settings, rng=jax.random.key(seed), first_call=start * max_calls,
                max_calls=max_calls, done=stop, phrase_len=phrase_len,
                line_up=None if line_ups is None else np.asarray(line_ups, bool)[padded],
            )  # fmt: skip
            out.append(written[: len(rows)])
        width = max(w.shape[1] for w in out)  # batches that stopped after fewer calls: PAD
        return np.concatenate(
            [np.pad(w, ((0, 0), (0, width - w.shape[1])), constant_values=codec_lib.PAD) for w in out]
        )

    def _continue(self, primers, genre, *, num_notes, settings, rng, first_call, max_calls, done, phrase_len,
                  line_up):  # fmt: skip
        """One batch of rows through up to max_calls calls: int32[B, calls * num_notes]."""
        sample, te = self.sampler(num_notes, phrase_len), self.config.encoder_len
        window = np.asarray([sampler.primer_window(p, te) for p in primers], np.int32)
        written = np.zeros((len(primers), 0), np.int32)
        for call in range(max_calls):
            k = _fold_in(rng, first_call + call)
            this = settings if call == 0 else dataclasses.replace(settings, min_notes=0)  # rows go on
            cond, moved, shift = self._condition(genre, primers, written, window)
            history = _history(self.lookback, self.conditioner.common_key, primers, written, shift)
            tokens = np.asarray(sample(self.params, moved, cond, k, this, history, line_up))
            if shift is not None:
                tokens = conditioning.from_common_key(tokens, shift, self.conditioner.common_key)
            tokens = tokens[:, :num_notes]
            written = np.concatenate([written, tokens], axis=1)
            window = np.concatenate([window, tokens], axis=1)[:, -te:]
            if done is None or done(written):
                break
        return written

    def _condition(self, genre, primers, written, window):
        """(a call's condition, its window, the common-key shift of each row or None): the key
        and density of each row's whole primer and of what it wrote before, as the model was
        trained (the piece so far), and the window moved to the common key of that key for a
        model trained in one; for a model of the window's key, the genre alone (the compiled
        sampler completes it from the window)."""
        read = [np.concatenate([p, w]) for p, w in zip(primers, written, strict=True)]
        told = self.conditioner.of_tokens(read)
        if told is None:
            return conditioning.Condition(genre), window, None
        key, density = told
        shift = None
        if self.conditioner.common_key is not None:
            window, key, shift = conditioning.to_common_key(window, key, self.conditioner.common_key)
        density = density if self.model.num_densities else None
        return conditioning.Condition(genre, key, density), window, shift

    def continuations(self, primers: list[np.ndarray], genres: np.ndarray, **generate: Any
                      ) -> list[np.ndarray]:  # fmt: skip
        """`generate`'s rows (with its keyword arguments) as note ids only, each cut at its EOS."""
        out = []
        for row in self.generate(primers, genres, **generate):
            end = np.flatnonzero(row == codec_lib.EOS)
            row = row[: end[0]] if end.size else row
            out.append(row[self.codec.is_note(row)])
        return out

    def likelihood(self, pieces: windows.Pieces) -> dict[str, float]:
        """`steps.evaluate_batches` over every target of `pieces` once, read as in
        training's evaluation (a model of carried windows reads each piece from its start)."""
        mesh = parallel.make_mesh()
        batch_size = parallel.global_batch_size(self.config, mesh.devices.size)
        carried = self.config.carried_windows
        batches = windows.eval_batches(pieces, batch_size=batch_size, encoder_len=self.config.encoder_len,
                                       decoder_len=self.config.decoder_len, carried=carried,
                                       conditioner=self.conditioner, lookback_spec=self.lookback)  # fmt: skip
        eval_step = steps.make_eval_step(self.model, mesh, self.conditioner, carried=carried)
        carry = steps.zero_carry(self.model, batch_size, mesh) if carried else None
        genres = tuple(self.codec.genres) or ("all",)
        return steps.evaluate_batches(eval_step, self.params, batches, mesh, genres, carry)


def _history(spec: lookback.Spec | None, common_key, primers, written, shift) -> np.ndarray | None:
    """For a model with a lookback (`spec`), int32[B, window]: the last notes of each row's
    primer and of what it wrote, left-padded with PAD (moved by the common-key shift, a
    note that cannot move left out as PAD); None without a lookback."""
    if spec is None:
        return None
    size = spec.window
    out = np.zeros((len(primers), size), np.int32)
    for r, (p, w) in enumerate(zip(primers, written, strict=True)):
        read = np.concatenate([[codec_lib.BOS], p, w])[-size:]  # BOS, as the primer's window reads it
        out[r, size - read.shape[0] :] = read
    return out if shift is None else lookback.moved(out, shift, common_key)


def _done_of_rows(done: Callable[[np.ndarray], bool], rows: int, written: np.ndarray) -> bool:
    """`done` of a batch's real rows (not the copies that pad it)."""
    return done(written[:rows])
