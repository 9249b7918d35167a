"""Writes the StableHLO of the train step, eval step and sampler, lowered for TPU and
GPU from this CPU (for test_lowering.py).

  python tests/lowered_programs.py --devices 8 --out DIR

Simulated CPU devices must be set before JAX starts, hence a process of its own. The
programs use the paper config's shapes (2 x 1024 LSTMs, bfloat16, 64 + 64 notes,
global batch 128) with a small vocabulary; nothing is compiled or run.
"""

import argparse
import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB, GENRES = 300, 4
PLATFORMS = ("tpu", "cuda")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", args.devices)
    import jax.numpy as jnp

    from configs import paper
    from jaxmusic import batching, conditioning, lookback, models, parallel, sampler, steps

    config = paper.get_config()
    mesh = parallel.make_mesh()
    model = models.from_config(config, VOCAB, GENRES)
    tx, _ = steps.make_optimizer(config)
    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    state = jax.eval_shape(lambda: steps.init_state(model, tx, config, jax.random.key(0)))
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), state)
    b, te, td = parallel.global_batch_size(config), config.encoder_len, config.decoder_len
    batch = batching.abstract(b, te, td, sharding=data)
    train_step = steps.make_train_step(model, tx, mesh, jax.random.key(1))
    # Carried windows (truncated BPTT): the state holds each row's encoder state, split
    # over devices like the batch.
    carry = jax.eval_shape(lambda: steps.zero_carry(model, b))
    carried_state = state.replace(
        carry=jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=data), carry)
    )
    carried_step = steps.make_train_step(model, tx, mesh, jax.random.key(1), carried=True)
    carried_batch = batching.abstract(b, te, td, data, carried=True)
    eval_step = steps.make_eval_step(model, mesh)
    conditioner = conditioning.Conditioner.from_config(config, None)
    encode, step, complete, _ = sampler.model_functions(model, conditioner)
    sample = sampler.make_sampler(encode, step, complete, vocab_size=VOCAB, first_note_id=4 + GENRES,
                                  phrase_len=td, num_phrases=2)  # fmt: skip
    window = jax.ShapeDtypeStruct((8, te), jnp.int32)
    cond = conditioning.Condition(jax.ShapeDtypeStruct((8,), jnp.int32))
    sample_args = (state.params, window, cond, jax.random.key(0), 1.0, 0.9)
    # The same model with a lookback (jaxmusic.lookback, with its copy group), recent counts
    # (jaxmusic.recent) and factored ids (models.Factors): its train step and sampler.
    config.model.lookback = True
    config.model.factored = True
    config.model.copy_group = True
    config.model.recent_notes = config.encoder_len
    looking = models.from_config(config, VOCAB, GENRES)
    lb_state = jax.eval_shape(lambda: steps.init_state(looking, tx, config, jax.random.key(0)))
    lb_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), lb_state)
    lb_batch = batching.abstract(b, te, td, sharding=data, lookback=True)
    lb_step = steps.make_train_step(looking, tx, mesh, jax.random.key(1))
    spec = lookback.Spec(config.model.lookback_window, 4 + GENRES)
    # Sampled as inference samples a factored model: the plain model of its folded rows.
    encode, step, complete, _ = sampler.model_functions(models.plain_of(looking), conditioner)
    lb_sample = sampler.make_sampler(encode, step, complete, vocab_size=VOCAB, first_note_id=4 + GENRES,
                                     phrase_len=td, num_phrases=2, lookback_spec=spec,
                                     recent_spec=models.recent_spec(looking))  # fmt: skip
    history = jax.ShapeDtypeStruct((8, spec.window), jnp.int32)
    folded = jax.eval_shape(lambda p: models.fold_factors(looking, p), lb_state.params)
    lb_sample_args = (folded, window, cond, jax.random.key(0), 1.0, 0.9, history)
    programs = {
        "lookback_train_step": (lb_step, (lb_state, lb_batch)),
        "lookback_sampler": (lb_sample.jitted(sampler.Mode(nucleus=True, min_notes=1)), lb_sample_args),
        "train_step": (train_step, (state, batch)),
        "carried_train_step": (carried_step, (carried_state, carried_batch)),
        "eval_step": (eval_step, (state.params, batch)),
        "sampler_nucleus": (sample.jitted(sampler.Mode(nucleus=True, min_notes=1)), sample_args),
        "sampler_top_k": (sample.jitted(sampler.Mode(top_k=20, min_notes=1)), sample_args),
        "sampler_greedy": (sample.jitted(sampler.Mode(greedy=True, carry_state=True)), sample_args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for platform in PLATFORMS:
        for name, (fn, fn_args) in programs.items():
            text = fn.trace(*fn_args).lower(lowering_platforms=(platform,)).as_text()
            (args.out / f"{name}.{platform}.mlir").write_text(text)
    leaves = jax.tree.leaves(state)
    meta = {
        "devices": jax.device_count(),
        "per_device_batch": b // jax.device_count(),
        "hidden": config.model.hidden,
        "encoder_len": te,
        "decoder_len": td,
        "param_count": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "param_sizes": sorted(int(x.size) for x in jax.tree.leaves(state.params)),
        "state_leaves": len(leaves),
        "carry_leaves": len(jax.tree.leaves(carry)),
        "lookback_param_count": int(sum(x.size for x in jax.tree.leaves(lb_state.params))),
        "lookback_param_sizes": sorted(int(x.size) for x in jax.tree.leaves(lb_state.params)),
        "lookback_state_leaves": len(jax.tree.leaves(lb_state)),
        # Folded into the head's kernel before the batch is read: reduced as part of it.
        "lookback_folded_sizes": [int(lb_state.params["head_factors"]["kernel"].size)],
        # The copy's two kernels are one product's ([H, 2]): their gradient is one reduce.
        "lookback_joint_sizes": [[int(lb_state.params[k]["kernel"].size) for k in ("copy", "copy_group")]],
    }
    (args.out / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
