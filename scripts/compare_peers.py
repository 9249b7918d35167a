"""The seed's model trained in PyTorch, Keras, plain Flax and jaxmusic, side by side.

  .venv/bin/pip install -e '.[peers]'
  .venv/bin/python scripts/compare_peers.py --hidden 256 [--batch 32] [--steps 10] [--rounds 3] \\
      [--vocab 2048] [--dtype float32|bfloat16] [--frameworks jaxmusic,pytorch,...] [--json peers.json] \\
      [--host_malloc jaxmusic|all|default]

Every framework trains the same model on the same shapes: a token embedding of
size H, a 2-layer LSTM encoder, a 2-layer LSTM decoder started from the encoder's
final states, a dense layer to the vocabulary, softmax cross-entropy, Adam with
global-norm clipping, float32 (or `--dtype bfloat16` products with float32
parameters: jaxmusic's dtype setting, PyTorch's autocast). On a machine with a GPU,
jaxmusic and plain Flax run on it (with jax[cuda12]) and PyTorch's nn.LSTM on cuDNN
(with a CUDA build of torch); each run reports its device. jaxmusic runs twice:
`jaxmusic`, its default form, where the one-hot input goes straight into the first
layer's gates as a row gather (the seed's model, fewer FLOPs), and `jaxmusic_embed`,
with that same embedding (`embed_dim=H`, identical FLOPs). Each (round, framework)
is a process of its own, rounds interleave the frameworks so machine noise falls on
all alike, and the table gives medians, ratios to jaxmusic_embed, and each framework's
speed against PyTorch as the median of the rounds' own ratios (a round's frameworks run
back to back, so its ratio is spared the machine's slower drifts). jaxmusic's runs
keep host memory as its CLIs do (`jaxmusic.host_memory`: on a CPU, XLA's temporaries
stay mapped between steps); `--host_malloc all` gives every framework the same
(PyTorch and Keras glibc's part), `default` none.

`jaxmusic_wavefront` and `jaxmusic_layers` are `jaxmusic` with its stacks' order
forced (`model.stack_order`; `jaxmusic` itself runs "auto", the platform's choice).

Sampling (notes/s at batch 1 and 64, 256 notes from one primer) compares jaxmusic's
jitted sampler with a step-by-step PyTorch loop (no_grad, one nn.LSTM step, softmax
and torch.multinomial per note; the best of 3 runs) in two modes: `phrases`, what
`jaxmusic.sample` does (the encoder re-reads the last `seq` notes every `seq` notes), and
`decode_only` (one encoding, then decoder steps only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FRAMEWORKS = (
    "jaxmusic",
    "jaxmusic_embed",
    "jaxmusic_wavefront",
    "jaxmusic_layers",
    "flax_nn_rnn",
    "pytorch",
    "keras",
)
SAMPLED_NOTES = 256
SAMPLING_MODES = ("phrases", "decode_only")  # re-encode every --seq notes, or encode once


def _phrase_len(mode: str, args) -> int:
    """Notes written per encoding in a sampling mode."""
    return args.seq if mode == "phrases" else SAMPLED_NOTES


def _timed(step, steps: int, burn_in: int = 2) -> float:
    for _ in range(burn_in):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _data(args):
    import numpy as np

    rng = np.random.default_rng(0)
    b, t, v = args.batch, args.seq, args.vocab
    return rng.integers(8, v, (b, t)).astype("int32"), rng.integers(8, v, (b, t)).astype("int32"), \
        rng.integers(8, v, (b, t)).astype("int32")  # fmt: skip


# ---------------------------------------------------------------- workers ----


def run_jaxmusic(args, onehot: bool, order: str = "auto") -> dict:
    import jax

    from configs import default
    from jaxmusic import benchmarks

    c = default.get_config()
    c.batch_size, c.encoder_len, c.decoder_len = args.batch, args.seq, args.seq
    c.model.hidden, c.model.dropout, c.model.embed_dim = args.hidden, 0.0, 0 if onehot else args.hidden
    c.model.decoder_dropout = 0.0  # the peers have no dropout
    c.model.lookback = False  # nor a lookback (its cost: docs/performance.md)
    c.model.dtype, c.model.stack_order = args.dtype, order
    r, generator = benchmarks.bench_train(c, vocab_size=args.vocab, num_genres=1, steps=args.steps)
    out = {"step_seconds": r["step_seconds_median"], "flops_per_step": r["flops_per_step"],
           "device": jax.devices()[0].device_kind}  # fmt: skip
    if onehot and order == "auto":  # sampling runs no whole stack: the same program either way
        for mode in SAMPLING_MODES:
            for b in (1, 64):
                out[f"sampler_{mode}_notes_per_second_batch{b}"] = benchmarks.bench_sampler(
                    generator, batch=b, notes=SAMPLED_NOTES, phrase_len=_phrase_len(mode, args),
                )["notes_per_second"]  # fmt: skip
    return out


def run_flax(args) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    h, v = args.hidden, args.vocab

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, enc, dec):
            x = nn.Embed(v, h)(enc)
            carries = []
            for _ in range(2):
                carry, x = nn.RNN(nn.OptimizedLSTMCell(h), return_carry=True)(x)
                carries.append(carry)
            y = nn.Embed(v, h)(dec)
            for carry in carries:
                y = nn.RNN(nn.OptimizedLSTMCell(h))(y, initial_carry=carry)
            return nn.Dense(v)(y)

    enc, dec, tgt = (jnp.asarray(a) for a in _data(args))
    model = Plain()
    params = model.init(jax.random.key(0), enc, dec)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, enc, dec), tgt).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    state = {"p": params, "o": opt}

    def one():
        state["p"], state["o"], value = step(state["p"], state["o"])
        value.block_until_ready()

    return {"step_seconds": _timed(one, args.steps)}


def run_pytorch(args) -> dict:
    import torch
    from torch import nn

    # On a GPU nn.LSTM runs cuDNN's fused kernels; bfloat16 is autocast (float32
    # parameters and optimizer, bfloat16 products), as jaxmusic's dtype setting.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    h, v = args.hidden, args.vocab

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_emb, self.dec_emb = nn.Embedding(v, h), nn.Embedding(v, h)
            self.enc = nn.LSTM(h, h, num_layers=2, batch_first=True)
            self.dec = nn.LSTM(h, h, num_layers=2, batch_first=True)
            self.head = nn.Linear(h, v)

        def forward(self, enc, dec):
            _, state = self.enc(self.enc_emb(enc))
            out, _ = self.dec(self.dec_emb(dec), state)
            return self.head(out)

    enc, dec, tgt = (torch.from_numpy(a).long().to(device) for a in _data(args))
    model = Seq2Seq().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def one():
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = model(enc, dec).reshape(-1, v)
        loss = loss_fn(logits.float(), tgt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out = {"step_seconds": _timed(one, args.steps), "device": name}

    @torch.no_grad()
    def sample_loop(batch: int, notes: int, phrase: int) -> float:
        window = enc[:1].expand(batch, -1)
        sync()
        t = time.perf_counter()
        written: list = []
        for i in range(notes):
            if i % phrase == 0:  # (re-)encode the last seq notes, start from the last one
                window = torch.cat([window, *written], 1)[:, -args.seq :]
                written = []
                with autocast:
                    _, state = model.enc(model.enc_emb(window))
                token = window[:, -1:]
            with autocast:
                y, state = model.dec(model.dec_emb(token), state)
                logits = model.head(y[:, -1])
            token = torch.multinomial(torch.softmax(logits.float(), -1), 1)
            written.append(token)
        sync()
        return batch * notes / (time.perf_counter() - t)

    sample_loop(1, 8, 8)
    for mode in SAMPLING_MODES:
        for b in (1, 64):
            # The best of 3: PyTorch's batch-1 loop varies by up to 2x between runs here.
            key = f"sampler_{mode}_notes_per_second_batch{b}"
            out[key] = max(sample_loop(b, SAMPLED_NOTES, _phrase_len(mode, args)) for _ in range(3))
    return out


def run_keras(args) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    h, v = args.hidden, args.vocab
    enc_in, dec_in = keras.Input((args.seq,), dtype="int32"), keras.Input((args.seq,), dtype="int32")
    x = keras.layers.Embedding(v, h)(enc_in)
    x, h1, c1 = keras.layers.LSTM(h, return_sequences=True, return_state=True)(x)
    _, h2, c2 = keras.layers.LSTM(h, return_state=True)(x)
    y = keras.layers.Embedding(v, h)(dec_in)
    y = keras.layers.LSTM(h, return_sequences=True)(y, initial_state=[h1, c1])
    y = keras.layers.LSTM(h, return_sequences=True)(y, initial_state=[h2, c2])
    model = keras.Model([enc_in, dec_in], keras.layers.Dense(v)(y))
    model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    enc, dec, tgt = _data(args)
    return {"step_seconds": _timed(lambda: model.train_on_batch([enc, dec], tgt), args.steps)}


# ---------------------------------------------------------------- driver -----


def worker(args) -> None:
    name = args.worker
    from jaxmusic import host_memory

    # Before any framework starts: what jaxmusic's CLIs do (for Flax too under "all"), or
    # its glibc part alone for PyTorch and Keras, which allocate in the calling thread.
    if args.host_malloc == "all" or (args.host_malloc == "jaxmusic" and name.startswith("jaxmusic")):
        if name.startswith(("jaxmusic", "flax")):
            host_memory.keep_freed_memory()
        else:
            host_memory.glibc_keep_freed()
    result = {
        "jaxmusic": lambda: run_jaxmusic(args, onehot=True),
        "jaxmusic_embed": lambda: run_jaxmusic(args, onehot=False),
        "jaxmusic_wavefront": lambda: run_jaxmusic(args, onehot=True, order="wavefront"),
        "jaxmusic_layers": lambda: run_jaxmusic(args, onehot=True, order="layers"),
        "flax_nn_rnn": lambda: run_flax(args),
        "pytorch": lambda: run_pytorch(args),
        "keras": lambda: run_keras(args),
    }[name]()
    print("RESULT " + json.dumps(result))


def _rounds(args, names: list[str]) -> tuple[dict[str, list[dict]], list[dict[str, float]]]:
    """Every framework's run in every round (alternating their order), each in a fresh
    process: (each framework's results, each round's step seconds by framework)."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    per_round: list[dict[str, float]] = []  # step seconds of each framework in each round
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for r in range(args.rounds):
        per_round.append({})
        for name in names if r % 2 == 0 else names[::-1]:
            cmd = [sys.executable, __file__, "--worker", name] + [
                f"--{k}={getattr(args, k)}"
                for k in ("hidden", "batch", "seq", "vocab", "steps", "dtype", "host_malloc")
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            runs[name].append(json.loads(line[0][7:]))
            per_round[-1][name] = runs[name][-1]["step_seconds"]
            print(
                f"round {r + 1}: {name} {runs[name][-1]['step_seconds'] * 1e3:.0f} ms/step", file=sys.stderr
            )
    return runs, per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64, help="encoder and decoder notes each")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="jaxmusic and PyTorch computation dtype (bfloat16: GPUs, TPUs)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--host_malloc", default="jaxmusic", choices=("jaxmusic", "all", "default"),
                        help="glibc malloc settings of jaxmusic.host_memory: in jaxmusic's runs only (as "
                             "its CLIs), in every framework's, or in none")  # fmt: skip
    parser.add_argument("--json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    names = args.frameworks.split(",")
    if unknown := set(names) - set(FRAMEWORKS):
        parser.error(f"unknown --frameworks {sorted(unknown)}; choose from {', '.join(FRAMEWORKS)}")
    if args.dtype != "float32" and {"flax_nn_rnn", "keras"} & set(names):
        parser.error("--dtype bfloat16 runs jaxmusic, jaxmusic_embed and pytorch only")
    runs, per_round = _rounds(args, names)
    medians = {n: statistics.median(x["step_seconds"] for x in v) for n, v in runs.items() if v}
    ref = medians.get("jaxmusic_embed")  # the same model and FLOPs as the peers
    shapes = f"hidden {args.hidden}, batch {args.batch}, {args.seq}+{args.seq} notes, vocabulary {args.vocab}"
    devices = sorted({f"{n}: {x['device']}" for n, v in runs.items() for x in v if "device" in x})
    shapes += f" ({'; '.join(devices)})" if devices else ""
    print(f"\n{shapes}, {args.dtype}, median of {args.rounds} rounds x {args.steps} steps, "
          f"--host_malloc {args.host_malloc}\n")  # fmt: skip
    # Each round's frameworks ran back to back, so a round's ratio cancels the machine's
    # slower drifts that the medians of separate rounds keep.
    paired = {}
    for n in medians:
        ratios = [r["pytorch"] / r[n] for r in per_round if n in r and "pytorch" in r]
        if ratios:
            paired[n] = statistics.median(ratios)
    print("| framework | step (ms) | / jaxmusic_embed | speed x PyTorch, median of the rounds' ratios |")
    print("|---|---|---|---|")
    for n, m in medians.items():
        rel = f"{m / ref:.2f}x" if ref else ""
        print(f"| {n} | {m * 1e3:.0f} | {rel} | " + (f"{paired[n]:.2f}x |" if n in paired else "|"))
    sampling = {}
    for mode in SAMPLING_MODES:
        for n in ("jaxmusic", "pytorch"):
            for b in (1, 64):
                key = f"sampler_{mode}_notes_per_second_batch{b}"
                vals = [x[key] for x in runs.get(n, []) if key in x]
                if vals:
                    sampling[f"{n}_{mode}_batch{b}"] = statistics.median(vals)
    if sampling:
        print("\n| sampling notes/s | mode | batch 1 | batch 64 |\n|---|---|---|---|")
        for mode in SAMPLING_MODES:
            for n in ("jaxmusic", "pytorch"):
                if f"{n}_{mode}_batch1" in sampling:
                    row = [sampling[f"{n}_{mode}_batch{b}"] for b in (1, 64)]
                    print(f"| {n} | {mode} | {row[0]:.0f} | {row[1]:.0f} |")
            if all(f"{n}_{mode}_batch1" in sampling for n in ("jaxmusic", "pytorch")):
                ratio = [sampling[f"jaxmusic_{mode}_batch{b}"] / sampling[f"pytorch_{mode}_batch{b}"]
                         for b in (1, 64)]  # fmt: skip
                print(f"| jaxmusic / pytorch | {mode} | {ratio[0]:.1f}x | {ratio[1]:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            report = {"settings": vars(args), "step_seconds_median": medians,
                      "speed_x_pytorch_paired_median": paired, "step_seconds_per_round": per_round,
                      "sampling_notes_per_second": sampling, "runs": runs}  # fmt: skip
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
