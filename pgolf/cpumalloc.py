"""Keep freed memory in the process on a CPU run instead of handing it back to the kernel.

glibc serves a large allocation with a fresh mmap and returns it on free, so every step's
big activations (the [tokens, vocab] logits and their gradient, the MLP's hidden state) are
page-faulted in again, zeroed by the kernel 4 KiB at a time: on the 2-core hosts we measured,
that was a fifth of a frontier-tiny step under the profiler. With mmap off and trimming off,
freed blocks stay in the heap and the next step reuses them. The cost is that the process
keeps its high-water mark of memory until it exits, which a training or evaluation run does
anyway. Only glibc (Linux) has mallopt; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
_done = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory (idempotent); True when it took effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1  # every block from the heap, so it can be reused
    ok &= mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1  # never shrink the heap on free
    ok &= mallopt(M_TOP_PAD, 256 << 20) == 1  # grow it in 256 MiB steps
    _done = ok
    return ok
