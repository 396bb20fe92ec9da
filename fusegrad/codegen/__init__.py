"""IR -> Python source -> compiled kernels, one per fusion group; one module per target.

`cpu` emits Numba kernels. Where generated modules live is decided here: FUSEGRAD_CACHE_DIR when
set, else the user's cache directory (XDG_CACHE_HOME or ~/.cache) under `fusegrad`."""
import os


def cache_dir():
    root = os.environ.get("FUSEGRAD_CACHE_DIR")
    if root:
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fusegrad")
