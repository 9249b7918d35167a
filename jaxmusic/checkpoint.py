"""Checkpoints in a workdir, with orbax: state, config and codec, self-contained.

Each checkpoint (W/checkpoints/<step>/) holds three items:
  state:  the train state (step, params, optimizer state)
  config: the run's config, JSON
  codec:  the codec, JSON (`codec.Codec.to_dict`)
so `jaxmusic.sample` needs nothing but the workdir. Saves are asynchronous and
atomic (orbax writes a temporary folder and renames it); a checkpoint that cannot
be read (corrupt, or from another model) is skipped for the one before it, and
the caller is told; it is kept aside as <step>.unreadable, never deleted.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxmusic import codec as codec_lib
from jaxmusic import key_input, models
from jaxmusic import sampler as sampler_lib
from jaxmusic.cli import Error, UsageError


class CheckpointError(Error):
    """A workdir whose checkpoints cannot be used: says which and why."""


@dataclasses.dataclass
class Restored:
    """What `Checkpointer.restore` found.

    Attributes:
      step: the checkpoint's step.
      state: the restored state (shaped like the target).
      config: the config dict saved with it.
      codec: the codec dict saved with it.
      skipped: (step, reason) of newer checkpoints that could not be read.
    """

    step: int
    state: Any
    config: dict
    codec: dict
    skipped: list[tuple[int, str]]


class Checkpointer:
    """An orbax CheckpointManager over W/checkpoints."""

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=not read_only,
            cleanup_tmp_directories=not read_only,
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
            "codec": ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def steps(self) -> list[int]:
        """Steps of the finished checkpoints, ascending."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, config: dict, codec: dict) -> None:
        """Starts an asynchronous save; `wait` blocks until it is on disk."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config),
            codec=ocp.args.JsonSave(codec),
        )
        self.manager.save(step, args=args, force=True)

    def read_json(self, step: int) -> tuple[dict, dict]:
        """(config, codec) dicts of a checkpoint, without its arrays."""
        got = self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore(), codec=ocp.args.JsonRestore())
        )
        return got["config"], got["codec"]

    def carry_rows(self, step: int) -> int | None:
        """The batch rows of a checkpoint's carried state (`TrainState.carry`); None if it
        has none, or its metadata cannot be read (`restore` then passes it over)."""
        try:
            carry = self.manager.item_metadata(step)["state"].get("carry")
        except Exception:  # orbax raises many kinds for a damaged folder
            return None
        leaves = jax.tree.leaves(carry) if carry else []
        return int(leaves[0].shape[0]) if leaves else None

    def restore(self, target: Any | None) -> Restored | None:
        """The newest readable checkpoint, or None when the workdir has none.

        Args:
          target: a pytree of arrays or ShapeDtypeStructs (with shardings) that
            the state must match; None restores the arrays as saved, onto this
            process's first device (whatever devices saved them).

        Raises:
          CheckpointError: checkpoints exist but none can be read.
        """
        skipped: list[tuple[int, str]] = []
        for step in reversed(self.steps()):
            try:
                state_args = ocp.args.StandardRestore(
                    target if target is not None else self._local_target(step)
                )
                got = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=state_args, config=ocp.args.JsonRestore(), codec=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # orbax raises many kinds for a damaged folder
                reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                logging.warning("checkpoint %d in %s is unreadable (%s)", step, self.directory, reason)
                skipped.append((step, reason))
                continue
            if skipped and not self.read_only:
                self._set_aside([s for s, _ in skipped])
            return Restored(step, got["state"], got["config"], got["codec"], skipped)
        if skipped:
            raise CheckpointError(
                f"{self.directory}: no readable checkpoint; "
                + "; ".join(f"step {s}: {r}" for s, r in skipped)
            )
        return None

    def _local_target(self, step: int) -> Any:
        """The saved state's shapes and dtypes, placed on this process's first device."""
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        metadata = self.manager.item_metadata(step)["state"]
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), metadata)

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unreadable checkpoints to <step>.unreadable (kept, never deleted),
        so the run can write those steps again."""
        for step in steps:
            path = self.directory / str(step)
            aside = path.with_name(f"{step}.unreadable")
            n = 1
            while aside.exists():
                aside, n = path.with_name(f"{step}.unreadable{n}"), n + 1
            path.rename(aside)
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@dataclasses.dataclass(frozen=True)
class ForInference:
    """What sampling and evaluation need of a workdir's latest readable checkpoint."""

    config: ml_collections.ConfigDict
    codec: codec_lib.Codec
    model: models.Seq2Seq
    params: Any
    step: int

    # The tables below are built once per loaded checkpoint (frozen: cached_property
    # writes the instance's __dict__ directly), not at every sampling call.
    @functools.cached_property
    def key_weights(self) -> Any:
        """`key_input.pitch_class_weights` of the codec for a model with a key input, else None."""
        return key_input.weights_for(self.model, self.codec)

    @functools.cached_property
    def piece_key_weights(self) -> Any:
        """What `sampler.generate` takes as piece_key_weights: the codec's pitch-class
        weights for a model whose key input reads the piece so far, else None."""
        return key_input.piece_weights(self.config, self.key_weights)

    @functools.cached_property
    def common_key_tables(self) -> Any:
        """What `sampler.generate` takes as common_key: the transposition tables of a
        model trained in a common key (`key_input.common_key_tables`), else None."""
        return key_input.common_key_tables(self.config, self.codec)

    @property
    def carried(self) -> bool:
        """Whether the model was trained on carried windows (`config.carried_windows`)."""
        return bool(self.config.get("carried_windows", False))

    def sampler(self, num_notes: int) -> sampler_lib.Sampler:
        """The model's `sampler.Sampler` writing phrases of decoder_len notes, at least
        `num_notes` a call, re-encoding as the model was trained."""
        return sampler_lib.for_model(
            self.model, vocab_size=self.codec.vocab_size, first_note_id=self.codec.first_note_id,
            phrase_len=self.config.decoder_len, num_notes=num_notes, key_weights=self.key_weights,
            carried=self.carried, groups=sampler_lib.rhythm_groups(self.codec),
        )  # fmt: skip


def load_for_inference(workdir: str | os.PathLike, dtype: str | None = None) -> ForInference:
    """The latest readable checkpoint of a workdir, with its config, codec and model.

    dtype: the products' input type for this use (`models.DTYPES`: sampling or
    evaluating a float32-trained model in bfloat16); None: the checkpoint's
    `config.model.dtype`. Parameters, state and logits stay float32 either way.

    Raises:
      CheckpointError: the workdir has no checkpoint, or none can be read.
      UsageError: dtype is not a name in `models.DTYPES`.
    """
    if dtype is not None and dtype not in models.DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(models.DTYPES)}")
    restored = Checkpointer(workdir, read_only=True).restore(None)
    if restored is None:
        raise CheckpointError(
            f"--workdir {workdir}: no checkpoint in it (train first: python -m jaxmusic.train)"
        )
    config = ml_collections.ConfigDict(restored.config)
    if dtype is not None:
        config.model.dtype = dtype
    codec = codec_lib.from_dict(restored.codec, source=f"{workdir} checkpoint {restored.step}")
    model = models.from_config(config, codec.vocab_size, len(codec.genres))
    return ForInference(config, codec, model, restored.state["params"], restored.step)
