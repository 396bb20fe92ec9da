"""glibc's malloc thresholds, fixed at import so that eager ops reuse freed memory.

Every eager op returns a fresh NumPy array, and backward frees them in bulk. glibc adapts its
thresholds to a process's allocations: blocks above `M_MMAP_THRESHOLD` are mapped and unmapped
each time, and free memory above `M_TRIM_THRESHOLD` at the top of the heap goes back to the
system, so the next step touches new pages and the kernel zeroes them. Both thresholds start
low (128 KiB) and only rise as the process frees larger blocks: a process running the small CNN
of benchmarks/cnn_step.py alone took 3,700 page faults a step, 40% of the step's CPU time
(21-24 ms against 13 ms; the same step in a process that had also run PyTorch faulted no more).

`tune_malloc` sets them where glibc's own heuristic ends once it has seen a 32 MiB block (mmap
above 32 MiB, trim above 64 MiB), from the start. It changes how memory is reused, never a
computed value; the cost is up to 64 MiB of freed heap kept for reuse instead of returned to the
system. It does nothing outside glibc, when the process sets its own (`MALLOC_MMAP_THRESHOLD_`,
`MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_` or `GLIBC_TUNABLES` in the environment), or with
`FUSEGRAD_TUNE_MALLOC=0`."""
import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 * 2 ** 20   # glibc's ceiling for its dynamic threshold on 64-bit systems
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD   # what glibc pairs with it
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def tune_malloc(environ=os.environ):
    """Fix glibc's thresholds (see the module's docstring); True when they were set."""
    if environ.get("FUSEGRAD_TUNE_MALLOC", "1") == "0" or any(name in environ for name in _USER_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
