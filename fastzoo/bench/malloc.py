"""Keep freed memory in the process while benchmarking (glibc malloc).

glibc returns large freed blocks to the OS (its trim and dynamic mmap thresholds), so the next tensor of
that size is fresh memory again and pays a page fault per 4 KiB page: a 1.8 MB output costs ~0.5 ms of
faults, five times the depthwise conv that fills it, whenever another variant freed its buffers in between.
PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for this; with glibc, mallopt does the same job.
Every variant of a run shares the setting. Buffers above 32 MiB (glibc's largest mmap threshold) are still
mapped fresh each time."""
import ctypes

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory():
    """Raise glibc's mmap and trim thresholds for this process; a description of what was set, or None
    where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    return f"glibc malloc keeps freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold " \
           f"{TRIM_THRESHOLD >> 20} MiB)"
