"""Keep freed memory in the process while benchmarking (glibc malloc).

glibc returns large freed blocks to the OS (its trim and dynamic mmap thresholds), so the next tensor of
that size is fresh memory again and pays a page fault per 4 KiB page: a 1.8 MB output costs ~0.5 ms of
faults, five times the depthwise conv that fills it, whenever another variant freed its buffers in between.
PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for this; with glibc, mallopt does the same job:
no trimming, and no mmap for large blocks (a 58 MB batch-32 output, above glibc's largest mmap threshold,
was mapped fresh and faulted in on every call, 5x its kernel's time). Every variant of a run shares it."""
import ctypes

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory():
    """Large blocks from the heap and no trimming of it, for this process; a description of what was set,
    or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    return f"glibc malloc keeps freed memory (no mmap for large blocks, trim threshold {TRIM_THRESHOLD >> 20} MiB)"
