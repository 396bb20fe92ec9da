"""Speed benchmarks for fusegrad against PyTorch eager and hand-written NumPy.

Run them all with `python -m benchmarks.run` (see benchmarks/README.md). Speed is measured here, never in
the unit tests."""
