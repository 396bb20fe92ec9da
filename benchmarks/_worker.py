"""A benchmark worker process: `python -m benchmarks._worker SPEC` times one library family's cases of
one workload and replies on stdout (see `_harness.timed` and `_harness.worker_main`)."""
import sys

from benchmarks._harness import worker_main

if __name__ == "__main__":
    worker_main(sys.argv[1])
