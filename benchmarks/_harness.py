"""Shared timing harness: interleaved repeats, medians and IQRs, aligned tables, machine info.

A benchmark is a list of `Case`s. Each case has an untimed `setup()` that returns the arguments of the
timed `fn(*args)`. `measure` runs every case `warmup` times, then `repeats` rounds in which each case runs
once, in turn (interleaving spreads a shared machine's load drifts over all implementations alike rather
than over whichever happened to run last). Each call is timed alone with `time.perf_counter`, with the
garbage collector disabled; whatever `fn` returns is kept alive until the clock has stopped, so
freeing the result (a recorded graph, for instance) is not charged to any implementation. The garbage
collector runs between rounds, every `collect_every` rounds, outside the timed region."""
import argparse
import gc
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    name: str                    # row label, e.g. "fusegrad (warm)"
    fn: object                   # the timed callable
    setup: object = None         # untimed; returns a tuple of arguments for fn (default: none)
    kind: str = ""               # "fusegrad", "torch", "numpy", "jax": which baseline this row is
    after: object = None         # untimed; called with fn's result after the clock stops (sanity checks)


@dataclass
class Result:
    name: str
    kind: str
    times: np.ndarray = field(repr=False)

    @property
    def median(self):
        return float(np.median(self.times))

    @property
    def q1(self):
        return float(np.percentile(self.times, 25))

    @property
    def q3(self):
        return float(np.percentile(self.times, 75))

    @property
    def iqr(self):
        return self.q3 - self.q1


def _call(case):
    args = case.setup() if case.setup is not None else ()
    gc.disable()
    try:
        start = time.perf_counter()
        out = case.fn(*args)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if case.after is not None:
        case.after(out)
    del out
    return elapsed


def measure(cases, repeats, warmup, collect_every=1):
    """Times of each case: `warmup` untimed calls each, then `repeats` interleaved rounds."""
    for case in cases:
        for _ in range(warmup):
            _call(case)
    times = {case.name: [] for case in cases}
    gc.collect()
    for r in range(repeats):
        for case in cases:
            times[case.name].append(_call(case))
        if (r + 1) % collect_every == 0:
            gc.collect()
    return [Result(case.name, case.kind, np.asarray(times[case.name])) for case in cases]


def cache_checked(backward_graphs, cold):
    """(setup hook, after) pair asserting a call was a cache miss (cold) or a hit (warm).

    A cold call runs on an empty cache and puts the previous entries back afterwards, so the warm
    rows of the same round keep measuring the steady state of a training loop (a graph that has
    run before), not the first reuse of a graph the cold call just derived."""
    before = {}

    def setup_hook():
        if cold:
            before["entries"] = dict(backward_graphs.entries)
            backward_graphs.entries.clear()
        before["hits"], before["misses"] = backward_graphs.hits, backward_graphs.misses

    def after(_):
        hits = backward_graphs.hits - before["hits"]
        misses = backward_graphs.misses - before["misses"]
        if cold:
            backward_graphs.entries.clear()
            backward_graphs.entries.update(before["entries"])
        expected = (0, 1) if cold else (1, 0)
        assert (hits, misses) == expected, f"{'cold' if cold else 'warm'} call: {hits} hits, {misses} misses"

    return setup_hook, after


def training_step_cases(step, setup, use_torch):
    """Cases timing `step(*setup(lib))`, a training step: fusegrad warm (the backward graph from the
    structure cache, each call asserted to be a hit), fusegrad cold (cache cleared before each call,
    asserted to be a miss) and, when importable, PyTorch eager."""
    import fusegrad
    from fusegrad.runtime import backward_graphs

    def fixed(args, hook=None):
        def run_setup():
            if hook is not None:
                hook()
            return args
        return run_setup

    warm_hook, warm_after = cache_checked(backward_graphs, cold=False)
    cold_hook, cold_after = cache_checked(backward_graphs, cold=True)
    out = [Case("fusegrad (warm)", step, fixed(setup(fusegrad), warm_hook), "fusegrad", warm_after),
           Case("fusegrad (cold)", step, fixed(setup(fusegrad), cold_hook), "fusegrad", cold_after)]
    if use_torch:
        import torch
        out.append(Case("torch eager", step, fixed(setup(torch)), "torch"))
    return out


def fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _baseline(results, kind):
    for r in results:
        if r.kind == kind:
            return r
    return None


def table(title, results):
    """An aligned table: median, IQR (q1..q3), ratios of medians against torch eager and NumPy."""
    torch_ref = _baseline(results, "torch")
    numpy_ref = _baseline(results, "numpy")
    head = ["implementation", "median", "IQR", "q1 .. q3", "vs torch", "vs numpy", "n"]
    rows = []
    for r in results:
        rows.append([
            r.name,
            fmt_time(r.median),
            fmt_time(r.iqr),
            f"{fmt_time(r.q1)} .. {fmt_time(r.q3)}",
            f"{r.median / torch_ref.median:.2f}x" if torch_ref else "-",
            f"{r.median / numpy_ref.median:.2f}x" if numpy_ref else "-",
            str(len(r.times)),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    align = ["<"] + [">"] * (len(head) - 1)

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, rule, line(head), rule, *(line(r) for r in rows), rule])


def target_line(results, name, limit=1.5):
    """'fusegrad (warm) / torch eager = 1.23x (target <= 1.5x: met)'."""
    torch_ref = _baseline(results, "torch")
    mine = next((r for r in results if r.name == name), None)
    if torch_ref is None or mine is None:
        return f"target: {name} within {limit}x of PyTorch eager: not measured (PyTorch not importable)"
    ratio = mine.median / torch_ref.median
    verdict = "met" if ratio <= limit else "NOT met"
    return f"target: {name} / torch eager = {ratio:.2f}x (target <= {limit}x: {verdict})"


def machine_info():
    lines = []
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for text in f:
                if text.startswith("model name"):
                    cpu = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines.append(f"machine: {cpu}; os.cpu_count()={os.cpu_count()}, usable CPUs={affinity}; "
                 f"{platform.system()} {platform.release()}")
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import fusegrad
        versions.append(f"fusegrad {fusegrad.__version__}")
    except ImportError:
        pass
    try:
        import torch
        versions.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        versions.append("torch not importable")
    try:
        import jax
        versions.append(f"jax {jax.__version__}")
    except ImportError:
        versions.append("jax not importable")
    lines.append("versions: " + ", ".join(versions))
    pools = {name: os.environ.get(name, "unset") for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                             "OPENBLAS_NUM_THREADS")}
    lines.append("threads per compute pool: " + ", ".join(f"{k}={v}" for k, v in pools.items()))
    lines.append(f"load average at start: {load()}")
    return "\n".join(lines)


def load():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def print_flush(*args):
    print(*args)
    sys.stdout.flush()


def standalone_main(doc, run, default_repeats, unit, argv=None):
    """The command line of one benchmark run on its own: --repeats, --threads, --quick."""
    from benchmarks import _threads
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help=f"timed {unit} (default {default_repeats})")
    parser.add_argument("--threads", type=int, default=_threads.DEFAULT,
                        help="threads per compute pool (OpenMP, MKL, OpenBLAS; default 1)")
    parser.add_argument("--quick", action="store_true", help=f"a few {unit} only (smoke test)")
    args = parser.parse_args(argv)
    print_flush(machine_info())
    run(args.repeats, args.quick)
