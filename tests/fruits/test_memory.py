"""fruits.memory.tune_malloc changes what glibc's malloc does, in a fresh process (the settings must
come before the process's allocations, so each case runs in its own interpreter)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from fruits.memory import ENVIRONMENT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# After a 1 MiB buffer is freed, is the next large one (512 KiB) still mapped on its own (mallinfo2's
# hblks, the mmapped blocks in use, goes up by one)? glibc's default dynamic threshold says no: it serves the second
# buffer from the heap arena, where it can be pinned.
PROBE = """
import ctypes, json, sys
from fruits.memory import tune_malloc

done = tune_malloc() if sys.argv[1] == "tune" else "untouched"

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
libc.free(libc.malloc(1024 * 1024))
before = libc.mallinfo2().hblks
second = libc.malloc(512 * 1024)
print(json.dumps({"done": done, "mapped_blocks": libc.mallinfo2().hblks - before}))
libc.free(second)
"""


def probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*ENVIRONMENT, "LD_PRELOAD")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def test_default_glibc_serves_a_large_buffer_from_the_arena_after_one_was_freed():
    # The behaviour tune_malloc exists for: without it, the 512 KiB buffer is not mapped on its own.
    assert probe("default")["mapped_blocks"] == 0


def test_tuned_malloc_maps_large_buffers_on_their_own_and_says_so():
    result = probe("tune")
    assert result["mapped_blocks"] >= 1
    assert result["done"].startswith("glibc malloc: buffers from 128 KiB mapped on their own, at most 2 arenas")


def test_settings_from_the_environment_win():
    result = probe("tune", MALLOC_ARENA_MAX="4")
    assert result["done"] == "MALLOC_ARENA_MAX set in the environment: malloc left as it is"
    assert result["mapped_blocks"] == 0  # glibc's dynamic threshold, untouched
