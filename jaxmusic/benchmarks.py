"""How fast the real train step and the sampler run on this machine's devices (the
library of `python -m jaxmusic.bench`; imports no TensorFlow).

`bench_train` runs `steps.make_train_step`'s own step (jit + shard_map over every
device, state donated) on synthetic batches of a config's shapes: a burn-in that
includes compilation, then timed steps, each ending in a device sync; its FLOPs from
the model's shapes (`train_flops`), its memory per device (`memory_analysis`).
`bench_sampler` times `inference.Generator.generate` beside a Python loop of decoder
steps, and `decode_floor` the batch-1 floor: the decoder's weight products alone.
`run` measures everything, with MFU against the device's published peak
(`PEAK_TFLOPS`) and against a large matrix product measured in the same run.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmusic import (
    batching,
    conditioning,
    inference,
    lookback,
    models,
    parallel,
    recent,
    run_config,
    sampler,
)
from jaxmusic import codec as codec_lib
from jaxmusic import steps as steps_lib


def lstm_forward_flops(batch: int, steps: int, input_dim: int, hidden: int) -> int:
    """Matrix-product FLOPs of one LSTM layer over a sequence: input and recurrent
    projections, 2 * B * T * (D + H) * 4H (input_dim 0: a gathered one-hot input)."""
    return 2 * batch * steps * (input_dim + hidden) * 4 * hidden


def train_flops(config: ml_collections.ConfigDict, vocab_size: int, batch: int) -> int:
    """FLOPs of one training step: 3 x the forward matrix products (the backward pass
    computes two products, for inputs and for weights, per forward one).

    Forward: per encoder and decoder layer `lstm_forward_flops` (the first layer's
    input is a gather of [V, 4H] rows when embed_dim is 0, else an embed_dim -> 4H
    product), plus the output layer 2 * B * Td * H * V. Elementwise work is left out.
    """
    m = config.model
    first_in = m.embed_dim
    forward = 0
    for steps in (config.encoder_len, config.decoder_len):
        for k in range(m.num_layers):
            forward += lstm_forward_flops(batch, steps, first_in if k == 0 else m.hidden, m.hidden)
    forward += 2 * batch * config.decoder_len * m.hidden * vocab_size
    return 3 * forward


# Published dense (no sparsity) peak TFLOP/s per JAX device, by compute dtype, matched
# against `device.device_kind` in order (first pattern found wins). float32 products
# on NVIDIA GPUs run as TF32 on the tensor cores by default (XLA's DEFAULT precision),
# so their TF32 peak is the one that applies. TPUs publish no float32 peak. Sources:
# Google Cloud TPU system architecture pages; NVIDIA A100, H100, H200, L4, L40S data
# sheets (SXM parts unless named).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("TPU v6 lite", {"bfloat16": 918.0}),  # v6e (Trillium), per chip
    ("TPU v5 lite", {"bfloat16": 197.0}),  # v5e, per chip
    ("TPU v5p", {"bfloat16": 459.0}),
    ("TPU v5", {"bfloat16": 459.0}),  # v5p reports "TPU v5"
    ("TPU v4", {"bfloat16": 275.0}),  # per chip (one JAX device: megacore)
    ("TPU v3", {"bfloat16": 61.5}),  # per core (two JAX devices a chip)
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100", {"bfloat16": 989.4, "float32": 494.7}),
    ("H200", {"bfloat16": 989.4, "float32": 494.7}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("L40S", {"bfloat16": 362.0, "float32": 183.0}),
    ("L4", {"bfloat16": 121.0, "float32": 60.0}),
)


def published_peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The table's dense peak for a device kind and compute dtype, or None if unknown."""
    for pattern, peaks in PEAK_TFLOPS:
        if pattern in device_kind:
            return peaks.get(dtype)
    return None


def median_call_seconds(fn, args: tuple, repeats: int) -> float:
    """Median seconds of `repeats` calls fn(*args), each to a device sync, after one call
    that compiles (kept out of the timing)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def alternated_medians(fns: dict, args: tuple, rounds: int, repeats: int) -> dict[str, float]:
    """{name: median over rounds of each round's `median_call_seconds`} of peers timed in
    rounds whose order alternates (a shared, noisy machine drifts within a round)."""
    medians: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            medians[name].append(median_call_seconds(fns[name], args, repeats))
    return {name: statistics.median(values) for name, values in medians.items()}


def measure_peak_gflops(dtype, size: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of a size x size matrix product on one device."""
    f = jax.jit(lambda x: x @ x)
    return 2 * size**3 / median_call_seconds(f, (jnp.ones((size, size), dtype),), repeats) / 1e9


def synthetic_batch(rng: np.random.Generator, batch: int, config, vocab_size: int, num_genres: int) -> dict:
    """Random notes in the layout of `jaxmusic.batching` (with each decoder step's lookback
    for a model with one: each row read as a piece)."""
    first = codec_lib.NUM_SPECIAL + num_genres
    te, td = config.encoder_len, config.decoder_len
    windows = rng.integers(first, vocab_size, (batch, te + td)).astype(np.int32)  # notes only: every weight 1
    extra = {}
    spec = lookback.Spec.of(config, first)
    if spec is not None:
        notes, buckets = lookback.prefix(
            windows.reshape(-1), np.arange(batch) * (te + td), spec.window, first
        )
        at = np.s_[:, te - 1 : -1]  # the lookback of each decoder input
        extra = {"lookback": notes.reshape(batch, -1)[at], "lookback_bucket": buckets.reshape(batch, -1)[at]}
    return batching.from_windows(windows, rng.integers(0, num_genres, batch).astype(np.int32), te, **extra)


def bench_train(
    config, *, vocab_size: int, num_genres: int, steps: int, burn_in: int = 3
) -> tuple[dict, inference.Generator]:
    """The train step's times, FLOPs and memory on synthetic batches: (figures, the model
    with its parameters after the timed steps, as an `inference.Generator` of synthetic ids)."""
    config = run_config.complete(config)
    mesh = parallel.make_mesh()
    batching.layout(config.batch_size, devices=mesh.devices.size, processes=jax.process_count())
    model = models.from_config(config, vocab_size, num_genres)
    tx, _ = steps_lib.make_optimizer(config)
    state = jax.device_put(
        steps_lib.init_state(model, tx, config, jax.random.key(0)), parallel.replicated(mesh)
    )
    rng = np.random.default_rng(0)
    batches = [
        parallel.global_batch(synthetic_batch(rng, config.batch_size, config, vocab_size, num_genres), mesh)
        for _ in range(4)
    ]
    # Compiled ahead of time: the same program the loop runs, and its memory per device.
    conditioner = conditioning.Conditioner.from_config(config, None)  # synthetic ids: no key to tell
    step = steps_lib.make_train_step(model, tx, mesh, jax.random.key(1), conditioner)
    step = step.lower(state, batches[0]).compile()
    memory = step.memory_analysis()
    for i in range(burn_in):  # compiles, then warms caches
        state, metrics = step(state, batches[i % 4])
        jax.block_until_ready(metrics)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, metrics = step(state, batches[i % 4])
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    flops = train_flops(config, vocab_size, config.batch_size)
    return (
        {
            "steps_per_second": 1 / median,
            "notes_per_second": config.batch_size * config.decoder_len / median,
            "step_seconds_median": median,
            "step_seconds_min": min(times),
            "step_seconds_max": max(times),
            "step_seconds_iqr": float(np.subtract(*np.percentile(times, [75, 25]))),
            "flops_per_step": flops,
            "gflops_per_second": flops / median / 1e9,
            "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
            "memory_per_device_bytes": _memory_bytes(memory),
        },
        inference.Generator(config, state.params, vocab_size=vocab_size, num_genres=num_genres),
    )


def _memory_bytes(m) -> dict[str, int] | None:
    """Arguments, outputs, temporaries and generated code of a compiled program, per device
    (None where the backend does not report them). Donated arguments are counted once."""
    if m is None:
        return None
    out = {
        k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "temp", "generated_code")
    }
    alias = int(getattr(m, "alias_size_in_bytes", 0))
    out["total"] = out["argument"] + out["output"] - alias + out["temp"] + out["generated_code"]
    return out


def bench_sampler(
    generator: inference.Generator,
    *,
    batch: int,
    notes: int = 256,
    repeats: int = 3,
    loop_notes: int = 64,
    phrase_len: int | None = None,
    carry_state: bool = False,
) -> dict:
    """The jitted sampler's notes/s and compile time at a batch size, and the notes/s
    of a step-by-step Python loop over the same model (a jitted decode_step per note).

    phrase_len: notes written per encoding (default: the config's decoder_len, as
    `jaxmusic.sample` does); `notes` gives one encoding, then decoder steps only.
    carry_state: the decoder's states go on across phrases (one encoding a call).
    """
    td = phrase_len or generator.config.decoder_len
    num_notes = max(1, notes // td) * td
    # The model's own distribution (temperature 1, no filtering), as the peers draw.
    settings = sampler.Settings(temperature=1.0, top_p=1.0, carry_state=carry_state)

    def run(seed):
        return generator.generate([[]] * batch, np.zeros(batch, np.int32), num_notes=num_notes,
                                  settings=settings, seed=seed, phrase_len=td)  # fmt: skip

    t = time.perf_counter()
    run(0)
    first_call = time.perf_counter() - t
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        out = run(r + 1)
        times.append(time.perf_counter() - t)
    steady = statistics.median(times)
    return {
        "notes_per_second": batch * out.shape[1] / steady,
        "compile_seconds": max(first_call - steady, 0.0),
        "python_loop_notes_per_second": _python_loop(generator, batch, loop_notes),
    }


def _python_loop(generator: inference.Generator, batch: int, notes: int) -> float:
    """Notes/s of a Python loop of jitted decoder steps (one call a note), the peer of
    the compiled sampler."""
    encode, step, complete, _ = sampler.model_functions(generator.model, generator.conditioner)
    banned = sampler.banned_ids(generator.model.vocab_size, generator.first_note_id)
    encode_jit = jax.jit(encode)
    spec, counts_spec = generator.lookback, models.recent_spec(generator.model)

    @jax.jit
    def one_note(params, carries, token, cond, key, memory):
        tracker, counter = memory
        args = () if spec is None else (tracker.lookback(spec),)
        extra = {} if counts_spec is None else {"recent_counts": counter.counts}
        carries, logits = step(params, carries, token, cond, *args, **extra)
        u = sampler.uniforms(key, (logits.shape[0], 1))
        nxt = sampler.next_token(logits, u, temperature=1.0, top_k=0, top_p=1.0, greedy=False, banned=banned)
        return carries, nxt, (None if spec is None else tracker.read(nxt, spec),
                              None if counts_spec is None else counter.read(nxt, counts_spec))  # fmt: skip

    window = jnp.asarray([sampler.primer_window([], generator.config.encoder_len)] * batch, jnp.int32)
    cond = jax.jit(complete)(window, conditioning.Condition(jnp.zeros(batch, jnp.int32)))
    memory0 = (None if spec is None else jax.jit(lookback.Tracker.of, static_argnums=1)(window, spec),
               None if counts_spec is None else recent.Counter.of(window, counts_spec))  # fmt: skip

    def loop():
        carries, token, memory = encode_jit(generator.params, window, cond), window[:, -1], memory0
        for i in range(notes):
            carries, token, memory = one_note(
                generator.params, carries, token, cond, jax.random.key(i), memory
            )
        return token.block_until_ready()

    loop()  # compile
    t = time.perf_counter()
    loop()
    return batch * notes / (time.perf_counter() - t)


def decode_floor(config: ml_collections.ConfigDict, *, vocab_size: int, repeats: int = 5,
                 notes: int = 200) -> dict:  # fmt: skip
    """The fastest a batch-1 sampler could write notes: one decoder step's matrix
    products alone, chained as they depend on each other, in a jitted loop.

    At batch 1 every note reads every decoder weight once (per layer [H, 4H] recurrent
    and, above the first layer, [H, 4H] input products; the [H, V] output layer), so
    this is a floor set by how fast the device streams those weights (GB/s reported).
    The encoder's re-reading of each phrase and the drawing of tokens come on top.
    """
    m, dtype = config.model, models.DTYPES[config.model.dtype]
    h = m.hidden
    shapes = [(h, 4 * h)] * (2 * m.num_layers - 1) + [(h, vocab_size)]
    keys = jax.random.split(jax.random.key(0), len(shapes))
    weights = [jax.random.normal(k, s, dtype) * 0.01 for k, s in zip(keys, shapes, strict=True)]

    def note(_, x):
        for w in weights:  # each product feeds the next: [1, H] -> [1, cols] -> [1, H]
            y = x @ w  # every output is used, so XLA cannot drop columns of w
            x = jnp.tanh(y[:, :h] + y.mean(-1, keepdims=True))
        return x

    run = jax.jit(lambda x: jax.lax.fori_loop(0, notes, note, x))
    x0 = jnp.ones((1, h), dtype)
    run(x0).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(x0).block_until_ready()
        times.append((time.perf_counter() - t) / notes)
    seconds = statistics.median(times)
    nbytes = sum(a * b for a, b in shapes) * jnp.dtype(dtype).itemsize
    return {"notes_per_second": 1 / seconds, "bytes_per_note": nbytes,
            "gb_per_second": nbytes / seconds / 1e9}  # fmt: skip


def run(config: ml_collections.ConfigDict, *, steps: int, vocab_size: int, num_genres: int,
        sampler_batches: tuple[int, ...] = (1, 64), sampler_rounds: int = 3) -> dict:  # fmt: skip
    """Every measurement, as the JSON `--json` writes; sampler_rounds: alternated rounds
    of the carried sampler against the Python loop and the floor."""
    config = run_config.complete(config)
    config.batch_size, config.batch_size_per_device = parallel.global_batch_size(config), 0
    dtype = models.DTYPES[config.model.dtype]
    device = jax.devices()[0]
    size = 2048 if device.platform == "cpu" else 8192
    peak = measure_peak_gflops(dtype, size=size) * jax.device_count()
    result, generator = bench_train(config, vocab_size=vocab_size, num_genres=num_genres, steps=steps)
    result["peak_gflops_per_second"] = peak
    result["peak_matmul_size"] = size
    result["mfu"] = result["gflops_per_second"] / peak
    published = published_peak_tflops(device.device_kind, config.model.dtype)
    published_gflops = published * 1e3 * jax.device_count() if published else None
    result["published_peak_gflops_per_second"] = published_gflops
    result["mfu_published"] = result["gflops_per_second"] / published_gflops if published_gflops else None
    floors = []
    for b in sampler_batches:
        r = bench_sampler(generator, batch=b)
        result[f"sampler_notes_per_second_batch{b}"] = r["notes_per_second"]
        result[f"sampler_compile_seconds_batch{b}"] = r["compile_seconds"]
        result[f"sampler_python_loop_notes_per_second_batch{b}"] = r["python_loop_notes_per_second"]
        # The carried sampler against its peers, alternated round by round so that a
        # shared machine's swings fall on both: the Python loop of decode_step (timed
        # in the same call) and, at batch 1, the floor. Medians of the rounds' ratios.
        carried, over_loop, over_floor = [], [], []
        for _ in range(sampler_rounds):
            c = bench_sampler(generator, batch=b, carry_state=True)
            carried.append(c["notes_per_second"])
            over_loop.append(c["notes_per_second"] / c["python_loop_notes_per_second"])
            if b == 1:
                floors.append(decode_floor(config, vocab_size=vocab_size))
                over_floor.append(c["notes_per_second"] / floors[-1]["notes_per_second"])
        result[f"sampler_carried_notes_per_second_batch{b}"] = statistics.median(carried)
        result[f"sampler_carried_over_loop_batch{b}"] = statistics.median(over_loop)
        result[f"sampler_carried_over_loop_rounds_batch{b}"] = over_loop  # the spread behind the median
        if over_floor:
            result[f"sampler_carried_over_floor_batch{b}"] = statistics.median(over_floor)
            result[f"sampler_carried_over_floor_rounds_batch{b}"] = over_floor
    floors = floors or [decode_floor(config, vocab_size=vocab_size)]
    floor = sorted(floors, key=lambda f: f["notes_per_second"])[len(floors) // 2]  # the median round
    result["decode_floor_notes_per_second"] = floor["notes_per_second"]
    result["decode_floor_gb_per_second"] = floor["gb_per_second"]
    result["decode_weight_bytes_per_note"] = floor["bytes_per_note"]
    result.update(
        device_kind=device.device_kind, platform=device.platform, device_count=jax.device_count(),
        batch_size=config.batch_size, encoder_len=config.encoder_len, decoder_len=config.decoder_len,
        hidden=config.model.hidden, num_layers=config.model.num_layers, vocab_size=vocab_size,
        dtype=config.model.dtype, embed_dim=config.model.embed_dim, steps=steps,
    )  # fmt: skip
    return result
