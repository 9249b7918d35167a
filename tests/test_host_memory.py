"""host_memory: when its settings apply, and that with them a large block freed and
allocated again is not faulted in afresh (the end-to-end figure, an XLA:CPU train
step's page faults, is in docs/performance.md)."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmusic import host_memory

ROOT = Path(__file__).resolve().parents[1]

# After keep_freed_memory: whether JAX's CPU client will run programs in the calling
# thread (async dispatch off, read when the client starts), and the page faults of
# writing a 96 MB block malloc'd afresh three times (freed between): what an XLA:CPU
# step does with its temporaries. Prints them as JSON.
PROGRAM = """
import ctypes, json, resource
from jaxmusic import host_memory
applied = host_memory.keep_freed_memory()
import jax
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, faults = 96 * 2**20, []
for _ in range(3):
    block = libc.malloc(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(block)
print(json.dumps({"applied": applied, "async": jax.config.values["jax_cpu_enable_async_dispatch"],
                  "faults": faults}))
"""


def _run(**env) -> dict:
    mine = ("MALLOC_", "GLIBC_TUNABLES", "JAXMUSIC_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**clean, "JAX_PLATFORMS": "cpu", **env})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_blocks_stay_mapped_and_programs_run_in_the_calling_thread():
    kept, default = _run(), _run(JAXMUSIC_HOST_MALLOC="default")
    assert kept["applied"] and not default["applied"]
    assert not kept["async"] and default["async"]
    pages = 96 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert min(default["faults"]) > pages // 2  # mapped afresh each time, unmapped when freed
    assert kept["faults"][0] > pages // 2 and max(kept["faults"][1:]) < pages // 100  # mapped once


def test_applies_only_on_a_cpu_with_glibc_defaults(monkeypatch):
    for k in [k for k in os.environ if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "JAX_PLATFORMS"))]:
        monkeypatch.delenv(k)
    assert not host_memory.user_chose_malloc()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert host_memory.user_chose_malloc()
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert host_memory.user_chose_malloc()
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    for platforms, possible in [("cpu", False), ("cuda", True), ("cpu,tpu", True), (" cpu ", False)]:
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert host_memory.accelerator_possible() is possible, platforms
