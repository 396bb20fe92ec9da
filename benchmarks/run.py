"""Run every fusegrad benchmark and print one table per workload.

    python -m benchmarks.run                  # all workloads, default repeats
    python -m benchmarks.run --quick          # a few repeats: a smoke test, not a measurement
    python -m benchmarks.run --repeats 100    # timed calls per implementation and workload
    python -m benchmarks.run --only tiny_step
    python benchmarks/run.py                  # the same as the first, without -m
    python -m benchmarks.run --threads 1      # every library in this process, one thread per pool

By default each library is timed in worker processes of its own at its default thread counts
(benchmarks/_harness.py, `timed`). Each table gives, per implementation, the median and interquartile
range of the timed repeats (after warm-up) and the ratio of its median to PyTorch eager's and to the
hand-written NumPy version's. See benchmarks/README.md for what each workload measures and the targets."""
import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

_threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

from benchmarks import cnn_step, doubling, eager_overhead, elementwise, first_step, mlp_step, tiny_step  # noqa: E402
from benchmarks._harness import add_threads_option, load, machine_info, print_flush  # noqa: E402

WORKLOADS = {"eager_overhead": eager_overhead.run, "tiny_step": tiny_step.run, "cnn_step": cnn_step.run,
             "resnet_step": cnn_step.run_resnet, "elementwise": elementwise.run, "mlp_step": mlp_step.run,
             "profiler_loop": eager_overhead.run_profiler_loop, "doubling": doubling.run, "first_step": first_step.run}

# PyTorch eager, measured on this machine in an earlier session (see README.md).
EARLIER_TORCH = {"eager_overhead": "~21.7 ms (loop incl. backward)", "tiny_step": "~509 µs per step",
                 "cnn_step": "~5.6 ms per step", "resnet_step": "~95 ms per step"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls per implementation, every workload (default: {eager_overhead.REPEATS} for "
                             f"eager_overhead, {tiny_step.REPEATS} for tiny_step, {cnn_step.REPEATS['cnn_step']} "
                             f"for cnn_step, {cnn_step.REPEATS['resnet_step']} for resnet_step)")
    parser.add_argument("--quick", action="store_true", help="a few repeats only (smoke test)")
    add_threads_option(parser)
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append",
                        help="run only this workload (may be repeated)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    _threads.limit(argv)

    start = time.perf_counter()
    print_flush(machine_info())
    if args.quick:
        print_flush("--quick: few repeats; the numbers are a smoke test, not a measurement")
    summary = []
    for name in args.only or list(WORKLOADS):
        print_flush("")
        for title, results, target in WORKLOADS[name](args.repeats, args.quick):
            for line in (target or "").splitlines():
                earlier = EARLIER_TORCH.get(name) if "torch eager =" in line else None
                earlier = f"  [torch eager earlier: {earlier}]" if earlier else ""
                summary.append(f"{name}: {line.removeprefix('target: ')}{earlier}")
    print_flush("")
    print_flush("summary (targets: fusegrad eager within 1.5x of PyTorch eager; the compiled times of issue 5)")
    for line in summary:
        print_flush("  " + line)
    print_flush(f"load average at end: {load()}; total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
