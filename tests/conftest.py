"""PyTorch is the oracle that many tests compare against; where it is not installed they skip.
FUSEGRAD_REQUIRE_TORCH=1 (set by .ci/run) says it was meant to be installed: a missing PyTorch
then stops the run with an error instead of passing with half the tests skipped."""
import os

import pytest


def pytest_configure(config):
    if os.environ.get("FUSEGRAD_REQUIRE_TORCH") != "1":
        return
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise pytest.UsageError(f"FUSEGRAD_REQUIRE_TORCH=1 but PyTorch does not import ({e}): install the "
                                "oracle with `pip install torch==2.13.0`, or unset the variable to skip "
                                "the tests that compare against it") from None
