"""What a training step is, apart from the loop that runs it: the train state, the
optimizer, the jitted train and eval steps, and evaluation over a list of batches.

The steps run per device under shard_map, their sums psum'd, so that any device
count is one program. No TensorFlow here; only the input pipeline imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from jaxmusic import conditioning, models, parallel


@flax.struct.dataclass
class TrainState:
    """step: int32[]; params and opt_state: pytrees (replicated).

    carry: with carried windows (`config.carried_windows`), each encoder layer's
    (c, h), float32[B, H] each, split over devices like the batch: every batch row's
    state after the windows it read so far (saved with the checkpoint, so a resumed
    run goes on exactly); None otherwise.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    carry: Any = None

    def saved(self) -> dict:
        """What a checkpoint holds: step, params, opt_state, and carry only when there is
        one (so checkpoints of runs without carried windows keep their structure)."""
        out = {"step": self.step, "params": self.params, "opt_state": self.opt_state}
        return out if self.carry is None else out | {"carry": self.carry}

    @classmethod
    def from_saved(cls, saved: dict) -> TrainState:
        """The inverse of `saved`."""
        return cls(saved["step"], saved["params"], saved["opt_state"], saved.get("carry"))


def _decayed(params: Any) -> Any:
    """True for the parameters weight decay shrinks: every matrix (ndim >= 2)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam with global-norm clipping on a linear-warmup + cosine schedule; AdamW (decay
    of the matrices and tables, not the biases) when `optimizer.weight_decay` > 0."""
    o = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=o.learning_rate,
        warmup_steps=o.warmup_steps,
        decay_steps=max(config.num_train_steps, o.warmup_steps + 1),
        end_value=o.end_learning_rate,
    )
    if o.weight_decay > 0:
        adam = optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=_decayed)
    else:  # plain Adam: the optimizer state of checkpoints from before the field
        adam = optax.adam(schedule, b1=o.b1, b2=o.b2)
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), adam)
    return tx, schedule


def init_state(
    model: models.Seq2Seq, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, rng: jax.Array
) -> TrainState:
    """A fresh state (on the default device; `jax.device_put` places it)."""
    enc = jnp.zeros((1, config.encoder_len), jnp.int32)
    dec = jnp.zeros((1, config.decoder_len), jnp.int32)
    lookback = {"lookback": (dec, dec)} if model.lookback else {}
    params = model.init(rng, enc, dec, models.example_condition(model), **lookback)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def zero_carry(model: models.Seq2Seq, batch_size: int, mesh: jax.sharding.Mesh | None = None) -> tuple:
    """Each encoder layer's zero (c, h), float32[batch_size, H] each: carried windows'
    start (`TrainState.carry`); with `mesh`, split over its devices like the batch."""

    def zeros() -> tuple:
        zero = jnp.zeros((batch_size, model.hidden), jnp.float32)
        return tuple((zero, zero) for _ in range(model.num_layers))

    return zeros() if mesh is None else jax.jit(zeros, out_shardings=parallel.batch_sharding(mesh))()


def _restart(carry: Any, reset: jax.Array) -> tuple:
    """The carry with the rows that start a piece (reset float32[B] = 1) zeroed."""
    keep = (1.0 - reset)[:, None]
    return tuple(tuple(a * keep for a in layer) for layer in carry)


def token_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, ...]:
    """Per-example sums: (NLL, correct, weight), each float32[B].

    Args:
      logits: float32[B, T, V]; targets: int32[B, T]; weights: float32[B, T].
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    # Top-1 as "the target's logit is the largest": a max reduction is cheaper than
    # argmax's (value, index) one (docs/performance.md); they differ only on exact ties.
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (target_logit >= logits.max(-1)).astype(jnp.float32)
    return (nll * weights).sum(-1), (correct * weights).sum(-1), weights.sum(-1)


def _model_inputs(batch: dict, conditioner: conditioning.Conditioner | None) -> tuple[tuple, dict]:
    """The model's inputs of a batch: ((encoder tokens, decoder inputs, condition), and
    the decoder steps' lookback where the batch has it)."""
    cond = (conditioner or conditioning.Conditioner()).of_batch(batch)
    kwargs = {"lookback": (batch["lookback"], batch["lookback_bucket"])} if "lookback" in batch else {}
    return (batch["encoder_tokens"], batch["decoder_inputs"], cond), kwargs


def make_train_step(
    model: models.Seq2Seq,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    rng: jax.Array,
    conditioner: conditioning.Conditioner | None = None,
    *,
    carried: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """jit(shard_map(step)) with the state donated.

    The loss is the mean NLL over every weighted target of the global batch: each
    device sums its share, and the sums (and gradients) are added over devices, so
    1 and N devices compute the same numbers. conditioner: the model's conditioning
    (`conditioning.Conditioner`; None: the genre alone). carried: the batches are
    carried windows (a `reset` field): the encoder starts from `state.carry` (zeroed
    where a row starts a piece) and the new carry is its final state; gradients stop
    at the window's start (truncated BPTT).
    """

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        device_rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), lax.axis_index(parallel.AXIS))

        args, kwargs = _model_inputs(batch, conditioner)
        initial = _restart(state.carry, batch["reset"]) if carried else None

        def loss_fn(params):
            variables, rngs = {"params": params}, {"dropout": device_rng}
            if carried:
                carry, logits = model.apply(variables, initial, *args, **kwargs, train=True, rngs=rngs,
                                            method=type(model).carried)  # fmt: skip
            else:
                carry, logits = None, model.apply(variables, *args, **kwargs, train=True, rngs=rngs)
            nll, correct, weight = token_sums(logits, batch["targets"], batch["weights"])
            return nll.sum(), (correct.sum(), weight.sum(), carry)

        (nll, (correct, weight, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        total = jnp.maximum(lax.psum(weight, parallel.AXIS), 1.0)
        # The parameters are replicated (device-invariant), so shard_map's autodiff
        # already sums their gradients over devices (the transpose of broadcasting
        # them is a psum): only the division by the global weight is left to do.
        grads = jax.tree.map(lambda g: g / total, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": lax.psum(nll, parallel.AXIS) / total,
            "accuracy": lax.psum(correct, parallel.AXIS) / total,
            "grad_norm": optax.tree.norm(grads),
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, carry=carry), metrics

    rep, data = parallel.replicated_spec(), parallel.batch_spec()
    state_spec = TrainState(step=rep, params=rep, opt_state=rep, carry=data if carried else None)
    sharded = parallel.data_parallel(step, mesh, in_specs=(state_spec, data), out_specs=(state_spec, rep))
    return jax.jit(sharded, donate_argnums=0)


def make_eval_step(
    model: models.Seq2Seq,
    mesh: jax.sharding.Mesh,
    conditioner: conditioning.Conditioner | None = None,
    *,
    carried: bool = False,
) -> Callable[..., Any]:
    """jit(shard_map(step)): NLL, correct and weight sums, per genre (float32[G]).

    `step(params, batch)` -> sums; carried (batches of `input_pipeline.eval_batches(carried=True)`):
    `step(params, batch, carry)` -> (sums, carry), the encoder going on from `carry`
    as in training.
    """
    num_genres = max(model.num_genres, 1)

    def step(params, batch, carry=None):
        args, kwargs = _model_inputs(batch, conditioner)
        if carried:
            initial = _restart(carry, batch["reset"])
            carry, logits = model.apply(
                {"params": params}, initial, *args, **kwargs, method=type(model).carried
            )
        else:
            logits = model.apply({"params": params}, *args, **kwargs)
        sums = token_sums(logits, batch["targets"], batch["weights"])
        per_genre = [jax.ops.segment_sum(s, batch["genre"], num_segments=num_genres) for s in sums]
        sums = {
            k: lax.psum(v, parallel.AXIS)
            for k, v in zip(("nll", "correct", "weight"), per_genre, strict=True)
        }
        return (sums, carry) if carried else sums

    rep, data = parallel.replicated_spec(), parallel.batch_spec()
    in_specs, out_specs = ((rep, data, data), (rep, data)) if carried else ((rep, data), rep)
    sharded = parallel.data_parallel(step, mesh, in_specs=in_specs, out_specs=out_specs)
    return jax.jit(sharded)


def evaluate_batches(
    eval_step: Callable,
    params: Any,
    batches: Iterable[dict],
    mesh: jax.sharding.Mesh,
    genres: tuple[str, ...],
    carry: Any = None,
) -> dict[str, float]:
    """Per-note NLL (nats), perplexity and accuracy, overall and per genre.

    carry: for a carried eval step, the starting carry (`zero_carry` of the global
    batch, split over devices like it), threaded through the batches in order.
    """
    total = None
    for batch in batches:
        if carry is None:
            sums = eval_step(params, parallel.global_batch(batch, mesh))
        else:
            sums, carry = eval_step(params, parallel.global_batch(batch, mesh), carry)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = jax.device_get(total)
    out = {}
    for name, sel in [("", slice(None))] + [(f"/{g}", slice(i, i + 1)) for i, g in enumerate(genres)]:
        weight = float(total["weight"][sel].sum())
        if weight == 0:
            continue
        nll = float(total["nll"][sel].sum()) / weight
        out[f"eval_nll{name}"] = nll
        out[f"eval_perplexity{name}"] = float(np.exp(nll))
        out[f"eval_accuracy{name}"] = float(total["correct"][sel].sum()) / weight
    out["eval_notes"] = float(total["weight"].sum())
    return out
