"""Latency of the first compiled TinyModel step in a fresh process, cold and warm.

A subprocess imports fusegrad, builds the tutorial's TinyModel (benchmarks/tiny_step.py) and its SGD
optimizer, wraps the step in fusegrad.compile and calls it until a call replays the compiled plan:
the first call captures (it runs the step eagerly while tracing, then writes the plan), the second
captures again (the parameters now have gradients, which the guards see), the third replays, and
Numba compiles each kernel at its first call. Timed inside the subprocess with perf_counter:
`import fusegrad`, each call, and the total from the start of the script to the end of the first
replay; and around the subprocess: its whole wall time, interpreter start included.

cold: a fresh, empty FUSEGRAD_CACHE_DIR, so every kernel is generated and compiled.
warm: the same directory again: the kernels run from the native libraries the cold process built
(codegen/native.py), without importing Numba; with FUSEGRAD_NATIVE_KERNELS=0, Numba loads them from
its on-disk cache instead.
Targets: cold under 2 s (issue 5); warm at most 0.5 s and at least 5x faster than cold (issue 6).

    python benchmarks/first_step.py [--repeats N] [--quick]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

_threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

import numpy as np  # noqa: E402

from benchmarks._harness import ROOT, Result, print_flush, standalone_main, table  # noqa: E402

REPEATS = 3         # fresh processes per row (each cold one with a new cache directory)
QUICK_REPEATS = 1
TARGET = 2.0        # issue 5: seconds to the first compiled step, cold
WARM_TARGET = 0.5   # issue 6: seconds to the first compiled step with a warm cache ...
WARM_SPEEDUP = 5.0  # ... and at least this many times faster than cold
CHILD = """
import json, time
start = time.perf_counter()
import fusegrad
imported = time.perf_counter()
from benchmarks.tiny_step import initial_state, lib_setup, lib_step
args = lib_setup(fusegrad, initial_state())
step = fusegrad.compile(lib_step)
calls = []
while step.replays == 0 and len(calls) < 5:
    before = time.perf_counter()
    step(*args)
    calls.append(time.perf_counter() - before)
assert step.replays == 1, "no replay in %d calls: %s" % (len(calls), getattr(step, "last_reason", None))
print(json.dumps({"import": imported - start, "calls": calls, "total": time.perf_counter() - start}))
"""


def one_process(cache_dir):
    """Timings of one fresh process using `cache_dir` as FUSEGRAD_CACHE_DIR."""
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise AssertionError(f"first_step: the subprocess failed:\n{result.stderr}")
    timings = json.loads(result.stdout.strip().splitlines()[-1])
    timings["wall"] = wall
    return timings


ROWS = (("process wall time (interpreter start to exit)", lambda t: t["wall"]),
        ("script start to end of first replay", lambda t: t["total"]),
        ("  import fusegrad", lambda t: t["import"]),
        ("  first call (capture: eager step + trace + plan)", lambda t: t["calls"][0]),
        ("  calls before the replay, after the first", lambda t: sum(t["calls"][1:-1])),
        ("  first replay (Numba compiles or loads kernels)", lambda t: t["calls"][-1]))


def run(repeats=None, quick=False, out=print_flush):
    """Time fresh processes cold, then warm; print and return [(title, results, target)]."""
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    runs = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="fusegrad-first-step-") as root:
        for i in range(repeats):   # interleaved: each round one cold process, then one warm on its directory
            cache_dir = os.path.join(root, str(i))
            runs["cold"].append(one_process(cache_dir))
            runs["warm"].append(one_process(cache_dir))
    calls = {len(t["calls"]) for t in runs["cold"] + runs["warm"]}
    results = [Result(f"{which}: {label}", "", np.asarray([get(t) for t in runs[which]]))
               for which in runs for label, get in ROWS]
    title = (f"first_step: first compiled TinyModel step in a fresh process "
             f"({'/'.join(map(str, sorted(calls)))} calls to the first replay)")
    out(table(title, results))
    cold = next(r for r in results if r.name == f"cold: {ROWS[1][0]}").median
    warm = next(r for r in results if r.name == f"warm: {ROWS[1][0]}").median
    target = "\n".join([
        f"target: cold, script start to end of first replay = {cold:.2f} s (target < {TARGET:.0f} s: "
        f"{'met' if cold < TARGET else 'NOT met'})",
        f"target: warm = {warm:.3f} s (target <= {WARM_TARGET} s: {'met' if warm <= WARM_TARGET else 'NOT met'}), "
        f"{cold / warm:.1f}x faster than cold (target >= {WARM_SPEEDUP:.0f}x: "
        f"{'met' if cold / warm >= WARM_SPEEDUP else 'NOT met'})"])
    out(target)
    return [(title, results, target)]


def main(argv=None):
    standalone_main(__doc__, run, REPEATS, "processes per row", argv)


if __name__ == "__main__":
    main()
