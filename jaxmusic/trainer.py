"""Training: `train_and_evaluate(config, workdir)`, the loop around `jaxmusic.steps`.

A run resumes from its workdir by itself (parameters, optimizer and the input
position, which is a pure function of the step). A signal (SIGTERM, SIGINT) saves a
checkpoint and returns. A non-finite loss stops the run with an error naming the
step; checkpoints are only written after every loss before them was checked, so the
last one on disk is good. One run at a time writes a workdir (`jaxmusic.lock`).

The sections, top to bottom: the run's parts (mesh, data, model, state), the loop,
and the helpers the loop leans on (stopping, pending metrics, step rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from jaxmusic import batching, conditioning, fileio, lookback, models, parallel, run_config
from jaxmusic import checkpoint as checkpoint_lib
from jaxmusic import codec as codec_lib
from jaxmusic import lock as lock_lib
from jaxmusic import preview as preview_lib
from jaxmusic import steps as steps_lib
from jaxmusic.errors import Error
from jaxmusic.metric_writer import MetricWriter


class TrainingError(Error):
    """A run that must stop: a non-finite loss, a workdir that does not fit the run."""


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, stop_at: int | None = None
) -> dict[str, float]:
    """Trains (or resumes) in `workdir`; returns the last evaluation's metrics.

    Args:
      config: see configs/default.py.
      workdir: checkpoints, metrics.jsonl and TensorBoard files; resumed from.
      stop_at: stop at this step as a signal would (save, return), schedule unchanged.

    Raises:
      TrainingError: another run holds the workdir, or the run cannot go on.
      run_config.ResumeError: the workdir's checkpoint was trained otherwise.
    """
    config = run_config.complete(config)
    run_config.validate(config)
    config.data_dir = os.fspath(fileio.path(config.data_dir))  # kept absolute: read from anywhere
    workdir = fileio.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lost = threading.Event()  # set if another run takes a bucket lock over
    with _one_writer(workdir, lost.set):
        return _Run(config, workdir).train(stop_at, lost)


# ----------------------------------------------------------------------------
# The run's parts: mesh, data, model, state.
# ----------------------------------------------------------------------------


class _Run:
    """One training run in a workdir: what it reads and holds, set up in `__init__`."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: epath.Path):
        from jaxmusic import input_pipeline  # TensorFlow enters here, at the data edge

        self.config, self.workdir = config, workdir
        self.mesh = parallel.make_mesh()
        devices, processes = self.mesh.devices.size, jax.process_count()
        size = parallel.global_batch_size(config, devices)
        self.layout = batching.layout(size, devices=devices, processes=processes,
                                      data_shards=config.data_shards or None)  # fmt: skip
        self.codec = input_pipeline.load_codec(config.data_dir)
        self.lookback = lookback.Spec.of(config, self.codec.first_note_id)
        codec = self.codec
        self.model = models.from_config(config, codec.vocab_size, len(codec.genres), codec_lib.factors(codec))
        self.conditioner = conditioning.Conditioner.from_config(config, self.codec)
        self.tx, self.schedule = steps_lib.make_optimizer(config)
        self.params_rng, self.dropout_rng = jax.random.split(jax.random.key(config.seed))
        self.ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.max_to_keep)
        self.best = checkpoint_lib.Checkpointer(workdir, best=True)  # the lowest validation NLL's parameters
        self.state = self._initial_state()  # after the resume checks: no ids read of another codec
        shards, shard_ids = input_pipeline.load_train_shards(
            config.data_dir, num_shards=self.layout.shards, process_index=jax.process_index(),
            process_count=processes,
        )  # fmt: skip
        # Targets of the whole train split (every note after BOS, EOS included), from this
        # host's equal share of the shards: what one epoch is.
        self.train_targets = sum(s.shape[0] - 1 for p in shards for s in p.sequences) * processes
        self.batches = input_pipeline.train_batches(
            shards, shard_ids=shard_ids, batch_size=self.layout.host_size, encoder_len=config.encoder_len,
            decoder_len=config.decoder_len, seed=config.seed, start_step=int(self.state.step),
            transpose=self.codec.transpose_tables(config.transpose, nearest=config.transpose_nearest),
            carried=config.carried_windows,
            conditioner=self.conditioner, lookback_spec=self.lookback,
        )  # fmt: skip
        eval_pieces = input_pipeline.load_pieces(config.data_dir, config.eval_split)
        self.evaluator = _Evaluator.of(self, eval_pieces)
        self.preview = None  # samples in TensorBoard, written by process 0
        if config.preview_samples and jax.process_index() == 0:
            self.preview = preview_lib.Preview(config, self.codec, eval_pieces, self.state.params)

    def _initial_state(self) -> steps_lib.TrainState:
        """The workdir's latest readable checkpoint, or a fresh state; both placed on the mesh."""
        config, rows, carried = self.config, self.layout.global_size, self.config.carried_windows

        def fresh() -> steps_lib.TrainState:
            state = steps_lib.init_state(self.model, self.tx, config, self.params_rng)
            return state.replace(carry=steps_lib.zero_carry(self.model, rows) if carried else None)

        abstract = jax.eval_shape(fresh)
        rep, split = parallel.replicated(self.mesh), parallel.batch_sharding(self.mesh)
        # Everything replicated but the carried state, which is split like the batch.
        shardings = jax.tree.map(lambda _: rep, abstract)
        shardings = shardings.replace(carry=jax.tree.map(lambda _: split, abstract.carry))
        if self.ckpt.steps():
            self._check_resume(self.ckpt.steps()[-1])
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                              shardings)  # fmt: skip
        restored = self.ckpt.restore(target.saved())
        if restored is None:
            return jax.jit(fresh, out_shardings=shardings)()
        for step, reason in restored.skipped:
            print(f"checkpoint {step} is unreadable ({reason}); resumed from {restored.step}",
                  file=sys.stderr)  # fmt: skip
        return steps_lib.TrainState.from_saved(restored.state)

    def _check_resume(self, step: int) -> None:
        """The workdir's checkpoint must match the run's codec, its fixed config fields
        (`run_config.check_resume`) and, with carried windows, its batch rows."""
        saved_config, saved_codec = self.ckpt.read_json(step)
        fingerprint = saved_codec.get("fingerprint")
        if fingerprint != self.codec.fingerprint:
            raise TrainingError(
                f"workdir {self.workdir}: its checkpoint was trained with codec {fingerprint}, but data_dir "
                f"{self.config.data_dir} has codec {self.codec.fingerprint}; use a new workdir for a new "
                "dataset"
            )
        run_config.check_resume(saved_config, self.config, self.workdir)
        saved_rows = self.ckpt.carry_rows(step) if self.config.carried_windows else None
        if saved_rows is not None and saved_rows != self.layout.global_size:
            raise TrainingError(
                f"workdir {self.workdir}: its checkpoint carries the state of {saved_rows} batch rows, this "
                f"run has {self.layout.global_size} (a global batch of carried windows cannot change size "
                "mid-run); use a new workdir"
            )

    # ------------------------------------------------------------------------
    # The loop.
    # ------------------------------------------------------------------------

    def train(self, stop_at: int | None, lost: threading.Event) -> dict[str, float]:
        config, is_main = self.config, jax.process_index() == 0
        train_step = steps_lib.make_train_step(self.model, self.tx, self.mesh, self.dropout_rng,
                                               self.conditioner, carried=config.carried_windows)  # fmt: skip
        writer = MetricWriter(self.workdir, enabled=is_main)
        stop, pending, rate = _Stop(stop_at), _PendingMetrics(self.ckpt), _StepRate()
        start = step = int(self.state.step)
        progress = _progress(start, config.num_train_steps, enabled=is_main)
        last_eval: dict[str, float] = {}
        previewed = False
        stop.install()
        try:
            while step < config.num_train_steps and not stop(step):
                if lost.is_set():
                    raise TrainingError(f"workdir {self.workdir}: another run took its lock over; stopped "
                                        f"at step {step} without saving")  # fmt: skip
                batch = parallel.global_batch(next(self.batches), self.mesh)
                self.state, metrics = train_step(self.state, batch)
                step += 1
                pending.add(step, metrics)
                rate.started(step, metrics)
                last = step == config.num_train_steps
                if step % config.log_every == 0 or last:
                    self._log(step, pending.check(), rate(step), writer, progress)
                progress.update(1)
                if step % config.checkpoint_every == 0 or last:
                    self._save(step, pending)
                if step % config.eval_every == 0 or last:
                    last_eval = self.evaluator(self.state.params)
                    writer.write(step, last_eval | self._preview(step, writer, first=not previewed))
                    previewed = True
                    rate.restart(step)  # keep evaluation out of steps/s
                    progress.write(_eval_line(step, last_eval) + self._keep_best(step, last_eval["eval_nll"]))
                    stop.early(self._no_progress(step))
            self._finish(step, start, stop, pending, progress)
        finally:
            self.ckpt.close()
            self.best.close()
            writer.close()
            progress.close()
            stop.restore()
        return last_eval

    def _preview(self, step: int, writer: MetricWriter, first: bool) -> dict[str, float]:
        """Samples to TensorBoard (and the real music they continue, the first time);
        returns the seconds it took, a metric of its own."""
        if self.preview is None or not len(self.preview):
            return {}
        media = [self.preview.real()] if first else []
        media.append(self.preview(self.state.params))
        for m in media:
            writer.media(step, m.audio, m.images, sample_rate=preview_lib.PREVIEW_RATE)
        return {"preview_seconds": sum(m.seconds for m in media)}

    def _log(self, step: int, means: dict, steps_per_second: float, writer: MetricWriter, progress) -> None:
        """The training metrics of the steps since the last line."""
        epochs = step * self.layout.global_size * self.config.decoder_len / self.train_targets
        row = {f"train_{k}": v for k, v in means.items()}
        row |= {"steps_per_second": steps_per_second, "learning_rate": float(self.schedule(step - 1)),
                "epochs": epochs}  # fmt: skip
        writer.write(step, row)
        progress.set_postfix(loss=f"{means['loss']:.3f}", steps_s=f"{steps_per_second:.2f}")

    def _keep_best(self, step: int, nll: float) -> str:
        """Saves the parameters to W/best when `nll` is the run's lowest validation NLL;
        returns what the progress line says of it."""
        best = self.best.best_value()
        if best is not None and not nll < best:
            return f" (best {best:.4f} at step {self.best.manager.best_step()})"
        if step in self.best.steps():  # a run resumed before its best: this step's parameters are newer
            self.best.manager.delete(step)
        # One manager's save at a time: two managers' finalizing threads take the same orbax
        # barrier, and a multi-process run then fails ("barrier ... is already ongoing").
        self.ckpt.wait()
        self.best.save(step, {"params": self.state.params}, self.config.to_dict(), self.codec.to_dict(),
                       metrics={checkpoint_lib.BEST_METRIC: float(nll)})  # fmt: skip
        self.best.wait()
        return " (best so far: kept)"

    def _no_progress(self, step: int) -> str | None:
        """Why the run stops early (`config.early_stopping` evaluations in a row without a
        lower validation NLL than the best), or None. Every process decides alike: the
        NLL is the global one."""
        patience, best_step = self.config.early_stopping, self.best.manager.best_step()
        if not patience or best_step is None or (step - best_step) < patience * self.config.eval_every:
            return None
        return (f"early stopping: no lower validation NLL in {patience} evaluations since step {best_step} "
                f"({self.best.best_value():.4f})")  # fmt: skip

    def _save(self, step: int, pending: _PendingMetrics) -> None:
        """A checkpoint of the state after `step`, once every loss before it was checked."""
        pending.check()
        check_finite(self.state.params, step)
        self.ckpt.save(step, self.state.saved(), self.config.to_dict(), self.codec.to_dict())

    def _finish(self, step: int, start: int, stop: _Stop, pending: _PendingMetrics, progress) -> None:
        """A run stopped early saves where it stopped; one that ended says if it saw under an epoch."""
        if step < self.config.num_train_steps and stop.reason is not None:
            pending.check()
            self.ckpt.wait()
            if step not in self.ckpt.steps():
                self._save(step, pending)
            progress.write(f"stopped ({stop.reason}): saved a checkpoint at step {step}")
        elif step == self.config.num_train_steps and step > start and jax.process_index() == 0:
            warning = _under_one_epoch(step * self.layout.global_size * self.config.decoder_len,
                                       self.train_targets)  # fmt: skip
            if warning:
                progress.write(warning, file=sys.stderr)  # on a line of its own, below the bar


@dataclasses.dataclass
class _Evaluator:
    """The evaluation during training: NLL, perplexity and accuracy of the eval split."""

    step: Any
    batches: list
    mesh: Any
    genres: tuple[str, ...]
    carry: Any

    @classmethod
    def of(cls, run: _Run, pieces) -> _Evaluator:
        from jaxmusic import windows

        config = run.config
        batches = windows.eval_batches(
            pieces, batch_size=run.layout.host_size, encoder_len=config.encoder_len,
            decoder_len=config.decoder_len, process_index=jax.process_index(),
            process_count=jax.process_count(), carried=config.carried_windows, conditioner=run.conditioner,
            lookback_spec=run.lookback,
        )  # fmt: skip
        if config.eval_batches:
            batches = batches[: config.eval_batches]
        step = steps_lib.make_eval_step(run.model, run.mesh, run.conditioner, carried=config.carried_windows)
        carried = config.carried_windows
        carry = steps_lib.zero_carry(run.model, run.layout.global_size, run.mesh) if carried else None
        return cls(step, batches, run.mesh, run.codec.genres, carry)

    def __call__(self, params: Any) -> dict[str, float]:
        return steps_lib.evaluate_batches(self.step, params, self.batches, self.mesh, self.genres, self.carry)


def _eval_line(step: int, e: dict) -> str:
    return (f"step {step}: eval NLL {e['eval_nll']:.4f}, perplexity {e['eval_perplexity']:.2f}, "
            f"accuracy {e['eval_accuracy']:.4f}")  # fmt: skip


# ----------------------------------------------------------------------------
# What the loop leans on.
# ----------------------------------------------------------------------------


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def check_finite(params: Any, step: int) -> None:
    """Parameters saved at step N come from update N, whose loss is only seen at
    step N + 1: check them before they reach disk."""
    if not bool(_all_finite(params)):
        raise TrainingError(f"parameters are not finite after step {step}; stopped before saving them")


@contextlib.contextmanager
def _one_writer(workdir: epath.Path, on_lost) -> Iterator[None]:
    """Process 0 holds the workdir's lock for the run; every process learns whether it
    got it, so that a refused run stops on all of them (none waits in a collective)."""
    from jax.experimental import multihost_utils

    with contextlib.ExitStack() as stack:
        error = ""
        if jax.process_index() == 0:
            try:
                stack.enter_context(
                    lock_lib.workdir_lock(workdir, log=lambda m: print(m, file=sys.stderr), on_lost=on_lost)
                )
            except lock_lib.WorkdirBusy as e:
                error = str(e)
        if jax.process_count() > 1:
            refused = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
            if int(refused) and not error:
                error = f"workdir {workdir} is in use by another run (process 0 could not lock it)"
        if error:
            raise TrainingError(error)
        yield


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

    def early(self, reason: str | None) -> None:
        """Stops the run at the next check for `reason` (None: goes on), as every process decides."""
        self.reason = self.reason or reason

    def __call__(self, step: int) -> bool:
        """Whether to stop after `step` steps; call once per step, in order, on every process."""
        if self.multiprocess:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.reason = "preemption notice, at the step every process agreed on"
        if step == self.stop_at:
            self.reason = self.reason or "stop_at"
        return self.reason is not None


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
