"""Test-session setup.

- One compiled-kernel cache directory shared by every test of the session: Numba compiles a
  kernel in 80-250 ms; kernels with the same source are built once per session and then loaded
  from this directory. A fresh directory per session keeps runs independent of whatever a
  user's own cache holds. Native kernel libraries are off unless a test turns them on.
- PyTorch is the oracle that many tests compare against; where it is not installed they skip.
  FUSEGRAD_REQUIRE_TORCH=1 (set by .ci/run) says it was meant to be installed: a missing PyTorch
  then stops the run with an error instead of passing with half the tests skipped.
- Tests marked `cuda` need a real GPU (not Numba's simulator): skipped without one."""
import os
import tempfile

import pytest

if "FUSEGRAD_CACHE_DIR" not in os.environ:
    os.environ["FUSEGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="fusegrad-test-cache-")
# Native kernel libraries are built in a background thread after a plan's first call; the tests
# that are about them turn them on (tests/test_cache.py, tests/test_native.py)
os.environ.setdefault("FUSEGRAD_NATIVE_KERNELS", "0")


def pytest_configure(config):
    if os.environ.get("FUSEGRAD_REQUIRE_TORCH") != "1":
        return
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise pytest.UsageError(f"FUSEGRAD_REQUIRE_TORCH=1 but PyTorch does not import ({e}): install the "
                                "oracle with `pip install torch==2.13.0`, or unset the variable to skip "
                                "the tests that compare against it") from None


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if "cuda" in item.keywords]
    if not marked:
        return
    import fusegrad
    from fusegrad.runtime import devices
    if fusegrad.cuda.is_available() and not devices.simulated():
        return
    skip = pytest.mark.skip(reason="needs a real GPU (numba.cuda finds none, or runs its simulator)")
    for item in marked:
        item.add_marker(skip)
