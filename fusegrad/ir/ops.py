"""Every IR op, one definition each: NumPy impl, shape/dtype rule, scalar expression, VJP rule.

VJP rules have the signature `vjp(b, g, node, saved)`: `b` is a graph Builder, `g` the output's
cotangent, `node` the forward node (for attrs and input shapes) and `saved` the values listed in
`saves` (input indices, -1 for the output), as nodes of the backward graph. A rule returns one
cotangent per input; the autodiff pass sums broadcast cotangents back to the input's shape, casts
them to its dtype, and drops those of inputs that need no gradient. Because the rules emit IR,
backward graphs can be differentiated again.
"""
import math

import numpy as np

from . import dtypes
from .graph import Node, shape_of
from .op import ShapeError, defop

# ----------------------------------------------------------------------------- shape rules


def broadcast_shapes(name, shapes):
    first = shapes[0]
    for s in shapes:
        if s != first:
            break
    else:
        return first
    ndim = max(len(s) for s in shapes)
    out = []
    for d in range(-ndim, 0):
        size = 1
        for k, s in enumerate(shapes):
            n = s[d] if -d <= len(s) else 1
            if n != 1:
                if size != 1 and n != size:
                    a = next(j for j in range(k) if -d <= len(shapes[j]) and shapes[j][d] == size)
                    raise ShapeError(
                        f"{name}: shapes {_fmt(shapes[a])} and {_fmt(s)} are not broadcastable: the size "
                        f"of tensor {chr(97 + a)} ({size}) must match the size of tensor {chr(97 + k)} ({n}) "
                        f"at non-singleton dimension {ndim + d}")
                size = n
        out.append(size)
    return tuple(out)


def _fmt(shape):
    return f"[{', '.join(map(str, shape))}]"


def elementwise_infer(name, out_dtype=None):
    def infer(shapes, dts, attrs):
        return broadcast_shapes(name, shapes), out_dtype or dts[-1]
    return infer


def in_shape(node, i):
    return shape_of(node.inputs[i])


def reduced_shape(shape, axes, keepdim):
    if keepdim:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


# ----------------------------------------------------------------------------- graph sources

defop("placeholder", impl=None, infer=None, kind="source")
# A typed 0-d array, not a Python number: NumPy 2 would promote float32 * 0-d float64 to float64.
defop("const", impl=lambda value, dtype: np.asarray(value, dtype.np),
      infer=lambda shapes, dts, a: ((), a["dtype"]), kind="source")
defop("full", impl=lambda shape, value, dtype: np.full(shape, value, dtype.np),
      infer=lambda shapes, dts, a: (tuple(a["shape"]), a["dtype"]), kind="source")

# ----------------------------------------------------------------------------- elementwise


def elementwise(name, fn, expr, vjp=None, saves=(), out_dtype=None, **kw):
    return defop(name, fn, elementwise_infer(name, out_dtype), vjp=vjp, saves=saves, expr=expr,
                 kind="elementwise", **kw)



elementwise("neg", np.negative, "(-{0})", lambda b, g, n, s: (b.neg(g),))
elementwise("exp", np.exp, "np.exp({0})", lambda b, g, n, s: (b.mul(g, s[0]),), saves=(-1,))
elementwise("log", np.log, "np.log({0})", lambda b, g, n, s: (b.div(g, s[0]),), saves=(0,))
elementwise("sin", np.sin, "np.sin({0})", lambda b, g, n, s: (b.mul(g, b.cos(s[0])),), saves=(0,))
elementwise("cos", np.cos, "np.cos({0})", lambda b, g, n, s: (b.neg(b.mul(g, b.sin(s[0]))),), saves=(0,))
elementwise("tan", np.tan, "np.tan({0})",
      lambda b, g, n, s: (b.mul(g, b.add(b.mul(s[0], s[0]), 1)),), saves=(-1,))
elementwise("tanh", np.tanh, "np.tanh({0})",
      lambda b, g, n, s: (b.mul(g, b.sub(1, b.mul(s[0], s[0]))),), saves=(-1,))
# log(1 + x) and exp(x) - 1 without the rounding of 1 + x: full precision near 0, where the
# composites returned 0 for |x| below float32's epsilon
elementwise("log1p", np.log1p, "np.log1p({0})", lambda b, g, n, s: (b.div(g, b.add(s[0], 1)),), saves=(0,),
            grad_fn="Log1PBackward0")
elementwise("expm1", np.expm1, "np.expm1({0})", lambda b, g, n, s: (b.mul(g, b.add(s[0], 1)),), saves=(-1,),
            grad_fn="Expm1Backward0")


def _sigmoid(x):
    # PyTorch's formula, 1 / (1 + exp(-x)): exp(-x) overflows to inf below x = -88 (float32),
    # giving PyTorch's 0 there. Computed in one buffer (four passes, no temporaries; a select
    # between two branches took 10x longer on 4M elements), in float32 for float16 as PyTorch does.
    if x.dtype == np.float16:
        return _sigmoid(x.astype(np.float32)).astype(np.float16)
    out = np.negative(x, out=np.empty_like(x))
    np.exp(out, out=out)
    np.add(out, 1, out=out)
    return np.reciprocal(out, out=out)


elementwise("sigmoid", _sigmoid, "((1 if {0} >= 0 else np.exp({0})) / (1 + np.exp(-abs({0}))))",
      lambda b, g, n, s: (b.mul(g, b.mul(s[0], b.sub(1, s[0]))),), saves=(-1,))
elementwise("sqrt", np.sqrt, "np.sqrt({0})", lambda b, g, n, s: (b.div(g, b.mul(s[0], 2)),), saves=(-1,))
# abs' is sign, so its gradient at NaN is 0 as in PyTorch.
elementwise("abs", np.abs, "np.abs({0})", lambda b, g, n, s: (b.mul(g, b.sign(s[0])),), saves=(0,))


def _sign(x):
    # PyTorch's sign is (x > 0) - (x < 0): 0 at NaN, where NumPy's sign gives NaN.
    if x.dtype.kind != "f":
        return np.sign(x)
    return np.where(np.isnan(x), x.dtype.type(0), np.sign(x))


# Piecewise constant: differentiable with zero gradient, as in PyTorch (the output requires grad).
elementwise("sign", _sign, "(1 if {0} > 0 else (-1 if {0} < 0 else 0))", lambda b, g, n, s: (b.zeros(g.shape, g.dtype),))
elementwise("floor", np.floor, "np.floor({0})", lambda b, g, n, s: (b.zeros(g.shape, g.dtype),))
elementwise("logical_not", np.logical_not, "(not {0})", out_dtype=dtypes.bool_)
elementwise("copy", lambda x: np.array(x, copy=True, order="C"), "{0}", lambda b, g, n, s: (g,), grad_fn="CloneBackward0")
defop("cast", lambda x, dtype: x.astype(dtype.np),
      lambda shapes, dts, a: (shapes[0], a["dtype"]), vjp=lambda b, g, n, s: (g,),
      expr="{dtype}({0})", kind="elementwise", grad_fn="ToCopyBackward0")

elementwise("add", np.add, "({0} + {1})", lambda b, g, n, s: (g, g))
elementwise("sub", np.subtract, "({0} - {1})", lambda b, g, n, s: (g, b.neg(g)))
elementwise("mul", np.multiply, "({0} * {1})", lambda b, g, n, s: (b.mul(g, s[1]), b.mul(g, s[0])),
       saves=(0, 1))


def _div_vjp(b, g, n, s):
    x, y = s
    gx = b.div(g, y)
    return gx, b.neg(b.div(b.mul(gx, x), y))


elementwise("div", np.true_divide, "({0} / {1})", _div_vjp, saves=(0, 1))
def _integer_division(fn):
    """fn, except that an integer division by zero raises as in PyTorch (NumPy returns 0)."""
    def divide(x, y):
        if np.result_type(x, y).kind in "iub" and not np.all(y):
            raise RuntimeError("ZeroDivisionError")
        return fn(x, y)
    return divide


elementwise("floor_divide", _integer_division(np.floor_divide), "({0} // {1})",
            lambda b, g, n, s: (b.zeros(g.shape, g.dtype),) * 2)
# x % y = x - floor(x / y) * y
elementwise("remainder", _integer_division(np.remainder), "({0} % {1})",
       lambda b, g, n, s: (g, b.neg(b.mul(g, b.floor(b.div(s[0], s[1]))))), saves=(0, 1))


def _pow_vjp(b, g, n, s):
    x, y, out = s
    # d/dx x**y = y x**(y-1), taken as 0 where y == 0 (not 0 * inf at x == 0), as PyTorch does.
    if type(y) in (int, float):   # x ** c: c - 1 in Python, never a graph of two constants
        return (b.zeros(g.shape, g.dtype) if y == 0 else b.mul(g, b.mul(b.pow(x, y - 1), y))), None
    if type(x) in (int, float):   # c ** y: log c in Python too
        log_x = math.log(x) if x > 0 else float("nan") if x < 0 else float("-inf")
        gy = b.mul(g, b.mul(out, log_x))
        return None, (b.where(b.ge(y, 0), 0, gy) if x == 0 else gy)
    gx = b.where(b.eq(y, 0), 0, b.mul(g, b.mul(y, b.pow(x, b.sub(y, 1)))))
    # d/dy x**y = x**y log x, taken as 0 where x == 0 and y >= 0, as PyTorch does.
    zero_base = b.logical_and(b.eq(x, 0), b.ge(y, 0))
    gy = b.mul(g, b.where(zero_base, 0, b.mul(out, b.log(x))))
    return gx, gy


def _pow(x, y):
    dtype = np.result_type(x, y)   # Python scalars stay weakly typed
    if dtype.kind in "iu" and np.any(np.asarray(y) < 0):
        # integer powers with negative exponents, as PyTorch computes them (NumPy refuses): the
        # reciprocal truncates to 0 except for bases 1 and -1
        x, y = (a.astype(dtype, copy=False) for a in np.broadcast_arrays(x, y))
        negative = np.where(x == 1, 1, np.where(x == -1, np.where(y % 2 == 0, 1, -1), 0))
        return np.where(y < 0, negative, np.power(x, np.maximum(y, 0))).astype(dtype, copy=False)
    if dtype.kind == "f" and dtype.itemsize >= 4 and np.ndim(y) == 0:
        square_or_cube = _SMALL_POWERS.get(float(y))
        if square_or_cube is not None:
            return square_or_cube(np.asarray(x, dtype))
    return np.power(x, y)


# x ** 2 and x ** 3 as PyTorch computes them, x * x and x * x * x: np.power takes 50x longer for
# a float32 x ** 3 with negative bases (its pow has no fast path for small integer exponents).
_SMALL_POWERS = {2.0: np.square, 3.0: lambda x: np.multiply(np.square(x), x)}


elementwise("pow", _pow, "({0} ** {1})", _pow_vjp, saves=(0, 1, -1))


def _max_min_vjp(loses):
    # Ties share the cotangent; an operand gets none only where it loses, so where either is NaN
    # (the NaN wins) both get all of it, as in PyTorch.
    def vjp(b, g, n, s):
        x, y = s
        half = b.mul(g, 0.5)
        return (b.where(b.eq(x, y), half, b.where(loses(b, x, y), 0, g)),
                b.where(b.eq(x, y), half, b.where(loses(b, y, x), 0, g)))
    return vjp


# NumPy's maximum/minimum propagate NaN; the expressions must too (Python's max(nan, 1) is nan,
# max(1, nan) is 1).
elementwise("maximum", np.maximum, "({0} if {0} != {0} or {0} > {1} else {1})",
            _max_min_vjp(lambda b, x, y: b.lt(x, y)), saves=(0, 1))
elementwise("minimum", np.minimum, "({0} if {0} != {0} or {0} < {1} else {1})",
            _max_min_vjp(lambda b, x, y: b.gt(x, y)), saves=(0, 1))

for _name, _fn, _sym in (("eq", np.equal, "=="), ("ne", np.not_equal, "!="), ("lt", np.less, "<"),
                         ("le", np.less_equal, "<="), ("gt", np.greater, ">"),
                         ("ge", np.greater_equal, ">=")):
    elementwise(_name, _fn, f"({{0}} {_sym} {{1}})", out_dtype=dtypes.bool_)
elementwise("logical_and", np.logical_and, "({0} and {1})", out_dtype=dtypes.bool_)
elementwise("logical_or", np.logical_or, "({0} or {1})", out_dtype=dtypes.bool_)
elementwise("logical_xor", np.logical_xor, "({0} != {1})", out_dtype=dtypes.bool_)

def select(condition, x, y):
    """np.where(condition, x, y), without a branch per element on large arrays: np.where's loop
    branches on each condition, which a random mask (relu's, on signed data) mispredicts half the
    time, 20-30x slower than a ufunc. Selects bit patterns instead, (x ^ y) & mask ^ y, so inf,
    NaN payloads and -0.0 come through exactly as np.where gives them; against a +0 (relu and the
    gradients masked by it) that is a single and."""
    if type(condition) is not np.ndarray or condition.size < 256:
        return np.where(condition, x, y)
    dtype = np.result_type(x, y)
    if dtype.kind not in "biuf" or dtype.itemsize not in (1, 2, 4, 8):
        return np.where(condition, x, y)
    bits = np.dtype(f"u{dtype.itemsize}")
    x, y = np.asarray(x, dtype).view(bits), np.asarray(y, dtype).view(bits)
    if condition.dtype != bool:
        condition = condition.astype(bool)
    if not x.ndim and not x:   # all ones where the condition does not hold, and y there
        picked, mask = y, condition.astype(bits)
        np.subtract(mask, 1, out=mask)
    else:
        picked, mask = (x if not y.ndim and not y else np.bitwise_xor(x, y)), _ones_where(condition, bits)
    if mask.shape == np.broadcast_shapes(mask.shape, picked.shape):
        out = np.bitwise_and(picked, mask, out=mask)
    else:
        out = np.bitwise_and(picked, mask)
    if picked is not x and picked is not y:
        np.bitwise_xor(out, y, out=out)
    return out.view(dtype)


def _ones_where(condition, bits):
    """A mask of unsigned integers `bits`: all ones where the boolean condition holds, else 0."""
    mask = condition.astype(bits)
    return np.negative(mask, out=mask)


defop("where", select, lambda shapes, dts, a: (broadcast_shapes("where", shapes), dts[1]),
      vjp=lambda b, g, n, s: (None, b.where(s[0], g, 0), b.where(s[0], 0, g)), saves=(0,),
      expr="({1} if {0} else {2})", kind="elementwise")



# Binary cross-entropy of probabilities x against targets t, an op of its own (as in PyTorch) for
# its gradient: each log is clamped at -100, and d/dx is (x - t) / max(x (1 - x), 1e-12), finite
# where x is 0 or 1 (the chain rule through the clamped logs gives 0 * inf = NaN there).
def _binary_cross_entropy(x, t):
    return (t - 1) * np.maximum(np.log1p(-x), -100) - t * np.maximum(np.log(x), -100)


def _binary_cross_entropy_vjp(b, g, n, s):
    x, t = s
    gx = b.div(b.mul(g, b.sub(x, t)), b.maximum(b.mul(b.sub(1, x), x), 1e-12))
    return gx, b.mul(g, b.sub(b.log(b.sub(1, x)), b.log(x)))


elementwise("binary_cross_entropy", _binary_cross_entropy,
            "(({1} - 1) * max(np.log1p(-{0}), -100.0) - {1} * max(np.log({0}), -100.0))",
            _binary_cross_entropy_vjp, saves=(0, 1))

# ----------------------------------------------------------------------------- reductions


def reduction_infer(name, out_dtype=None):
    def infer(shapes, dts, a):
        return reduced_shape(shapes[0], a["axes"], a["keepdim"]), out_dtype or dts[0]
    return infer


def _as_array(fn):
    def impl(x, axes, keepdim):
        return np.asarray(fn(x, axis=axes, keepdims=keepdim))
    return impl


def _sum_vjp(b, g, n, s):
    return (b.expand_reduced(g, in_shape(n, 0), n.attrs["axes"], n.attrs["keepdim"]),)


def _extremum_vjp(b, g, n, s):
    # The cotangent is shared evenly between tied extrema, as PyTorch's amax/amin do. With
    # `nans_win` a NaN is the extremum of its slice, so the NaNs share it (PyTorch's max()/min()
    # and norm(p=inf)); without, nothing equals a NaN extremum and the slice's gradient is NaN
    # (PyTorch's amax/amin).
    x, out = s
    shape, axes, keepdim = x.shape, n.attrs["axes"], n.attrs["keepdim"]
    peak = b.expand_reduced(out, shape, axes, keepdim)
    mask = b.eq(x, peak)
    if n.attrs["nans_win"]:
        mask = b.logical_or(mask, b.logical_and(b.ne(x, x), b.ne(peak, peak)))
    mask = b.cast(mask, dtype=g.dtype)
    count = b.sum(mask, axes=axes, keepdim=True)
    return (b.div(b.mul(b.expand_reduced(g, shape, axes, keepdim), mask), count),)


def _prod_vjp(b, g, n, s):
    # d prod / d x_i is the product of the other elements, computed without dividing by zero:
    # with no zero it is prod / x_i; with one zero only that element gets the others' product.
    # A product that is zero only because it holds a zero element is written as (that zero) * (the
    # rest), so that it still has the right derivative: this rule is differentiated again.
    x, = s
    shape, axes, keepdim = x.shape, n.attrs["axes"], n.attrs["keepdim"]
    if not shape:   # the product of a 0-d tensor is itself: gradient 1, even at inf or NaN (PyTorch's)
        return (g,)
    is_zero = b.eq(x, 0)
    nonzero = b.where(is_zero, 1, x)
    zeros = b.sum(b.cast(is_zero, dtype=x.dtype), axes=axes, keepdim=True)
    prod_nonzero = b.prod(nonzero, axes=axes, keepdim=True)
    at_zeros = b.where(is_zero, x, 0)                         # 0, with derivative 1 at the zeros
    zero_sum = b.sum(at_zeros, axes=axes, keepdim=True)
    other_zero = b.sub(zero_sum, at_zeros)                    # at a zero: the other zeros
    at_zero = b.where(b.eq(zeros, 1), prod_nonzero,
                      b.where(b.eq(zeros, 2), b.mul(prod_nonzero, other_zero), 0))
    at_nonzero = b.where(b.eq(zeros, 1), b.mul(b.div(prod_nonzero, nonzero), zero_sum), 0)
    others = b.where(b.eq(zeros, 0), b.div(prod_nonzero, nonzero), b.where(is_zero, at_zero, at_nonzero))
    return (b.mul(b.expand_reduced(g, shape, axes, keepdim), others),)


def _sum(x, axes, keepdim):
    # float16 sums accumulate in float32, as PyTorch's do: in float16, 2048 + 1 is 2048.
    if x.dtype == np.float16:
        return np.asarray(np.sum(x, axis=axes, keepdims=keepdim, dtype=np.float32)).astype(np.float16)
    return np.asarray(np.sum(x, axis=axes, keepdims=keepdim))


defop("sum", _sum, reduction_infer("sum"), vjp=_sum_vjp, kind="reduction")
def _extremum(fn):
    def impl(x, axes, keepdim, nans_win):   # nans_win only changes the VJP
        return np.asarray(fn(x, axis=axes, keepdims=keepdim))
    return impl


defop("amax", _extremum(np.max), reduction_infer("amax"), vjp=_extremum_vjp, saves=(0, -1), kind="reduction")
defop("amin", _extremum(np.min), reduction_infer("amin"), vjp=_extremum_vjp, saves=(0, -1), kind="reduction")
defop("prod", _as_array(np.prod), reduction_infer("prod"), vjp=_prod_vjp, saves=(0,), kind="reduction")
defop("all", _as_array(np.all), reduction_infer("all", dtypes.bool_), kind="reduction")
defop("any", _as_array(np.any), reduction_infer("any", dtypes.bool_), kind="reduction")


def _arg_extremum(fn):
    def impl(x, axis, keepdim):
        if axis is None or x.ndim == 0:
            return np.asarray(fn(x), dtype=np.int64).reshape((1,) * x.ndim if keepdim else ())
        return np.asarray(fn(x, axis=axis, keepdims=keepdim), dtype=np.int64)
    return impl


def _arg_infer(shapes, dts, a):
    shape, axis = shapes[0], a["axis"]
    axes = tuple(range(len(shape))) if axis is None else (axis,)
    return reduced_shape(shape, axes, a["keepdim"]), dtypes.int64


defop("argmax", _arg_extremum(np.argmax), _arg_infer, kind="reduction")
defop("argmin", _arg_extremum(np.argmin), _arg_infer, kind="reduction")


def _argsort(x, axis, descending):
    """The positions that sort `x` along `axis` in PyTorch's order: NaN above every number (last
    ascending, first descending), equal values in their original order either way."""
    if x.ndim == 0:
        return np.zeros((), np.int64)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if not descending:
        return np.argsort(x, axis=axis, kind="stable").astype(np.int64, copy=False)
    # descending and stable: sort the reversed values ascending, reverse that, map positions back
    backwards = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
    return (x.shape[axis] - 1 - np.flip(backwards, axis)).astype(np.int64)


defop("argsort", _argsort, lambda shapes, dts, a: (shapes[0], dtypes.int64))

def _cumsum(x, axis, reverse):
    if x.ndim == 0:   # NumPy would flatten a 0-d input to shape (1,)
        return x.copy()
    if reverse:   # sums from the end: the VJP of a forward cumulative sum
        return np.flip(np.cumsum(np.flip(x, axis), axis), axis)
    return np.cumsum(x, axis)


defop("cumsum", _cumsum, lambda shapes, dts, a: (shapes[0], dts[0]),
      vjp=lambda b, g, n, s: (b.cumsum(g, axis=n.attrs["axis"], reverse=not n.attrs["reverse"]),),
      kind="scan")

# ----------------------------------------------------------------------------- movement


def _reshape_infer(shapes, dts, a):
    if int(np.prod(shapes[0])) != int(np.prod(a["shape"])):
        raise ShapeError(f"reshape: shape '{list(a['shape'])}' is invalid for input of size "
                         f"{int(np.prod(shapes[0]))}")
    return tuple(a["shape"]), dts[0]


def _expand_infer(shapes, dts, a):
    shape = tuple(a["shape"])
    src = shapes[0]
    lead = len(shape) - len(src)
    if lead < 0 or any(n != 1 and n != shape[i + lead] for i, n in enumerate(src)):
        raise ShapeError(f"expand: the expanded size of the tensor must match the existing size at "
                         f"non-singleton dimensions; got shape {_fmt(src)} and target {_fmt(shape)}")
    return shape, dts[0]


defop("reshape", lambda x, shape: np.reshape(x, shape), _reshape_infer,
      vjp=lambda b, g, n, s: (b.reshape(g, shape=in_shape(n, 0)),), kind="view", is_view=True,
      grad_fn="ViewBackward0")
defop("permute", lambda x, axes: np.transpose(x, axes),
      lambda shapes, dts, a: (tuple(shapes[0][i] for i in a["axes"]), dts[0]),
      vjp=lambda b, g, n, s: (b.permute(g, axes=tuple(np.argsort(n.attrs["axes"]).tolist())),),
      kind="view", is_view=True)
def _expand(x, shape):
    """x viewed at `shape`. Where no dimension is broadcast it is writable, as PyTorch lets an
    in-place op write through such an expand; broadcast memory, where one element would stand for
    several, stays read-only."""
    lead = len(shape) - x.ndim
    if lead >= 0 and tuple(shape) == (1,) * lead + x.shape:
        return np.expand_dims(x, tuple(range(lead)))
    return np.broadcast_to(x, shape)


defop("expand", _expand, _expand_infer,
      vjp=lambda b, g, n, s: (b.sum_to(g, in_shape(n, 0)),), kind="view", is_view=True)


def _cat_infer(shapes, dts, a):
    axis = a["axis"]
    first = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or any(x != y for i, (x, y) in enumerate(zip(s, first)) if i != axis):
            raise ShapeError(f"cat: sizes of tensors must match except in dimension {axis}; got "
                             f"shapes {_fmt(first)} and {_fmt(s)}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:], dts[0]


def _cat_vjp(b, g, n, s):
    axis, out, start = n.attrs["axis"], [], 0
    for i in range(len(n.inputs)):
        size = in_shape(n, i)[axis]
        key = ((("s", None, None, None),) * axis + (("s", start, start + size, None),))
        out.append(b.index(g, spec=key))
        start += size
    return tuple(out)


defop("cat", lambda *xs, axis: np.concatenate(xs, axis=axis), _cat_infer, vjp=_cat_vjp)

# ----------------------------------------------------------------------------- indexing
# An index `spec` is a tuple of hashable items: ("s", start, stop, step) for a slice, ("i", k) for
# an integer, ("n",) for None, ("e",) for Ellipsis and ("a",) for the next integer-array input.


def index_key(spec, arrays):
    key, k = [], 0
    for item in spec:
        tag = item[0]
        if tag == "s":
            key.append(slice(item[1], item[2], item[3]))
        elif tag == "i":
            key.append(item[1])
        elif tag == "n":
            key.append(None)
        elif tag == "e":
            key.append(Ellipsis)
        else:
            key.append(arrays[k])
            k += 1
    if ("e",) not in spec:
        key.append(Ellipsis)   # so integer indices down to 0-d give a view, not a NumPy scalar copy
    return tuple(key)


def indexed(x, spec, arrays):
    """(view, key) such that view[key] is x indexed by spec with PyTorch's rules.

    NumPy counts integers among advanced indices and separates arrays by an Ellipsis that spans
    no dimension, which moves the indexed dimensions to the front; PyTorch applies integers as
    basic indexing first and sees such arrays as adjacent. With arrays in the spec, integers are
    applied first (a view) and empty Ellipses dropped, so NumPy then places dimensions the same."""
    if not _has_arrays(spec):
        return x, index_key(spec, arrays)
    consumed = sum(1 for item in spec if item[0] in "sia")
    if ("e",) in spec and consumed == x.ndim:
        spec = tuple(item for item in spec if item[0] != "e")
    if any(item[0] == "i" for item in spec):
        first = tuple(item[1] if item[0] == "i" else Ellipsis if item[0] == "e" else slice(None)
                      for item in spec if item[0] != "n")
        x = x[first]
        spec = tuple(item for item in spec if item[0] != "i")
    return x, index_key(spec, arrays)


def _index_infer(shapes, dts, a):
    probe = np.broadcast_to(np.empty((), np.int8), shapes[0])
    arrays = [np.zeros(s, np.int64) for s in shapes[1:]]
    try:
        view, key = indexed(probe, a["spec"], arrays)
        return view[key].shape, dts[0]
    except IndexError as e:   # an out-of-range index is an IndexError, as in PyTorch
        message = str(e).replace(" for axis ", " for dimension ")
        raise IndexError(f"index: {message} (tensor of shape {_fmt(shapes[0])})") from None


def _has_arrays(spec):
    return any(item[0] == "a" for item in spec)


def _index_backward_impl(g, *arrays, spec, shape):
    out = np.zeros(shape, g.dtype)
    view, key = indexed(out, spec, arrays)
    if _has_arrays(spec):
        np.add.at(view, key, g)
    else:
        view[key] = g
    return out


def _index_impl(x, *arrays, spec):
    view, key = indexed(x, spec, arrays)
    out = view[key]
    # Indexing with arrays copies. PyTorch's copy is contiguous (so .view() of it works); NumPy's
    # can keep the indexed dimensions in another order.
    return out.copy() if _has_arrays(spec) and not out.flags.c_contiguous else out


def _index_put_impl(x, v, *arrays, spec):
    out = np.array(x, copy=True)
    view, key = indexed(out, spec, arrays)
    view[key] = v
    return out


def _index_vjp(b, g, n, s):
    return (b.index_backward(g, *s, spec=n.attrs["spec"], shape=in_shape(n, 0)),) + (None,) * len(s)


def _index_backward_vjp(b, g, n, s):
    return (b.index(g, *s, spec=n.attrs["spec"]),) + (None,) * len(s)


def _index_put_vjp(b, g, n, s):
    spec = n.attrs["spec"]
    return ((b.index_put(g, 0, *s, spec=spec), b.index(g, *s, spec=spec)) + (None,) * len(s))


defop("index", _index_impl, _index_infer, vjp=_index_vjp,
      saves=lambda k: tuple(range(1, k)), kind="view", is_view=True, grad_fn="IndexBackward0")
defop("index_backward", _index_backward_impl,
      lambda shapes, dts, a: (tuple(a["shape"]), dts[0]), vjp=_index_backward_vjp,
      saves=lambda k: tuple(range(1, k)))
defop("index_put", _index_put_impl, lambda shapes, dts, a: (shapes[0], dts[0]), vjp=_index_put_vjp,
      saves=lambda k: tuple(range(2, k)), grad_fn="CopySlices")


def _along_axis_key(idx, axis):
    # PyTorch's gather/scatter: out[i][j] = x[i][idx[i][j]] (axis 1), where idx may be smaller than
    # x along the other axes, so the positions come from idx's own shape (not take_along_axis).
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    return tuple(grids)


def _scatter_add_impl(src, idx, axis, shape):
    check_index_range("scatter_add", idx, shape[axis], axis)   # np.add.at would wrap -1 around
    out = np.zeros(shape, src.dtype)
    np.add.at(out, _along_axis_key(idx, axis), src)
    return out


def check_index_range(name, idx, size, axis):
    """Indices along an axis must lie in [0, size): NumPy would wrap -1 around to the last element."""
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise RuntimeError(f"{name}: index {bad.flat[0]} is out of bounds for dimension {axis} with size {size}")


def _gather(x, idx, axis):
    check_index_range("gather", idx, x.shape[axis], axis)
    return x[_along_axis_key(idx, axis)]


def _gather_infer(shapes, dts, a):
    x, idx, axis = shapes[0], shapes[1], a["axis"]
    if len(idx) != len(x) and len(x) > 0:
        raise ShapeError(f"gather: index {_fmt(idx)} and input {_fmt(x)} must have the same number of dimensions")
    for d, (n, m) in enumerate(zip(idx, x)):
        if d != axis and n > m:
            raise ShapeError(f"gather: size does not match at dimension {d}: expected index {_fmt(idx)} to be no "
                             f"larger than input {_fmt(x)} apart from dimension {axis}")
    return idx, dts[0]


defop("gather", _gather, _gather_infer,
      vjp=lambda b, g, n, s: (b.scatter_add(g, s[0], axis=n.attrs["axis"], shape=in_shape(n, 0)), None),
      saves=(1,))
defop("scatter_add", _scatter_add_impl, lambda shapes, dts, a: (tuple(a["shape"]), dts[0]),
      vjp=lambda b, g, n, s: (b.gather(g, s[0], axis=n.attrs["axis"]), None), saves=(1,))


def _scatter(x, idx, src, axis):
    check_index_range("scatter", idx, x.shape[axis], axis)
    out = x.copy()
    out[_along_axis_key(idx, axis)] = src
    return out


# x with src written at positions idx along an axis (src shaped like idx). Where idx repeats a
# position, which write lands is unspecified, as in PyTorch; every src element gets its cotangent.
defop("scatter", _scatter, lambda shapes, dts, a: (shapes[0], dts[0]),
      vjp=lambda b, g, n, s: (b.scatter(g, s[0], b.zeros(shape_of(s[0]), g.dtype), axis=n.attrs["axis"]), None,
                              b.gather(g, s[0], axis=n.attrs["axis"])), saves=(1,))

# ----------------------------------------------------------------------------- linear algebra


def _matmul_infer(shapes, dts, a):
    xs, ys = shapes
    if not xs or not ys:
        raise ShapeError(f"matmul: both arguments need at least 1 dimension, got shapes {_fmt(xs)} "
                         f"and {_fmt(ys)}")
    k1 = xs[-1]
    k2 = ys[-2] if len(ys) > 1 else ys[0]
    if k1 != k2:
        m = xs[-2] if len(xs) > 1 else 1
        n = ys[-1] if len(ys) > 1 else 1
        raise ShapeError(f"matmul: shapes {_fmt(xs)} and {_fmt(ys)} cannot be multiplied "
                         f"({m}x{k1} and {k2}x{n})")
    batch = broadcast_shapes("matmul", (xs[:-2], ys[:-2]))
    return batch + xs[-2:-1] + ys[-1:] if len(ys) > 1 else batch + xs[-2:-1], dts[0]


def _swap_last(b, x):
    axes = tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)
    return b.permute(x, axes=axes)


def _matmul_vjp(b, g, n, s):
    x, y = s
    if len(x.shape) == 1 and len(y.shape) == 1:
        return b.mul(g, y), b.mul(g, x)
    x2 = b.reshape(x, shape=(1,) + x.shape) if len(x.shape) == 1 else x
    y2 = b.reshape(y, shape=y.shape + (1,)) if len(y.shape) == 1 else y
    g2 = g
    if len(x.shape) == 1:
        g2 = b.reshape(g2, shape=g.shape[:-1] + (1,) + g.shape[-1:] if len(y.shape) > 1 else (1,))
    if len(y.shape) == 1:
        g2 = b.reshape(g2, shape=g2.shape + (1,))
    gx = b.reshape(b.sum_to(b.matmul(g2, _swap_last(b, y2)), x2.shape), shape=x.shape)
    transposed = n.inputs[1]
    if len(x.shape) == len(y.shape) == 2 and isinstance(transposed, Node) and transposed.op.name == "permute":
        # x @ W.t(): compute W's cotangent (g.T @ x) and transpose that, so the permute's own VJP
        # cancels the transpose and W's gradient is a contiguous product, not a transposed view
        return gx, _swap_last(b, b.matmul(_swap_last(b, g2), x2))
    gy = b.reshape(b.sum_to(b.matmul(_swap_last(b, x2), g2), y2.shape), shape=y.shape)
    return gx, gy


def _matmul(x, y):
    if (x.ndim == 2 == y.ndim and x.shape[0] < y.shape[1] and y.flags.f_contiguous and not y.flags.c_contiguous
            and x.flags.c_contiguous):
        # x @ W.t(), as every Linear computes: OpenBLAS's SkylakeX kernels take 1.7x as long on a
        # transposed right operand with few rows on the left (16x1000 @ (100x1000).T: 78 us) as on
        # the transposed product (W @ x.T: 46 us), whose small copy back to C order is ~1 us
        return np.ascontiguousarray(np.matmul(y.T, x.T).T)
    return np.asarray(np.matmul(x, y))


defop("matmul", _matmul, _matmul_infer, vjp=_matmul_vjp, saves=(0, 1), grad_fn="MmBackward0", blas=True)


# initial=-inf: over an empty dimension the result is empty, not NumPy's error about a maximum
# without identity
def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _softmax_vjp(b, g, n, s):
    out, = s
    dot = b.sum(b.mul(g, out), axes=(n.attrs["axis"],), keepdim=True)
    return (b.mul(out, b.sub(g, dot)),)


def _log_softmax_vjp(b, g, n, s):
    out, = s
    total = b.sum(g, axes=(n.attrs["axis"],), keepdim=True)
    return (b.sub(g, b.mul(b.exp(out), total)),)


defop("softmax", _softmax, lambda shapes, dts, a: (shapes[0], dts[0]), vjp=_softmax_vjp,
      saves=(-1,))
defop("log_softmax", _log_softmax, lambda shapes, dts, a: (shapes[0], dts[0]), vjp=_log_softmax_vjp,
      saves=(-1,))

# ----------------------------------------------------------------------------- random numbers
# Numbers drawn when the node runs: sample(shape) is a float64 draw from a generator, cast to dtype.
# Captured eager draws become these, so a replay consumes the generator as eager mode would; each
# takes the previous draw of its graph as an input, a token that keeps draws in their order.
def _random(*token, sample, shape, dtype):
    return sample(shape).astype(dtype.np)


defop("random", _random, lambda shapes, dts, a: (tuple(a["shape"]), a["dtype"]), kind="random")

# ----------------------------------------------------------------------------- opaque calls
# Opaque ops run Python that the graph cannot see: a graph break for compilers, and a backward graph
# holding one is derived afresh each time instead of cached by structure.
# A Python callback on a value (tensor hooks in backward graphs).
defop("callback", lambda x, fn: fn(x), lambda shapes, dts, a: (shapes[0], dts[0]), kind="opaque")
# A Python call whose result type the graph declares; it may return a tuple that other `call`s take
# apart (the user's backward of a custom autograd Function, then one gradient per input).
defop("call", lambda *xs, fn, shape, dtype: fn(*xs), lambda shapes, dts, a: (a["shape"], a["dtype"]),
      kind="opaque")
# A custom autograd Function (autograd.Function.apply). The recorded node carries its own VJP rule:
# with several differentiable outputs, each output is a `custom_output` of the one call node, and
# the call node's cotangent is a tuple with one entry (or None) per output.
def _recorded_only(*args, **kwargs):
    raise NotImplementedError("custom_function: the node of a custom autograd Function is recorded by "
                              "Function.apply, which runs the user's forward; it cannot be run or typed from a graph")


defop("custom_function", _recorded_only, _recorded_only, vjp=lambda b, g, n, s: n.vjp(b, g), kind="opaque")


def _custom_output_vjp(b, g, n, s):
    index, count = n.attrs["index"], n.attrs["count"]
    return ((None,) * index + (g,) + (None,) * (count - index - 1),)


defop("custom_output", lambda x, index, count: x[index], _recorded_only, vjp=_custom_output_vjp, kind="opaque")
# The result of a replayed compiled function whose caller may call backward on it: its inputs are
# the function's inputs, all saved, and attrs["forward"] (the captured forward graph) supplies the
# VJP: the forward recomputed from the saved inputs, then its derived backward.
def _compiled_call_impl(*args, **kwargs):
    raise NotImplementedError("compiled_call: the node of a replayed compiled function only carries its "
                              "backward; the forward ran in the compiled plan")


defop("compiled_call", _compiled_call_impl, _compiled_call_impl,
      vjp=lambda b, g, n, s: n.attrs["forward"].vjp(b, g, s), saves=lambda k: tuple(range(k)),
      grad_fn="CompiledFunctionBackward")
# The node that stands for a leaf tensor in recorded graphs (PyTorch's AccumulateGrad).
defop("leaf", impl=None, infer=None, kind="source", grad_fn="AccumulateGrad")

# ----------------------------------------------------------------------------- convolution and pooling
# 2-D convolution is one op: an im2col view of the padded input (np.lib.stride_tricks, no copy)
# gathered into columns and multiplied by the weights in one BLAS matmul per group. Its VJP needs
# two more ops, the gradients with respect to the input (columns scattered back, one vectorised
# add per kernel position) and to the weight (the same columns against the output cotangent); the
# three are closed under VJP, so convolutions differentiate to any order. Attributes: stride
# (sh, sw), padding ((top, bottom), (left, right)), dilation (dh, dw), groups.

def _fmt_pair(pair):
    return f"({pair[0]} x {pair[1]})"


def conv_output_size(size, pad, kernel, stride, dilation):
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def conv_windows(x, kernel, stride, padding, dilation, fill=0.0):
    """A (N, C, Ho, Wo, kh, kw) strided view of the windows of x (N, C, H, W) padded with `fill`."""
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    out_h, out_w = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, out_h, out_w, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False)


# With stride 1, im2col runs over the padded width: output columns Wo .. Wp-1 are computed from
# windows that wrap into the next row and thrown away, which makes every run of the columns (and of
# col2im's adds) one contiguous stretch of a padded image instead of Ho short rows of Wo. The
# cotangents get zero columns there, so the gradients never see the wrapped values, except as
# products 0 * inf or 0 * NaN where the weight (input gradient) or input (weight gradient) holds
# one: the input gradient then zeroes those columns, a non-finite weight gradient is computed
# again without them (the checks are sums, which overflow only sends to the exact paths too).


def _finite(a):
    return bool(np.isfinite(np.sum(a)))


def _row_extended(x, kernel, padding, dilation):
    """Stride 1: x padded (with enough extra bottom rows for the last window's wrap) and flattened
    per plane, the output size (Ho, Wo) and the computed width Wp."""
    (top, bottom), (left, right) = padding
    n, c, h, w = x.shape
    width = w + left + right
    out_h = h + top + bottom - dilation[0] * (kernel[0] - 1)
    out_w = width - dilation[1] * (kernel[1] - 1)
    extra = -(-dilation[1] * (kernel[1] - 1) // width)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom + extra), (left, right)))
    return padded.reshape(n, c, padded.shape[2] * width), (out_h, out_w), width


def _columns(x, kernel, stride, padding, dilation, groups, extend=True):
    """im2col: (N, groups, C/groups * kh * kw, Ho * width) columns of each image's windows (one
    copy, of contiguous runs), the output size (Ho, Wo) and the computed width (Wo, or the padded
    width for stride 1 where `extend`). Per image, so that the matmuls give (N, Cout, ...) and the
    cotangents come in as they are, with no transposing copies."""
    (kh, kw), (dh, dw) = kernel, dilation
    if stride == (1, 1) and extend:
        flat, (out_h, out_w), width = _row_extended(x, kernel, padding, dilation)
        n, c, _ = flat.shape
        s0, s1, item = flat.strides[0], flat.strides[1], flat.itemsize
        cols = np.lib.stride_tricks.as_strided(flat, (n, c, kh, kw, out_h * width),
                                               (s0, s1, width * dh * item, dw * item, item), writeable=False)
    else:
        win = conv_windows(x, kernel, stride, padding, dilation)
        n, c, out_h, out_w = win.shape[:4]
        width = out_w
        cols = win.transpose(0, 1, 4, 5, 2, 3)   # (N, C, kh, kw, Ho, Wo)
    return cols.reshape(n, groups, c // groups * kh * kw, out_h * width), (out_h, out_w), width


def _grouped_cotangent(g, groups, width):
    """(N, Cout, Ho, Wo) -> (N, groups, Cout/groups, Ho * width), zero in the columns past Wo."""
    n, c_out, out_h, out_w = g.shape
    if width != out_w:
        extended = np.zeros((n, c_out, out_h, width), g.dtype)
        extended[..., :out_w] = g
        g = extended
    return g.reshape(n, groups, c_out // groups, out_h * width)


def _conv2d(x, w, stride, padding, dilation, groups):
    c_out = w.shape[0]
    cols, (out_h, out_w), width = _columns(x, w.shape[2:], stride, padding, dilation, groups)
    out = np.matmul(w.reshape(groups, c_out // groups, -1), cols)     # (N, G, Cout/G, Ho*width)
    out = out.reshape(x.shape[0], c_out, out_h, width)
    return out if width == out_w else np.ascontiguousarray(out[..., :out_w])


def _conv2d_weight_grad(x, g, stride, padding, dilation, groups, weight_shape, extend=True):
    cols, _, width = _columns(x, weight_shape[2:], stride, padding, dilation, groups, extend)
    grouped_g = _grouped_cotangent(g, groups, width)
    # Written into an array of the weight's own shape: a gradient that is a view or a transposed
    # copy costs a copy of the weight's size when it is accumulated into .grad (44 MB for resnet18).
    out = np.empty(weight_shape, np.result_type(cols, grouped_g))
    grouped = out.reshape(groups, weight_shape[0] // groups, -1)   # (G, Cout/G, Cg*kh*kw), a view of out
    if len(g) == 1:
        np.matmul(grouped_g[0], cols[0].transpose(0, 2, 1), out=grouped)
    else:   # columns x cotangent per image (OpenBLAS ran the transposed product 25% slower), summed
        np.sum(np.matmul(cols, grouped_g.transpose(0, 1, 3, 2)), axis=0, out=grouped.transpose(0, 2, 1))
    if width != g.shape[3] and not _finite(out):   # an inf or NaN, maybe 0 * inf from a wrapped column
        return _conv2d_weight_grad(x, g, stride, padding, dilation, groups, weight_shape, extend=False)
    return out


def _conv2d_input_grad(g, w, stride, padding, dilation, groups, input_shape):
    c_out, c_group, kh, kw = w.shape
    n, c, h, w_in = input_shape
    _, _, out_h, out_w = g.shape
    (top, bottom), (left, right) = padding
    (sh, sw), (dh, dw) = stride, dilation
    width = w_in + left + right if stride == (1, 1) else out_w
    wm = w.reshape(groups, c_out // groups, c_group * kh * kw).transpose(0, 2, 1)
    cols = np.matmul(wm, _grouped_cotangent(g, groups, width)).reshape(n, c, kh, kw, out_h * width)
    if width != out_w and not _finite(w):   # drop the wrapped columns' 0 * inf
        cols.reshape(n, c, kh, kw, out_h, width)[..., out_w:] = 0
    # col2im: one vectorised add per kernel position
    if stride == (1, 1):
        rows = h + top + bottom + -(-dw * (kw - 1) // width)
        flat = np.zeros((n, c, rows * width), g.dtype)
        for i in range(kh):
            for j in range(kw):
                start = i * dh * width + j * dw
                flat[:, :, start:start + out_h * width] += cols[:, :, i, j]
        padded = flat.reshape(n, c, rows, width)
    else:
        cols = cols.reshape(n, c, kh, kw, out_h, out_w)
        padded = np.zeros((n, c, h + top + bottom, w_in + left + right), g.dtype)
        for i in range(kh):
            for j in range(kw):
                padded[:, :, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
                       j * dw:j * dw + sw * (out_w - 1) + 1:sw] += cols[:, :, i, j]
    return padded[:, :, top:top + h, left:left + w_in]


def _conv2d_infer(shapes, dts, a):
    xs, ws = shapes
    if len(xs) != 4 or len(ws) != 4:
        raise ShapeError(f"conv2d: expected a 4-D input (N, C, H, W) and a 4-D weight (Cout, C/groups, kH, "
                         f"kW), got input of shape {_fmt(xs)} and weight of shape {_fmt(ws)}")
    groups = a["groups"]
    if ws[0] < 1:
        raise ShapeError(f"conv2d: Given groups={groups}, expected weight to be at least 1 at dimension 0, but got "
                         f"weight of size {_fmt(ws)} instead")
    if xs[1] == 0:
        raise ShapeError(f"conv2d: expected an input with at least one channel, got input of shape {_fmt(xs)}")
    if xs[1] != ws[1] * groups or ws[0] % groups:
        raise ShapeError(f"conv2d: Given groups={groups}, weight of size {_fmt(ws)}, expected input{_fmt(xs)} "
                         f"to have {ws[1] * groups} channels, but got {xs[1]} channels instead")
    padded = tuple(xs[2 + i] + sum(a["padding"][i]) for i in range(2))
    reach = tuple(a["dilation"][i] * (ws[2 + i] - 1) + 1 for i in range(2))
    if padded[0] < reach[0] or padded[1] < reach[1]:
        raise ShapeError(f"conv2d: Calculated padded input size per channel: {_fmt_pair(padded)}. Kernel size: "
                         f"{_fmt_pair(reach)}. Kernel size can't be greater than actual input size")
    if dts[0] is not dts[1]:
        raise ShapeError(f"conv2d: Input type ({dts[0].name}) and weight type ({dts[1].name}) should be the same")
    out = tuple(conv_output_size(xs[2 + i], a["padding"][i], ws[2 + i], a["stride"][i], a["dilation"][i])
                for i in range(2))
    return (xs[0], ws[0]) + out, dts[0]


def _conv_attrs(node):
    a = node.attrs
    return dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=a["groups"])


def _conv2d_vjp(b, g, n, s):
    x, w = s
    attrs = _conv_attrs(n)
    return (b.conv2d_input_grad(g, w, input_shape=x.shape, **attrs),
            b.conv2d_weight_grad(x, g, weight_shape=w.shape, **attrs))


def _conv2d_input_grad_vjp(b, h, n, s):
    g, w = s
    attrs = _conv_attrs(n)
    return b.conv2d(h, w, **attrs), b.conv2d_weight_grad(h, g, weight_shape=w.shape, **attrs)


def _conv2d_weight_grad_vjp(b, k, n, s):
    x, g = s
    attrs = _conv_attrs(n)
    return b.conv2d_input_grad(g, k, input_shape=x.shape, **attrs), b.conv2d(x, k, **attrs)


defop("conv2d", _conv2d, _conv2d_infer, vjp=_conv2d_vjp, saves=(0, 1), grad_fn="ConvolutionBackward0", blas=True)
defop("conv2d_input_grad", _conv2d_input_grad, lambda shapes, dts, a: (tuple(a["input_shape"]), dts[0]),
      vjp=_conv2d_input_grad_vjp, saves=(0, 1), grad_fn="ConvolutionBackwardBackward0", blas=True)
defop("conv2d_weight_grad", _conv2d_weight_grad, lambda shapes, dts, a: (tuple(a["weight_shape"]), dts[0]),
      vjp=_conv2d_weight_grad_vjp, saves=(0, 1), grad_fn="ConvolutionBackwardBackward0", blas=True)


def _pooling_fill(x):
    return -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min


def _max_pool2d(x, kernel, stride, padding, dilation):
    """Window maxima as a running np.maximum over the kernel positions' strided views (NaN wins)."""
    win = conv_windows(x, kernel, stride, padding, dilation, _pooling_fill(x))
    out = win[..., 0, 0].copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                np.maximum(out, win[..., i, j], out=out)
    return out


def _argmax_cells(x, out, kernel, stride, padding, dilation):
    """Per kernel position (i, j), a mask over the output of the windows whose argmax cell sits
    there: where PyTorch's indices point, the first maximal cell in scan order, or in a window
    holding NaN its last NaN (PyTorch takes a cell that is greater or NaN). A padding cell is never
    chosen, even in a window of -inf."""
    (top, bottom), (left, right) = padding
    h, w = x.shape[2:]
    win = conv_windows(x, kernel, stride, padding, dilation, _pooling_fill(x))
    inside = None
    if top or bottom or left or right:
        valid = np.zeros((1, 1, top + h + bottom, left + w + right), bool)
        valid[..., top:top + h, left:left + w] = True
        inside = conv_windows(valid, kernel, stride, ((0, 0), (0, 0)), dilation)
    positions = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
    last_nan = {}
    if out.dtype.kind == "f" and np.isnan(out).any():   # padding is -inf, never NaN
        taken = np.zeros(out.shape, bool)
        for i, j in reversed(positions):
            cell = win[..., i, j]
            last = cell != cell
            np.greater(last, taken, out=last)   # and not taken after
            taken |= last
            last_nan[i, j] = last
    taken = np.zeros(out.shape, bool)
    for i, j in positions:
        first = win[..., i, j] == out    # never in a window whose maximum is NaN
        np.greater(first, taken, out=first)   # and not taken before
        if inside is not None:
            first &= inside[..., i, j]
        taken |= first
        if last_nan:
            first |= last_nan[i, j]
        yield i, j, first


def _max_pool2d_backward(g, x, out, kernel, stride, padding, dilation):
    """The cotangent of each window's maximum, added at the window's argmax cell."""
    (top, bottom), (left, right) = padding
    n, c, h, w = x.shape
    out_h, out_w = out.shape[2:]
    padded = np.zeros((n, c, top + h + bottom, left + w + right), g.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    maxima = _argmax_cells(x, out, kernel, stride, padding, dilation)
    if stride == kernel and dilation == (1, 1):
        # Windows that tile the plane: each cell gets the cotangent of at most one window, so
        # it is written, masked, straight into its place (no temporary, nothing to add).
        bits = np.dtype(f"u{g.dtype.itemsize}")
        cells = padded.view(bits)
        s = cells.strides
        windows = np.lib.stride_tricks.as_strided(cells, (n, c, out_h, out_w) + kernel,
                                                  (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]))
        g = g.view(bits)
        for i, j, first in maxima:
            np.bitwise_and(g, _ones_where(first, bits), out=windows[..., i, j])
    else:
        for i, j, first in maxima:
            padded[:, :, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
                   j * dw:j * dw + sw * (out_w - 1) + 1:sw] += select(first, g, 0)
    return padded[:, :, top:top + h, left:left + w]


def _pool_attrs(node):
    a = node.attrs
    return dict(kernel=a["kernel"], stride=a["stride"], padding=a["padding"], dilation=a["dilation"])


def _max_pool2d_backward_vjp(b, h, n, s):
    # Linear in g: h read back at the argmax positions (x moves them only where ties change: zero
    # derivative almost everywhere, as for max).
    x = s[0]
    batch, channels, height, width = x.shape
    indices = b.max_pool2d_indices(x, **_pool_attrs(n))
    flat = b.reshape(indices, shape=(batch, channels, indices.shape[2] * indices.shape[3]))
    picked = b.gather(b.reshape(h, shape=(batch, channels, height * width)), flat, axis=2)
    return b.reshape(picked, shape=indices.shape), None, None


def _max_pool2d_indices(x, kernel, stride, padding, dilation):
    """Per output position, the flat index (row * W + column) into x's H x W plane of the window's
    argmax cell (_argmax_cells)."""
    out = _max_pool2d(x, kernel, stride, padding, dilation)
    (sh, sw), (dh, dw) = stride, dilation
    rows = np.arange(out.shape[2])[:, None] * sh - padding[0][0]
    cols = np.arange(out.shape[3]) * sw - padding[1][0]
    indices = np.zeros(out.shape, np.int64)
    for i, j, first in _argmax_cells(x, out, kernel, stride, padding, dilation):
        np.copyto(indices, (rows + i * dh) * x.shape[3] + cols + j * dw, where=first)
    return indices


def _max_pool2d_infer(shapes, dts, a):
    xs = shapes[0]
    out = tuple(conv_output_size(xs[2 + i], a["padding"][i], a["kernel"][i], a["stride"][i], a["dilation"][i])
                for i in range(2))
    if min(out) < 1:
        raise ShapeError(f"max_pool2d: Given input size: ({xs[1]}x{xs[2]}x{xs[3]}). Calculated output size: "
                         f"({xs[1]}x{out[0]}x{out[1]}). Output size is too small")
    return xs[:2] + out, dtypes.int64


def _max_pool2d_values_infer(shapes, dts, a):
    return _max_pool2d_infer(shapes, dts, a)[0], dts[0]


# max_pool2d's gradient goes to the argmax cell of each window; the gradient of that (linear
# in the cotangent) reads the cotangent back at the argmax positions (max_pool2d_indices, which is
# also what return_indices=True returns).
defop("max_pool2d", _max_pool2d, _max_pool2d_values_infer, saves=(0, -1),
      vjp=lambda b, g, n, s: (b.max_pool2d_backward(g, s[0], s[1], **_pool_attrs(n)),),
      grad_fn="MaxPool2DWithIndicesBackward0")
defop("max_pool2d_backward", _max_pool2d_backward, lambda shapes, dts, a: (shapes[1], dts[0]), saves=(1,),
      vjp=_max_pool2d_backward_vjp, grad_fn="MaxPool2DWithIndicesBackwardBackward0")
defop("max_pool2d_indices", _max_pool2d_indices, _max_pool2d_infer)

# ----------------------------------------------------------------------------- tensor manipulation
# flip has no composite: NumPy's reversed views have negative strides, which the index op does not
# take, and an index with reversed positions would scatter its gradient with np.add.at.


def _flip(x, axes):
    return np.flip(x, axes).copy() if axes else x.copy()


defop("flip", _flip, lambda shapes, dts, a: (shapes[0], dts[0]),
      vjp=lambda b, g, n, s: (b.flip(g, axes=n.attrs["axes"]),))


def diagonal_view(x, offset, axis1, axis2):
    """x's diagonal along axis1 and axis2 as PyTorch's diagonal: a writable view, the diagonal's
    dimension last (np.diagonal's view is read-only)."""
    view = np.diagonal(x, offset, axis1, axis2)
    corner = [slice(None)] * x.ndim
    if view.size:
        corner[axis1], corner[axis2] = slice(max(-offset, 0), None), slice(max(offset, 0), None)
    start = x[tuple(corner)]
    return np.lib.stride_tricks.as_strided(start, view.shape, view.strides, writeable=x.flags.writeable)


def _diagonal_infer(shapes, dts, a):
    return np.diagonal(np.broadcast_to(np.empty((), np.int8), shapes[0]), a["offset"], a["axis1"], a["axis2"]).shape, \
        dts[0]


def _diagonal_backward(g, offset, axis1, axis2, shape):
    out = np.zeros(shape, g.dtype)
    diagonal_view(out, offset, axis1, axis2)[...] = g
    return out


def _diagonal_attrs(node):
    return {k: node.attrs[k] for k in ("offset", "axis1", "axis2")}


# The diagonal of a layout that no reshape-and-slice view reaches (see tracer/manipulation.py): a
# view of its own, so writes to the input show through it as in PyTorch.
defop("diagonal", diagonal_view, _diagonal_infer, kind="view", is_view=True,
      vjp=lambda b, g, n, s: (b.diagonal_backward(g, **_diagonal_attrs(n), shape=in_shape(n, 0)),))
defop("diagonal_backward", _diagonal_backward, lambda shapes, dts, a: (tuple(a["shape"]), dts[0]),
      vjp=lambda b, g, n, s: (b.diagonal(g, **_diagonal_attrs(n)),))


def _diagonal_put(x, values, offset, axis1, axis2):
    out = x.copy()
    diagonal_view(out, offset, axis1, axis2)[...] = values
    return out


# x with its diagonal replaced by `values`: a write through a diagonal view, seen from the tensor viewed
defop("diagonal_put", _diagonal_put, lambda shapes, dts, a: (shapes[0], dts[0]),
      vjp=lambda b, g, n, s: (b.diagonal_put(g, b.zeros(in_shape(n, 1), g.dtype), **_diagonal_attrs(n)),
                              b.diagonal(g, **_diagonal_attrs(n))), grad_fn="CopySlices")


def _one_hot(x, num_classes):
    if x.size:   # PyTorch's checks and messages
        if x.min() < 0:
            raise RuntimeError("Class values must be non-negative.")
        if x.max() >= num_classes:
            raise RuntimeError("Class values must be smaller than num_classes.")
    return (x[..., None] == np.arange(num_classes)).astype(np.int64)


defop("one_hot", _one_hot, lambda shapes, dts, a: (shapes[0] + (a["num_classes"],), dtypes.int64))
