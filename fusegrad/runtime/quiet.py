"""NumPy's floating-point error mode, switched off around computations that are allowed to make
inf and nan (PyTorch computes them silently, whatever the warning filters).

`quiet()` returns a token for `restore(token)`."""
import functools

import numpy as np

# NumPy keeps its error mode in a context variable: setting it around each op costs ~0.2 us,
# where np.errstate costs more than a small op itself. seterr is the public fallback.
try:
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj
    quiet = functools.partial(_extobj_contextvar.set, _make_extobj(all="ignore"))   # C calls, no frames
    restore = _extobj_contextvar.reset
except ImportError:  # pragma: no cover - other NumPy versions
    def quiet():
        return np.seterr(all="ignore")

    def restore(token):
        np.seterr(**token)
