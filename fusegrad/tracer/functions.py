"""The public op functions (`fusegrad.sin`, `fusegrad.matmul`, ...), also bound as Tensor methods.

Each function normalises its arguments the way PyTorch does (dims, dtype promotion, Python
scalars) and calls `dispatch.apply` with an IR op. Composites (relu, mean, var, softmax-based
losses, ...) are written in terms of other functions, so their gradients come from the primitives;
`_named` gives their output PyTorch's grad_fn name."""
import builtins
import functools
import warnings
from collections import namedtuple

import numpy as np

from ..ir import OPS, ShapeError
from ..ir.ops import broadcast_shapes, check_index_range, indexed
from ..ir import dtypes as D
from . import grad_mode
from .capture import active as capturing, plain
from .dispatch import apply, apply_binary, cast, promote_operands, run_inplace
from .indexing import normalize_key
from ..runtime import devices
from .tensor import Tensor, _dim

_new = Tensor._make


def _named(t, label):
    if t._node is not None:
        t._node.label = label
    return t


def _tensor(x):
    """Python scalars stay scalars; arrays and NumPy scalars become (or act as) tensors."""
    if isinstance(x, Tensor) or type(x) in (float, int, bool):
        return x
    if isinstance(x, float):   # a captured float (item(), a learning rate): its value, its use noted
        return plain(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return _new(x)
    raise TypeError(f"expected a Tensor or a number, got {type(x).__name__}")


# ----------------------------------------------------------------------------- elementwise


def _binary(op, a, b, label=None, float_result=False):
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a._data.dtype is b._data.dtype and (not float_result or a._data.dtype.kind == "f"):
            return apply_binary(op, a, b, label)
    else:
        a, b = _tensor(a), _tensor(b)
        if op in _ARITHMETIC and (a if isinstance(a, Tensor) else b)._data.dtype == np.float16:
            return _float16_with_scalar(op, a, b, label)
    a, b = promote_operands(op.name, (a, b), float_result)
    return apply(op, (a, b), None, label)


def _float16_with_scalar(op, a, b, label):
    """Arithmetic of a float16 tensor and a Python scalar, computed in float32 and rounded once, as
    PyTorch's CPU kernels do: NumPy would round the scalar to float16 first, so that x / 70000
    divided by inf. (Comparisons do round the scalar, in PyTorch too.)"""
    wide = tuple(cast(x, D.float32) if isinstance(x, Tensor) else x for x in (a, b))
    return _rounded_to_float16(apply(op, wide, None, label))


def _rounded_to_float16(out):
    """`out`, computed in float32, rounded to float16 under its own grad_fn name."""
    label = out._node.name() if out._node is not None else None
    return _named(cast(out, D.float16), label)


_ADD, _SUB, _MUL, _DIV = OPS["add"], OPS["sub"], OPS["mul"], OPS["div"]
_ARITHMETIC = frozenset((_ADD, _SUB, _MUL, _DIV, OPS["pow"], OPS["remainder"], OPS["floor_divide"]))


def add(input, other, *, alpha=1):
    if alpha != 1:
        other = mul(other, alpha)
    return _binary(_ADD, input, other)


def _is_bool(x):
    return x._data.dtype == np.bool_ if isinstance(x, Tensor) else x.__class__ is bool


def _refuse_bool_pair(name, a, b):
    if _is_bool(a) and _is_bool(b):
        raise NotImplementedError(f'"{name}" not implemented for \'Bool\'')


def sub(input, other, *, alpha=1):
    if _is_bool(input) or _is_bool(other):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
                           "trying to invert a mask, use the `~` or `logical_not()` operator instead.")
    if alpha != 1:
        other = mul(other, alpha)
    return _binary(_SUB, input, other, None if isinstance(input, Tensor) else "RsubBackward1")


def rsub(input, other, *, alpha=1):
    return sub(other, input, alpha=alpha)


def mul(input, other):
    return _binary(_MUL, input, other)


def div(input, other, *, rounding_mode=None):
    if rounding_mode == "floor":
        return _named(floor_divide(input, other), "DivBackward2")
    if rounding_mode == "trunc":
        if _integral(input) and _integral(other):   # integer operands keep their integer type
            (ax, sx), (ay, sy) = _magnitude_sign(input), _magnitude_sign(other)
            return _named(mul(floor_divide(ax, ay), mul(sx, sy)), "DivBackward2")
        quotient = _binary(OPS["div"], _detached(input), _detached(other), float_result=True)
        truncated = mul(sign(quotient), floor(abs(quotient)))
        # A rounded quotient's gradient is zero (PyTorch's), NaN operands included; floor_divide's VJP
        # is zero, so it links the result to the operands without dividing a zero cotangent by them.
        link = floor_divide(*promote_operands("div", (input, other), float_result=True))
        return _named(where(ones_like_bool(truncated), truncated, link), "DivBackward2")
    return _binary(_DIV, input, other, float_result=True)


def _detached(v):
    return v.detach() if isinstance(v, Tensor) else v


def _integral(v):
    return v._data.dtype.kind in "iu" if isinstance(v, Tensor) else type(v) is int


def _magnitude_sign(v):
    return (abs(v), sign(v)) if isinstance(v, Tensor) else (builtins.abs(v), (v > 0) - (v < 0))


def true_divide(input, other):
    return div(input, other)


def floor_divide(input, other):
    _refuse_bool_pair("floor_divide", input, other)
    return _binary(OPS["floor_divide"], input, other)


def remainder(input, other):
    _refuse_bool_pair("remainder", input, other)
    return _binary(OPS["remainder"], input, other, "RemainderBackward1" if isinstance(other, Tensor) else None)


def pow(input, exponent):
    if (exponent.__class__ is int and exponent < 0 and isinstance(input, Tensor)
            and input._data.dtype.kind in "biu"):   # bool tensors too, as in PyTorch
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    if _is_bool(input) and _is_bool(exponent):
        if isinstance(exponent, Tensor):
            raise NotImplementedError('"pow" not implemented for \'Bool\'')
        return input if exponent else ones_like_bool(input)   # x ** True is x, x ** False is True
    label = ("PowBackward0" if not isinstance(exponent, Tensor) else
             "PowBackward1" if isinstance(input, Tensor) else "PowBackward2")
    return _binary(OPS["pow"], input, exponent, label)


def square(input):
    return _named(pow(input, 2), "PowBackward0")


def maximum(input, other):
    return _binary(OPS["maximum"], input, other)


def minimum(input, other):
    return _binary(OPS["minimum"], input, other)


def _comparison(name):
    op = OPS[name]

    def compare(input, other):
        return _binary(op, input, other)
    compare.__name__ = name
    return compare


eq, ne, lt, le, gt, ge = (_comparison(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def logical_and(input, other):
    return _binary(OPS["logical_and"], input, other)


def logical_or(input, other):
    return _binary(OPS["logical_or"], input, other)


def logical_xor(input, other):
    return _binary(OPS["logical_xor"], input, other)


def logical_not(input):
    return apply(OPS["logical_not"], (input,))


def _float_unary(name):
    op = OPS[name]

    def fn(input):
        if input._data.dtype.kind != "f":
            input = cast(input, D.default_float)
        return apply(op, (input,))
    fn.__name__ = name
    return fn


exp, log, sin, cos, tan, tanh, sigmoid, sqrt, log1p, expm1 = (
    _float_unary(n) for n in ("exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "sqrt", "log1p", "expm1"))


def rsqrt(input):
    return _named(div(1.0, sqrt(input)), "RsqrtBackward0")


def log2(input):
    return _named(div(log(input), float(np.log(2.0))), "Log2Backward0")


def log10(input):
    return _named(div(log(input), float(np.log(10.0))), "Log10Backward0")


def neg(input):
    return apply(OPS["neg"], (input,))


negative = neg


def abs(input):
    return apply(OPS["abs"], (input,))


absolute = abs


def sign(input):
    return apply(OPS["sign"], (input,))


def floor(input):
    return apply(OPS["floor"], (input,))


def reciprocal(input):
    return _named(div(1.0, input), "ReciprocalBackward0")


def where(condition, input=None, other=None):
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    input, other = _tensor(input), _tensor(other)
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = tensor_from_scalar(input)
    input, other = promote_operands("where", (input, other))
    return apply(OPS["where"], (condition, input, other))


def ones_like_bool(input):
    return _new(np.ones(input._data.shape, np.bool_), input._device)


def tensor_from_scalar(value):
    return _new(np.asarray(value, D.scalar_dtype(value).np))


def relu(input):
    # zero where input <= 0, so NaN passes through with its gradient, as in PyTorch
    return _named(where(le(input, 0), 0, input), "ReluBackward0")


def _is_floating(x):
    return x._data.dtype.kind == "f" if isinstance(x, Tensor) else isinstance(x, float)


def clamp(input, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    # Each bound keeps the values on its side and sets those beyond it; where neither comparison
    # holds, the input or the bound is NaN, and so is the result, with a zero gradient (PyTorch's).
    nan = _is_floating(input) or _is_floating(min) or _is_floating(max)
    dtype = D.result_type([(x.dtype, x._data.ndim) if isinstance(x, Tensor) else x
                           for x in (input, min, max) if x is not None])

    def bound(out, keeps, cuts, limit):
        if not isinstance(limit, Tensor):   # a scalar bound, as a 0-d tensor of the result's type
            limit = _new(np.asarray(limit, dtype.np))
        beyond = where(cuts(out, limit), limit, float("nan")) if nan else limit
        return where(keeps(out, limit), out, beyond)
    out = input
    if min is not None:
        out = bound(out, ge, lt, min)
    if max is not None:
        out = bound(out, le, gt, max)
    return _named(out, "ClampBackward1")


clip = clamp


def clamp_min(input, min):
    return _named(clamp(input, min=min), "ClampMinBackward0")


def clamp_max(input, max):
    return _named(clamp(input, max=max), "ClampMaxBackward0")


def lerp(input, end, weight):
    return _named(add(input, mul(weight, sub(end, input))), "LerpBackward0")


def isnan(input):
    return ne(input, input)


def isfinite(input):
    if input._data.dtype.kind == "f":   # composites, so compiled code computes them too
        return logical_and(eq(input, input), ne(abs(input), float("inf")))
    return _new(np.ones(input._data.shape, np.bool_), input._device)


def isinf(input):
    if input._data.dtype.kind == "f":
        return eq(abs(input), float("inf"))
    return _new(np.zeros(input._data.shape, np.bool_), input._device)


def _reads_data(name):
    """A function computing from tensor data outside the recorded ops: a capture cannot replay it."""
    trace = capturing()
    if trace is not None:
        trace.break_(f"{name}() computes a Python value or a data-dependent shape from tensor data")


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    _reads_data("allclose")
    return bool(np.allclose(input._data, _tensor(other)._data if isinstance(other, Tensor) else other,
                            rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    _reads_data("isclose")
    other = other._data if isinstance(other, Tensor) else other
    return _new(np.isclose(input._data, other, rtol=rtol, atol=atol, equal_nan=equal_nan), input._device)


def equal(input, other):
    _reads_data("equal")
    return input._data.shape == other._data.shape and bool(np.array_equal(input._data, other._data))


# ----------------------------------------------------------------------------- reductions


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (tuple, list)):
        axes = [_dim(d, ndim) for d in dim]
        for i, d in enumerate(axes):
            if d in axes[:i]:
                raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
        return tuple(sorted(axes)) if axes or ndim == 0 else tuple(range(ndim))
    return (_dim(dim, ndim),) if ndim else ()


def _float16_in_float32(fn):
    """fn computed in float32 for float16 inputs and rounded to float16 once, at the end, as
    PyTorch accumulates reductions of float16: in float16 itself, 2048 + 1 is 2048 and an element
    count above 65504 is inf."""
    @functools.wraps(fn)
    def reduce(input, *args, **kwargs):
        if input._data.dtype != np.float16 or kwargs.get("dtype") is not None:
            return fn(input, *args, **kwargs)
        return _rounded_to_float16(fn(cast(input, D.float32), *args, **kwargs))
    return reduce


def _reduce(name, input, dim, keepdim, label0, label1, **attrs):
    axes = _axes(dim, input._data.ndim)
    out = apply(OPS[name], (input,), {"axes": axes, "keepdim": bool(keepdim), **attrs})
    return _named(out, label0 if dim is None else label1)


def _require_elements(name, shape, dim, axes, no_dim_error=RuntimeError):
    """An extremum of nothing is undefined: PyTorch's errors for reducing an empty dimension."""
    if dim is None:
        if 0 in shape:
            advice = " Specify the reduction dim with the 'dim' argument." if no_dim_error is RuntimeError else ""
            raise no_dim_error(f"{name}(): Expected reduction dim to be specified for input.numel() == 0.{advice}")
        return
    for a in axes:
        if shape[a] == 0:
            raise IndexError(f"{name}(): Expected reduction dim {a} to have non-zero size.")


def _peak(name, input, dim, keepdim, label0, label1):
    """amax/amin for max(), min() and norm(p=inf): the NaNs of a slice share its gradient, where
    amax/amin's own gradient is NaN everywhere (PyTorch's rules for each)."""
    return _reduce(name, input, dim, keepdim, label0, label1, nans_win=True)


def _infinity_norm(name, input, dim, keepdim):
    axes = _axes(dim, input._data.ndim)
    p = "inf" if name == "amax" else "-inf"
    if dim is None and input._data.size == 0:
        raise RuntimeError(f"linalg.vector_norm cannot compute the {p} norm on an empty tensor because the "
                           "operation does not have an identity")
    for a in axes if dim is not None else ():
        if input._data.shape[a] == 0:
            raise RuntimeError(f"linalg.vector_norm cannot compute the {p} norm on the dimension {a} because "
                               "this dimension is empty and the operation does not have an identity")
    return _peak(name, abs(input), dim, keepdim, "", "")


def sum(input, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        input = cast(input, dtype)
    elif input._data.dtype.kind in "biu":
        input = cast(input, D.int64)
    return _reduce("sum", input, dim, keepdim, "SumBackward0", "SumBackward1")


def nansum(input, dim=None, keepdim=False):
    return _named(sum(where(isnan(input), 0.0, input), dim, keepdim), "NansumBackward0")


@_float16_in_float32
def mean(input, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        input = cast(input, dtype)
    if input._data.dtype.kind != "f":
        raise RuntimeError("mean(): could not infer output dtype. Input dtype must be either a floating "
                           f"point or complex dtype. Got: {input.dtype.scalar_name}")
    axes = _axes(dim, input._data.ndim)
    count = int(np.prod([input._data.shape[a] for a in axes])) if axes else 1
    total = apply(OPS["sum"], (input,), {"axes": axes, "keepdim": bool(keepdim)})
    return _named(div(total, count), "MeanBackward0" if dim is None else "MeanBackward1")


def prod(input, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        input = cast(input, dtype)
    return _reduce("prod", input, dim, keepdim, "ProdBackward0", "ProdBackward1")


def _return_type(name):
    """A (values, indices) named tuple that prints like torch.return_types.<name>."""
    base = namedtuple(name, ["values", "indices"])

    def __repr__(self):
        return f"torch.return_types.{name}(\nvalues={self.values!r},\nindices={self.indices!r})"
    return type(name, (base,), {"__slots__": (), "__repr__": __repr__})


_RETURN_TYPES = {"amax": _return_type("max"), "amin": _return_type("min"), "sort": _return_type("sort"),
                 "topk": _return_type("topk"), "kthvalue": _return_type("kthvalue")}


def _extremum(name, arg, input, dim, keepdim, other):
    if isinstance(dim, Tensor) and other is None:
        dim, other = None, dim
    if other is not None:
        return (maximum if name == "amax" else minimum)(input, other)
    if dim is None:
        _require_elements(name[1:], input._data.shape, None, ())
        return _peak(name, input, None, False, name[1:].capitalize() + "Backward1", "")
    d = _dim(dim, input._data.ndim)
    if input._data.ndim == 0:   # a 0-d tensor is its own extremum, at index 0
        values = _named(apply(OPS["copy"], (input,)), name[1:].capitalize() + "Backward0")
        return _RETURN_TYPES[name](values, _new(np.zeros((), np.int64), input._device))
    _require_elements(name[1:], input._data.shape, d, (d,))
    indices = apply(OPS[arg], (input,), {"axis": d, "keepdim": True})
    values = apply(OPS["gather"], (input, indices), {"axis": d})
    if not keepdim:
        values, indices = squeeze(values, d), squeeze(indices, d)
    return _RETURN_TYPES[name](_named(values, name[1:].capitalize() + "Backward0"), indices)


def max(input, dim=None, keepdim=False, *, other=None):
    return _extremum("amax", "argmax", input, dim, keepdim, other)


def min(input, dim=None, keepdim=False, *, other=None):
    return _extremum("amin", "argmin", input, dim, keepdim, other)


def _amax_amin(name, input, dim, keepdim):
    dim = dim if dim != () else None
    _require_elements(name, input._data.shape, dim, _axes(dim, input._data.ndim))
    label = name.capitalize() + "Backward0"
    return _reduce(name, input, dim, keepdim, label, label, nans_win=False)


def amax(input, dim=(), keepdim=False):
    return _amax_amin("amax", input, dim, keepdim)


def amin(input, dim=(), keepdim=False):
    return _amax_amin("amin", input, dim, keepdim)


def _arg_extremum(name, input, dim, keepdim):
    axis = None if dim is None else _dim(dim, input._data.ndim)
    if input._data.ndim:
        _require_elements(name, input._data.shape, axis, () if axis is None else (axis,), IndexError)
    return apply(OPS[name], (input,), {"axis": axis, "keepdim": bool(keepdim)})


def argmax(input, dim=None, keepdim=False):
    return _arg_extremum("argmax", input, dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return _arg_extremum("argmin", input, dim, keepdim)


# ----------------------------------------------------------------------------- sorting
# One op orders a dimension (argsort: stable, NaN above every number); the values are a gather by
# its positions, whose gradient scatters the cotangent back.


def _sorted_positions(input, dim, descending):
    """(dim, positions that sort `input` along it); a 0-d input is its own order."""
    if input._data.ndim == 0:
        _dim(dim, 0)
        return 0, _new(np.zeros((), np.int64), input._device)
    d = _dim(dim, input._data.ndim)
    return d, apply(OPS["argsort"], (input,), {"axis": d, "descending": bool(descending)})


def _take_sorted(name, input, d, positions, label, keepdim=True):
    values = apply(OPS["gather"], (input, positions), {"axis": d}) if input._data.ndim else \
        apply(OPS["copy"], (input,))
    if not keepdim:
        values, positions = squeeze(values, d), squeeze(positions, d)
    return _RETURN_TYPES[name](_named(values, label), positions)


def sort(input, dim=-1, descending=False, stable=False):
    d, positions = _sorted_positions(input, dim, descending)
    return _take_sorted("sort", input, d, positions, "SortBackward0")


def argsort(input, dim=-1, descending=False, stable=False):
    return _sorted_positions(input, dim, descending)[1]


def msort(input):
    return sort(input, 0).values


def topk(input, k, dim=-1, largest=True, sorted=True):
    size = input._data.shape[_dim(dim, input._data.ndim)] if input._data.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError("selected index k out of range")
    d, positions = _sorted_positions(input, dim, largest)
    if input._data.ndim:
        positions = narrow(positions, d, 0, k)
    return _take_sorted("topk", input, d, positions, "TopkBackward0")


def kthvalue(input, k, dim=-1, keepdim=False):
    d = _dim(dim, input._data.ndim)
    size = input._data.shape[d] if input._data.ndim else 1
    if not size:
        raise IndexError(f"kthvalue(): Expected reduction dim {d} to have non-zero size.")
    if not 1 <= k <= size:
        raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {d}")
    d, positions = _sorted_positions(input, d, False)
    if input._data.ndim:
        positions = narrow(positions, d, k - 1, 1)
    return _take_sorted("kthvalue", input, d, positions, "KthvalueBackward0", keepdim or not input._data.ndim)


# ----------------------------------------------------------------------------- scatter and index_*


def _integer_index(name, index):
    if index._data.dtype != np.int64 and index._data.dtype != np.int32:
        raise RuntimeError(f"{name}(): Expected dtype int32/int64 for index")


def _scatter_index(name, input, d, index, src_shape):
    """Check an index tensor of scatter/scatter_add as PyTorch does."""
    _integer_index(name, index)
    shape, idx = input._data.shape, index._data.shape
    if len(idx) != len(shape) or builtins.any(n > m for k, (n, m) in enumerate(zip(idx, shape)) if k != d) \
            or (src_shape is not None and builtins.any(n > m for n, m in zip(idx, src_shape))):
        raise RuntimeError(f"Expected index {list(idx)} to be no larger than self {list(shape)} apart from "
                           f"dimension {d}" + (f" and to be no larger size than src {list(src_shape)}"
                                               if src_shape is not None else ""))
    check_index_range(name, index._data, shape[d] if shape else 1, d)


def _cut_to(src, shape):
    """The leading part of `src` shaped like the index (PyTorch's scatter reads no more)."""
    if tuple(src._data.shape) == tuple(shape):
        return src
    return getitem(src, tuple(slice(0, n) for n in shape))


def scatter(input, dim, index, src=None, value=None, *, reduce=None):
    if reduce is not None:
        raise NotImplementedError("scatter(reduce=...) is not implemented in fusegrad; use scatter_add, or "
                                  "scatter_reduce in PyTorch")
    if src is None:
        src = value
    d = _dim(dim, input._data.ndim)
    if isinstance(src, Tensor):
        if src._data.dtype != input._data.dtype:
            raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
        _scatter_index("scatter", input, d, index, src._data.shape)
        return _named(apply(OPS["scatter"], (input, index, _cut_to(src, index._data.shape)), {"axis": d}),
                      "ScatterBackward0")
    _scatter_index("scatter", input, d, index, None)
    value = np.asarray(src).astype(input._data.dtype).item()   # a number takes the input's dtype
    return _named(apply(OPS["scatter"], (input, index, value), {"axis": d}), "ScatterBackward1")


def scatter_add(input, dim, index, src):
    d = _dim(dim, input._data.ndim)
    if src._data.dtype != input._data.dtype:
        raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
    _scatter_index("scatter_add", input, d, index, src._data.shape)
    added = apply(OPS["scatter_add"], (_cut_to(src, index._data.shape), index),
                  {"axis": d, "shape": tuple(input._data.shape)})
    return _named(add(input, added), "ScatterAddBackward0")


def _along(name, input, d, index, shape):
    """A 1-D index of positions along dim d, as a scatter index of `shape` (recorded ops, so a
    compiled step reads each call's index). Its range is the caller's to check."""
    if index._data.ndim > 1:
        raise IndexError(f"{name}(): Index is supposed to be a vector, but got dim: {index._data.ndim} with type: "
                         f"Long and size: {list(index._data.shape)}")
    _integer_index(name, index)
    ndim = builtins.max(input._data.ndim, 1)
    column = reshape(index, *[-1 if k == d else 1 for k in range(ndim)])
    return expand(column, *shape) if input._data.ndim else reshape(index, ())


def _index_source(name, input, d, index, source, message):
    count = index._data.size
    if source._data.ndim and source._data.shape[d] != count or not source._data.ndim and count != 1:
        raise message(count, source._data.shape[d] if source._data.ndim else 1)
    if source._data.dtype != input._data.dtype:
        raise RuntimeError(f"{name}(): self ({input.dtype.scalar_name}) and source ({source.dtype.scalar_name}) "
                           "must have the same scalar type")
    shape, given = input._data.shape, source._data.shape
    if len(given) == len(shape) and builtins.any(n != m for k, (n, m) in enumerate(zip(given, shape)) if k != d):
        raise RuntimeError(f"{name}(): source tensor shape must match self tensor shape, excluding the specified "
                           f"dimension. Got self.shape = {list(shape)} source.shape = {list(given)}")
    where = _along(name, input, d, index, source._data.shape)
    check_index_range(name, index._data, shape[d] if shape else 1, d)
    return where


def index_add(input, dim, index, source, *, alpha=1):
    d = _dim(dim, input._data.ndim)
    where = _index_source("index_add_", input, d, index, source, lambda n, m: RuntimeError(
        f"index_add_(): Number of indices ({n}) should be equal to source.size(dim): ({m}), for dim: {d}"))
    if alpha != 1:
        source = mul(source, alpha)
    added = apply(OPS["scatter_add"], (source, where), {"axis": d, "shape": tuple(input._data.shape)})
    return _named(add(input, added), "IndexAddBackward0")


def index_copy(input, dim, index, source):
    d = _dim(dim, input._data.ndim)
    where = _index_source("index_copy_", input, d, index, source, lambda n, m: IndexError(
        f"index_copy_(): Number of indices ({n}) should be equal to source.size(dim) ({m})"))
    return _named(apply(OPS["scatter"], (input, where, source), {"axis": d}), "IndexCopyBackward0")


def index_fill(input, dim, index, value):
    d = _dim(dim, input._data.ndim)
    shape = list(input._data.shape)
    if shape:
        shape[d] = index._data.size
    size = input._data.shape[d] if shape else 1
    bad = index._data[(index._data < 0) | (index._data >= size)]
    if bad.size:
        raise IndexError(f"index {bad.flat[0]} is out of bounds for dimension {d} with size {size}")
    value = value.item() if isinstance(value, Tensor) else value
    value = np.asarray(value).astype(input._data.dtype).item()
    where = _along("index_fill_", input, d, index, tuple(shape))
    return _named(apply(OPS["scatter"], (input, where, value), {"axis": d}), "IndexFillBackward0")


def all(input, dim=None, keepdim=False):
    return apply(OPS["all"], (input,), {"axes": _axes(dim, input._data.ndim), "keepdim": bool(keepdim)})


def any(input, dim=None, keepdim=False):
    return apply(OPS["any"], (input,), {"axes": _axes(dim, input._data.ndim), "keepdim": bool(keepdim)})


def _correction(unbiased, correction):
    if correction is not None:
        return correction
    return 1 if unbiased is None or unbiased else 0


def _variance(name, input, dim, unbiased, keepdim, correction):
    if isinstance(dim, bool):   # var(input, unbiased)
        dim, unbiased = None, dim
    axes = _axes(dim, input._data.ndim)
    count = int(np.prod([input._data.shape[a] for a in axes])) if axes else 1
    dof = count - _correction(unbiased, correction)
    if dof <= 0:   # stacklevel: the caller of var, std, var_mean or std_mean
        warnings.warn(f"{name}(): degrees of freedom is <= 0. Correction should be strictly less than the "
                      "reduction factor (input numel divided by output numel).", UserWarning, stacklevel=5)
    centered = sub(input, mean(input, axes, keepdim=True))
    total = sum(mul(centered, centered), axes, keepdim=keepdim)
    return div(total, builtins.max(dof, 0))


def _sqrt_zero_grad_at_zero(v):
    """sqrt whose gradient is 0 where v == 0 (PyTorch's norm and std), not 0 * inf = nan; NaN and
    inf pass through."""
    zero = eq(v, 0)
    return where(zero, 0.0, sqrt(where(zero, 1.0, v)))


@_float16_in_float32
def _var(input, name, dim, unbiased, keepdim, correction):
    return _named(_variance(name, input, dim, unbiased, keepdim, correction), "VarBackward0")


@_float16_in_float32
def _std(input, name, dim, unbiased, keepdim, correction):
    return _named(_sqrt_zero_grad_at_zero(_variance(name, input, dim, unbiased, keepdim, correction)), "StdBackward0")


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return _var(input, "var", dim, unbiased, keepdim, correction)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return _std(input, "std", dim, unbiased, keepdim, correction)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return (_named(_var(input, "var_mean", dim, unbiased, keepdim, correction), "VarMeanBackward0"),
            _named(mean(input, dim, keepdim), "VarMeanBackward0"))


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return (_named(_std(input, "std_mean", dim, unbiased, keepdim, correction), "StdMeanBackward0"),
            _named(mean(input, dim, keepdim), "StdMeanBackward0"))


@_float16_in_float32
def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    if p == "fro" and isinstance(dim, (tuple, list)) and len(dim) > 2:
        # PyTorch takes the Frobenius norm as a matrix norm, over two dims at most
        raise RuntimeError(f"linalg.matrix_norm: dim must be a 2-tuple. Got {' '.join(map(str, dim))} "
                           f"(norm of a tensor of shape {list(input.shape)}); for the 2-norm over more "
                           f"dims pass p=2")
    if dtype is not None:
        input = cast(input, dtype)
    if p in ("fro", 2, 2.0):
        out = _sqrt_zero_grad_at_zero(sum(mul(input, input), dim, keepdim))
    elif p in (float("inf"), "inf"):
        out = _infinity_norm("amax", input, dim, keepdim)
    elif p in (float("-inf"), "-inf"):
        out = _infinity_norm("amin", input, dim, keepdim)
    elif p == 1:
        out = sum(abs(input), dim, keepdim)
    elif p == 0:
        out = sum(ne(input, 0).to(input.dtype), dim, keepdim)
    else:
        out = pow(sum(pow(abs(input), p), dim, keepdim), 1.0 / p)
    return _named(out, "LinalgVectorNormBackward0")


def logsumexp(input, dim, keepdim=False):
    axes = _axes(dim, input._data.ndim)
    if 0 in (input._data.shape[a] for a in axes):   # log of an empty sum: -inf, with no peak to shift by
        out = log(sum(exp(input), axes, keepdim=True))
    else:
        peak = amax(input, axes, keepdim=True).detach()
        peak = where(isfinite(peak), peak, 0.0)
        out = add(log(sum(exp(sub(input, peak)), axes, keepdim=True)), peak)
    return _named(out if keepdim else squeeze(out, axes), "LogsumexpBackward0")


def cumsum(input, dim, *, dtype=None):
    if dtype is not None:
        input = cast(input, dtype)
    elif input._data.dtype.kind in "biu":
        input = cast(input, D.int64)
    return apply(OPS["cumsum"], (input,), {"axis": _dim(dim, input._data.ndim), "reverse": False})


# ----------------------------------------------------------------------------- shapes


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _infer_shape(shape, numel, op):
    if shape.count(-1) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if known == 0 or numel % known:
            raise RuntimeError(f"{op}: shape '{list(shape)}' is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    if int(np.prod(shape)) != numel:
        raise RuntimeError(f"{op}: shape '{list(shape)}' is invalid for input of size {numel}")
    return shape


def reshape(input, *shape):
    shape = _infer_shape(_shape_args(shape), input._data.size, "reshape")
    if shape == input._data.shape:
        return _named(apply(OPS["reshape"], (input,), {"shape": shape}), "ViewBackward0")
    label = "ViewBackward0" if input._data.flags.c_contiguous else "UnsafeViewBackward0"
    return _named(apply(OPS["reshape"], (input,), {"shape": shape}), label)


def view(input, *shape):
    if len(shape) == 1 and isinstance(shape[0], D.DType):
        raise RuntimeError("view(dtype) is not supported; use .to(dtype)")
    shape = _infer_shape(_shape_args(shape), input._data.size, "view")
    try:
        np.reshape(input._data, shape, copy=False)
    except ValueError:
        raise RuntimeError("view size is not compatible with input tensor's size and stride (at least one "
                           "dimension spans across two contiguous subspaces). Use .reshape(...) instead.") from None
    return _named(apply(OPS["reshape"], (input,), {"shape": shape}), "ViewBackward0")


def view_as(input, other):
    return view(input, other._data.shape)


def reshape_as(input, other):
    return reshape(input, other._data.shape)


def flatten(input, start_dim=0, end_dim=-1):
    shape = input._data.shape
    if not shape:
        return reshape(input, (1,))
    s, e = _dim(start_dim, len(shape)), _dim(end_dim, len(shape))
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    new = shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
    return reshape(input, new) if new != shape else input


def unflatten(input, dim, sizes):
    shape = input._data.shape
    d = _dim(dim, len(shape))
    sizes = _infer_shape(tuple(sizes), shape[d], "unflatten")
    return reshape(input, shape[:d] + sizes + shape[d + 1:])


def squeeze(input, dim=None):
    shape = input._data.shape
    if dim is None:
        new = tuple(n for n in shape if n != 1)
        label = "SqueezeBackward0"
    else:
        axes = set(_axes(dim, len(shape)))
        new = tuple(n for i, n in enumerate(shape) if not (i in axes and n == 1))
        label = "SqueezeBackward1"
    if new == shape:
        return input if dim is not None and not input._rg else _named(
            apply(OPS["reshape"], (input,), {"shape": new}), label)
    return _named(apply(OPS["reshape"], (input,), {"shape": new}), label)


def unsqueeze(input, dim):
    shape = input._data.shape
    d = _dim(dim, len(shape) + 1)
    return _named(apply(OPS["reshape"], (input,), {"shape": shape[:d] + (1,) + shape[d:]}),
                  "UnsqueezeBackward0")


def permute(input, *dims):
    dims = _shape_args(dims)
    ndim = input._data.ndim
    if len(dims) != ndim:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match the "
                           f"length of the desired ordering of dimensions i.e. input.dim() = {ndim} is not "
                           f"equal to len(dims) = {len(dims)}")
    axes = tuple(_dim(d, ndim) for d in dims)
    if len(set(axes)) != ndim:
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    return apply(OPS["permute"], (input,), {"axes": axes})


def transpose(input, dim0, dim1):
    ndim = input._data.ndim
    if ndim == 0:
        return input
    a, b = _dim(dim0, ndim), _dim(dim1, ndim)
    axes = list(range(ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return _named(apply(OPS["permute"], (input,), {"axes": tuple(axes)}), "TransposeBackward0")


swapaxes = swapdims = transpose


def t(input):
    if input._data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input._data.ndim}D")
    if input._data.ndim < 2:   # still a new view with its own grad_fn, as in PyTorch
        return _named(apply(OPS["reshape"], (input,), {"shape": input._data.shape}), "TBackward0")
    return _named(transpose(input, 0, 1), "TBackward0")


def movedim(input, source, destination):
    ndim = input._data.ndim
    src, dst = _dim(source, ndim), _dim(destination, ndim)
    order = [i for i in range(ndim) if i != src]
    order.insert(dst, src)
    return permute(input, order)


def expand(input, *sizes):
    sizes = _shape_args(sizes)
    shape = input._data.shape
    lead = len(sizes) - len(shape)
    if lead < 0:
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
                           f"the number of dimensions in the tensor ({len(shape)})")
    target = tuple(shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(sizes))
    return apply(OPS["expand"], (input,), {"shape": target})


def expand_as(input, other):
    return expand(input, other._data.shape)


def broadcast_to(input, shape):
    return expand(input, shape)


def broadcast_tensors(*tensors):
    shape = broadcast_shapes("broadcast_tensors", [t._data.shape for t in tensors])   # a ShapeError, as add's
    return tuple(expand(t, shape) if t._data.shape != shape else t for t in tensors)


def contiguous(input, memory_format=None):
    if input._data.flags.c_contiguous:
        return input
    return apply(OPS["copy"], (input,))


def clone(input, *, memory_format=None):
    return apply(OPS["copy"], (input,))


def detach(input):
    return input.detach()


def cat(tensors, dim=0):
    tensors = [t for t in tensors]
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    # PyTorch skips 1-D empty tensors when concatenating.
    kept = [t for t in tensors if not (t._data.ndim == 1 and t._data.size == 0)] or tensors[:1]
    d = _dim(dim, kept[0]._data.ndim)
    kept = promote_operands("cat", kept)
    return apply(OPS["cat"], tuple(kept), {"axis": d})


concat = concatenate = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    shape = tensors[0]._data.shape
    for i, t_ in enumerate(tensors):
        if t_._data.shape != shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shape)} at entry 0 "
                               f"and {list(t_._data.shape)} at entry {i}")
    d = _dim(dim, len(shape) + 1)
    return _named(cat([unsqueeze(t_, d) for t_ in tensors], d), "StackBackward0")


def hstack(tensors):
    return cat(tensors, 0 if tensors[0]._data.ndim == 1 else 1)


def vstack(tensors):
    return cat([t_ if t_._data.ndim > 1 else unsqueeze(t_, 0) for t_ in tensors], 0)


def narrow(input, dim, start, length):
    d = _dim(dim, input._data.ndim)
    key = (slice(None),) * d + (slice(start, start + length),)
    return input[key]


def select(input, dim, index):
    d = _dim(dim, input._data.ndim)
    return input[(slice(None),) * d + (index,)]


def split(tensor, split_size_or_sections, dim=0):
    d = _dim(dim, tensor._data.ndim)
    n = tensor._data.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0 and n:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension size of {n}")
        sizes = [builtins.min(size, n - i) for i in range(0, n, size)] if n else [0]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's "
                               f"size at dimension {d}), but got split_sizes={sizes}")
    out, start = [], 0
    label = "SplitBackward0" if isinstance(split_size_or_sections, int) else "SplitWithSizesBackward0"
    for size in sizes:
        out.append(_named(narrow(tensor, d, start, size), label))
        start += size
    return tuple(out)


def chunk(input, chunks, dim=0):
    n = input._data.shape[_dim(dim, input._data.ndim)]
    size = -(-n // chunks) if chunks > 0 else 0
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    return split(input, builtins.max(size, 1), dim)


def unbind(input, dim=0):
    d = _dim(dim, input._data.ndim)
    return tuple(_named(select(input, d, i), "UnbindBackward0") for i in range(input._data.shape[d]))


def gather(input, dim, index):
    return apply(OPS["gather"], (input, index), {"axis": _dim(dim, input._data.ndim)})


def index_select(input, dim, index):
    d = _dim(dim, input._data.ndim)
    check_index_range("index_select", index._data, input._data.shape[d] if input._data.ndim else 1, d)
    return _named(input[(slice(None),) * d + (index,)], "IndexSelectBackward0")


def masked_fill(input, mask, value):
    # the value takes the input's dtype (2.9 fills an int64 tensor with 2), as in PyTorch
    if isinstance(value, Tensor):
        if value._data.ndim:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                               f"{value._data.ndim} dimension(s).")
        value = cast(value, input.dtype)
    else:
        value = _new(np.asarray(value).astype(input._data.dtype))
    return _named(where(mask, value, input), "MaskedFillBackward0")


def nonzero(input, *, as_tuple=False):
    _reads_data("nonzero")
    idx = np.nonzero(input._data)
    if as_tuple:
        return tuple(_new(np.ascontiguousarray(i, np.int64), input._device) for i in idx)
    return _new(np.stack(idx, axis=1).astype(np.int64) if idx else np.zeros((0, 0), np.int64), input._device)


def tril(input, diagonal=0):
    mask = _new(np.tril(np.ones(input._data.shape[-2:], bool), diagonal), input._device)
    return _named(where(mask, input, 0), "TrilBackward0")


def triu(input, diagonal=0):
    mask = _new(np.triu(np.ones(input._data.shape[-2:], bool), diagonal), input._device)
    return _named(where(mask, input, 0), "TriuBackward0")


def getitem(input, key):
    spec, arrays = normalize_key(key, input._data.shape)
    label = None if arrays else _basic_index_label(key, spec, input._data.shape)
    return apply(OPS["index"], (input,) + tuple(_new(a, input._device) for a in arrays), {"spec": spec}, label)


def _basic_index_label(key, spec, shape):
    """PyTorch's grad_fn for basic indexing: that of the last view op it applies, left to right;
    inside a tuple a full slice applies none, and no op at all gives an alias."""
    if isinstance(key, slice):
        return "SliceBackward0"
    label, dim = "AliasBackward0", 0
    for item in spec:
        if item[0] == "e":
            dim += len(shape) - builtins.sum(1 for it in spec if it[0] in ("s", "i"))
        elif item[0] == "n":
            label = "UnsqueezeBackward0"
        elif item[0] == "i":
            label, dim = "SelectBackward0", dim + 1
        else:
            _, start, stop, step = item
            if not (start in (None, 0) and step in (None, 1) and (stop is None or stop >= shape[dim])):
                label = "SliceBackward0"
            dim += 1
    return label


def setitem(input, key, value):
    if (capturing() is not None and isinstance(key, Tensor) and key._data.dtype == np.bool_
            and key._data.shape == input._data.shape and (not isinstance(value, Tensor) or not value._data.ndim)):
        # x[mask] = v while capturing: where(mask, v, x), which keeps no mask positions (normalize_key's)
        value = _tensor(value)
        value = cast(value, input.dtype) if isinstance(value, Tensor) else \
            _new(np.asarray(value).astype(input._data.dtype), input._device)
        run_inplace(input, lambda old: _named(where(key, value, old), "IndexPutBackward0"), "setitem")
        return
    spec, arrays = normalize_key(key, input._data.shape)
    value = _tensor(value) if not isinstance(value, (list, tuple)) else _new(np.asarray(value), input._device)
    if isinstance(value, Tensor) and value._data.dtype != input._data.dtype:
        value = cast(value, input.dtype)
    if isinstance(value, Tensor) and value._data.ndim and value._data.shape[0] == 1:
        view, key = indexed(input._data, spec, arrays)
        region = np.ndim(view[key])
        if value._data.ndim > region:   # PyTorch drops leading size-1 dims of the value
            keep = value._data.shape
            while len(keep) > region and keep[0] == 1:
                keep = keep[1:]
            value = reshape(value, keep)
    if capturing() is None and (not grad_mode.state.enabled or not (input._rg or (isinstance(value, Tensor)
                                                                                and value._rg))):
        view, key = indexed(input._data, spec, arrays)   # written where it goes (a recorded write copies)
        try:
            view[key] = value._data if isinstance(value, Tensor) else value
        except ValueError as e:
            raise RuntimeError(f"setitem: {e}") from None
        input._vc[0] += 1
        return
    index_arrays = tuple(_new(a, input._device) for a in arrays)
    label = "IndexPutBackward0" if arrays else None   # basic indexing writes through a view: CopySlices
    run_inplace(input, lambda old: apply(OPS["index_put"], (old, value) + index_arrays, {"spec": spec}, label),
                "setitem")


# ----------------------------------------------------------------------------- linear algebra


def matmul(input, other):
    if input._data.dtype != other._data.dtype:   # PyTorch does not promote here either
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, but got {input.dtype.scalar_name} "
                           f"and {other.dtype.scalar_name} (shapes {list(input._data.shape)} and "
                           f"{list(other._data.shape)}); convert one with .to(dtype)")
    out = apply(OPS["matmul"], (input, other))
    nx, ny = input._data.ndim, other._data.ndim
    label = ("DotBackward0" if nx == ny == 1 else "MvBackward0" if ny == 1 and nx == 2 else
             "MmBackward0" if nx == ny == 2 else "BmmBackward0" if nx == ny == 3 else "MatmulBackward0")
    return _named(out, label)


def mm(input, mat2):
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mm: both arguments must be matrices, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D tensors (shapes {list(input._data.shape)} and "
                           f"{list(mat2._data.shape)})")
    if input._data.shape[1] != mat2._data.shape[0]:
        (m, k1), (k2, n) = input._data.shape, mat2._data.shape
        raise ShapeError(f"mm: shapes [{m}, {k1}] and [{k2}, {n}] cannot be multiplied ({m}x{k1} and {k2}x{n})")
    return matmul(input, mat2)


def bmm(input, mat2):
    if input._data.ndim != 3 or mat2._data.ndim != 3:
        raise RuntimeError(f"bmm: both arguments must be 3-D batches of matrices, got shapes "
                           f"{list(input._data.shape)} and {list(mat2._data.shape)}")
    if input._data.shape[0] != mat2._data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: shapes {list(input._data.shape)} and "
                           f"{list(mat2._data.shape)}")
    return matmul(input, mat2)


def mv(input, vec):
    return matmul(input, vec)


def dot(input, other):
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input._data.ndim}D and {other._data.ndim}D tensors")
    return matmul(input, other)


inner = dot


def outer(input, vec2):
    return mul(unsqueeze(input, 1), unsqueeze(vec2, 0))   # MulBackward0, as PyTorch records it


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    prod_ = mm(mat1, mat2)
    if alpha != 1:
        prod_ = mul(prod_, alpha)
    return _named(add(mul(input, beta) if beta != 1 else input, prod_), "AddmmBackward0")


def _binary_cross_entropy(input, target):
    """The elementwise loss of nn.functional.binary_cross_entropy (one op for its gradient)."""
    input, target = promote_operands("binary_cross_entropy", (input, target))
    return apply(OPS["binary_cross_entropy"], (input, target))


def softmax(input, dim=None, dtype=None):
    return _normalized("softmax", input, dim, dtype)


def log_softmax(input, dim=None, dtype=None):
    return _normalized("log_softmax", input, dim, dtype)


def _normalized(name, input, dim, dtype):
    if dtype is not None:
        input = cast(input, dtype)
    if input._data.dtype.kind != "f":
        input = cast(input, D.default_float)
    axis = _dim(_implicit_dim(dim, input), input._data.ndim)
    if input._data.ndim == 0:   # over a 0-d tensor as over one element
        return reshape(apply(OPS[name], (reshape(input, 1),), {"axis": 0}), ())
    return apply(OPS[name], (input,), {"axis": axis})


def _implicit_dim(dim, input):
    if dim is not None:
        return dim
    return 0 if input._data.ndim in (0, 1, 3) else 1


# ----------------------------------------------------------------------------- types and devices


def to(input, *args, **kwargs):
    dtype = kwargs.pop("dtype", None)
    dev = kwargs.pop("device", None)
    kwargs.pop("non_blocking", None)
    copy = kwargs.pop("copy", False)
    for a in args:
        if isinstance(a, D.DType):
            dtype = a
        elif isinstance(a, Tensor):
            dtype, dev = a.dtype, a._device
        elif a is not None:
            dev = a
    dev = input._device if dev is None else devices.canonical(dev)
    if dev is not input._device:
        return _to_device(input if dtype is None else cast(input, dtype), dev)
    if dtype is None or dtype.np == input._data.dtype:
        return clone(input) if copy else input
    return cast(input, dtype)


def _to_device(input, dev):
    """A copy of `input` on device `dev`, recorded as a copy so that gradients flow back."""
    moved = _named(apply(OPS["copy"], (input,)), "ToCopyBackward0")
    moved._data, moved._device = devices.to_device(moved._data, dev), dev
    if moved._node is not None:
        moved._node.device = dev
    return moved


def type_as(input, other):
    return to(input, other.dtype)


def _converter(dtype):
    def convert(input, memory_format=None):
        return to(input, dtype)
    return convert


# ----------------------------------------------------------------------------- in-place variants


def _inplace(fn, name):
    def method(self, *args, **kwargs):
        return run_inplace(self, lambda old: fn(old, *args, **kwargs), name)
    method.__name__ = name
    return method


def zero_(input):
    return _overwrite(input, np.zeros(input._data.shape, input._data.dtype), "zero_", "ZeroBackward0")


def fill_(input, value):
    value = value.item() if isinstance(value, Tensor) else value
    return _overwrite(input, np.full(input._data.shape, value, input._data.dtype), "fill_", "FillBackward2")


def _overwrite(input, values, name, label):
    """input <- values (an array or a tensor that broadcasts to its shape) in place. The old value
    stays in the graph with a zero gradient, as in PyTorch's fill_/zero_/copy_: whatever the old
    value was computed from gets zeros, not None."""
    data = values._data if isinstance(values, Tensor) else values
    try:   # a broadcast shape other than the target's is refused by run_inplace
        shape = np.broadcast_shapes(data.shape, input._data.shape)
    except ValueError:
        raise ShapeError(f"{name}: shapes {list(input._data.shape)} and {list(data.shape)} are not "
                         f"broadcastable") from None

    def replaced(old):
        if not (grad_mode.state.enabled and (old._rg or isinstance(values, Tensor) and values._rg)):
            # through recorded ops (a compiled step replays them), not NumPy calls the trace cannot see
            new = values if isinstance(values, Tensor) else _new(np.asarray(data), input._device)
            if new._data.shape != shape:
                new = expand(new, *shape)
            return cast(new, input.dtype)
        everywhere = _new(np.ones(input._data.shape, bool), input._device)
        new = values if isinstance(values, Tensor) else _new(values.astype(input._data.dtype, copy=False),
                                                             input._device)
        return _named(apply(OPS["where"], (everywhere, new, old)), label)
    return run_inplace(input, replaced, name)


def copy_(input, src, non_blocking=False):
    src = src if isinstance(src, Tensor) else _new(np.asarray(src))
    return _overwrite(input, to(src, input._device, input.dtype), "copy_", "CopyBackwards")


INPLACE = {
    "add_": add, "sub_": sub, "mul_": mul, "div_": div, "pow_": pow, "neg_": neg, "abs_": abs,
    "exp_": exp, "log_": log, "sin_": sin, "cos_": cos, "tan_": tan, "tanh_": tanh, "sigmoid_": sigmoid,
    "sqrt_": sqrt, "relu_": relu, "clamp_": clamp, "clamp_min_": clamp_min, "clamp_max_": clamp_max,
    "maximum_": maximum, "minimum_": minimum, "square_": square, "reciprocal_": reciprocal,
    "floor_": floor, "sign_": sign, "masked_fill_": masked_fill, "lerp_": lerp, "true_divide_": div,
    "log1p_": log1p, "expm1_": expm1, "rsqrt_": rsqrt, "clip_": clamp, "scatter_": scatter,
    "scatter_add_": scatter_add, "index_add_": index_add, "index_copy_": index_copy, "index_fill_": index_fill,
}
for _name, _fn in INPLACE.items():
    globals()[_name] = _inplace(_fn, _name)

float_ = _converter(D.float32)
double = _converter(D.float64)
half = _converter(D.float16)
long = _converter(D.int64)
int_ = _converter(D.int32)
bool__ = _converter(D.bool_)

__all__ = sorted(
    name for name, value in list(globals().items())
    if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == __name__
    and name not in ("float_", "int_", "bool__", "double", "half", "long", "getitem", "setitem",
                     "tensor_from_scalar", "ones_like_bool"))
