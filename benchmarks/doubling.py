"""The autograd tutorial's do_some_doubling, with a trip count that changes from call to call.

    def do_some_doubling(x):
        y = x * 2
        while y.norm() < 1000:
            y = y * 2
        return y

    y = do_some_doubling(x); y.backward(v)          # x.grad == 2**(k + 1) * v, k loop iterations

x (3 elements) is scaled so that the loop runs k = 5, 6, ..., 15 times, in turn from one call to
the next: data-dependent control flow, which a compiled function captures unrolled and re-rolls
into a loop (forward and backward, each one Numba kernel) whose trip count each replay decides,
so that one specialisation replays every trip count. Rows: fusegrad.compile of the call (forward and backward; the timed
calls are counted, not asserted, as replays: the table's note says how many replayed), fusegrad
eager, PyTorch eager and torch.compile (compilation timed separately); and, for comparison, fusegrad.compile
with the trip count fixed at 10 (each timed call asserted to replay). Every implementation's
gradient is asserted exact, 2**(k + 1) * v, for every trip count before timing.

    python benchmarks/doubling.py [--repeats N] [--quick]
"""
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

_threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

import numpy as np  # noqa: E402

from benchmarks._harness import (Case, prime_compiled, print_flush, replayed, standalone_main,  # noqa: E402
                                 table, time_target_line, timed, torch_compiled)

TRIP_COUNTS = tuple(range(5, 16))
DIRECTION = np.array([1, 2, 2], np.float32) / 3          # unit norm
V = np.array([0.1, 1.0, 0.0001], np.float32)
FIXED_TRIP_COUNT = 10
REPEATS = 330       # timed calls per implementation: 30 per trip count
QUICK_REPEATS = 33
TARGET = 60e-6      # issue 5: a compiled call in at most 60 µs


def x_for(k):
    """x whose doubling loop runs k times: |x| * 2**(k + 1) is 1000 * 2**0.5, halfway (in log) between
    the last doubling below 1000 and the first above."""
    return (DIRECTION * np.float32(1000 / 2 ** (k + 0.5))).astype(np.float32)


def do_some_doubling(x):
    y = x * 2
    while y.norm() < 1000:
        y = y * 2
    return y


def doubling_backward(x, v):
    y = do_some_doubling(x)
    y.backward(v)
    return y, x.grad


def cycling(lib, trip_counts=TRIP_COUNTS):
    """Setup: fresh x (the next trip count in turn) and v as `lib` tensors."""
    calls = [0]

    def setup():
        k = trip_counts[calls[0] % len(trip_counts)]
        calls[0] += 1
        return lib.tensor(x_for(k), requires_grad=True), lib.tensor(V)

    return setup


def check(impls):
    """The gradient of every implementation is exactly 2**(k + 1) * v, for every trip count."""
    for name, (fn, lib, _) in impls.items():
        setup = cycling(lib)
        for k in TRIP_COUNTS:
            y, grad = fn(*setup())
            np.testing.assert_array_equal(grad.detach().numpy(), np.float32(2.0 ** (k + 1)) * V,
                                          err_msg=f"{name}: gradient at {k} iterations")
            np.testing.assert_array_equal(y.detach().numpy(), x_for(k) * np.float32(2.0 ** (k + 1)),
                                          err_msg=f"{name}: value at {k} iterations")


def cases(kinds, quick, out):
    """The rows of `kinds`, each checked exact for every trip count; the fusegrad.compile'd row notes
    how many of its calls replayed."""
    impls = {}   # row name: (function, library, kind)
    if "fusegrad" in kinds:
        import fusegrad
        compiled = fusegrad.compile(doubling_backward)
        impls["fusegrad compiled"] = (compiled, fusegrad, "fusegrad")
        impls["fusegrad eager"] = (doubling_backward, fusegrad, "fusegrad")
    if "torch" in kinds:
        import torch
        impls["torch eager"] = (doubling_backward, torch, "torch")
    if "torch.compile" in kinds:
        import torch
        inductor = torch_compiled(doubling_backward, cycling(torch), quick, out)
        if inductor is not None:
            impls["torch.compile"] = (inductor, torch, "torch.compile")
    check(impls)
    rows = [Case(name, fn, cycling(lib), kind) for name, (fn, lib, kind) in impls.items()]
    if "fusegrad" in kinds:
        calls, replays = compiled.calls, compiled.replays
        rows[0].note = lambda: (f"fusegrad compiled: {compiled.replays - replays} of its {compiled.calls - calls} "
                                f"calls in warm-up and timing replayed; {len(compiled.specialisations)} "
                                f"specialisation(s)" + (f"; runs eagerly: {compiled.eager_reason}"
                                                        if compiled.eager_reason else ""))
        fixed = fusegrad.compile(doubling_backward)
        fixed_setup = cycling(fusegrad, (FIXED_TRIP_COUNT,))
        prime_compiled(fixed, fixed_setup, out)
        hook, after = replayed(fixed)

        def replay_setup():
            hook()
            return fixed_setup()

        rows.insert(1, Case(f"fusegrad compiled, k always {FIXED_TRIP_COUNT}", fixed, replay_setup, "fusegrad",
                            after))
    return rows


def run(repeats=None, quick=False, out=print_flush):
    """Time (each implementation checked where it is built, before timing); print and return
    [(title, results, target)]."""
    from fusegrad.runtime import plan
    # warm-up: every trip count's structure past eager backward's compilation (its first backward runs
    # without a graph, then plan.COMPILE_AFTER runs of the graph)
    results = timed(cases, (), repeats or (QUICK_REPEATS if quick else REPEATS),
                    (plan.COMPILE_AFTER + 1) * len(TRIP_COUNTS), quick, out, collect_every=10)
    out(f"doubling: value and gradient of every implementation exact (2**(k + 1) * v) for k = "
        f"{TRIP_COUNTS[0]}..{TRIP_COUNTS[-1]}")
    title = (f"doubling: y = do_some_doubling(x); y.backward(v), loop trip count cycling "
             f"{TRIP_COUNTS[0]}..{TRIP_COUNTS[-1]}")
    out("")
    out(table(title, results))
    target = time_target_line(results, "fusegrad compiled", TARGET)
    out(target)
    return [(title, results, target)]


def main(argv=None):
    standalone_main(__doc__, run, REPEATS, "calls", argv)


if __name__ == "__main__":
    main()
