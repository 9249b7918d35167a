"""bench and benchmarks: the CLI runs on the tiny config and writes valid JSON; the FLOP formula."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from configs import default, tiny
from jaxmusic import benchmarks

ROOT = Path(__file__).resolve().parents[1]


def test_train_flops_formula():
    c = default.get_config()
    c.batch_size, c.encoder_len, c.decoder_len, c.model.hidden = 32, 64, 64, 256
    b, t, h, v = 32, 64, 256, 2048
    gathered = 2 * (2 * b * t * h * 4 * h + 2 * b * t * 2 * h * 4 * h)  # enc + dec: layer 1, layer 2
    assert benchmarks.train_flops(c, v, b) == 3 * (gathered + 2 * b * t * h * v)
    c.model.embed_dim = h  # Embedding + LSTM: the first layers' input products too
    assert benchmarks.train_flops(c, v, b) == 3 * (2 * 2 * (2 * b * t * 2 * h * 4 * h) + 2 * b * t * h * v)


def test_cli_runs_on_tiny_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmusic.bench", "--config", str(ROOT / "configs" / "tiny.py"),
         "--steps", "3", "--vocab", "64", "--sampler_rounds", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    c = tiny.get_config()
    assert r["batch_size"] == c.batch_size and r["hidden"] == c.model.hidden and r["vocab_size"] == 64
    assert r["flops_per_step"] == benchmarks.train_flops(c, 64, c.batch_size)
    assert r["steps_per_second"] > 0 and 0 < r["mfu"] < 1
    assert r["sampler_notes_per_second_batch1"] > 0 and r["sampler_notes_per_second_batch64"] > 0
    assert r["sampler_carried_notes_per_second_batch64"] > 0
    # The carried sampler's ratios, medians of alternated rounds: to the loop at every
    # batch, to the floor at batch 1 only.
    assert r["sampler_carried_over_loop_batch1"] > 0 and r["sampler_carried_over_loop_batch64"] > 0
    assert r["sampler_carried_over_floor_batch1"] > 0 and "sampler_carried_over_floor_batch64" not in r
    # Each round's ratio is kept beside the median: two rounds, whose median is their mean.
    for key in ("sampler_carried_over_floor", "sampler_carried_over_loop"):
        rounds = r[f"{key}_rounds_batch1"]
        assert len(rounds) == 2 and r[f"{key}_batch1"] == pytest.approx(sum(rounds) / 2)
    assert len(r["sampler_carried_over_loop_rounds_batch64"]) == 2
    assert "of the floor" in proc.stdout and "x the loop" in proc.stdout
    h, layers = c.model.hidden, c.model.num_layers  # decoder: recurrent + upper input products, head
    assert r["decode_weight_bytes_per_note"] == 4 * ((2 * layers - 1) * h * 4 * h + h * 64)
    assert r["decode_floor_notes_per_second"] > 0 and r["decode_floor_gb_per_second"] > 0
    assert "MFU" in proc.stdout and "batch-1 floor" in proc.stdout
    assert r["peak_matmul_size"] == 2048 and r["mfu_published"] is None  # a CPU has no published peak
    assert "unknown: no published float32 peak for device kind 'cpu'" in proc.stdout
    mem = r["memory_per_device_bytes"]
    assert mem["argument"] > 4 * r["params"] and mem["total"] >= mem["argument"]  # params + Adam moments


def test_published_peaks_by_device_kind_and_dtype():
    assert benchmarks.published_peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert benchmarks.published_peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert benchmarks.published_peak_tflops("NVIDIA L40S", "bfloat16") == 362.0  # not the L4's
    assert benchmarks.published_peak_tflops("NVIDIA L4", "float32") == 60.0
    assert benchmarks.published_peak_tflops("TPU v5 lite", "bfloat16") == 197.0
    assert benchmarks.published_peak_tflops("TPU v4", "float32") is None  # TPUs publish no float32 peak
    assert benchmarks.published_peak_tflops("Some New Accelerator", "bfloat16") is None


def test_model_step_sampler_and_bench_import_without_tensorflow():
    code = (
        "import sys; import jaxmusic.bench, jaxmusic.train, jaxmusic.sampler, jaxmusic.models, "
        "jaxmusic.checkpoint; print('tensorflow' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]
