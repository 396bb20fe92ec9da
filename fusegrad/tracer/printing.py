"""PyTorch-identical text rendering of tensors stored as NumPy arrays.

``format_tensor`` returns exactly the string PyTorch 2.x prints for ``repr(t)`` /
``str(t)`` of a dense CPU tensor holding the same values: the same fixed / scientific /
integer-valued float modes, column widths, 80-column wrapping, ``...`` summarisation,
dtype and size suffixes, and the wrapping of trailing suffixes such as
``requires_grad=True`` or ``grad_fn=<SinBackward0>``.  ``set_printoptions`` mirrors
``torch.set_printoptions``.  Pure module: depends only on NumPy and the standard library.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterable, Optional

import numpy as np

__all__ = ["format_tensor", "set_printoptions", "get_printoptions", "printoptions", "PRINT_OPTS"]


@dataclasses.dataclass
class PrintOptions:
    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: Optional[bool] = None


PRINT_OPTS = PrintOptions()

# profile -> (precision, threshold, edgeitems, linewidth)
_PROFILES = {
    "default": (4, 1000, 3, 80),
    "short": (2, 1000, 2, 80),
    "full": (4, math.inf, 3, 80),
}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None) -> None:
    """Same semantics as ``torch.set_printoptions``.

    A profile ("default", "short", "full") is applied first, then explicit options
    override it.  Like PyTorch, ``sci_mode`` is always reset (None = choose automatically),
    and an unknown profile name is ignored.
    """
    if profile in _PROFILES:
        (PRINT_OPTS.precision, PRINT_OPTS.threshold,
         PRINT_OPTS.edgeitems, PRINT_OPTS.linewidth) = _PROFILES[profile]
    if precision is not None:
        PRINT_OPTS.precision = precision
    if threshold is not None:
        PRINT_OPTS.threshold = threshold
    if edgeitems is not None:
        PRINT_OPTS.edgeitems = edgeitems
    if linewidth is not None:
        PRINT_OPTS.linewidth = linewidth
    PRINT_OPTS.sci_mode = sci_mode


def get_printoptions() -> dict[str, Any]:
    """Current options, as keyword arguments accepted by ``set_printoptions``."""
    return dataclasses.asdict(PRINT_OPTS)


@contextlib.contextmanager
def printoptions(**kwargs):
    """Temporarily change the print options (same arguments as ``set_printoptions``)."""
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


class _Formatter:
    """Chooses one element width and notation for all values that will be shown."""

    def __init__(self, values: np.ndarray):
        self.floating = values.dtype.kind == "f"
        self.precision = PRINT_OPTS.precision
        self.int_mode, self.sci_mode, self.width = True, False, 1
        if not self.floating:  # ints and bools: plain str(), right-aligned
            self.width = max([1] + [len(str(v)) for v in values.tolist()])
            return
        finite = values[np.isfinite(values) & (values != 0)]
        if finite.size == 0:  # only zeros / nan / inf: keep the defaults
            return
        magnitude = np.abs(finite).astype(np.float64)
        lo, hi = magnitude.min(), magnitude.max()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        if PRINT_OPTS.sci_mode is None:
            self.sci_mode = bool(hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4)
        else:
            self.sci_mode = PRINT_OPTS.sci_mode
        p, vals = self.precision, finite.tolist()
        if self.sci_mode:
            self.width = max(len(f"{v:.{p}e}") for v in vals)
        elif self.int_mode:  # "+ 1" for the trailing "." of integer-valued floats
            self.width = max(len(f"{v:.0f}") for v in vals) + 1
        else:
            self.width = max(len(f"{v:.{p}f}") for v in vals)
        self.width = max(self.width, 1)

    def format(self, v) -> str:
        p = self.precision
        if not self.floating:
            s = str(v)
        elif self.sci_mode:
            s = f"{v:{self.width}.{p}e}"
        elif self.int_mode:
            s = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            s = f"{v:.{p}f}"
        return s.rjust(self.width)


def _shown_values(a: np.ndarray) -> np.ndarray:
    """The elements a summarised print shows: first/last `edgeitems` along every axis."""
    e = PRINT_OPTS.edgeitems
    keep = [np.r_[0:e, n - e:n] if n > 2 * e else np.arange(n) for n in a.shape]
    return a[np.ix_(*keep)].ravel()


def _render(a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    if a.ndim == 0:
        return fmt.format(a.item())
    e, n = PRINT_OPTS.edgeitems, a.shape[0]
    cut = summarize and n > 2 * e
    if a.ndim == 1:
        if summarize and not e:
            items = ["..."]
        elif cut:
            items = ([fmt.format(v) for v in a[:e].tolist()] + [" ..."]
                     + [fmt.format(v) for v in a[n - e:].tolist()])
        else:
            items = [fmt.format(v) for v in a.tolist()]
        per_line = max(1, (PRINT_OPTS.linewidth - indent) // (fmt.width + 2))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    if cut:
        parts = ([_render(a[i], indent + 1, summarize, fmt) for i in range(e)] + ["..."]
                 + [_render(a[i], indent + 1, summarize, fmt) for i in range(n - e, n)])
    else:
        parts = [_render(row, indent + 1, summarize, fmt) for row in a]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def _add_suffixes(text: str, suffixes: Iterable[str], indent: int) -> str:
    # PyTorch's own bookkeeping, kept as-is: without a newline the count is len + 2.
    last_line_len = len(text) - text.rfind("\n") + 1
    out = [text]
    for suffix in suffixes:
        if last_line_len + len(suffix) + 2 > PRINT_OPTS.linewidth:
            out.append(",\n" + " " * indent + suffix)
            last_line_len = indent + len(suffix)
        else:
            out.append(", " + suffix)
            last_line_len += len(suffix) + 2
    return "".join(out) + ")"


def format_tensor(array: np.ndarray, *, dtype_name: str, is_default_dtype: bool,
                  suffixes: Iterable[str] = (), device: str = None) -> str:
    """``repr`` of a CPU tensor with the values of ``array``, exactly as PyTorch prints it.

    dtype_name: torch-style name for the ``dtype=`` suffix, e.g. "torch.float64".
    is_default_dtype: True when PyTorch omits that suffix (default float dtype, int64,
        bool).  Empty tensors follow PyTorch and show the dtype unless it is the default
        *floating* dtype, so an empty int64/bool tensor still gets ``dtype=...``.
    suffixes: extra items appended in order after the dtype, e.g. ["requires_grad=True"]
        or ["grad_fn=<SinBackward0>"].
    device: the tensor's device when it is not the CPU, e.g. "cuda:0", shown first.
    """
    a = np.asarray(array)
    prefix = "tensor("
    indent = len(prefix)
    extra = [] if device is None else [f"device='{device}'"]
    if a.size == 0:
        if a.ndim != 1:
            extra.append(f"size={tuple(a.shape)}")
        if not (is_default_dtype and a.dtype.kind == "f"):
            extra.append(f"dtype={dtype_name}")
        body = "[]"
    else:
        if not PRINT_OPTS.edgeitems:
            extra.append(f"size={tuple(a.shape)}")
        if not is_default_dtype:
            extra.append(f"dtype={dtype_name}")
        summarize = a.size > PRINT_OPTS.threshold
        fmt = _Formatter(_shown_values(a) if summarize else a.ravel())
        body = _render(a, indent, summarize, fmt)
    return _add_suffixes(prefix + body, extra + list(suffixes), indent)
