"""What a TPU or a GPU would run, read from this CPU: the train step, the eval step
and the sampler of the paper config, lowered for `tpu` and `cuda` on 1 device and on a
mesh of 8 (tests/lowered_programs.py), held to the mixed-precision policy and to the
shape of a data-parallel step.

What each assertion protects (README, "Accelerator programs"):
- no f64: an accidental float64 is emulated slowly on TPUs and most GPUs;
- every dot_general takes bfloat16 operands and returns float32: products run on the
  matrix units, and no result is rounded to bfloat16 before it is used;
- no loop carries a bfloat16 state: the LSTM's c and h stay float32 across time;
- the gradients are all-reduced once per step, in float32, over exactly the
  parameters' elements (plus the few scalar metrics);
- the train state is donated (updated in place, no second copy in memory);
- no host callback: nothing leaves the device inside a step;
- a sampler of a fixed mode holds no runtime conditional (a per-note branch on a
  traced flag is a device-to-host round trip per note on a GPU).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import helpers
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("tpu", "cuda")
PROGRAMS = ("train_step", "carried_train_step", "eval_step", "sampler_nucleus", "sampler_top_k",
            "sampler_greedy", "lookback_train_step", "lookback_sampler")  # fmt: skip


@pytest.fixture(scope="module", params=[1, 8], ids=["1device", "8devices"])
def lowered(request):
    def make(out):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "lowered_programs.py"), "--devices", str(request.param),
             "--out", str(out)],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]

    out = helpers.made_once(f"lowered{request.param}", make)
    meta = json.loads((out / "meta.json").read_text())
    texts = {(name, p): (out / f"{name}.{p}.mlir").read_text() for name in PROGRAMS for p in PLATFORMS}
    return meta, texts


def _elements(tensor_type: str) -> tuple[int, str]:
    """(element count, element type) of 'tensor<16x1024xf32>'."""
    dims = tensor_type[len("tensor<") : -1].split("x")
    n = 1
    for d in dims[:-1]:
        n *= int(d)
    return n, dims[-1]


def dot_signatures(text: str) -> list[tuple[list[str], str]]:
    """(operand element types, result element type) of every dot_general."""
    out = []
    for line in text.splitlines():
        if "stablehlo.dot_general" in line:
            m = re.search(r": \((.*)\) -> (tensor<[^>]*>)\s*$", line)
            operands = re.findall(r"tensor<[^>]*>", m.group(1))
            out.append(([_elements(t)[1] for t in operands], _elements(m.group(2))[1]))
    return out


def loop_carries(text: str) -> list[list[str]]:
    """The carried types of every stablehlo.while."""
    loops = re.findall(r"stablehlo\.while\(.*\) : (.*)$", text, re.M)
    return [re.findall(r"tensor<[^>]*>", types) for types in loops]


def loop_trip_counts(text: str) -> list[int]:
    """The trip count of every stablehlo.while whose condition is `i < constant` (a
    scan or fori_loop of known length), in program order."""
    pattern = (r"stablehlo\.while\(.*?cond \{\s*(%[\w#]+) = stablehlo\.constant dense<(\d+)> : "
               r"tensor<i32>\s*%[\w#]+ = stablehlo\.compare\s+LT, %[\w#]+, \1")  # fmt: skip
    return [int(n) for _, n in re.findall(pattern, text, re.S)]


def _functions(text: str) -> dict[str, str]:
    """Each func.func's body by name (the module's functions follow one another)."""
    parts = re.split(r"^\s*func\.func (?:public|private) @([\w.$-]+)\(", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def all_reduces(text: str) -> list[tuple[int, str]]:
    """(elements, element type) of every all_reduce run by @main: one in a private
    function counts once per call of it."""
    functions = _functions(text) or {"main": text}

    def run_by(name: str) -> list[tuple[int, str]]:
        body = functions[name]
        found = re.findall(r'"stablehlo\.all_reduce"\(.*?\}\) : \(([^)]*)\) -> ', body, re.S)
        out = [_elements(t) for types in found for t in re.findall(r"tensor<[^>]*>", types)]
        for callee in re.findall(r"\bcall @([\w.$-]+)\(", body):
            out += run_by(callee)
        return out

    return run_by("main")


def runtime_conditionals(text: str) -> list[str]:
    """Every stablehlo.case/if whose branch index is not known when compiled.

    `lax.platform_dependent` (the CPU-only column layout) lowers as a case on a
    constant, and its platform index as a case of constants: XLA folds both. Any
    other index is computed at run time."""
    constants = set(re.findall(r"^\s*(%[\w#]+) = stablehlo\.constant", text, re.M))
    bad = []
    pattern = r'^\s*(%[\w]+)(?::\d+)? = "stablehlo\.(?:case|if)"\((%[\w#]+)\)(.*?)\}\) :'
    for m in re.finditer(pattern, text, re.S | re.M):
        result, index, body = m.groups()
        if index not in constants:
            bad.append(m.group(0)[:200])
            continue
        returns = re.findall(r"stablehlo\.return (%[\w#]+) :", body)
        constant = [re.search(rf"^\s*{re.escape(r)} = stablehlo\.constant", body, re.M) for r in returns]
        if returns and all(constant):
            constants.add(result)  # a platform index: a case of constants on a constant
    return bad


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_products_take_bfloat16_and_return_float32(lowered, platform, name):
    _, texts = lowered
    text = texts[name, platform]
    assert "f64" not in text
    signatures = dot_signatures(text)
    # Every layer's products are there: at least one per layer of each stack (the
    # wavefront's upper layers take [x, h] in one product) and the head's.
    assert len(signatures) >= 5
    for operands, result in signatures:
        assert operands == ["bf16", "bf16"] and result == "f32", (operands, result)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_lstm_state_is_float32_in_every_loop(lowered, platform, name):
    meta, texts = lowered
    b, h = meta["per_device_batch"] if name.endswith("step") else 8, meta["hidden"]
    state_shapes = {f"tensor<{b}x{h}x{{}}>", f"tensor<{h}x{b}x{{}}>"}
    carries = loop_carries(texts[name, platform])
    assert carries, "no loop: the recurrence is not a scan"
    flat = [t for c in carries for t in c]
    assert not [t for t in flat if t in {s.format("bf16") for s in state_shapes}]
    assert [t for t in flat if t in {s.format("f32") for s in state_shapes}]  # c and h are carried


@pytest.mark.parametrize("platform", PLATFORMS)
def test_gradients_all_reduced_once_in_float32(lowered, platform):
    meta, texts = lowered
    # A carried state is never all-reduced; a lookback model's extra tables are. Its output
    # parts' columns are summed into the head's kernel from replicated weights, so the
    # kernel's gradient is reduced once and then scattered to them: no reduce of their own.
    # The copy's two kernels are reduced as the one kernel of their product.
    programs = (("train_step", "", [], []), ("carried_train_step", "", [], []),
                ("lookback_train_step", "lookback_", meta["lookback_folded_sizes"],
                 meta["lookback_joint_sizes"]))  # fmt: skip
    for name, prefix, folded, joint in programs:
        reduces = all_reduces(texts[name, platform])
        if meta["devices"] == 1:
            return  # one device: nothing to reduce (the 8-device program is the check)
        assert {dtype for _, dtype in reduces} == {"f32"}
        # Every parameter's gradient once (each leaf its own all-reduce, which XLA's
        # all-reduce combiner merges), plus the scalar sums of loss, accuracy and weight.
        assert sum(n for n, _ in reduces) == meta[f"{prefix}param_count"] - sum(folded) + 3
        sizes = list(meta[f"{prefix}param_sizes"])
        for n in folded:
            sizes.remove(n)
        for group in joint:
            sizes = [*sizes, sum(group)]
            for n in group:
                sizes.remove(n)
        sizes = sorted(sizes)
        assert sorted(n for n, _ in reduces if n > 1) == sizes


@pytest.mark.parametrize("platform", PLATFORMS)
def test_train_state_is_donated_and_nothing_calls_the_host(lowered, platform):
    meta, texts = lowered
    for name, leaves in (("train_step", meta["state_leaves"]), ("carried_train_step",
                         meta["state_leaves"] + meta["carry_leaves"]),
                         ("lookback_train_step", meta["lookback_state_leaves"])):  # fmt: skip
        main = re.search(r"func\.func public @main\((.*?)\) -> ", texts[name, platform], re.S).group(1)
        args = re.split(r", (?=%arg\d+:)", main)
        donated = [a for a in args if "jax.buffer_donor = true" in a or "tf.aliasing_output" in a]
        assert len(donated) == leaves  # the state (and its carry), not the batch
    host = r"custom_call @\w*callback|stablehlo\.(send|recv|outfeed)"
    for name in PROGRAMS:
        assert not re.search(host, texts[name, platform])


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_no_runtime_conditional(lowered, platform, name):
    assert runtime_conditionals(lowered[1][name, platform]) == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_stack_is_one_wavefront_scan(lowered, platform):
    """On a TPU or GPU each stack runs as one wavefront scan forward and one backward:
    Te + 1 and Td + 1 steps for two layers, not one scan of Te or Td steps per layer."""
    meta, texts = lowered
    te, td = meta["encoder_len"], meta["decoder_len"]
    assert sorted(loop_trip_counts(texts["train_step", platform])) == sorted([te + 1, td + 1] * 2)
    assert sorted(loop_trip_counts(texts["eval_step", platform])) == sorted([te + 1, td + 1])


def _default_step_loops(platform: str, order: str) -> list[int]:
    """Trip counts of the default config's train step lowered for a platform."""
    import jax
    import numpy as np

    from configs import default
    from jaxmusic import batching, conditioning, models, parallel, steps

    config = default.get_config()
    config.model.hidden, config.model.stack_order = 32, order  # the schedule does not depend on H
    model = models.from_config(config, 40, 2)
    tx, _ = steps.make_optimizer(config)
    mesh = parallel.make_mesh()
    state = jax.eval_shape(lambda: steps.init_state(model, tx, config, jax.random.key(0)))
    batch = batching.abstract(config.batch_size, config.encoder_len, config.decoder_len, conditioned=True,
                             lookback=config.model.lookback)  # fmt: skip
    # The key and density of the piece so far come with the batch, as in a real run.
    weights = np.zeros((40, 14), np.float32)
    conditioner = conditioning.Conditioner(key=True, density=True, context="piece", weights=weights)
    step = steps.make_train_step(model, tx, mesh, jax.random.key(1), conditioner)
    return loop_trip_counts(step.trace(state, batch).lower(lowering_platforms=(platform,)).as_text())


@pytest.mark.parametrize(
    ("platform", "order", "stacked"),
    [("tpu", "auto", True), ("cuda", "auto", True), ("cpu", "auto", False), ("cpu", "wavefront", True),
     ("tpu", "layers", False)],
)  # fmt: skip
def test_sequential_steps_of_the_default_train_step(platform, order, stacked):
    """Sequential recurrent steps of a train step (forward and backward): 2 (Te + Td + 2)
    as wavefronts, 2 (2 Te + 2 Td) layer by layer; "auto" picks the wavefront on a TPU
    or GPU and the layers on a CPU (docs/performance.md)."""
    from configs import default

    te, td = default.get_config().encoder_len, default.get_config().decoder_len
    # Only the recurrences: on a CPU the dropout's threefry is a loop of 5 rounds too.
    loops = [n for n in _default_step_loops(platform, order) if n >= min(te, td)]
    if stacked:
        assert sum(loops) == 2 * (te + td + 2) and len(loops) == 4, loops
    else:
        assert sum(loops) == 2 * (2 * te + 2 * td) and len(loops) == 8, loops


def test_the_checks_catch_what_they_guard():
    """The parsers find a bfloat16 product result, a bfloat16 carry, a bfloat16
    all-reduce and a runtime branch in hand-written StableHLO."""
    text = """
    %c = stablehlo.constant dense<1> : tensor<i32>
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<16x1024xbf16>, tensor<1024x4096xbf16>) -> tensor<16x4096xbf16>
    %1:2 = stablehlo.while(%iterArg = %x, %iterArg_1 = %y) : tensor<16x1024xbf16>, tensor<i32>
    %2 = "stablehlo.all_reduce"(%g) ({
    ^bb0(%p: tensor<bf16>, %q: tensor<bf16>):
      stablehlo.return %p : tensor<bf16>
    }) : (tensor<1024x4096xbf16>) -> tensor<1024x4096xbf16>
    %3 = "stablehlo.case"(%flag) ({
      stablehlo.return %x : tensor<f32>
    }) : (tensor<i32>) -> tensor<f32>
    %4 = "stablehlo.case"(%c) ({
      stablehlo.return %x : tensor<f32>
    }) : (tensor<i32>) -> tensor<f32>
    %5:2 = stablehlo.while(%iterArg = %x, %iterArg_2 = %c) : tensor<16x1024xf32>, tensor<i32>
      cond {
        %c_9 = stablehlo.constant dense<65> : tensor<i32>
        %9 = stablehlo.compare  LT, %iterArg_2, %c_9,  SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
        stablehlo.return %9 : tensor<i1>
      } do {
    """  # noqa: E501
    assert dot_signatures(text) == [(["bf16", "bf16"], "bf16")]
    assert loop_carries(text)[0] == ["tensor<16x1024xbf16>", "tensor<i32>"]
    assert loop_trip_counts(text) == [65]
    assert all_reduces(text) == [(1024 * 4096, "bf16")]
    bad = runtime_conditionals(text)
    assert len(bad) == 1 and "%flag" in bad[0]
