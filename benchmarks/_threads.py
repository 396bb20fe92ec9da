"""Thread-pool sizes for the benchmarks, set before NumPy or PyTorch is imported.

PyTorch computes with an OpenMP pool, NumPy with OpenBLAS's own pthreads, and both keep their threads
spinning for a while after each parallel call. In one process on a small machine (two CPUs here, shared
with other jobs) the two pools starve each other: a TinyModel step that takes ~0.5 ms alone took over
100 ms once NumPy's matmul had run in the same process. That measures pool contention, not the
frameworks, so by default every pool gets one thread (`--threads N` changes it). That includes Numba's,
which runs fusegrad's largest kernels with prange: with the other CPU busy, waking its second thread
made a 0.1 ms ReLU kernel of the CNN step take 2-6 ms. This module must not import NumPy: it has to
run before NumPy's first import to take effect.

Workloads that the issues measured on every CPU (the elementwise chain at N = 4M: PyTorch's and the
fused kernels' figures are two-thread figures) run inside `every_cpu()`, which widens PyTorch's and
Numba's pools for their duration; Numba's pool is started at the machine's size for that (NUMBA_NUM_THREADS
is its maximum) and narrowed to --threads by `apply`."""
import contextlib
import os
import sys

VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
DEFAULT = 1


def requested(argv=None):
    """The value of --threads in argv (default 1)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return DEFAULT


def limit(n=None):
    """Set the pools' sizes to n (default: --threads from the command line, else 1). Returns n."""
    n = requested() if n is None else n
    sizes = {name: str(max(n, usable_cpus()) if name == "NUMBA_NUM_THREADS" else n) for name in VARIABLES}
    if all(os.environ.get(name) == size for name, size in sizes.items()):
        return n
    if "numpy" in sys.modules or "torch" in sys.modules:
        loaded = sorted(m for m in ("numpy", "torch") if m in sys.modules)
        print(f"warning: {', '.join(loaded)} imported before the thread limit was set; "
              f"its pool size may not follow --threads", file=sys.stderr)
    os.environ.update(sizes)
    return n


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def apply(n):
    """Size PyTorch's (when importable) and Numba's pools to n threads."""
    apply_to_torch(n)
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def every_cpu(n):
    """PyTorch's and Numba's pools at every usable CPU inside the block, n threads after it."""
    apply(usable_cpus())
    try:
        yield usable_cpus()
    finally:
        apply(n)


def apply_to_torch(n):
    """torch reads OMP_NUM_THREADS when it starts; set it again in case torch was already running."""
    try:
        import torch
    except ImportError:
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
