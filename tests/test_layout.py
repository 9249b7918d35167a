"""The code's shape, as docs/layout.md states it: the import graph runs one way (no
cycle), no library module imports a CLI module, TensorFlow stays at the data edge, and
no function is over 80 lines or class over 200."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxmusic", "data_pipeline", "configs")
# The command-line modules (python -m ...) and what they share: nothing else imports them.
CLI_MODULES = {"jaxmusic.cli", "jaxmusic.train", "jaxmusic.sample", "jaxmusic.evaluate", "jaxmusic.bench",
               "jaxmusic.codec_report", "data_pipeline.build"}  # fmt: skip
# Where TensorFlow may be imported: the data edge (tf.data, TFDS) and TensorBoard's writer.
TENSORFLOW_MODULES = {"jaxmusic.input_pipeline", "jaxmusic.metric_writer", "data_pipeline.builder",
                      "data_pipeline.sources", "data_pipeline.dataset",
                      "data_pipeline.beam_build"}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (function bodies too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _third_party(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 40  # every module of the three packages was read


def test_no_library_module_imports_a_cli_module():
    graph = _graph()
    assert set(graph) >= CLI_MODULES
    offenders = {
        m: sorted(graph[m] & CLI_MODULES) for m in graph if m not in CLI_MODULES and graph[m] & CLI_MODULES
    }
    assert not offenders, offenders
    # CLI modules may share jaxmusic.cli, never each other.
    between = {m: sorted(graph[m] & (CLI_MODULES - {"jaxmusic.cli"})) for m in CLI_MODULES}
    assert not any(between.values()), between


def test_tensorflow_stays_at_the_data_edge():
    modules = _modules()
    users = {name for name, path in modules.items() if "tensorflow" in _third_party(path)}
    assert users and users <= TENSORFLOW_MODULES, users - TENSORFLOW_MODULES


def test_no_function_over_80_lines_or_class_over_200():
    too_long = []
    for path in [*_modules().values(), *sorted((ROOT / "scripts").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and lines > 80:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} def {node.name} ({lines} lines)")
            elif isinstance(node, ast.ClassDef) and lines > 200:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} class {node.name} ({lines} lines)")
    assert not too_long, too_long


def test_the_model_sampling_and_the_benchmark_stand_without_tensorflow_or_the_trainer():
    """What a GPU or TPU image without TensorFlow runs: importing the model, the steps,
    inference and the benchmark CLI loads neither TensorFlow nor the training loop."""
    code = (
        "import json, sys\n"
        "import jaxmusic.models, jaxmusic.steps, jaxmusic.inference, jaxmusic.bench, jaxmusic.sample\n"
        "import jaxmusic.evaluate\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('jaxmusic', 'tensorflow')))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "jaxmusic.bench" in loaded and "jaxmusic.inference" in loaded
    assert "jaxmusic.trainer" not in loaded and "jaxmusic.train" not in loaded
    assert not [m for m in loaded if m.startswith("tensorflow")], loaded
