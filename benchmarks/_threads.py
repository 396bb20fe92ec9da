"""Thread-pool sizes for the benchmarks: library defaults, or `--threads N` set before NumPy is imported.

By default each library is timed in a process of its own (`_harness.timed`) at its own default thread
counts (every usable CPU), as the issues' PyTorch figures were measured, and nothing here changes the
environment: a worker inherits whatever OMP_NUM_THREADS etc. the user set, and nothing else.

`--threads N` times every library in one process instead, with every pool at N threads. PyTorch computes
with an OpenMP pool, NumPy with OpenBLAS's own pthreads, Numba (fusegrad's parallel kernels) with its
own pool, and each keeps its threads spinning for a while after a parallel call; in one process on a
small machine they starve each other (a TinyModel step that takes ~0.5 ms alone took over 100 ms once
NumPy's matmul had run in the same process at two threads each), so N = 1 is the useful value there.
The variables must be set before NumPy's or PyTorch's first import to take effect, which is why every
benchmark module calls `limit()` first and this module does not import NumPy."""
import os
import sys

VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")

# N of --threads N: every library in this process with N threads per pool; None: each library in a
# process of its own at its default thread counts
pinned = None


def requested(argv=None):
    """The value of --threads in argv (None when absent)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return None


def limit(argv=None):
    """Choose the mode from --threads in argv (default: the command line): N threads per pool in this
    process, or, without it, library defaults in worker processes. Returns N or None."""
    global pinned
    pinned = requested(argv)
    if pinned is None:
        return None
    sizes = {name: str(pinned) for name in VARIABLES}
    if any(os.environ.get(name) != size for name, size in sizes.items()):
        if "numpy" in sys.modules or "torch" in sys.modules:
            loaded = sorted(m for m in ("numpy", "torch") if m in sys.modules)
            print(f"warning: {', '.join(loaded)} imported before the thread limit was set; "
                  f"its pool size may not follow --threads", file=sys.stderr)
        os.environ.update(sizes)
    return pinned


def apply(n):
    """Size PyTorch's and Numba's pools to n threads where they started before `limit` set the
    variables (each reads its variable when it is first imported)."""
    torch, numba = sys.modules.get("torch"), sys.modules.get("numba")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def described():
    """The mode in words, for the headers."""
    if pinned is not None:
        return f"every library in one process, {pinned} thread(s) per compute pool (--threads {pinned})"
    forced = [f"{name}={os.environ[name]}" for name in VARIABLES if name in os.environ]
    return (f"each library in a process of its own, default threads: {usable_cpus()} CPUs"
            + (f" (set in the environment: {', '.join(forced)})" if forced else ""))


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
