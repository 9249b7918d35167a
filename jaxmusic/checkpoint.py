"""Checkpoints in a workdir, with orbax: state, config and codec, self-contained.

Each checkpoint (W/checkpoints/<step>/) holds three items:
  state:  the train state (step, params, optimizer state)
  config: the run's config, JSON
  codec:  the codec, JSON (`codec.Codec.to_dict`)
so that sampling and evaluation need nothing but the workdir (`inference.Generator.load`).
W/best/<step>/ holds the parameters of the evaluation with the lowest validation NLL
(orbax's best-checkpoint options keep one); `sample` and `evaluate` use it unless asked
for the latest (`restore_run`).
Saves are asynchronous and atomic (orbax writes a temporary folder and renames it); a
checkpoint that cannot be read (corrupt, or from another model) is skipped for the one
before it, and the caller is told; it is kept aside as <step>.unreadable, never deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxmusic import fileio
from jaxmusic.errors import Error


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
      kind: "latest" (the workdir's checkpoints) or "best" (W/best).
    """

    step: int
    state: Any
    config: dict
    codec: dict
    skipped: list[tuple[int, str]]
    kind: str = "latest"


_OPEN_TRIES = 5  # listings of a workdir that a running trainer prunes meanwhile


CHECKPOINTS, BEST = "checkpoints", "best"  # the folders of a workdir
BEST_METRIC = "nll"  # the validation metric the best checkpoint is the lowest of
CHOICES = ("best", "latest")  # what `restore_run` restores


class Checkpointer:
    """An orbax CheckpointManager over W/checkpoints (or W/best: `best`, which keeps the one
    checkpoint of the lowest `BEST_METRIC` among those saved with metrics)."""

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False,
                 best: bool = False):  # fmt: skip
        self.directory = fileio.path(workdir) / (BEST if best else CHECKPOINTS)  # local or in a bucket
        self.read_only = read_only
        ranking = dict(best_fn=lambda metrics: metrics[BEST_METRIC], best_mode="min") if best else {}
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1 if best else max_to_keep,
            **ranking,
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
        for attempt in range(_OPEN_TRIES):
            try:
                self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
                break
            except FileNotFoundError:
                # A run writing this workdir pruned a checkpoint between orbax's listing and its
                # look at it (a reader beside a running trainer): list again.
                if attempt == _OPEN_TRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def steps(self) -> list[int]:
        """Steps of the finished checkpoints, ascending."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, config: dict, codec: dict, metrics: dict | None = None) -> None:
        """Starts an asynchronous save; `wait` blocks until it is on disk. metrics: what a
        best checkpointer ranks it by ({BEST_METRIC: value})."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config),
            codec=ocp.args.JsonSave(codec),
        )
        self.manager.save(step, args=args, force=True, metrics=metrics)

    def best_value(self) -> float | None:
        """The `BEST_METRIC` of the best checkpoint kept (None: none saved with metrics)."""
        step = self.manager.best_step()
        metrics = self.manager.metrics(step) if step is not None else None
        return float(metrics[BEST_METRIC]) if metrics and BEST_METRIC in metrics else None

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


def restore_run(workdir: str | os.PathLike, which: str = "best") -> Restored:
    """A workdir's checkpoint for sampling or evaluation, read-only, its arrays as saved on
    this process's first device. which: "best", the parameters of the lowest validation
    NLL (W/best; a run without one, trained before it existed: the latest); "latest",
    the newest readable checkpoint. `Restored.kind` says which it is.

    Raises:
      CheckpointError: the workdir has no checkpoint, or none can be read.
    """
    if which not in CHOICES:
        raise CheckpointError(f"checkpoint {which!r}: not one of {', '.join(CHOICES)}")
    restored = None
    if which == "best" and (fileio.path(workdir) / BEST).exists():
        restored = Checkpointer(workdir, read_only=True, best=True).restore(None)
        if restored is not None:
            restored.kind = "best"
    if restored is None:
        restored = Checkpointer(workdir, read_only=True).restore(None)
    if restored is None:
        raise CheckpointError(
            f"workdir {workdir}: no checkpoint in it (train first: python -m jaxmusic.train)"
        )
    return restored
