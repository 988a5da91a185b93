"""The long-running driver's allocator: make glibc's malloc give freed memory back to the system.

Measured with bench/soak.py (docs/results.md, "Memory over a long soak"): under glibc's default
settings the stream's Python driver grows ~2.5 KB per upload (x1.11 after 20,000 uploads, x1.15
after 40,000) while the memory it holds stays the same (tracemalloc and a native-frame profile
flat): malloc keeps what the program frees. Two of its defaults do that in a process like this one,
which allocates short-lived buffers of every size on several threads (Py4J, the Delta commits,
the maintenance and model-watch threads):
- a dynamic mmap threshold: after a large buffer is freed, malloc raises the size from which it
  maps buffers on their own (up to 32 MiB), so later large buffers come from the arenas, where
  one live small object can pin the pages around it;
- up to 8 arenas per core, each keeping its own free pages.
`tune_malloc()` fixes both with `mallopt` at the start of the process: buffers from 128 KiB on are
mapped on their own and unmapped when freed, and at most 2 arenas. An allocator preloaded by the
operator (jemalloc with LD_PRELOAD, which measured flatter still) or glibc settings given in the
environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) are left as they are. Other C libraries
(musl, macOS) have no `mallopt`: nothing is changed there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

# <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial value, made fixed
ARENA_MAX = 2
ENVIRONMENT = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def preloaded_allocator() -> str | None:
    """The name of an allocator library preloaded into this process (e.g. 'libjemalloc.so.2'), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if any(lib in name for lib in ("libjemalloc", "libtcmalloc", "libmimalloc")):
            return name
    return None


def tune_malloc() -> str:
    """Apply the settings above to this process's glibc malloc; return what was done, for the log."""
    preloaded = preloaded_allocator()
    if preloaded:
        return f"{preloaded} preloaded: malloc left as it is"
    given = [name for name in ENVIRONMENT if name in os.environ]
    if given:
        return f"{', '.join(given)} set in the environment: malloc left as it is"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return "no mallopt in this C library: malloc left as it is"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_ARENA_MAX, ARENA_MAX)):
        return "mallopt refused the settings: malloc left as it is"
    return (
        f"glibc malloc: buffers from {MMAP_THRESHOLD_BYTES // 1024} KiB mapped on their own, at most {ARENA_MAX} arenas"
    )
