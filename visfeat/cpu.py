"""CPU allocator tuning: keep freed tensor memory in the process so that large batches stop page-faulting.

PyTorch allocates CPU tensors with the C library's malloc. glibc serves every block above its mmap
threshold (32 MiB at most) with a fresh ``mmap`` and unmaps it on ``free``, so when one activation of a
batch exceeds 32 MiB, every step faults all of its pages in again. On EfficientNet-Lite0 at 224 px a
render step at batch 16 takes 145,000-255,000 page faults (0.6-1 GB); tuned, it takes none and is 1.5x
faster per image (1.9x at batch 32; ``docs/performance.md``). The fix is process-wide, so visfeat
never applies it behind a caller's back: the ``visfeat`` command calls :func:`tune_allocator` for its
own process, and Python users call it once, as they would ``torch.set_num_threads``.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt accepts: keep freed memory at the top of the heap


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator() -> bool:
    """Serve large CPU tensors from the reusable heap instead of fresh ``mmap`` calls (glibc only).

    Idempotent. Returns whether it took effect (False on macOS, Windows, musl). The cost: memory freed
    by PyTorch stays with the process until :func:`release_memory` hands it back.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def release_memory() -> bool:
    """Hand the process's free heap memory back to the OS (``malloc_trim``). Returns whether any was."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
