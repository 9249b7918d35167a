"""Training: train_and_evaluate(config, workdir), the loop around `jaxmusic.steps`; the CLI.

  python -m jaxmusic.train --config configs/default.py --workdir runs/default \\
      [--config.batch_size=64 ...]

A run resumes from its workdir by itself (parameters, optimizer and the input
position, which is a pure function of the step). SIGTERM or SIGINT saves a
checkpoint and exits 0. A non-finite loss stops the run with an error naming the
step; checkpoints are only written after every loss before them was checked, so
the last one on disk is good.

The step functions import no TensorFlow; only the input pipeline does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmusic import batching, cli, host_memory, key_input, models, parallel
from jaxmusic import checkpoint as checkpoint_lib
from jaxmusic import codec as codec_lib
from jaxmusic import lock as lock_lib
from jaxmusic import steps as steps_lib
from jaxmusic.metric_writer import MetricWriter


class TrainingError(cli.Error):
    """A run that must stop: a non-finite loss, a workdir that does not fit the run."""


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def check_finite(params: Any, step: int) -> None:
    """Parameters saved at step N come from update N, whose loss is only seen at
    step N + 1: check them before they reach disk."""
    if not bool(_all_finite(params)):
        raise TrainingError(f"parameters are not finite after step {step}; stopped before saving them")


class _Stop:
    """When a run stops early, saving a checkpoint first (a preemption, Ctrl-C).

    One process: SIGTERM or SIGINT sets a flag that the loop reads at its next step.

    Several processes: a preemption notice reaches the hosts of a pod one at a time,
    never at the same instant, and a host that stopped alone would leave the others
    waiting in the next step's all-reduce. So no host decides alone: JAX's preemption
    sync manager (started by `jax.distributed.initialize`) catches SIGTERM on any
    process and spreads the notice, and every process asks
    `multihost_utils.reached_preemption_sync_point(step)` at every step; it answers
    True on all of them at the same step, where they save one checkpoint together.
    SIGINT (Ctrl-C in one terminal) is turned into a SIGTERM to take the same path.
    """

    def __init__(self, stop_at: int | None):
        self.stop_at = stop_at
        self.reason: str | None = None
        self.multiprocess = jax.process_count() > 1
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Installs the signal handlers (`restore` puts the previous ones back)."""
        if self.multiprocess:
            # SIGTERM stays with the preemption sync manager's own handler.
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward_to_sigterm)
        else:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._flag)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _flag(self, signum, frame) -> None:
        self.reason = f"signal {signum}"

    @staticmethod
    def _forward_to_sigterm(signum, frame) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def __call__(self, step: int) -> bool:
        """Whether to stop after `step` steps; call once per step, in order, on every process."""
        if self.multiprocess:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.reason = "preemption notice, at the step every process agreed on"
        if step == self.stop_at:
            self.reason = self.reason or "stop_at"
        return self.reason is not None


def _check_resume(
    restored_config: dict, restored_codec: dict, config, codec: codec_lib.Codec, workdir,
    saved_rows: int | None = None, rows: int | None = None,
) -> None:  # fmt: skip
    """A workdir's checkpoint must match the run's codec, model shape and, with carried
    windows, its batch rows (saved_rows: the rows of the saved carry, None if unknown)."""
    fingerprint = restored_codec.get("fingerprint")
    if fingerprint != codec.fingerprint:
        raise TrainingError(
            f"workdir {workdir}: its checkpoint was trained with codec {fingerprint}, but data_dir "
            f"{config.data_dir} has codec {codec.fingerprint}; use a new workdir for a new dataset"
        )
    # The fields that shape the parameter tree (absent from older configs: their defaults then).
    for key, absent in (("num_layers", None), ("hidden", None), ("embed_dim", 0), ("key_input", False),
                        ("density_input", False), ("condition_output", False)):  # fmt: skip
        then, now = restored_config.get("model", {}).get(key, absent), config.model.get(key, absent)
        if then != now:
            raise TrainingError(
                f"workdir {workdir}: its checkpoint has model.{key}={then}, this run asks for {now}; "
                "use a new workdir for a different model"
            )
    then, now = restored_config.get("model", {}).get("key_context", "window"), key_input.context(config)
    if then != now and config.model.get("key_input", False):
        raise TrainingError(
            f"workdir {workdir}: its checkpoint has model.key_context={then!r}, this run asks for {now!r} "
            "(what its key input means); use a new workdir to change it"
        )
    # AdamW's state has one more node than Adam's: orbax cannot restore one as the other.
    then, now = (c.get("optimizer", {}).get("weight_decay", 0.0) > 0 for c in (restored_config, config))
    if then != now:
        raise TrainingError(
            f"workdir {workdir}: its checkpoint was trained with{'' if then else 'out'} weight decay, this "
            f"run asks for optimizer.weight_decay={config.optimizer.get('weight_decay', 0.0)}; weight decay "
            "can change in a resumed run but not be turned on or off: use a new workdir"
        )
    then, now = (bool(c.get("common_key", False)) for c in (restored_config, config))
    if then != now:
        raise TrainingError(
            f"workdir {workdir}: its checkpoint was trained with common_key={then}, this run asks for "
            f"{now} (the windows' keys would change mid-run); use a new workdir"
        )
    then, now = (bool(c.get("carried_windows", False)) for c in (restored_config, config))
    if then != now:
        raise TrainingError(
            f"workdir {workdir}: its checkpoint has carried_windows={then}, this run asks for {now}; "
            "use a new workdir to change it"
        )
    if now and saved_rows is not None and saved_rows != rows:
        raise TrainingError(
            f"workdir {workdir}: its checkpoint carries the state of {saved_rows} batch rows, this run "
            f"has {rows} (a global batch of carried windows cannot change size mid-run); use a new workdir"
        )


@contextlib.contextmanager
def _one_writer(workdir: Path) -> Iterator[None]:
    """Process 0 holds the workdir's lock for the run; every process learns whether it
    got it, so that a refused run stops on all of them (none waits in a collective)."""
    from jax.experimental import multihost_utils

    with contextlib.ExitStack() as stack:
        error = ""
        if jax.process_index() == 0:
            try:
                stack.enter_context(lock_lib.workdir_lock(workdir, log=lambda m: print(m, file=sys.stderr)))
            except lock_lib.WorkdirBusy as e:
                error = str(e)
        if jax.process_count() > 1:
            refused = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
            if int(refused) and not error:
                error = f"workdir {workdir} is in use by another run (process 0 could not lock it)"
        if error:
            raise TrainingError(error)
        yield


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, stop_at: int | None = None
) -> dict[str, float]:
    """Trains (or resumes) in `workdir`; returns the last evaluation's metrics.

    One run at a time writes a workdir: the run holds `workdir`/train.lock (see
    `jaxmusic.lock`) from start to end, on every exit path.

    Args:
      config: see configs/default.py.
      workdir: checkpoints, metrics.jsonl and TensorBoard files; resumed from.
      stop_at: stop at this step as a signal would (save, return), schedule unchanged.

    Raises:
      TrainingError: another run holds the workdir, or the run cannot go on.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with _one_writer(workdir):
        return _train_and_evaluate(config, workdir, stop_at)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: Path, stop_at: int | None) -> dict:
    from jaxmusic import input_pipeline  # TensorFlow enters here, at the data edge

    is_main = jax.process_index() == 0

    # --- Mesh and data. ---
    mesh = parallel.make_mesh()
    layout = batching.layout(
        parallel.global_batch_size(config, mesh.devices.size),
        devices=mesh.devices.size,
        processes=jax.process_count(),
        data_shards=config.data_shards or None,
    )
    codec = input_pipeline.load_codec(config.data_dir)
    train_shards, shard_ids = input_pipeline.load_train_shards(
        config.data_dir,
        num_shards=layout.shards,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    # Targets of the whole train split (every note after BOS, EOS included), from this
    # host's equal share of the shards: what one epoch is.
    train_targets = sum(seq.shape[0] - 1 for p in train_shards for seq in p.sequences) * jax.process_count()
    targets_per_step = layout.global_size * config.decoder_len
    carried = bool(config.get("carried_windows", False))

    # --- Model, optimizer, state (fresh or resumed). ---
    model = models.from_config(config, codec.vocab_size, len(codec.genres))
    tx, schedule = steps_lib.make_optimizer(config)
    root_rng = jax.random.key(config.seed)
    params_rng, dropout_rng = jax.random.split(root_rng)
    rep, rows = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    def fresh_state() -> steps_lib.TrainState:
        state = steps_lib.init_state(model, tx, config, params_rng)
        carry = steps_lib.zero_carry(model, layout.global_size) if carried else None
        return state.replace(carry=carry)

    abstract = jax.eval_shape(fresh_state)
    # Everything replicated but the carried state, which is split like the batch.
    shardings = jax.tree.map(lambda _: rep, abstract).replace(
        carry=jax.tree.map(lambda _: rows, abstract.carry)
    )
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                          shardings)  # fmt: skip
    ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.max_to_keep)
    if ckpt.steps():
        saved_config, saved_codec = ckpt.read_json(ckpt.steps()[-1])
        saved_rows = ckpt.carry_rows(ckpt.steps()[-1]) if carried else None
        _check_resume(saved_config, saved_codec, config, codec, workdir, saved_rows, layout.global_size)
    restored = ckpt.restore(target.saved())
    if restored is None:
        state = jax.jit(fresh_state, out_shardings=shardings)()
    else:
        state = steps_lib.TrainState.from_saved(restored.state)
        for step, reason in restored.skipped:
            print(
                f"checkpoint {step} is unreadable ({reason}); resumed from {restored.step}", file=sys.stderr
            )
    start = int(state.step)
    config_dict, codec_dict = config.to_dict(), codec.to_dict()

    key_weights = key_input.weights_for(model, codec)
    piece_keys = key_input.piece_weights(config, key_weights)  # None: no key in the batches
    common_key = key_input.common_key_tables(config, codec)  # None: keys as written (or drawn)
    # After the resume checks: a workdir of another codec is refused before its ids are read.
    eval_pieces = input_pipeline.load_pieces(config.data_dir, config.eval_split)
    eval_batches = input_pipeline.eval_batches(
        eval_pieces,
        batch_size=layout.host_size,
        encoder_len=config.encoder_len,
        decoder_len=config.decoder_len,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        carried=carried,
        key_weights=piece_keys,
        common_key=common_key,
    )
    if config.eval_batches:
        eval_batches = eval_batches[: config.eval_batches]
    train_step = steps_lib.make_train_step(model, tx, mesh, dropout_rng, key_weights, carried=carried)
    eval_step = steps_lib.make_eval_step(model, mesh, key_weights, carried=carried)
    eval_carry = steps_lib.zero_carry(model, layout.global_size, mesh) if carried else None
    batches = input_pipeline.train_batches(
        train_shards,
        batch_size=layout.host_size,
        encoder_len=config.encoder_len,
        decoder_len=config.decoder_len,
        seed=config.seed,
        start_step=start,
        transpose=input_pipeline.transpose_tables(codec, config.transpose),
        shard_ids=shard_ids,
        carried=carried,
        key_weights=piece_keys,
        common_key=common_key,
    )
    writer = MetricWriter(workdir, enabled=is_main)

    # --- Loop. ---
    stop = _Stop(stop_at)
    stop.install()
    pending = _PendingMetrics(ckpt)
    last_eval: dict[str, float] = {}
    rate = _StepRate()
    progress = _progress(start, config.num_train_steps, enabled=is_main)

    def save(step: int) -> None:
        pending.check()  # only states whose every loss was checked reach disk
        check_finite(state.params, step)
        ckpt.save(step, state.saved(), config_dict, codec_dict)

    try:
        step = start
        while step < config.num_train_steps and not stop(step):
            batch = parallel.global_batch(next(batches), mesh)
            state, metrics = train_step(state, batch)
            step += 1
            pending.add(step, metrics)
            rate.started(step, metrics)
            last = step == config.num_train_steps
            if step % config.log_every == 0 or last:
                means = pending.check()
                steps_per_second = rate(step)
                means.update(steps_per_second=steps_per_second, learning_rate=float(schedule(step - 1)),
                             epochs=step * targets_per_step / train_targets)  # fmt: skip
                writer.write(step, {f"train_{k}" if not k.startswith(("steps", "learn", "epochs")) else k: v
                                    for k, v in means.items()})  # fmt: skip
                progress.set_postfix(loss=f"{means['loss']:.3f}", steps_s=f"{steps_per_second:.2f}")
            progress.update(1)
            if step % config.checkpoint_every == 0 or last:
                save(step)
            if step % config.eval_every == 0 or last:
                last_eval = steps_lib.evaluate_batches(
                    eval_step, state.params, eval_batches, mesh, codec.genres, eval_carry
                )
                writer.write(step, last_eval)
                rate.restart(step)  # keep evaluation out of steps/s
                e = last_eval
                progress.write(
                    f"step {step}: eval NLL {e['eval_nll']:.4f}, perplexity {e['eval_perplexity']:.2f}, "
                    f"accuracy {e['eval_accuracy']:.4f}"
                )
        if step < config.num_train_steps and stop.reason is not None:
            pending.check()
            ckpt.wait()
            if step not in ckpt.steps():
                save(step)
            progress.write(f"stopped ({stop.reason}): saved a checkpoint at step {step}")
        elif step == config.num_train_steps and step > start and is_main:
            warning = _under_one_epoch(step * targets_per_step, train_targets)
            if warning:
                progress.write(warning, file=sys.stderr)  # on a line of its own, below the bar
    finally:
        ckpt.close()
        writer.close()
        progress.close()
        stop.restore()
    return last_eval


class _PendingMetrics:
    """Train-step metrics still on the device, checked on the host in order.

    At most 2 steps stay in flight (XLA:CPU aborts long queues of unblocked
    all-reduces); `check` fetches them all and stops the run on a non-finite loss.
    """

    def __init__(self, ckpt: checkpoint_lib.Checkpointer):
        self._ckpt = ckpt
        self._items: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._items.append((step, metrics))
        if len(self._items) > 2:
            jax.block_until_ready(self._items[-3][1])

    def check(self) -> dict[str, float]:
        """Fetches and checks every pending step; returns their means ({} if none).

        Raises:
          TrainingError: a loss is not finite (naming the step and the last good checkpoint).
        """
        if not self._items:
            return {}
        fetched = jax.device_get([m for _, m in self._items])
        for (step, _), m in zip(self._items, fetched, strict=True):
            if not np.isfinite(m["loss"]):
                self._ckpt.wait()
                last = self._ckpt.steps()[-1] if self._ckpt.steps() else "none"
                raise TrainingError(
                    f"loss is {m['loss']} at step {step}; stopped. Last good checkpoint: step {last}"
                )
        self._items.clear()
        return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


class _StepRate:
    """Steps per second since the first step finished (compilation left out) or since
    the last `restart` (evaluation left out)."""

    def __init__(self):
        self._time: float | None = None
        self._step = 0

    def started(self, step: int, metrics: dict) -> None:
        """Call after every step; the first call waits for the step (it compiled) and starts the clock."""
        if self._time is None:
            jax.block_until_ready(metrics)
            self.restart(step)

    def restart(self, step: int) -> None:
        self._time, self._step = time.perf_counter(), step

    def __call__(self, step: int) -> float:
        elapsed = time.perf_counter() - self._time
        return (step - self._step) / elapsed if step > self._step else float("nan")


def _under_one_epoch(targets_seen: int, train_targets: int) -> str:
    """The warning for a run that ended before it saw its train split once ("" if it did)."""
    epochs = targets_seen / train_targets
    if epochs >= 1:
        return ""
    return (
        f"warning: the run saw {epochs:.2f} epochs of its train split ({targets_seen:,} of "
        f"{train_targets:,} target notes): it ended before learning from all of its data; "
        "a longer run (num_train_steps) will likely do better"
    )


def _progress(start: int, total: int, *, enabled: bool):
    import tqdm

    interactive = sys.stderr.isatty()  # in a log file, a line every 15 s instead of redraws
    return tqdm.tqdm(
        total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True,
        mininterval=0.5 if interactive else 15.0,
    )  # fmt: skip


# ----------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    cli.define_config(fv, argv)
    flags.DEFINE_string(
        "workdir", None, "checkpoints and metrics go here; a run resumes from it", flag_values=fv
    )
    flags.DEFINE_bool("multihost", False, "join a multi-host run found from the environment", flag_values=fv)
    flags.DEFINE_string(
        "coordinator", None, "host:port of process 0 (multi-process GPUs/CPUs)", flag_values=fv
    )
    flags.DEFINE_integer("num_processes", None, "processes in the run (with --coordinator)", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "this process's rank (with --coordinator)", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(argv, _define_flags, prog="python -m jaxmusic.train", doc=__doc__)
    parallel.initialize_distributed(
        coordinator=f.coordinator, num_processes=f.num_processes, process_id=f.process_id, auto=f.multihost
    )
    metrics = train_and_evaluate(f.config, f.workdir)
    if jax.process_index() == 0:
        workdir = Path(f.workdir)
        print(f"checkpoints: {workdir / 'checkpoints'}")
        print(f"metrics: {workdir / 'metrics.jsonl'} (TensorBoard: {workdir / 'tensorboard'})")
        if metrics:
            print("final evaluation: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
