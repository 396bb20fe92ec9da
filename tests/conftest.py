"""Test-session setup: one compiled-kernel cache directory shared by every test of the session.

Numba compiles a kernel in 80-250 ms; kernels with the same source are built once per session
and then loaded from this directory. A fresh directory per session keeps runs independent of
whatever a user's own cache holds."""
import os
import tempfile

if "FUSEGRAD_CACHE_DIR" not in os.environ:
    os.environ["FUSEGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="fusegrad-test-cache-")
