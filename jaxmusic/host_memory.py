"""Host memory settings that let XLA:CPU reuse its temporaries from step to step.

XLA:CPU allocates each run's temporary buffer (92 MB for the default train step)
with `posix_memalign`, by default from the PJRT client's worker threads. glibc
serves each of those threads from an arena of its own, whose heaps hold at most
64 MB, so a larger block is a fresh `mmap` and `free` hands it back to the kernel:
every step faults in 22,500 new pages, about 70 ms of kernel time a step on a
2-core CPU (docs/performance.md). `keep_freed_memory` runs programs in the calling
thread instead (JAX's `jax_cpu_enable_async_dispatch` off), whose arena is glibc's
main one, where mmap can be turned off and trimming too: the block one step frees is
the block the next step gets, already mapped. (One arena for every thread did the
same for the step but held the input pipeline's and the compiler's threads to one
lock: a 300-step training run's wall time grew by a fifth.)

The JAX CLIs (train, sample, evaluate, bench) call it first; a script that runs
jaxmusic's modules on a CPU can too. It must come before JAX starts its CPU client.
Freed memory stays with the process: its footprint is its peak.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

import jax

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 2**31 - 1  # the largest the int argument holds: never trim

_applied: bool | None = None


def accelerator_possible() -> bool:
    """Whether JAX could pick a TPU or GPU in this process: JAX_PLATFORMS names one, or,
    unset, libtpu or a PJRT plugin (the `jax_plugins` packages JAX loads) is installed."""
    platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return any(p != "cpu" for p in platforms)
    if importlib.util.find_spec("libtpu") is not None:
        return True
    if importlib.metadata.entry_points(group="jax_plugins"):
        return True
    try:
        import jax_plugins  # the namespace package of PJRT plugins, often absent
    except ImportError:
        return False
    return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


def user_chose_malloc() -> bool:
    """Whether the environment already sets glibc malloc (MALLOC_*_ or GLIBC_TUNABLES
    malloc tunables): then it is left as the user set it."""
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return True
    return any(k == "MALLOC_ARENA_MAX" or (k.startswith("MALLOC_") and k.endswith("_")) for k in os.environ)


def glibc_keep_freed() -> bool:
    """glibc's malloc neither maps (large blocks come from the heap) nor trims (freed
    memory stays with the process) from now on; False where the C library is not glibc.
    For the threads that use glibc's main arena: the process's first thread."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def keep_freed_memory() -> bool:
    """On a CPU: XLA programs run in the calling thread, glibc neither maps nor trims.

    Does nothing (returns False) off Linux/glibc, where JAX may run on a TPU or GPU
    (`accelerator_possible`: their temporaries are not host memory), where the user
    set malloc's options, or with JAXMUSIC_HOST_MALLOC=default. Idempotent.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("JAXMUSIC_HOST_MALLOC", "") == "default" or user_chose_malloc():
        return False
    if not sys.platform.startswith("linux") or accelerator_possible():
        return False
    if not glibc_keep_freed():
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    _applied = True
    return True
