"""The op table: one row per public op (and per variant that takes its own code path).

A row says everything the checks in `test_ops.py` need: how to call the op (`fn(T, *tensors)`,
where `T` is the library, `fusegrad` or `torch`, so the same line runs on both), the shapes of
sample inputs, the domain random inputs are drawn from, a NumPy reference, and flags. Adding an op
is adding a row here; every check picks it up.

Domains keep finite differences honest: log/sqrt get positive inputs, tan stays away from its
poles, abs/relu/clamp/max stay away from their kinks and ties.
"""
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fusegrad.ir.op import ShapeError

# ----------------------------------------------------------------------------- domains
# A domain draws float64 values of a shape: domain(rng, shape) -> np.ndarray.


def real(lo=-2.0, hi=2.0):
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def positive(lo=0.5, hi=2.0):
    return real(lo, hi)


def away_from(*points, gap=0.15, lo=-2.0, hi=2.0):
    """Uniform on [lo, hi] but at least `gap` from each point (kinks of abs, relu, clamp, ...)."""
    def draw(rng, shape):
        x = rng.uniform(lo, hi, shape)
        for _ in range(100):
            near = np.zeros(np.shape(x), bool)
            for p in points:
                near |= np.abs(x - p) < gap
            if not near.any():
                return x
            x = np.where(near, rng.uniform(lo, hi, shape), x)
        raise AssertionError("domain too narrow")
    return draw


def distinct(lo=-2.0, hi=2.0, min_abs=0.0):
    """Values at least (hi - lo) / (2 n) apart, so max/min/argmax/sort have no ties; with
    `min_abs`, the absolute values are distinct too (for norm(p=inf) and friends)."""
    def draw(rng, shape):
        n = int(np.prod(shape))
        if min_abs:
            grid = np.linspace(min_abs, hi, max(n, 1)) * rng.choice([-1.0, 1.0], max(n, 1))
        else:
            grid = np.linspace(lo, hi, max(n, 1))
        step = (hi - lo) / (4 * max(n, 1))
        values = rng.permutation(grid) + rng.uniform(-step, step, max(n, 1)) * 0.5
        return values[:n].reshape(shape)
    return draw


def with_zeros(count):
    """Nonzero values of magnitude in [0.5, 1.5] with `count` exact zeros (prod's special cases)."""
    def draw(rng, shape):
        x = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, count, replace=False)] = 0.0
        return flat.reshape(shape)
    return draw


def ints(lo=-3, hi=4, nonzero=False):
    def draw(rng, shape):
        x = rng.integers(lo, hi, shape).astype(np.float64)
        if nonzero:
            x[x == 0] = 1.0
        return x
    return draw


def bools():
    return lambda rng, shape: (rng.uniform(size=shape) < 0.5).astype(np.float64)


# ----------------------------------------------------------------------------- rows


@dataclass
class OpRow:
    name: str
    fn: Callable                  # fn(T, *tensors) -> tensor or tuple of tensors
    ref: Callable                 # ref(*np arrays) -> array or tuple of arrays
    samples: tuple                # each a tuple of input shapes
    domain: object = field(default_factory=real)   # one domain, or one per input
    differentiable: bool = True
    second_order: bool = True
    dtypes: tuple = None          # fixed input dtype names (promotion rows); None: float32 and float64
    out_dtype: object = None      # result dtype name(s); None: the floating input dtype
    rtol32: float = 1e-5
    atol32: float = 1e-6

    def domain_of(self, i):
        return self.domain[i] if isinstance(self.domain, tuple) else self.domain


UNARY = (((2, 3),), ((),), ((5,),))
BINARY = (((2, 3), (2, 3)), ((2, 3), (3,)), ((4, 1), (1, 5)), ((), (2, 3)), ((2, 3), ()))
ONE = (((2, 3),), ((),))
MATRIX = (((2, 3),), ((3, 4),))
CUBE = (((2, 3, 2),),)

ROWS = []


def row(name, fn, ref, samples, **kw):
    ROWS.append(OpRow(name, fn, ref, samples, **kw))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logsumexp(x, axis, keepdims=False):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- elementwise unary
row("neg", lambda T, x: -x, np.negative, UNARY)
row("neg_fn", lambda T, x: T.neg(x), np.negative, ONE)
row("abs", lambda T, x: T.abs(x), np.abs, UNARY, domain=away_from(0.0))
row("abs_method", lambda T, x: abs(x), np.abs, ONE, domain=away_from(0.0))
row("sqrt", lambda T, x: T.sqrt(x), np.sqrt, UNARY, domain=positive())
row("rsqrt", lambda T, x: T.rsqrt(x), lambda x: 1 / np.sqrt(x), ONE, domain=positive())
row("exp", lambda T, x: T.exp(x), np.exp, UNARY)
row("expm1", lambda T, x: T.expm1(x), np.expm1, ONE)
row("expm1_tiny", lambda T, x: T.expm1(x), np.expm1, ONE, domain=real(-1e-9, 1e-9))   # no 1 + x rounding
row("log", lambda T, x: T.log(x), np.log, UNARY, domain=positive())
row("log2", lambda T, x: T.log2(x), np.log2, ONE, domain=positive())
row("log10", lambda T, x: T.log10(x), np.log10, ONE, domain=positive())
row("log1p", lambda T, x: T.log1p(x), np.log1p, ONE, domain=real(-0.5, 2.0))
row("log1p_tiny", lambda T, x: x.log1p(), np.log1p, ONE, domain=real(-1e-9, 1e-9))
row("sin", lambda T, x: T.sin(x), np.sin, UNARY)
row("cos", lambda T, x: T.cos(x), np.cos, UNARY)
row("tan", lambda T, x: T.tan(x), np.tan, UNARY, domain=real(-1.2, 1.2))
row("tanh", lambda T, x: T.tanh(x), np.tanh, UNARY)
row("sigmoid", lambda T, x: T.sigmoid(x), _sigmoid, UNARY)
row("sigmoid_wide", lambda T, x: T.sigmoid(x), _sigmoid, ONE, domain=real(-30.0, 30.0), second_order=False)
row("relu", lambda T, x: T.relu(x), lambda x: np.maximum(x, 0), UNARY, domain=away_from(0.0))
row("square", lambda T, x: T.square(x), np.square, ONE)
row("reciprocal", lambda T, x: T.reciprocal(x), np.reciprocal, ONE, domain=away_from(0.0, gap=0.3))
row("sign", lambda T, x: T.sign(x), np.sign, ONE, domain=away_from(0.0), second_order=False)
row("floor", lambda T, x: T.floor(x), np.floor, ONE, domain=away_from(-2, -1, 0, 1, 2, gap=0.05),
    second_order=False)
row("clone", lambda T, x: x.clone(), lambda x: x.copy(), ONE)
row("to_float64", lambda T, x: x.double(), lambda x: x, ONE, out_dtype="float64")

# ---------------------------------------------------------------- elementwise binary
row("add", lambda T, x, y: x + y, np.add, BINARY)
row("add_alpha", lambda T, x, y: T.add(x, y, alpha=2), lambda x, y: x + 2 * y, BINARY[:2])
row("sub", lambda T, x, y: x - y, np.subtract, BINARY)
row("sub_alpha", lambda T, x, y: T.sub(x, y, alpha=3), lambda x, y: x - 3 * y, BINARY[:2])
row("mul", lambda T, x, y: x * y, np.multiply, BINARY)
row("div", lambda T, x, y: x / y, np.divide, BINARY, domain=(real(), away_from(0.0, gap=0.4)))
row("true_divide", lambda T, x, y: T.true_divide(x, y), np.divide, BINARY[:2],
    domain=(real(), away_from(0.0, gap=0.4)))
row("pow_tensor_tensor", lambda T, x, y: x ** y, np.power, BINARY, domain=(positive(), real()))
row("maximum", lambda T, x, y: T.maximum(x, y), np.maximum, BINARY)
row("minimum", lambda T, x, y: T.minimum(x, y), np.minimum, BINARY)
row("lerp", lambda T, x, y: T.lerp(x, y, 0.3), lambda x, y: x + 0.3 * (y - x), BINARY[:3])
row("remainder_scalar", lambda T, x: x % 1.5, lambda x: np.remainder(x, 1.5), ONE,
    domain=away_from(-1.5, 0.0, 1.5, gap=0.1), second_order=False)
row("floor_divide", lambda T, x, y: x // y, np.floor_divide, BINARY[:2],
    domain=(real(), away_from(0.0, gap=0.4)), differentiable=False)

# python scalars on either side
row("add_scalar", lambda T, x: x + 2, lambda x: x + 2, ONE)
row("radd_scalar", lambda T, x: 2.5 + x, lambda x: 2.5 + x, ONE)
row("sub_scalar", lambda T, x: x - 2, lambda x: x - 2, ONE)
row("rsub_scalar", lambda T, x: 2 - x, lambda x: 2 - x, ONE)
row("rsub_fn", lambda T, x: T.rsub(x, 2.0), lambda x: 2.0 - x, ONE)
row("mul_scalar", lambda T, x: x * 3, lambda x: x * 3, ONE)
row("rmul_scalar", lambda T, x: 0.5 * x, lambda x: 0.5 * x, ONE)
row("div_scalar", lambda T, x: x / 4, lambda x: x / 4, ONE)
row("rdiv_scalar", lambda T, x: 4 / x, lambda x: 4 / x, ONE, domain=away_from(0.0, gap=0.4))
row("pow_tensor_scalar", lambda T, x: x ** 3, lambda x: x ** 3, ONE)
row("pow_tensor_fraction", lambda T, x: x ** 2.5, lambda x: x ** 2.5, ONE, domain=positive())
row("pow_scalar_tensor", lambda T, x: 2 ** x, lambda x: 2.0 ** x, ONE)
row("pow_fn", lambda T, x: T.pow(x, 2), np.square, ONE)
row("pow_zero_exponent", lambda T, x: x ** 0, lambda x: x ** 0, (((2, 3),),), domain=with_zeros(1))
# The zero-gradient special cases are `where`s over an inf/nan branch: their second derivatives are
# nan in PyTorch too (torch.autograd.gradgradcheck fails the same way), so first order only.
row("pow_zero_exponent_tensor", lambda T, x: x ** T.zeros_like(x), lambda x: x ** 0, (((2, 3),),),
    domain=with_zeros(1), second_order=False)
row("pow_zero_base", lambda T, x: 0.0 ** x, lambda x: 0.0 ** x, ONE, domain=positive(), second_order=False)

# comparisons, logic, selection
_CMP = dict(domain=ints(-2, 3), differentiable=False, out_dtype="bool")
row("eq", lambda T, x, y: x == y, np.equal, BINARY, **_CMP)
row("ne", lambda T, x, y: x != y, np.not_equal, BINARY[:3], **_CMP)
row("lt", lambda T, x, y: x < y, np.less, BINARY[:3], **_CMP)
row("le", lambda T, x, y: x <= y, np.less_equal, BINARY[:3], **_CMP)
row("gt", lambda T, x, y: x > y, np.greater, BINARY[:3], **_CMP)
row("ge", lambda T, x, y: T.ge(x, y), np.greater_equal, BINARY[:3], **_CMP)
row("eq_fn", lambda T, x, y: T.eq(x, y), np.equal, BINARY[:2], **_CMP)
row("gt_scalar", lambda T, x: x > 0.5, lambda x: x > 0.5, ONE, domain=away_from(0.5),
    differentiable=False, out_dtype="bool")
row("rlt_scalar", lambda T, x: 0.5 < x, lambda x: 0.5 < x, ONE, domain=away_from(0.5),
    differentiable=False, out_dtype="bool")
row("isnan", lambda T, x: T.isnan(x / x), lambda x: np.isnan(x / x), ONE, domain=ints(-1, 2),
    differentiable=False, out_dtype="bool")

_MASK = np.array([[True, False, True], [False, False, True]])
row("where", lambda T, x, y: T.where(T.tensor(_MASK), x, y), lambda x, y: np.where(_MASK, x, y),
    (((2, 3), (2, 3)), ((2, 3), (3,)), ((), (2, 3))))
row("where_scalar", lambda T, x: T.where(x > 0, x, 0.0), lambda x: np.where(x > 0, x, 0.0), ONE,
    domain=away_from(0.0))
row("masked_fill", lambda T, x: x.masked_fill(T.tensor(_MASK), -1.0), lambda x: np.where(_MASK, -1.0, x),
    (((2, 3),),))
_CLAMP = away_from(-0.5, 0.5)
row("clamp_min", lambda T, x: T.clamp(x, min=-0.5), lambda x: np.maximum(x, -0.5), UNARY, domain=_CLAMP)
row("clamp_max", lambda T, x: T.clamp(x, max=0.5), lambda x: np.minimum(x, 0.5), UNARY, domain=_CLAMP)
row("clamp_both", lambda T, x: x.clamp(-0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), UNARY, domain=_CLAMP)
row("clip", lambda T, x: T.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), ONE, domain=_CLAMP)
row("clamp_min_fn", lambda T, x: T.clamp_min(x, 0.5), lambda x: np.maximum(x, 0.5), ONE, domain=_CLAMP)
row("clamp_max_fn", lambda T, x: x.clamp_max(-0.5), lambda x: np.minimum(x, -0.5), ONE, domain=_CLAMP)

# ---------------------------------------------------------------- reductions
row("sum", lambda T, x: x.sum(), np.sum, UNARY)
row("sum_dim", lambda T, x: x.sum(1), lambda x: x.sum(1), MATRIX + CUBE)
row("sum_dim_keepdim", lambda T, x: x.sum(0, keepdim=True), lambda x: x.sum(0, keepdims=True), MATRIX)
row("sum_dims", lambda T, x: T.sum(x, (0, -1)), lambda x: x.sum((0, x.ndim - 1)), MATRIX + CUBE)
row("sum_neg_dim_keepdim", lambda T, x: x.sum(dim=-1, keepdim=True), lambda x: x.sum(-1, keepdims=True),
    CUBE)
row("mean", lambda T, x: x.mean(), np.mean, UNARY)
row("mean_dim", lambda T, x: x.mean(1), lambda x: x.mean(1), MATRIX)
row("mean_dims_keepdim", lambda T, x: x.mean((0, 2), keepdim=True), lambda x: x.mean((0, 2), keepdims=True),
    CUBE)
row("nansum", lambda T, x: x.nansum(), np.nansum, ONE)
row("prod", lambda T, x: x.prod(), np.prod, UNARY)
row("prod_dim", lambda T, x: x.prod(1), lambda x: x.prod(1), MATRIX + CUBE)
row("prod_one_zero", lambda T, x: x.prod(), np.prod, (((2, 3),), ((4,),)), domain=with_zeros(1))
row("prod_two_zeros", lambda T, x: x.prod(), np.prod, (((2, 3),), ((4,),)), domain=with_zeros(2))
row("prod_three_zeros", lambda T, x: x.prod(), np.prod, (((2, 3),),), domain=with_zeros(3))
row("prod_dim_one_zero", lambda T, x: x.prod(0, keepdim=True), lambda x: x.prod(0, keepdims=True),
    (((1, 4),), ((3, 1),)), domain=with_zeros(1))
row("max", lambda T, x: x.max(), np.max, UNARY, domain=distinct())
row("min", lambda T, x: T.min(x), np.min, UNARY, domain=distinct())
row("max_dim", lambda T, x: x.max(1), lambda x: (x.max(1), x.argmax(1)), MATRIX + CUBE, domain=distinct(),
    out_dtype=(None, "int64"))
row("max_dim_keepdim", lambda T, x: T.max(x, 0, keepdim=True),
    lambda x: (x.max(0, keepdims=True), x.argmax(0, keepdims=True)), MATRIX, domain=distinct(),
    out_dtype=(None, "int64"))
row("min_dim", lambda T, x: x.min(dim=-1), lambda x: (x.min(-1), x.argmin(-1)), MATRIX, domain=distinct(),
    out_dtype=(None, "int64"))
row("max_binary", lambda T, x, y: T.max(x, y), np.maximum, BINARY[:3])
row("amax", lambda T, x: x.amax(1), lambda x: x.max(1), MATRIX + CUBE, domain=distinct())
row("amin_dims", lambda T, x: T.amin(x, (0, 1)), lambda x: x.min((0, 1)), MATRIX + CUBE, domain=distinct())
_ARG = dict(domain=distinct(), differentiable=False, out_dtype="int64")
row("argmax", lambda T, x: x.argmax(), lambda x: np.argmax(x), UNARY, **_ARG)
row("argmax_dim", lambda T, x: T.argmax(x, 1), lambda x: np.argmax(x, 1), MATRIX, **_ARG)
row("argmin", lambda T, x: T.argmin(x), lambda x: np.argmin(x), MATRIX, **_ARG)
row("argmin_dim_keepdim", lambda T, x: x.argmin(0, keepdim=True), lambda x: np.argmin(x, 0, keepdims=True),
    MATRIX, **_ARG)
row("var", lambda T, x: x.var(), lambda x: np.var(x, ddof=1), MATRIX + ((((5,),),)))
row("var_correction0", lambda T, x: x.var(correction=0), np.var, MATRIX)
row("var_unbiased_false", lambda T, x: T.var(x, unbiased=False), np.var, MATRIX)
row("var_dim", lambda T, x: x.var(1), lambda x: np.var(x, 1, ddof=1), MATRIX + CUBE)
row("var_dim_correction0_keepdim", lambda T, x: x.var(0, keepdim=True, correction=0),
    lambda x: np.var(x, 0, keepdims=True), MATRIX)
row("std", lambda T, x: x.std(), lambda x: np.std(x, ddof=1), MATRIX)
row("std_correction0", lambda T, x: T.std(x, correction=0), np.std, MATRIX)
row("std_dim", lambda T, x: x.std((0, 2)), lambda x: np.std(x, (0, 2), ddof=1), CUBE)
row("std_dim_correction0", lambda T, x: x.std(-1, correction=0, keepdim=True),
    lambda x: np.std(x, -1, keepdims=True), MATRIX)
row("var_mean", lambda T, x: T.var_mean(x, 1), lambda x: (np.var(x, 1, ddof=1), np.mean(x, 1)), MATRIX)
row("std_mean", lambda T, x: T.std_mean(x), lambda x: (np.std(x, ddof=1), np.mean(x)), MATRIX)
row("norm", lambda T, x: x.norm(), lambda x: np.sqrt(np.sum(x * x)), UNARY[:1] + UNARY[2:],
    domain=away_from(0.0))
row("norm_p2", lambda T, x: T.norm(x, p=2), lambda x: np.sqrt(np.sum(x * x)), MATRIX)
row("norm_p1", lambda T, x: x.norm(p=1), lambda x: np.abs(x).sum(), MATRIX, domain=away_from(0.0))
row("norm_inf", lambda T, x: x.norm(p=float("inf")), lambda x: np.abs(x).max(), MATRIX,
    domain=distinct(min_abs=0.2))
row("norm_p3", lambda T, x: x.norm(p=3), lambda x: np.sum(np.abs(x) ** 3) ** (1 / 3), MATRIX,
    domain=away_from(0.0))
row("norm_dim", lambda T, x: x.norm(dim=1), lambda x: np.sqrt(np.sum(x * x, 1)), MATRIX + CUBE)
row("norm_p1_dim_keepdim", lambda T, x: x.norm(p=1, dim=0, keepdim=True),
    lambda x: np.abs(x).sum(0, keepdims=True), MATRIX, domain=away_from(0.0))
row("logsumexp", lambda T, x: x.logsumexp(1), lambda x: _logsumexp(x, 1), MATRIX + CUBE)
row("logsumexp_dims_keepdim", lambda T, x: T.logsumexp(x, (0, 1), keepdim=True),
    lambda x: _logsumexp(x, (0, 1), True), MATRIX)
row("logsumexp_large", lambda T, x: x.logsumexp(0), lambda x: np.log(np.sum(np.exp(x - 500), 0)) + 500,
    (((3, 2),),), domain=real(499.0, 501.0))
row("cumsum", lambda T, x: x.cumsum(0), lambda x: np.cumsum(x, 0), MATRIX + (((5,),),))
row("cumsum_last", lambda T, x: T.cumsum(x, dim=-1), lambda x: np.cumsum(x, -1), MATRIX + CUBE)
row("softmax", lambda T, x: x.softmax(1), lambda x: _softmax(x, 1), MATRIX + CUBE)
row("softmax_dim0", lambda T, x: T.softmax(x, 0), lambda x: _softmax(x, 0), MATRIX + (((5,),),))
row("log_softmax", lambda T, x: x.log_softmax(-1), lambda x: np.log(_softmax(x, -1)), MATRIX + CUBE)
row("all", lambda T, x: x.all(), np.all, (((2, 3),), ((0,),)), dtypes=("bool",), domain=bools(),
    differentiable=False, out_dtype="bool")
row("all_dim", lambda T, x: T.all(x, 1), lambda x: np.all(x, 1), (((3, 2),),), dtypes=("bool",),
    domain=bools(), differentiable=False, out_dtype="bool")
row("any", lambda T, x: T.any(x), np.any, (((2, 3),), ((0,),)), dtypes=("bool",), domain=bools(),
    differentiable=False, out_dtype="bool")
row("any_dim_keepdim", lambda T, x: x.any(0, keepdim=True), lambda x: np.any(x, 0, keepdims=True),
    (((3, 2),),), dtypes=("bool",), domain=bools(), differentiable=False, out_dtype="bool")
row("all_float", lambda T, x: (x > 0).all(), lambda x: np.all(x > 0), MATRIX, domain=away_from(0.0),
    differentiable=False, out_dtype="bool")

# ---------------------------------------------------------------- shape and movement
row("reshape", lambda T, x: x.reshape(3, 2), lambda x: x.reshape(3, 2), (((2, 3),), ((6,),)))
row("reshape_infer", lambda T, x: T.reshape(x, (-1,)), lambda x: x.reshape(-1), (((2, 3),), ((),)))
row("reshape_noncontiguous", lambda T, x: x.t().reshape(6), lambda x: x.T.reshape(6), (((2, 3),),))
row("view", lambda T, x: x.view(6), lambda x: x.reshape(6), (((2, 3),),))
row("view_infer", lambda T, x: x.view(3, -1), lambda x: x.reshape(3, -1), (((2, 3),), ((2, 3, 2),)))
row("flatten", lambda T, x: x.flatten(), lambda x: x.reshape(-1), (((2, 3),), ((2, 3, 2),), ((),)))
row("flatten_start", lambda T, x: T.flatten(x, 1), lambda x: x.reshape(x.shape[0], -1), CUBE)
row("unflatten", lambda T, x: x.unflatten(1, (3, 1)), lambda x: x.reshape(2, 3, 1), (((2, 3),),))
row("squeeze", lambda T, x: x.squeeze(), np.squeeze, (((2, 1, 3),), ((1, 1),)))
row("squeeze_dim", lambda T, x: x.squeeze(1), lambda x: np.squeeze(x, 1), (((2, 1, 3),),))
row("unsqueeze", lambda T, x: x.unsqueeze(0), lambda x: x[None], UNARY)
row("unsqueeze_last", lambda T, x: T.unsqueeze(x, -1), lambda x: x[..., None], UNARY)
row("transpose", lambda T, x: x.transpose(0, 1), lambda x: x.swapaxes(0, 1), MATRIX + CUBE)
row("transpose_neg", lambda T, x: T.transpose(x, -1, 0), lambda x: x.swapaxes(-1, 0), CUBE)
row("permute", lambda T, x: x.permute(2, 0, 1), lambda x: x.transpose(2, 0, 1), CUBE)
row("movedim", lambda T, x: T.movedim(x, 0, -1), lambda x: np.moveaxis(x, 0, -1), CUBE)
row("t", lambda T, x: x.t(), lambda x: x.T, MATRIX + (((3,),),))
row("T", lambda T, x: x.T, lambda x: x.T, MATRIX)
row("mT", lambda T, x: x.mT, lambda x: x.swapaxes(-1, -2), CUBE)
row("expand", lambda T, x: x.expand(3, 4), lambda x: np.broadcast_to(x, (3, 4)), (((3, 1),), ((4,),)))
row("expand_keep", lambda T, x: x.expand(2, -1, -1), lambda x: np.broadcast_to(x, (2,) + x.shape),
    (((1, 3),), ((2, 1),)))
row("expand_as", lambda T, x, y: x.expand_as(y), lambda x, y: np.broadcast_to(x, y.shape),
    (((3, 1), (3, 2)),))
row("broadcast_to", lambda T, x: T.broadcast_to(x, (2, 3)), lambda x: np.broadcast_to(x, (2, 3)),
    (((3,),), ((),)))
row("contiguous", lambda T, x: x.t().contiguous(), lambda x: x.T.copy(), MATRIX)
row("narrow", lambda T, x: x.narrow(1, 1, 2), lambda x: x[:, 1:3], MATRIX)
row("select", lambda T, x: T.select(x, 1, -1), lambda x: x[:, -1], MATRIX)

# ---------------------------------------------------------------- joining and splitting
row("cat", lambda T, x, y: T.cat([x, y]), lambda x, y: np.concatenate([x, y]),
    (((2, 3), (1, 3)), ((4,), (2,))))
row("cat_dim1", lambda T, x, y: T.cat((x, y), dim=1), lambda x, y: np.concatenate([x, y], 1),
    (((2, 3), (2, 1)),))
row("cat_neg_dim", lambda T, x, y, z: T.cat([x, y, z], -1), lambda x, y, z: np.concatenate([x, y, z], -1),
    (((2, 1), (2, 2), (2, 1)),))
row("stack", lambda T, x, y: T.stack([x, y]), lambda x, y: np.stack([x, y]), (((2, 3), (2, 3)), ((), ())))
row("stack_last", lambda T, x, y: T.stack([x, y], dim=-1), lambda x, y: np.stack([x, y], -1),
    (((2, 3), (2, 3)),))
row("hstack", lambda T, x, y: T.hstack([x, y]), lambda x, y: np.hstack([x, y]),
    (((2, 3), (2, 1)), ((3,), (2,))))
row("vstack", lambda T, x, y: T.vstack([x, y]), lambda x, y: np.vstack([x, y]),
    (((2, 3), (1, 3)), ((3,), (3,))))
row("split", lambda T, x: x.split(2), lambda x: (x[:2], x[2:4], x[4:]), (((5, 2),), ((5,),)))
row("split_sections", lambda T, x: T.split(x, [1, 2], dim=1), lambda x: (x[:, :1], x[:, 1:]), MATRIX[:1])
row("chunk", lambda T, x: x.chunk(2, 1), lambda x: tuple(np.array_split(x, 2, 1)), (((3, 4),), ((2, 3),)))
row("unbind", lambda T, x: x.unbind(1), lambda x: tuple(np.moveaxis(x, 1, 0)), MATRIX)
row("unbind_first", lambda T, x: T.unbind(x), lambda x: tuple(x), (((3,),), ((2, 3),)))

# ---------------------------------------------------------------- indexing
row("getitem_int", lambda T, x: x[1], lambda x: x[1], MATRIX + (((3,),),))
row("getitem_neg_int", lambda T, x: x[-1, 0], lambda x: x[-1, 0], MATRIX)
row("getitem_slice", lambda T, x: x[:, 1:], lambda x: x[:, 1:], MATRIX)
row("getitem_step", lambda T, x: x[::2], lambda x: x[::2], MATRIX + (((5,),),))
row("getitem_slice_int", lambda T, x: x[1:, 0], lambda x: x[1:, 0], MATRIX)
row("getitem_none", lambda T, x: x[None], lambda x: x[None], MATRIX + (((),),))
row("getitem_ellipsis", lambda T, x: x[..., 1], lambda x: x[..., 1], MATRIX + CUBE)
row("getitem_ellipsis_none", lambda T, x: x[..., None], lambda x: x[..., None], MATRIX)
row("getitem_mixed", lambda T, x: x[0, None, ..., 1:], lambda x: x[0, None, ..., 1:], CUBE)
row("getitem_ellipsis_alone", lambda T, x: x[...], lambda x: x[...], MATRIX)
_IDX = np.array([0, 1, 0])
row("getitem_int_array", lambda T, x: x[T.tensor(_IDX)], lambda x: x[_IDX], MATRIX + (((3,),),))
row("getitem_list", lambda T, x: x[[1, 0, 1, 1]], lambda x: x[[1, 0, 1, 1]], (((2, 3),),))
row("getitem_2d_int_array", lambda T, x: x[T.tensor([[0, 1], [1, 1]])], lambda x: x[np.array([[0, 1], [1, 1]])],
    MATRIX)
row("getitem_slice_array", lambda T, x: x[:, [2, 0, 2]], lambda x: x[:, [2, 0, 2]], MATRIX)
row("getitem_two_arrays", lambda T, x: x[[0, 1, 1], [2, 0, 2]], lambda x: x[[0, 1, 1], [2, 0, 2]], MATRIX)
row("getitem_mask", lambda T, x: x[T.tensor(_MASK)], lambda x: x[_MASK], (((2, 3),),))
row("getitem_mask_rows", lambda T, x: x[T.tensor([True, False, True])], lambda x: x[[True, False, True]],
    (((3, 2),),))
row("getitem_mask_computed", lambda T, x: x[x > 0], lambda x: x[x > 0], MATRIX, domain=away_from(0.0))
row("index_select", lambda T, x: x.index_select(1, T.tensor([2, 0, 2])), lambda x: x[:, [2, 0, 2]], MATRIX)
_GATHER = np.array([[0, 2], [1, 1]])   # smaller than the input along the other dim, as torch allows


def _gather_ref(x, idx, dim):
    grids = list(np.indices(idx.shape, sparse=True))
    grids[dim] = idx
    return x[tuple(grids)]


row("gather", lambda T, x: T.gather(x, 1, T.tensor(_GATHER)), lambda x: _gather_ref(x, _GATHER, 1), MATRIX)
_GATHER0 = np.array([[1, 0], [0, 1], [1, 1]])
row("gather_dim0", lambda T, x: x.gather(0, T.tensor(_GATHER0)), lambda x: _gather_ref(x, _GATHER0, 0), MATRIX)
row("gather_same_shape", lambda T, x: x.gather(-1, T.tensor([[2, 0, 0], [1, 1, 2]])),
    lambda x: np.take_along_axis(x, np.array([[2, 0, 0], [1, 1, 2]]), -1), (((2, 3),),))



# sorting: NumPy's stable argsort as the reference (distinct values: no ties to order)
def _sort_ref(x, axis=-1, descending=False):
    flat = np.atleast_1d(x)
    idx = np.argsort(-flat if descending else flat, axis=axis, kind="stable")
    return np.take_along_axis(flat, idx, axis).reshape(x.shape), idx.reshape(x.shape)


def _topk_ref(x, k, axis=-1, largest=True):
    idx = np.argsort(-x if largest else x, axis=axis, kind="stable").take(range(k), axis=axis)
    return np.take_along_axis(x, idx, axis), idx


_SORTED = dict(domain=distinct(), out_dtype=(None, "int64"))
row("sort", lambda T, x: T.sort(x), _sort_ref, (((2, 3),), ((),), ((5,),)), **_SORTED)
row("sort_dim0_descending", lambda T, x: x.sort(dim=0, descending=True), lambda x: _sort_ref(x, 0, True), MATRIX,
    **_SORTED)
row("argsort", lambda T, x: x.argsort(1, descending=True), lambda x: _sort_ref(x, 1, True)[1], MATRIX, **_ARG)
row("msort", lambda T, x: T.msort(x), lambda x: np.sort(x, 0), MATRIX, domain=distinct())
row("topk", lambda T, x: x.topk(2), lambda x: _topk_ref(x, 2), MATRIX + CUBE, **_SORTED)
row("topk_smallest_dim0", lambda T, x: T.topk(x, 1, dim=0, largest=False), lambda x: _topk_ref(x, 1, 0, False),
    MATRIX, **_SORTED)
row("kthvalue", lambda T, x: x.kthvalue(2, 1), lambda x: tuple(a[:, 1] for a in _topk_ref(x, 2, 1, False)),
    MATRIX, **_SORTED)
row("kthvalue_keepdim", lambda T, x: T.kthvalue(x, 1, 0, keepdim=True),
    lambda x: tuple(a[:1] for a in _topk_ref(x, 1, 0, False)), MATRIX, **_SORTED)


# scatter and index_*: positions without repeats where a write replaces (which write lands on a
# repeated position is unspecified), with repeats where writes add up
def _scatter_ref(x, dim, idx, src, add=False):
    out = x.copy()
    key = list(np.indices(idx.shape, sparse=True))
    key[dim] = idx
    if add:
        np.add.at(out, tuple(key), src[tuple(slice(0, n) for n in idx.shape)])
    else:
        out[tuple(key)] = src if np.ndim(src) == 0 else src[tuple(slice(0, n) for n in idx.shape)]
    return out


_SCATTER = np.array([[2, 0], [1, 2]])
_SCATTER_ADD = np.array([[0, 2, 0], [1, 1, 1]])
row("scatter", lambda T, x, y: x.scatter(1, T.tensor(_SCATTER), y), lambda x, y: _scatter_ref(x, 1, _SCATTER, y),
    (((2, 3), (2, 2)),))   # a larger src: PyTorch's backward fails on it (its src gradient is index-shaped)
row("scatter_value", lambda T, x: T.scatter(x, 0, T.tensor([[1, 0, 1]]), value=2.5),
    lambda x: _scatter_ref(x, 0, np.array([[1, 0, 1]]), 2.5), (((2, 3),),))
row("scatter_add", lambda T, x, y: x.scatter_add(1, T.tensor(_SCATTER_ADD), y),
    lambda x, y: _scatter_ref(x, 1, _SCATTER_ADD, y, add=True), (((2, 3), (2, 3)),))
row("index_add", lambda T, x, y: x.index_add(0, T.tensor([1, 0, 1]), y, alpha=2),
    lambda x, y: _scatter_ref(x, 0, np.array([[1] * 3, [0] * 3, [1] * 3]), 2 * y, add=True), (((2, 3), (3, 3)),))
row("index_copy", lambda T, x, y: x.index_copy(1, T.tensor([2, 0]), y),
    lambda x, y: _scatter_ref(x, 1, np.array([[2, 0], [2, 0]]), y), (((2, 3), (2, 2)),))
row("index_fill", lambda T, x: x.index_fill(1, T.tensor([0, 2]), -1.5),
    lambda x: _scatter_ref(x, 1, np.array([[0, 2], [0, 2]]), -1.5), (((2, 3),),))


def _in_place(x, name, *args, **kwargs):
    y = x.clone()
    assert getattr(y, name)(*args, **kwargs) is y, f"{name} must return self"
    return y


row("scatter_", lambda T, x, y: _in_place(x, "scatter_", 1, T.tensor(_SCATTER), y),
    lambda x, y: _scatter_ref(x, 1, _SCATTER, y), (((2, 3), (2, 2)),))
row("scatter_add_", lambda T, x, y: _in_place(x, "scatter_add_", 1, T.tensor(_SCATTER_ADD), y),
    lambda x, y: _scatter_ref(x, 1, _SCATTER_ADD, y, add=True), (((2, 3), (2, 3)),))
row("index_add_", lambda T, x, y: _in_place(x, "index_add_", 1, T.tensor([2, 2]), y),
    lambda x, y: _scatter_ref(x, 1, np.array([[2, 2], [2, 2]]), y, add=True), (((2, 3), (2, 2)),))
row("index_fill_", lambda T, x: _in_place(x, "index_fill_", 1, T.tensor([1]), 4.0),
    lambda x: _scatter_ref(x, 1, np.array([[1], [1]]), 4.0), (((2, 3),),))

def _setitem(key):
    def fn(T, x, v):
        y = x.clone()
        y[key] = v
        return y

    def ref(x, v):
        y = x.copy()
        y[key] = v
        return y
    return fn, ref


row("setitem_row", *_setitem(0), (((2, 3), (3,)), ((2, 3), ())))
row("setitem_slice", *_setitem((slice(None), slice(1, None))), (((2, 3), (2, 2)), ((2, 3), (2,))))
row("setitem_int_array", *_setitem(np.array([2, 0])), (((3, 2), (2, 2)),))
row("setitem_mask", *_setitem(_MASK), (((2, 3), (3,)), ((2, 3), ())))

# ---------------------------------------------------------------- linear algebra
row("matmul_1d_1d", lambda T, x, y: x @ y, np.matmul, (((4,), (4,)),))
row("matmul_2d_1d", lambda T, x, y: T.matmul(x, y), np.matmul, (((2, 3), (3,)),))
row("matmul_1d_2d", lambda T, x, y: x @ y, np.matmul, (((3,), (3, 2)),))
row("matmul_2d_2d", lambda T, x, y: x @ y, np.matmul, (((2, 3), (3, 2)),))
row("matmul_3d_broadcast", lambda T, x, y: x @ y, np.matmul,
    (((2, 2, 3), (3, 2)), ((2, 1, 1, 2), (3, 2, 1)), ((2, 3), (2, 3, 2))))
row("matmul_3d_1d", lambda T, x, y: x @ y, np.matmul, (((2, 2, 3), (3,)), ((3,), (2, 3, 2))))
row("mm", lambda T, x, y: T.mm(x, y), np.matmul, (((2, 3), (3, 2)), ((1, 4), (4, 1))))
row("bmm", lambda T, x, y: x.bmm(y), np.matmul, (((2, 2, 3), (2, 3, 1)),))
row("mv", lambda T, x, y: x.mv(y), np.matmul, (((2, 3), (3,)),))
row("dot", lambda T, x, y: T.dot(x, y), np.dot, (((4,), (4,)),))
row("outer", lambda T, x, y: T.outer(x, y), np.outer, (((3,), (2,)),))
row("addmm", lambda T, b, x, y: T.addmm(b, x, y), lambda b, x, y: b + x @ y,
    (((2, 2), (2, 3), (3, 2)), ((2,), (2, 3), (3, 2))))

# ---------------------------------------------------------------- losses (composites and their own ops)
_PROBABILITY = (real(0.05, 0.95), real(0.0, 1.0))   # probabilities away from the clamped logs; soft targets


def _bce(x, t):
    return np.mean(-(t * np.log(x) + (1 - t) * np.log(1 - x)))


def _bce_logits(x, t, pos_weight=1.0):
    return np.mean((1 - t) * x + (1 + (pos_weight - 1) * t) * np.logaddexp(0, -x))


row("binary_cross_entropy", lambda T, x, t: T.nn.functional.binary_cross_entropy(x, t), _bce,
    (((2, 3), (2, 3)), ((4,), (4,))), domain=_PROBABILITY)
row("binary_cross_entropy_none", lambda T, x, t: T.nn.functional.binary_cross_entropy(x, t, reduction="none"),
    lambda x, t: -(t * np.log(x) + (1 - t) * np.log(1 - x)), (((2, 3), (2, 3)),), domain=_PROBABILITY)
row("bce_with_logits", lambda T, x, t: T.nn.functional.binary_cross_entropy_with_logits(x, t), _bce_logits,
    (((2, 3), (2, 3)), ((4,), (4,))), domain=(real(-3.0, 3.0), real(0.0, 1.0)))
row("bce_with_logits_pos_weight", lambda T, x, t: T.nn.functional.binary_cross_entropy_with_logits(
    x, t, pos_weight=T.tensor([3.0, 0.5, 1.0], dtype=x.dtype)), lambda x, t: _bce_logits(x, t, np.array([3.0, 0.5, 1.0])),
    (((2, 3), (2, 3)),), domain=(real(-3.0, 3.0), real(0.0, 1.0)))
row("mse_loss", lambda T, x, t: T.nn.functional.mse_loss(x, t), lambda x, t: np.mean((x - t) ** 2),
    (((2, 3), (2, 3)), ((4,), (4,))))
row("l1_loss_sum", lambda T, x, t: T.nn.functional.l1_loss(x, t, reduction="sum"), lambda x, t: np.abs(x - t).sum(),
    (((2, 3), (2, 3)),), domain=(away_from(-1.0, 0.0, 1.0, gap=0.2), ints(-1, 2)))

# ---------------------------------------------------------------- aliases and the rest of the surface
_SAFE_DIV = (real(), away_from(0.0, gap=0.4))
row("div_trunc", lambda T, x, y: T.div(x, y, rounding_mode="trunc"), lambda x, y: np.trunc(x / y), BINARY[:2],
    domain=_SAFE_DIV, second_order=False)
row("div_floor", lambda T, x, y: x.div(y, rounding_mode="floor"), lambda x, y: np.floor(x / y), BINARY[:2],
    domain=_SAFE_DIV, second_order=False)
row("div_trunc_scalar", lambda T, x: T.div(x, 0.7, rounding_mode="trunc"), lambda x: np.trunc(x / 0.7), ONE,
    second_order=False)
row("negative", lambda T, x: x.negative(), np.negative, ONE)
row("absolute", lambda T, x: T.absolute(x), np.abs, ONE, domain=away_from(0.0))
row("swapaxes", lambda T, x: x.swapaxes(0, -1), lambda x: x.swapaxes(0, -1), CUBE)
row("swapdims", lambda T, x: T.swapdims(x, 1, 0), lambda x: x.swapaxes(1, 0), MATRIX)
row("view_as", lambda T, x, y: x.view_as(y), lambda x, y: x.reshape(y.shape), (((2, 3), (3, 2)),))
row("reshape_as", lambda T, x, y: x.t().reshape_as(y), lambda x, y: x.T.reshape(y.shape), (((2, 3), (6,)),))
row("inner", lambda T, x, y: T.inner(x, y), np.inner, (((4,), (4,)),))
row("type_as", lambda T, x: x.type_as(T.ones(1, dtype=T.float64)), lambda x: x, ONE, out_dtype="float64")
row("to_dtype", lambda T, x: x.to(T.float64), lambda x: x, ONE, out_dtype="float64")
row("concat", lambda T, x, y: T.concat([x, y], dim=1), lambda x, y: np.concatenate([x, y], 1),
    (((2, 1), (2, 2)),))
row("concatenate", lambda T, x, y: T.concatenate((x, y)), lambda x, y: np.concatenate([x, y]), (((1,), (3,)),))
row("broadcast_tensors", lambda T, x, y: T.broadcast_tensors(x, y), lambda x, y: np.broadcast_arrays(x, y),
    (((2, 3), (3,)), ((4, 1), (1, 5))))
row("tril", lambda T, x: x.tril(), np.tril, MATRIX)
row("triu", lambda T, x: T.triu(x, 1), lambda x: np.triu(x, 1), MATRIX)
row("detach", lambda T, x: x.detach(), lambda x: x, ONE, differentiable=False)
_NAN_FREE = dict(differentiable=False, out_dtype="bool")
row("isfinite", lambda T, x: T.isfinite(x), np.isfinite, ONE, **_NAN_FREE)
row("isinf", lambda T, x: x.isinf(), np.isinf, ONE, **_NAN_FREE)
row("isclose", lambda T, x, y: T.isclose(x, y), np.isclose, BINARY[:2], domain=ints(0, 2), **_NAN_FREE)
row("equal", lambda T, x, y: T.tensor(T.equal(x, x.clone()) and not T.equal(x, y)), lambda x, y: np.array(True),
    (((2, 3), (2, 3)),), **_NAN_FREE)
row("allclose", lambda T, x: T.tensor(T.allclose(x, x + 1e-9)), lambda x: np.array(True), ONE, **_NAN_FREE)
row("logical_xor", lambda T, x, y: T.logical_xor(x > 0, y > 0), lambda x, y: np.logical_xor(x > 0, y > 0),
    BINARY[:3], domain=away_from(0.0), **_NAN_FREE)
row("nonzero", lambda T, x: T.nonzero(x), lambda x: np.argwhere(x), (((2, 3),), ((5,),)), domain=ints(-1, 2),
    differentiable=False, out_dtype="int64")
row("nonzero_as_tuple", lambda T, x: T.nonzero(x, as_tuple=True), np.nonzero, (((2, 3),),), domain=ints(-1, 2),
    differentiable=False, out_dtype="int64")
row("where_condition_only", lambda T, x: T.where(x), np.nonzero, (((2, 3),),), domain=ints(-1, 2),
    differentiable=False, out_dtype="int64")
for _alias, _ref in (("greater", np.greater), ("greater_equal", np.greater_equal), ("less", np.less),
                     ("less_equal", np.less_equal), ("not_equal", np.not_equal)):
    row(_alias, lambda T, x, y, _alias=_alias: getattr(T, _alias)(x, y), _ref, BINARY[1:2], **_CMP)

# ---------------------------------------------------------------- in-place variants (on a clone)
# Each writes into a clone, so a leaf that requires grad stays untouched and its gradient flows
# through the in-place op, as in a training step. Extra arguments are tensors built from inputs.


def _inplace(name, method, ref, samples=(((2, 3),),), **kw):
    def fn(T, x, *others):
        y = x.clone()
        out = method(y, *others)
        assert out is y, f"{name} must return self"
        return y
    row(name, fn, ref, samples, **kw)


_inplace("add_", lambda y, z: y.add_(z), np.add, (((2, 3), (3,)),))
_inplace("add_alpha_", lambda y, z: y.add_(z, alpha=-2), lambda x, z: x - 2 * z, (((2, 3), (2, 3)),))
_inplace("sub_", lambda y, z: y.sub_(z), np.subtract, (((2, 3), ()),))
_inplace("mul_", lambda y, z: y.mul_(z), np.multiply, (((2, 3), (2, 3)),))
_inplace("mul_scalar_", lambda y: y.mul_(3), lambda x: 3 * x)
_inplace("div_", lambda y, z: y.div_(z), np.divide, (((2, 3), (3,)),), domain=_SAFE_DIV)
_inplace("true_divide_", lambda y: y.true_divide_(4), lambda x: x / 4)
_inplace("pow_", lambda y: y.pow_(2), np.square)
_inplace("neg_", lambda y: y.neg_(), np.negative)
_inplace("abs_", lambda y: y.abs_(), np.abs, domain=away_from(0.0))
_inplace("exp_", lambda y: y.exp_(), np.exp)
_inplace("expm1_", lambda y: y.expm1_(), np.expm1)
_inplace("log_", lambda y: y.log_(), np.log, domain=positive())
_inplace("log1p_", lambda y: y.log1p_(), np.log1p, domain=positive())
_inplace("sin_", lambda y: y.sin_(), np.sin)
_inplace("cos_", lambda y: y.cos_(), np.cos)
_inplace("tan_", lambda y: y.tan_(), np.tan, domain=real(-1.2, 1.2))
_inplace("tanh_", lambda y: y.tanh_(), np.tanh)
_inplace("sigmoid_", lambda y: y.sigmoid_(), _sigmoid)
_inplace("sqrt_", lambda y: y.sqrt_(), np.sqrt, domain=positive())
_inplace("rsqrt_", lambda y: y.rsqrt_(), lambda x: 1 / np.sqrt(x), domain=positive())
_inplace("square_", lambda y: y.square_(), np.square)
_inplace("reciprocal_", lambda y: y.reciprocal_(), np.reciprocal, domain=away_from(0.0, gap=0.3))
_inplace("relu_", lambda y: y.relu_(), lambda x: np.maximum(x, 0), domain=away_from(0.0))
_inplace("clamp_", lambda y: y.clamp_(-0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), domain=_CLAMP)
_inplace("clip_", lambda y: y.clip_(max=0.5), lambda x: np.minimum(x, 0.5), domain=_CLAMP)
_inplace("clamp_min_", lambda y: y.clamp_min_(-0.5), lambda x: np.maximum(x, -0.5), domain=_CLAMP)
_inplace("clamp_max_", lambda y: y.clamp_max_(0.5), lambda x: np.minimum(x, 0.5), domain=_CLAMP)
_inplace("floor_", lambda y: y.floor_(), np.floor, domain=away_from(-2, -1, 0, 1, 2, gap=0.05),
         second_order=False)
_inplace("sign_", lambda y: y.sign_(), np.sign, domain=away_from(0.0), second_order=False)
_inplace("lerp_", lambda y, z: y.lerp_(z, 0.25), lambda x, z: x + 0.25 * (z - x), (((2, 3), (3,)),))
_inplace("masked_fill_", lambda y: y.masked_fill_(y > 0, 0.5), lambda x: np.where(x > 0, 0.5, x),
         domain=away_from(0.0))
_inplace("zero_", lambda y: y.zero_(), np.zeros_like)
_inplace("fill_", lambda y: y.fill_(1.5), lambda x: np.full_like(x, 1.5))
_inplace("copy_", lambda y, z: y.copy_(z), lambda x, z: np.broadcast_to(z, x.shape), (((2, 3), (3,)),))


def _iadd(y, z):
    y += z
    return y


def _imul(y, z):
    y *= z
    return y


_inplace("iadd", _iadd, np.add, (((2, 3), (2, 3)),))
_inplace("imul_scalar", lambda y: _imul(y, 2.5), lambda x: 2.5 * x)

# ---------------------------------------------------------------- dtype promotion (fixed dtypes)
_INT = ints(-3, 4)
_INT_NZ = ints(1, 5)
row("promote_int_mul_float_scalar", lambda T, x: x * 2.5, lambda x: x * 2.5, ONE, dtypes=("int64",),
    domain=_INT, out_dtype="float32", differentiable=False)
row("promote_float_scalar_rsub_int32", lambda T, x: 1.5 - x, lambda x: 1.5 - x, ONE, dtypes=("int32",),
    domain=_INT, out_dtype="float32", differentiable=False)
row("promote_int_add_int_scalar", lambda T, x: 2 + x, lambda x: 2 + x, ONE, dtypes=("int32",),
    domain=_INT, out_dtype="int32", differentiable=False)
row("promote_int_add_bool_scalar", lambda T, x: x + True, lambda x: x + 1, ONE, dtypes=("int64",),
    domain=_INT, out_dtype="int64", differentiable=False)
row("promote_f32_mul_int_scalar", lambda T, x: 3 * x, lambda x: 3 * x, ONE, dtypes=("float32",),
    out_dtype="float32")
row("promote_f32_add_f64_0dim", lambda T, x, y: x + y, np.add, (((2, 3), ()),), dtypes=("float32", "float64"),
    out_dtype="float32", rtol32=1e-6)
row("promote_f64_0dim_mul_f32", lambda T, x, y: x * y, np.multiply, (((), (3,)),), dtypes=("float64", "float32"),
    out_dtype="float32")
row("promote_f32_add_f64", lambda T, x, y: x + y, np.add, (((2, 3), (3,)),), dtypes=("float32", "float64"),
    out_dtype="float64")
row("promote_int_tensor_add_f64_0dim", lambda T, x, y: x + y, np.add, (((2, 3), ()),),
    dtypes=("int64", "float64"), domain=(_INT, real()), out_dtype="float64")
row("promote_int32_add_int64", lambda T, x, y: x + y, np.add, (((2, 3), (2, 3)), ((2, 3), (3,))),
    dtypes=("int32", "int64"), domain=_INT, out_dtype="int64", differentiable=False)
row("promote_int32_mul_int64_0dim", lambda T, x, y: x * y, np.multiply, (((2, 3), ()),),
    dtypes=("int32", "int64"), domain=_INT, out_dtype="int32", differentiable=False)
row("promote_bool_add_int", lambda T, x, y: x + y, np.add, (((2, 3), (2, 3)), ((3,), ())),
    dtypes=("bool", "int64"), domain=(bools(), _INT), out_dtype="int64", differentiable=False)
row("promote_bool_mul_float", lambda T, x, y: x * y, np.multiply, (((2, 3), (2, 3)),),
    dtypes=("bool", "float32"), domain=(bools(), real()), out_dtype="float32")
row("promote_int_div_int", lambda T, x, y: x / y, np.divide, (((2, 3), (2, 3)), ((2, 3), ())),
    dtypes=("int64", "int64"), domain=(_INT, _INT_NZ), out_dtype="float32", differentiable=False)
row("promote_int_div_int_scalar", lambda T, x: x / 2, lambda x: x / 2, ONE, dtypes=("int32",), domain=_INT,
    out_dtype="float32", differentiable=False)
row("promote_int_pow_int", lambda T, x: x ** 2, lambda x: x ** 2, ONE, dtypes=("int64",), domain=_INT,
    out_dtype="int64", differentiable=False)
row("promote_int_pow_fraction", lambda T, x: x ** 0.5, lambda x: x ** 0.5, ONE, dtypes=("int64",),
    domain=_INT_NZ, out_dtype="float32", differentiable=False)
row("promote_int_lt_float", lambda T, x, y: x < y, np.less, (((2, 3), (3,)),), dtypes=("int64", "float32"),
    domain=(_INT, real()), out_dtype="bool", differentiable=False)
row("promote_exp_int", lambda T, x: T.exp(x), np.exp, ONE, dtypes=("int64",), domain=_INT,
    out_dtype="float32", differentiable=False)
row("promote_sum_int32", lambda T, x: x.sum(), np.sum, ONE, dtypes=("int32",), domain=_INT,
    out_dtype="int64", differentiable=False)
row("promote_sum_bool", lambda T, x: T.sum(x, 0), lambda x: np.sum(x, 0, dtype=np.int64), MATRIX,
    dtypes=("bool",), domain=bools(), out_dtype="int64", differentiable=False)
row("promote_where_int_float", lambda T, x, y: T.where(T.tensor(_MASK), x, y), lambda x, y: np.where(_MASK, x, y),
    (((2, 3), (2, 3)),), dtypes=("int64", "float32"), domain=(_INT, real()), out_dtype="float32")
row("promote_cat_int_float", lambda T, x, y: T.cat([x, y]), lambda x, y: np.concatenate([x, y]),
    (((2, 3), (1, 3)),), dtypes=("int32", "float64"), domain=(_INT, real()), out_dtype="float64")
row("promote_logical_and", lambda T, x, y: T.logical_and(x, y), np.logical_and, (((2, 3), (3,)),),
    dtypes=("bool", "bool"), domain=bools(), out_dtype="bool", differentiable=False)
row("promote_logical_or_int", lambda T, x, y: T.logical_or(x, y), np.logical_or, (((2, 3), (2, 3)),),
    dtypes=("int64", "bool"), domain=(_INT, bools()), out_dtype="bool", differentiable=False)
row("promote_logical_not", lambda T, x: ~x, np.logical_not, ONE, dtypes=("bool",), domain=bools(),
    out_dtype="bool", differentiable=False)
row("logical_not_float", lambda T, x: T.logical_not(x), np.logical_not, ONE, domain=ints(-1, 2),
    differentiable=False, out_dtype="bool")
row("promote_bool_add_bool", lambda T, x, y: x + y, np.logical_or, (((2, 3), (2, 3)),),
    dtypes=("bool", "bool"), domain=bools(), out_dtype="bool", differentiable=False)
row("promote_div_trunc_int", lambda T, x, y: T.div(x, y, rounding_mode="trunc"), lambda x, y: np.trunc(x / y),
    (((2, 3), (2, 3)), ((2, 3), ())), dtypes=("int64", "int64"), domain=(ints(-7, 8), ints(-3, 4, nonzero=True)),
    out_dtype="int64", differentiable=False)
row("promote_div_trunc_int_scalar", lambda T, x: T.div(x, -2, rounding_mode="trunc"), lambda x: np.trunc(x / -2),
    ONE, dtypes=("int32",), domain=ints(-7, 8), out_dtype="int32", differentiable=False)
row("promote_div_floor_int", lambda T, x, y: T.div(x, y, rounding_mode="floor"), np.floor_divide,
    (((2, 3), (3,)),), dtypes=("int64", "int64"), domain=(ints(-7, 8), ints(-3, 4, nonzero=True)),
    out_dtype="int64", differentiable=False)
row("promote_div_trunc_int_float", lambda T, x: T.div(x, 0.5, rounding_mode="trunc"), lambda x: np.trunc(x / 0.5),
    ONE, dtypes=("int64",), domain=_INT, out_dtype="float32", differentiable=False)
row("promote_softmax_int_dtype", lambda T, x: x.softmax(0, dtype=T.float64), lambda x: _softmax(x, 0), MATRIX[:1],
    dtypes=("int64",), domain=_INT, out_dtype="float64", differentiable=False)


# ----------------------------------------------------------------------------- error rows


@dataclass
class ErrorRow:
    name: str
    fn: Callable      # fn(T) raises
    exc: type         # the exact exception type (ShapeError is the RuntimeError of shape rules)
    match: str        # regex the message must match


def _ones(T, *shape, grad=False):
    return T.ones(*shape, requires_grad=grad)


ERROR_ROWS = [
    ErrorRow("add_broadcast", lambda T: _ones(T, 2, 3) + _ones(T, 4), ShapeError,
             r"^add: shapes \[2, 3\] and \[4\] are not broadcastable"),
    ErrorRow("mul_broadcast", lambda T: T.mul(_ones(T, 4, 1), _ones(T, 3, 2)), ShapeError,
             r"^mul: shapes \[4, 1\] and \[3, 2\] are not broadcastable"),
    ErrorRow("where_broadcast", lambda T: T.where(_ones(T, 2) > 0, _ones(T, 3), _ones(T, 2)), ShapeError,
             r"^where: shapes \[2\] and \[3\] are not broadcastable"),
    ErrorRow("broadcast_tensors_shapes", lambda T: T.broadcast_tensors(_ones(T, 2, 3), _ones(T, 4)), ShapeError,
             r"^broadcast_tensors: .*the size of tensor a \(3\) must match the size of tensor b \(4\) at "
             r"non-singleton dimension 1"),
    ErrorRow("broadcast_tensors_fourth", lambda T: T.broadcast_tensors(*[_ones(T, 3)] * 3, _ones(T, 4)), ShapeError,
             r"^broadcast_tensors: shapes \[3\] and \[4\] .*the size of tensor a \(3\) must match the size of "
             r"tensor d \(4\) at non-singleton dimension 0$"),
    ErrorRow("mm_shapes", lambda T: T.mm(_ones(T, 2, 3), _ones(T, 4, 5)), ShapeError,
             r"^mm: .*\[2, 3\] and \[4, 5\].*\(2x3 and 4x5\)"),
    ErrorRow("matmul_shapes", lambda T: _ones(T, 3) @ _ones(T, 4), ShapeError,
             r"^matmul: shapes \[3\] and \[4\] cannot be multiplied"),
    ErrorRow("bmm_1d", lambda T: T.bmm(_ones(T, 2, 3), _ones(T, 3)), RuntimeError,
             r"^bmm: .*\[2, 3\] and \[3\]"),
    ErrorRow("cat_shapes", lambda T: T.cat([_ones(T, 2, 3), _ones(T, 2, 4)]), ShapeError,
             r"^cat: sizes of tensors must match except in dimension 0; got shapes \[2, 3\] and \[2, 4\]"),
    ErrorRow("stack_shapes", lambda T: T.stack([_ones(T, 2), _ones(T, 3)]), RuntimeError,
             r"^stack expects each tensor to be equal size, but got \[2\] at entry 0 and \[3\] at entry 1"),
    ErrorRow("reshape_size", lambda T: _ones(T, 2, 3).reshape(4), RuntimeError,
             r"^reshape: shape '\[4\]' is invalid for input of size 6"),
    ErrorRow("view_size", lambda T: _ones(T, 2, 3).view(-1, 4), RuntimeError,
             r"^view: shape '\[-1, 4\]' is invalid for input of size 6"),
    ErrorRow("view_noncontiguous", lambda T: _ones(T, 2, 3).t().view(6), RuntimeError,
             r"^view size is not compatible with input tensor's size and stride.*Use \.reshape"),
    ErrorRow("expand_size", lambda T: _ones(T, 2, 3).expand(4, 3), ShapeError,
             r"^expand: .*\[2, 3\].*\[4, 3\]"),
    ErrorRow("norm_fro_three_dims", lambda T: _ones(T, 2, 3, 4).norm(dim=(0, 1, 2)), RuntimeError,
             r"^linalg\.matrix_norm: dim must be a 2-tuple\. Got 0 1 2 .*\[2, 3, 4\].*p=2"),
    ErrorRow("copy_broadcast", lambda T: _ones(T, 2, 3).copy_(_ones(T, 4, grad=True)), ShapeError,
             r"^copy_: shapes \[2, 3\] and \[4\] are not broadcastable"),
    ErrorRow("copy_grows", lambda T: _ones(T, 2, 3).copy_(_ones(T, 1, 2, 3)), RuntimeError,
             r"^copy_: output with shape \[2, 3\] doesn't match the broadcast shape \[1, 2, 3\]"),
    ErrorRow("sum_bad_dim", lambda T: _ones(T, 2, 3).sum(2), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
    ErrorRow("softmax_bad_dim", lambda T: _ones(T, 2, 3).softmax(-3), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-2, 1\], but got -3\)"),
    ErrorRow("cat_bad_dim", lambda T: T.cat([_ones(T, 2), _ones(T, 2)], 1), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)"),
    ErrorRow("unsqueeze_bad_dim", lambda T: _ones(T, 2, 3).unsqueeze(4), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-3, 2\], but got 4\)"),
    ErrorRow("transpose_bad_dim", lambda T: _ones(T, 2, 3).transpose(0, 2), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
    ErrorRow("max_bad_dim", lambda T: _ones(T, 3).max(1), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)"),
    ErrorRow("topk_k_too_large", lambda T: _ones(T, 2, 3).topk(4), RuntimeError, r"^selected index k out of range$"),
    ErrorRow("kthvalue_k_zero", lambda T: _ones(T, 2, 3).kthvalue(0), RuntimeError,
             r"^kthvalue\(\): selected number k out of range for dimension 1$"),
    ErrorRow("sort_bad_dim", lambda T: _ones(T, 2, 3).sort(2), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
    ErrorRow("scatter_index_range", lambda T: _ones(T, 2, 3).scatter(1, T.tensor([[3]]), 1.0), RuntimeError,
             r"^scatter: index 3 is out of bounds for dimension 1 with size 3"),
    ErrorRow("scatter_dtype", lambda T: _ones(T, 2, 3).scatter(1, T.tensor([[0]]), T.ones(1, 1, dtype=T.float64)),
             RuntimeError, r"^scatter\(\): Expected self.dtype to be equal to src.dtype"),
    ErrorRow("scatter_float_index", lambda T: _ones(T, 2, 3).scatter(1, T.tensor([[0.5]]), 1.0), RuntimeError,
             r"^scatter\(\): Expected dtype int32/int64 for index"),
    ErrorRow("scatter_index_too_large", lambda T: _ones(T, 2, 3).scatter(1, T.tensor([[0, 1, 2, 0]]), _ones(T, 1, 2)),
             RuntimeError, r"^Expected index \[1, 4\] to be no larger than self \[2, 3\] apart from dimension 1 "
                           r"and to be no larger size than src \[1, 2\]"),
    ErrorRow("scatter_add_negative_index", lambda T: _ones(T, 2, 3).scatter_add(1, T.tensor([[-1]]), _ones(T, 1, 1)),
             RuntimeError, r"^scatter_add: index -1 is out of bounds for dimension 1 with size 3"),
    ErrorRow("index_add_count", lambda T: _ones(T, 2, 3).index_add(1, T.tensor([0]), _ones(T, 2, 2)), RuntimeError,
             r"^index_add_\(\): Number of indices \(1\) should be equal to source.size\(dim\): \(2\), for dim: 1"),
    ErrorRow("index_add_matrix_index", lambda T: _ones(T, 2, 3).index_add(1, T.tensor([[0]]), _ones(T, 2, 1)),
             IndexError, r"^index_add_\(\): Index is supposed to be a vector, but got dim: 2"),
    ErrorRow("index_copy_count", lambda T: _ones(T, 2, 3).index_copy(1, T.tensor([0]), _ones(T, 2, 2)), IndexError,
             r"^index_copy_\(\): Number of indices \(1\) should be equal to source.size\(dim\) \(2\)"),
    ErrorRow("index_fill_range", lambda T: _ones(T, 2, 3).index_fill(1, T.tensor([3]), 0.0), IndexError,
             r"^index 3 is out of bounds for dimension 1 with size 3"),
    ErrorRow("index_out_of_bounds", lambda T: _ones(T, 2, 3)[5], IndexError,
             r"^index: index 5 is out of bounds for dimension 0 with size 2"),
    ErrorRow("index_array_out_of_bounds", lambda T: _ones(T, 2, 3)[:, T.tensor([0, 3])], IndexError,
             r"^index: index 3 is out of bounds for (axis|dimension) 1 with size 3"),
    ErrorRow("too_many_indices", lambda T: _ones(T, 2)[0, 0], IndexError,
             r"^too many indices for tensor of dimension 1"),
    ErrorRow("mean_of_int", lambda T: T.ones(3, dtype=T.int64).mean(), RuntimeError,
             r"^mean\(\): could not infer output dtype.*Got: Long"),
    ErrorRow("inplace_on_leaf", lambda T: _ones(T, 3, grad=True).add_(1), RuntimeError,
             r"^a leaf Variable that requires grad is being used in an in-place operation"),
    ErrorRow("clamp_no_bounds", lambda T: T.clamp(_ones(T, 3)), RuntimeError,
             r"^clamp: at least one of 'min' or 'max' must not be None"),
]


# ============================================================================= convolution, pooling,
# normalisation, embedding (issue 8). References are direct loops over output positions, written
# independently of fusegrad's im2col implementation.


def _pairs(v):
    return v if isinstance(v, tuple) else (v, v)


def _conv_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    unbatched = x.ndim == 3
    x = x[None] if unbatched else x
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    kh, kw = w.shape[2:]
    if padding == "same":
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for d, k in ((dh, kh), (dw, kw))]
    else:
        pads = [(p, p) for p in _pairs(padding)]
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cg, per = w.shape[1], w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for o in range(w.shape[0]):
        g = o // per
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    if b is not None:
        out += b[None, :, None, None]
    return out[0] if unbatched else out


def _pool_ref(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, mode="max", count_include_pad=True,
              divisor_override=None):
    """Max (values and flat indices) or average pooling by PyTorch's documented window rules."""
    (kh, kw), (ph, pw), (dh, dw) = _pairs(kernel), _pairs(padding), _pairs(dilation)
    sh, sw = _pairs(stride if stride is not None else kernel)
    n, c, h, w = x.shape

    def out_size(size, k, s, p, d):
        span = size + 2 * p - d * (k - 1) - 1
        o = -(-span // s) + 1 if ceil_mode else span // s + 1
        return o - 1 if ceil_mode and (o - 1) * s >= size + p else o

    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    out = np.zeros((n, c, oh, ow))
    idx = np.zeros((n, c, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            rows = [i * sh - ph + a * dh for a in range(kh)]
            cols = [j * sw - pw + b * dw for b in range(kw)]
            inside = [(r, q) for r in rows for q in cols if 0 <= r < h and 0 <= q < w]
            if mode == "max":
                values = np.stack([x[:, :, r, q] for r, q in inside], -1)
                best = values.argmax(-1)
                out[:, :, i, j] = values.max(-1)
                idx[:, :, i, j] = np.array([r * w + q for r, q in inside])[best]
            else:
                total = sum(x[:, :, r, q] for r, q in inside)
                if divisor_override:
                    count = divisor_override
                elif count_include_pad:   # the window clipped to the padded input
                    count = ((min(i * sh - ph + kh, h + ph) - (i * sh - ph))
                             * (min(j * sw - pw + kw, w + pw) - (j * sw - pw)))
                else:
                    count = len(inside)
                out[:, :, i, j] = total / count
    return (out, idx) if mode == "max" else out


def _adaptive_ref(x, size):
    unbatched = x.ndim == 3
    x = x[None] if unbatched else x
    h, w = x.shape[2:]
    oh, ow = _pairs(size)
    oh, ow = oh or h, ow or w
    out = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out[0] if unbatched else out


def _norm_ref(x, axes, mean=None, var=None, weight=None, bias=None, eps=1e-5, shape=None):
    mean = x.mean(axis=axes, keepdims=True) if mean is None else mean.reshape(shape)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True) if var is None else var.reshape(shape)
    out = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        out = out * (weight if shape is None else weight.reshape(shape))
    if bias is not None:
        out = out + (bias if shape is None else bias.reshape(shape))
    return out


def _F(T):
    return T.nn.functional


_RUNNING_MEAN, _RUNNING_VAR = np.array([0.5, -1.0, 0.25]), np.array([0.5, 2.0, 1.5])
_TOKENS = np.array([[0, 3, 1], [3, 3, 4]])

row("conv2d", lambda T, x, w, b: _F(T).conv2d(x, w, b, padding=1), lambda x, w, b: _conv_ref(x, w, b, padding=1),
    (((2, 3, 5, 5), (4, 3, 3, 3), (4,)),), rtol32=1e-4, atol32=1e-5)
row("conv2d_stride_dilation", lambda T, x, w: _F(T).conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    lambda x, w: _conv_ref(x, w, stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    (((1, 2, 7, 6), (3, 2, 2, 3)),), rtol32=1e-4, atol32=1e-5)
row("conv2d_groups", lambda T, x, w, b: _F(T).conv2d(x, w, b, stride=2, groups=2),
    lambda x, w, b: _conv_ref(x, w, b, stride=2, groups=2), (((2, 4, 5, 4), (6, 2, 3, 1), (6,)),),
    rtol32=1e-4, atol32=1e-5)
row("conv2d_depthwise", lambda T, x, w: _F(T).conv2d(x, w, padding=1, groups=4),
    lambda x, w: _conv_ref(x, w, padding=1, groups=4), (((1, 4, 5, 3), (4, 1, 3, 3)),), rtol32=1e-4, atol32=1e-5)
row("conv2d_same_odd_padding", lambda T, x, w: _F(T).conv2d(x, w, padding="same", dilation=(1, 2)),
    lambda x, w: _conv_ref(x, w, padding="same", dilation=(1, 2)), (((1, 2, 5, 6), (2, 2, 2, 3)),),
    rtol32=1e-4, atol32=1e-5)
row("conv2d_unbatched", lambda T, x, w: _F(T).conv2d(x, w), _conv_ref, (((2, 5, 4), (3, 2, 3, 2)),),
    rtol32=1e-4, atol32=1e-5)
row("max_pool2d", lambda T, x: _F(T).max_pool2d(x, 3, 2, 1), lambda x: _pool_ref(x, 3, 2, 1)[0],
    (((2, 3, 7, 8),),), domain=distinct())
row("max_pool2d_tiling", lambda T, x: _F(T).max_pool2d(x, 2), lambda x: _pool_ref(x, 2)[0], (((2, 3, 4, 6),),),
    domain=distinct())
row("max_pool2d_ceil_dilation", lambda T, x: _F(T).max_pool2d(x, (2, 3), (2, 1), 1, (2, 1), ceil_mode=True),
    lambda x: _pool_ref(x, (2, 3), (2, 1), 1, (2, 1), ceil_mode=True)[0], (((1, 2, 8, 5),),), domain=distinct())
row("max_pool2d_with_indices", lambda T, x: _F(T).max_pool2d(x, 2, ceil_mode=True, return_indices=True),
    lambda x: _pool_ref(x, 2, ceil_mode=True), (((1, 2, 5, 5),),), domain=distinct(), out_dtype=(None, "int64"))
row("avg_pool2d", lambda T, x: _F(T).avg_pool2d(x, 3, 2, 1), lambda x: _pool_ref(x, 3, 2, 1, mode="avg"),
    (((2, 3, 7, 8),),))
row("avg_pool2d_ceil_exclude_pad", lambda T, x: _F(T).avg_pool2d(x, (3, 2), 2, 1, True, False),
    lambda x: _pool_ref(x, (3, 2), 2, 1, ceil_mode=True, mode="avg", count_include_pad=False), (((1, 2, 6, 5),),))
row("avg_pool2d_ceil_include_pad", lambda T, x: _F(T).avg_pool2d(x, 3, 2, 1, ceil_mode=True),
    lambda x: _pool_ref(x, 3, 2, 1, ceil_mode=True, mode="avg"), (((1, 1, 6, 6),),))
row("avg_pool2d_divisor", lambda T, x: _F(T).avg_pool2d(x, 2, divisor_override=3),
    lambda x: _pool_ref(x, 2, mode="avg", divisor_override=3), (((1, 2, 4, 5),),))
row("adaptive_avg_pool2d", lambda T, x: _F(T).adaptive_avg_pool2d(x, (3, 2)), lambda x: _adaptive_ref(x, (3, 2)),
    (((2, 3, 7, 5),),))
row("adaptive_avg_pool2d_1x1", lambda T, x: _F(T).adaptive_avg_pool2d(x, 1), lambda x: _adaptive_ref(x, 1),
    (((2, 3, 4, 5),),))
row("adaptive_avg_pool2d_unbatched", lambda T, x: _F(T).adaptive_avg_pool2d(x, (None, 2)),
    lambda x: _adaptive_ref(x, (None, 2)), (((3, 4, 5),),))
row("batch_norm_train", lambda T, x, w, b: _F(T).batch_norm(x, None, None, w, b, training=True),
    lambda x, w, b: _norm_ref(x, (0, 2, 3), weight=w, bias=b, shape=(1, 3, 1, 1)),
    (((4, 3, 2, 3), (3,), (3,)),), rtol32=1e-4, atol32=1e-5)
row("batch_norm_train_1d", lambda T, x: _F(T).batch_norm(x, None, None, training=True),
    lambda x: _norm_ref(x, (0,)), (((5, 3),),), rtol32=1e-4, atol32=1e-5)
row("batch_norm_eval", lambda T, x, w, b: _F(T).batch_norm(
    x, T.tensor(_RUNNING_MEAN).to(x.dtype), T.tensor(_RUNNING_VAR).to(x.dtype), w, b, training=False),
    lambda x, w, b: _norm_ref(x, None, _RUNNING_MEAN, _RUNNING_VAR, w, b, shape=(1, 3, 1)),
    (((2, 3, 4), (3,), (3,)),))
row("layer_norm", lambda T, x, w, b: _F(T).layer_norm(x, (3, 4), w, b),
    lambda x, w, b: _norm_ref(x, (1, 2), weight=w, bias=b), (((2, 3, 4), (3, 4), (3, 4)),),
    rtol32=1e-4, atol32=1e-5)
row("embedding", lambda T, w: _F(T).embedding(T.tensor(_TOKENS), w), lambda w: w[_TOKENS], (((5, 3),),))

ERROR_ROWS += [
    ErrorRow("conv2d_channels", lambda T: T.nn.functional.conv2d(_ones(T, 1, 4, 5, 5), _ones(T, 2, 3, 3, 3)),
             ShapeError, r"Given groups=1, weight of size \[2, 3, 3, 3\], expected input\[1, 4, 5, 5\] to have 3 "
                         r"channels, but got 4 channels instead"),
    ErrorRow("conv2d_no_output_channels", lambda T: T.nn.functional.conv2d(_ones(T, 2, 3, 8, 8), _ones(T, 0, 3, 3, 3)),
             ShapeError, r"Given groups=1, expected weight to be at least 1 at dimension 0, but got weight of size "
                         r"\[0, 3, 3, 3\] instead"),
    ErrorRow("conv2d_kernel_too_big", lambda T: T.nn.functional.conv2d(_ones(T, 1, 1, 2, 2), _ones(T, 1, 1, 3, 3)),
             ShapeError, r"Calculated padded input size per channel: \(2 x 2\)\. Kernel size: \(3 x 3\)\. Kernel "
                         r"size can't be greater than actual input size"),
    ErrorRow("conv2d_2d_input", lambda T: T.nn.functional.conv2d(_ones(T, 2, 3), _ones(T, 1, 1, 3, 3)),
             RuntimeError, r"^Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: "
                           r"\[2, 3\]"),
    ErrorRow("conv2d_same_strided", lambda T: T.nn.functional.conv2d(_ones(T, 1, 1, 5, 5), _ones(T, 1, 1, 3, 3),
                                                                       stride=2, padding="same"),
             RuntimeError, r"^padding='same' is not supported for strided convolutions"),
    ErrorRow("conv2d_bad_padding_string", lambda T: T.nn.functional.conv2d(_ones(T, 1, 1, 5, 5),
                                                                             _ones(T, 1, 1, 3, 3), padding="foo"),
             RuntimeError, r"^Invalid padding string: 'foo'"),
    ErrorRow("max_pool2d_big_padding", lambda T: T.nn.functional.max_pool2d(_ones(T, 1, 1, 4, 4), 3, padding=2),
             RuntimeError, r"^pad should be at most half of effective kernel size, but got pad=2, kernel_size=3 and "
                           r"dilation=1"),
    ErrorRow("max_pool2d_too_small", lambda T: T.nn.functional.max_pool2d(_ones(T, 1, 1, 2, 2), 3), ShapeError,
             r"Given input size: \(1x2x2\)\. Calculated output size: \(1x0x0\)\. Output size is too small"),
    ErrorRow("avg_pool2d_output_too_small", lambda T: _F(T).avg_pool2d(_ones(T, 2, 3, 1, 4), 2), ShapeError,
             r"^Given input size: \(3x1x4\)\. Calculated output size: \(3x0x2\)\. Output size is too small$"),
    ErrorRow("max_pool2d_no_channels", lambda T: _F(T).max_pool2d(_ones(T, 1, 0, 4, 4), 2), RuntimeError,
             r"^Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, but got:\[1, 0, 4, 4\]$"),
    ErrorRow("avg_pool2d_empty_width", lambda T: _F(T).avg_pool2d(_ones(T, 3, 4, 0), 2), RuntimeError,
             r"^Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, but got:\[3, 4, 0\]$"),
    ErrorRow("conv2d_bias_shape", lambda T: _F(T).conv2d(_ones(T, 1, 3, 5, 5), _ones(T, 4, 3, 3, 3), _ones(T, 4, 1)),
             RuntimeError, r"^Given weight of size \[4, 3, 3, 3\], expected bias to be 1-dimensional with 4 elements, "
                           r"but got bias of size \[4, 1\] instead$"),
    ErrorRow("batch_norm_one_value", lambda T: T.nn.functional.batch_norm(_ones(T, 1, 3), None, None,
                                                                          training=True),
             ValueError, r"^Expected more than 1 value per channel when training, got input size "),
    ErrorRow("embedding_empty_table", lambda T: T.nn.functional.embedding(T.tensor([0, 1]), T.ones(0, 3)),
             RuntimeError, r"^embedding: the weight of shape \[0, 3\] has no rows to look indices up in$"),
]


# ============================================================================= tensor manipulation (flip, roll, ...)
# References index NumPy arrays directly (np.flip, np.roll, np.tile, np.pad, ...), independently of
# the composites fusegrad builds them from.


def _diag_embed_ref(x, offset=0, dim1=-2, dim2=-1):
    n = x.shape[-1] + abs(offset)
    out = np.zeros(x.shape[:-1] + (n, n))
    for i in range(x.shape[-1]):
        out[..., i + max(-offset, 0), i + max(offset, 0)] = x[..., i]
    return np.moveaxis(out, (-2, -1), (dim1, dim2))


def _take_along_ref(x, idx, dim):
    shape = np.broadcast_shapes(x.shape[:dim] + (1,) + x.shape[dim + 1:], idx.shape[:dim] + (1,) + idx.shape[dim + 1:])
    x = np.broadcast_to(x, shape[:dim] + (x.shape[dim],) + shape[dim + 1:])
    return np.take_along_axis(x, np.broadcast_to(idx, shape[:dim] + (idx.shape[dim],) + shape[dim + 1:]), dim)


def _np_pad(x, pad, mode):
    """np.pad from F.pad's (left, right) pairs, last dimension first (non-negative sizes)."""
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    return np.pad(x, widths, mode={"replicate": "edge", "circular": "wrap"}.get(mode, mode))


_TAKE = np.array([[2, 0], [1, 1]])
_TAKE_ROW = np.array([[0, 2, 1, 1]])
_TAKE_FLAT = np.array([0, 5, 2, 2])

row("flip", lambda T, x: x.flip(0), lambda x: np.flip(x, 0) if x.ndim else x.copy(), (((2, 3, 2),), ((),)))
row("flip_dims", lambda T, x: T.flip(x, (0, -1)), lambda x: np.flip(x, (0, 2)), CUBE)
row("fliplr", lambda T, x: T.fliplr(x), np.fliplr, MATRIX[:1])
row("flipud", lambda T, x: x.flipud(), np.flipud, (((3,),),))
row("roll", lambda T, x: x.roll(2), lambda x: np.roll(x, 2), (((2, 3),), ((),)))
row("roll_dim", lambda T, x: x.roll(-1, 1), lambda x: np.roll(x, -1, 1), MATRIX[:1])
row("roll_dims", lambda T, x: T.roll(x, (1, 5), (0, -1)), lambda x: np.roll(x, (1, 5), (0, 2)), CUBE)
row("rot90", lambda T, x: x.rot90(), np.rot90, MATRIX[:1])
row("rot90_k2_dims", lambda T, x: T.rot90(x, 2, (0, 2)), lambda x: np.rot90(x, 2, (0, 2)), CUBE)
row("rot90_negative_k", lambda T, x: x.rot90(-1, (1, 0)), lambda x: np.rot90(x, -1, (1, 0)), MATRIX[:1])
row("rot90_k4", lambda T, x: T.rot90(x, 4), lambda x: x.copy(), MATRIX[:1])
row("repeat", lambda T, x: x.repeat(2, 1, 3), lambda x: np.tile(x, (2, 1, 3)), (((2, 3),), ((),)))
row("repeat_ones", lambda T, x: x.repeat(1, 1), lambda x: x.copy(), MATRIX[:1])
row("tile", lambda T, x: T.tile(x, (2,)), lambda x: np.tile(x, 2), MATRIX[:1])
row("repeat_interleave", lambda T, x: x.repeat_interleave(2), lambda x: np.repeat(x, 2), (((2, 3),), ((),)))
row("repeat_interleave_dim", lambda T, x: T.repeat_interleave(x, 3, dim=1), lambda x: np.repeat(x, 3, 1), MATRIX[:1])
row("repeat_interleave_tensor", lambda T, x: x.repeat_interleave(T.tensor([1, 0, 2]), dim=1),
    lambda x: np.repeat(x, [1, 0, 2], 1), MATRIX[:1])
row("diagonal", lambda T, x: x.diagonal(), np.diagonal, MATRIX)
row("diagonal_offset", lambda T, x: T.diagonal(x, 1), lambda x: np.diagonal(x, 1), (((3, 4),),))
row("diagonal_transposed", lambda T, x: x.t().diagonal(-1), lambda x: np.diagonal(x.T, -1), (((3, 4),),))
row("diagonal_dims", lambda T, x: x.diagonal(0, -1, 0), lambda x: np.diagonal(x, 0, 2, 0), CUBE)
row("diag_1d", lambda T, x: T.diag(x), np.diag, (((3,),),))
row("diag_1d_offset", lambda T, x: x.diag(-2), lambda x: np.diag(x, -2), (((3,),),))
row("diag_2d", lambda T, x: T.diag(x, 1), lambda x: np.diag(x, 1), (((3, 4),),))
row("diag_embed", lambda T, x: T.diag_embed(x), _diag_embed_ref, MATRIX[:1])
row("diag_embed_dims", lambda T, x: x.diag_embed(1, 0, 2), lambda x: _diag_embed_ref(x, 1, 0, 2), MATRIX[:1])
row("trace", lambda T, x: x.trace(), np.trace, (((3, 4),),))
row("take_along_dim", lambda T, x: T.take_along_dim(x, T.tensor(_TAKE), 1), lambda x: _take_along_ref(x, _TAKE, 1),
    MATRIX[:1])
row("take_along_dim_broadcast", lambda T, x: x.take_along_dim(T.tensor(_TAKE_ROW), -1),
    lambda x: _take_along_ref(x, _TAKE_ROW, 1), MATRIX[:1])
row("take_along_dim_flat", lambda T, x: T.take_along_dim(x, T.tensor(_TAKE_FLAT)), lambda x: x.reshape(-1)[_TAKE_FLAT],
    MATRIX[:1])
row("meshgrid", lambda T, x, y: T.meshgrid(x, y, indexing="ij"), lambda x, y: np.meshgrid(x, y, indexing="ij"),
    (((3,), (2,)),))
row("meshgrid_xy", lambda T, x, y, z: T.meshgrid([x, y, z], indexing="xy"),
    lambda x, y, z: np.meshgrid(x, y, z, indexing="xy"), (((3,), (2,), ()),))
row("one_hot", lambda T, x: _F(T).one_hot(x, 4), lambda x: (x[..., None] == np.arange(4)).astype(np.int64),
    (((2, 3),),), dtypes=("int64",), domain=ints(0, 4), differentiable=False, out_dtype="int64")
row("one_hot_inferred", lambda T, x: _F(T).one_hot(x), lambda x: (x[..., None] == np.arange(x.max() + 1)).astype(int),
    (((5,),),), dtypes=("int64",), domain=ints(0, 4), differentiable=False, out_dtype="int64")
row("pad", lambda T, x: _F(T).pad(x, (1, 2)), lambda x: _np_pad(x, (1, 2), "constant"), MATRIX[:1])
row("pad_value_crop", lambda T, x: _F(T).pad(x, (-1, 1, 2, 0), value=1.5),
    lambda x: np.pad(x[:, :, 1:], [(0, 0), (2, 0), (0, 1)], constant_values=1.5), CUBE)
row("pad_reflect", lambda T, x: _F(T).pad(x, (2, 1), mode="reflect"), lambda x: _np_pad(x, (2, 1), "reflect"),
    (((2, 3, 4),),))
row("pad_reflect_2d", lambda T, x: _F(T).pad(x, (1, 2, 2, 1), mode="reflect"),
    lambda x: _np_pad(x, (1, 2, 2, 1), "reflect"), (((1, 2, 3, 4),),))
row("pad_reflect_crop", lambda T, x: _F(T).pad(x, (-1, 2), mode="reflect"),
    lambda x: np.pad(x, [(0, 0), (0, 2)], mode="reflect")[:, 1:], (((2, 4),),))
row("pad_replicate", lambda T, x: _F(T).pad(x, (3, 1), mode="replicate"), lambda x: _np_pad(x, (3, 1), "replicate"),
    (((2, 3, 2),),))
row("pad_replicate_3d", lambda T, x: _F(T).pad(x, (1, 0, 2, 1, 1, 1), mode="replicate"),
    lambda x: _np_pad(x, (1, 0, 2, 1, 1, 1), "replicate"), (((2, 2, 3, 2),),))
row("pad_circular", lambda T, x: _F(T).pad(x, (1, 2, 2, 0), mode="circular"),
    lambda x: _np_pad(x, (1, 2, 2, 0), "circular"), (((1, 2, 3, 4),),))
row("pad_circular_crop", lambda T, x: _F(T).pad(x, (-1, 2), mode="circular"),
    lambda x: np.pad(x[:, 1:], [(0, 0), (0, 2)], mode="wrap"), (((2, 4),),))

ERROR_ROWS += [
    ErrorRow("flip_repeated_dim", lambda T: _ones(T, 2, 3).flip(0, -2), RuntimeError,
             r"^dim 0 appears multiple times in the list of dims$"),
    ErrorRow("fliplr_1d", lambda T: T.fliplr(_ones(T, 3)), RuntimeError, r"^Input must be >= 2-d\.$"),
    ErrorRow("roll_misaligned", lambda T: _ones(T, 2, 3).roll((1, 2), 0), RuntimeError,
             r"^shifts and dimensions must align\. shifts: 2, dims:1$"),
    ErrorRow("roll_0d_dim", lambda T: T.roll(T.tensor(1.0), 1, 0), IndexError,
             r"^Dimension specified as 0 but tensor has no dimensions$"),
    ErrorRow("rot90_three_dims", lambda T: _ones(T, 2, 3, 4).rot90(1, (0, 1, 2)), RuntimeError,
             r"^expected total rotation dims == 2, but got dims = 3$"),
    ErrorRow("rot90_same_dims", lambda T: T.rot90(_ones(T, 2, 3), 1, (0, -2)), RuntimeError,
             r"^expected rotation dims to be different, but got dim0 = 0 and dim1 = -2$"),
    ErrorRow("repeat_too_few", lambda T: _ones(T, 2, 3).repeat(2), RuntimeError,
             r"^Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor$"),
    ErrorRow("repeat_negative", lambda T: _ones(T, 2, 3).repeat(2, -1), RuntimeError,
             r"^Trying to create tensor with negative dimension -3: \[4, -3\]$"),
    ErrorRow("repeat_interleave_negative", lambda T: _ones(T, 2).repeat_interleave(-1), RuntimeError,
             r"^Repeats must be non-negative$"),
    ErrorRow("repeat_interleave_sizes", lambda T: _ones(T, 2, 3).repeat_interleave(T.tensor([1, 2, 3]), 0),
             RuntimeError, r"^repeats must have the same size as input along dim, but got repeats\.size\(0\) = 3 "
                           r"and input\.size\(0\) = 2$"),
    ErrorRow("diagonal_same_dims", lambda T: _ones(T, 2, 3).diagonal(0, 1, -1), RuntimeError,
             r"^diagonal dimensions cannot be identical 1, -1$"),
    ErrorRow("diagonal_1d", lambda T: T.diagonal(_ones(T, 3)), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)$"),
    ErrorRow("diag_3d", lambda T: T.diag(_ones(T, 2, 2, 2)), RuntimeError,
             r"^diag\(\): Supports 1D or 2D tensors\. Got 3D$"),
    ErrorRow("trace_1d", lambda T: _ones(T, 3).trace(), RuntimeError,
             r"^trace: expected a matrix, but got tensor with dim 1$"),
    ErrorRow("take_along_dim_int32", lambda T: T.take_along_dim(_ones(T, 2, 3), T.tensor([[0]], dtype=T.int32), 1),
             RuntimeError, r"^torch\.take_along_dim\(\): dtype of indices should be Long but got Int$"),
    ErrorRow("take_along_dim_ndim", lambda T: T.take_along_dim(_ones(T, 2, 3), T.tensor([0]), 1), RuntimeError,
             r"^torch\.take_along_dim\(\): input and indices should have the same number of dimensions, but got 2 "
             r"dimensions for input, and 1 dimensions for indices$"),
    ErrorRow("take_along_dim_broadcast", lambda T: T.take_along_dim(_ones(T, 2, 3), T.tensor([[0], [1], [0]]), 1),
             RuntimeError, r"^The size of tensor a \(2\) must match the size of tensor b \(3\) at non-singleton "
                           r"dimension 0$"),
    ErrorRow("take_along_dim_out_of_range", lambda T: T.take_along_dim(_ones(T, 2, 3), T.tensor([0, 6])),
             RuntimeError, r"index 6 is out of bounds for dimension 0 with size 6$"),
    ErrorRow("meshgrid_2d", lambda T: T.meshgrid(_ones(T, 2), _ones(T, 2, 3), indexing="ij"), RuntimeError,
             r"^torch\.meshgrid: Expected 0D or 1D tensor in the tensor list but got: "),
    ErrorRow("meshgrid_dtypes", lambda T: T.meshgrid(_ones(T, 2), T.tensor([1]), indexing="ij"), RuntimeError,
             r"^meshgrid expects all tensors to have the same dtype$"),
    ErrorRow("meshgrid_indexing", lambda T: T.meshgrid(_ones(T, 2), indexing="yx"), RuntimeError,
             r'^torch\.meshgrid: indexing must be one of "xy" or "ij", but received: yx$'),
    ErrorRow("one_hot_negative", lambda T: T.nn.functional.one_hot(T.tensor([1, -1]), 3), RuntimeError,
             r"^Class values must be non-negative\.$"),
    ErrorRow("one_hot_too_large", lambda T: T.nn.functional.one_hot(T.tensor([[1], [3]]), 3), RuntimeError,
             r"^Class values must be smaller than num_classes\.$"),
    ErrorRow("one_hot_float", lambda T: T.nn.functional.one_hot(_ones(T, 2), 3), RuntimeError,
             r"^one_hot is only applicable to index tensor of type LongTensor\.$"),
    ErrorRow("one_hot_empty_inferred", lambda T: T.nn.functional.one_hot(T.zeros(0, dtype=T.int64)), RuntimeError,
             r"^Can not infer total number of classes from empty tensor\.$"),
    ErrorRow("pad_odd", lambda T: T.nn.functional.pad(_ones(T, 2, 3), (1,)), RuntimeError,
             r"^Padding length must be divisible by 2$"),
    ErrorRow("pad_too_long", lambda T: T.nn.functional.pad(_ones(T, 2, 3), (1,) * 6), RuntimeError,
             r"^Padding length should be less than or equal to two times the input dimension but got padding length "
             r"6 and input of dimension 2$"),
    ErrorRow("pad_mode", lambda T: T.nn.functional.pad(_ones(T, 2, 3), (1, 1), mode="mirror"), NotImplementedError,
             r"^Unrecognised padding mode mirror$"),
    ErrorRow("pad_crop_too_much", lambda T: T.nn.functional.pad(_ones(T, 2, 3), (-2, -2)), RuntimeError,
             r"^narrow\(\): length must be non-negative\.$"),
    ErrorRow("pad_reflect_value", lambda T: T.nn.functional.pad(_ones(T, 2, 3), (1, 1), "reflect", 1.0),
             RuntimeError, r'^Padding mode "reflect" doesn\'t take in value argument$'),
    ErrorRow("pad_reflect_1d", lambda T: T.nn.functional.pad(_ones(T, 3), (1, 1), mode="reflect"),
             NotImplementedError, r"^Padding size 2 is not supported for 1D input tensor\.\nSupported combinations"),
    ErrorRow("pad_reflect_too_wide", lambda T: T.nn.functional.pad(_ones(T, 1, 2, 3), (1, 1, 2, 0), mode="reflect"),
             RuntimeError, r"^Argument #6: Padding size should be less than the corresponding input dimension, but "
                           r"got: padding \(2, 0\) at dimension 1 of input \[1, 2, 3\]$"),
    ErrorRow("pad_reflect_too_small", lambda T: T.nn.functional.pad(_ones(T, 1, 2), (-1, -1), mode="reflect"),
             RuntimeError, r"^input \(W: 2\) is too small\. Calculated output W: 0$"),
    ErrorRow("pad_replicate_empty", lambda T: T.nn.functional.pad(_ones(T, 2, 0, 3), (1, 1), mode="replicate"),
             RuntimeError, r"^Expected 2D or 3D \(batch mode\) tensor with possibly 0 batch size and other non-zero "
                           r"dimensions for input, but got: \[2, 0, 3\]$"),
    ErrorRow("pad_replicate_negative_size", lambda T: T.nn.functional.pad(_ones(T, 1, 2, 3), (0, 0, -3, -3),
                                                                            mode="replicate"),
             RuntimeError, r"^Trying to create tensor with negative dimension -4: \[1, -4, 3\]$"),
    ErrorRow("pad_value_overflow", lambda T: T.nn.functional.pad(T.ones(2, dtype=T.int32), (1, 1), value=2 ** 40),
             RuntimeError, r"^value cannot be converted to type int without overflow$"),
    ErrorRow("pad_circular_wraps", lambda T: T.nn.functional.pad(_ones(T, 1, 3), (4, 0), mode="circular"),
             RuntimeError, r"^Padding value causes wrapping around more than once\.$"),
]


# ============================================================================= activations, losses and
# distances of nn.functional. References are NumPy's own formulas; domains
# keep finite differences away from kinks, thresholds and clamping bounds.

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _elu_ref(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return scale * np.where(x > 0, x, alpha * np.expm1(x * input_scale))


def _softplus_ref(x, beta=1.0, threshold=20.0):
    return np.where(x * beta > threshold, x, np.logaddexp(0, beta * x) / beta)


def _hardswish_ref(x):
    return x * np.clip(x + 3, 0, 6) / 6


def _glu_ref(x, axis):
    a, b = np.split(x, 2, axis)
    return a * _sigmoid(b)


def _l2(x, axis):
    return np.sqrt(np.sum(x * x, axis=axis, keepdims=True))


def _cosine_ref(x1, x2, eps=1e-8):
    x1, x2 = np.broadcast_arrays(x1, x2)
    return np.sum(x1 * x2, 1) / (np.maximum(_l2(x1, 1), eps) * np.maximum(_l2(x2, 1), eps))[:, 0]


def _huber_ref(x, t, delta, reduce=np.mean, scale=1.0):
    z = np.abs(x - t)
    return reduce(np.where(z < delta, 0.5 * z * z / scale, delta / scale * (z - 0.5 * delta)))


def _kl_ref(x, t):
    return np.where(t == 0, 0.0, t * np.log(np.where(t == 0, 1.0, t))) - t * x


_HARD = away_from(-3.0, 3.0, lo=-5.0, hi=5.0)   # both bounds of hardswish and hardsigmoid, and beyond
_OFF_INTEGERS = away_from(-2.0, -1.0, 0.0, 1.0, 2.0, gap=0.2)   # minus an integer target: kinks at 0, +-1
_LOG_PROBS = (real(-3.0, 0.0), real(0.05, 1.0))
_KL_TARGET = np.array([[0.0, 0.3, 0.7], [0.5, 0.0, 0.5]])



def _F_of(y):
    """The functional namespace of y's library (for the in-place rows, whose method sees only y)."""
    return sys.modules[type(y).__module__.partition(".")[0]].nn.functional


row("elu", lambda T, x: _F(T).elu(x), _elu_ref, ONE, domain=away_from(0.0))
_inplace("elu_", lambda y: _F_of(y).elu(y, 0.5, inplace=True), lambda x: _elu_ref(x, 0.5), domain=away_from(0.0))
row("selu", lambda T, x: _F(T).selu(x), lambda x: _elu_ref(x, _SELU_ALPHA, _SELU_SCALE), ONE, domain=away_from(0.0))
row("celu", lambda T, x: _F(T).celu(x, 0.7), lambda x: _elu_ref(x, 0.7, input_scale=1 / 0.7), ONE,
    domain=away_from(0.0))
_inplace("celu_", lambda y: _F_of(y).celu(y, inplace=True), _elu_ref, domain=away_from(0.0))
row("softplus", lambda T, x: _F(T).softplus(x), _softplus_ref, ONE)
row("softplus_threshold", lambda T, x: _F(T).softplus(x, 2.0, 1.5), lambda x: _softplus_ref(x, 2.0, 1.5),
    (((2, 3),),), domain=away_from(0.75))
# results far below 1's ulp keep their own digits (log(1 + x) alone would give 0, and its log -inf)
row("log_softplus_tiny", lambda T, x: T.log(_F(T).softplus(x)), lambda x: np.log(_softplus_ref(x)), (((2, 3),),),
    domain=real(-60.0, -30.0))
row("hardtanh", lambda T, x: _F(T).hardtanh(x), lambda x: np.clip(x, -1, 1), ONE, domain=away_from(-1.0, 1.0))
_inplace("hardtanh_", lambda y: _F_of(y).hardtanh(y, -0.5, 1.5, inplace=True), lambda x: np.clip(x, -0.5, 1.5),
         domain=away_from(-0.5, 1.5))
row("relu6", lambda T, x: _F(T).relu6(x), lambda x: np.clip(x, 0, 6), ONE, domain=away_from(0.0, 6.0, lo=-3.0, hi=8.0))
row("logsigmoid", lambda T, x: _F(T).logsigmoid(x), lambda x: -np.logaddexp(0, -x), ONE)
row("logsigmoid_wide", lambda T, x: _F(T).logsigmoid(x), lambda x: -np.logaddexp(0, -x), (((2, 3),),),
    domain=real(-200.0, 200.0))
row("mish", lambda T, x: _F(T).mish(x), lambda x: x * np.tanh(np.logaddexp(0, x)), ONE)
_inplace("mish_", lambda y: _F_of(y).mish(y, inplace=True), lambda x: x * np.tanh(np.logaddexp(0, x)))
row("mish_wide", lambda T, x: _F(T).mish(x), lambda x: x * np.tanh(np.logaddexp(0, x)), (((2, 3),),),
    domain=real(-100.0, 100.0))
row("hardswish", lambda T, x: _F(T).hardswish(x), _hardswish_ref, ONE, domain=_HARD)
_inplace("hardswish_", lambda y: _F_of(y).hardswish(y, inplace=True), _hardswish_ref, domain=_HARD)
row("hardsigmoid", lambda T, x: _F(T).hardsigmoid(x), lambda x: np.clip(x + 3, 0, 6) / 6, ONE, domain=_HARD)
_inplace("hardsigmoid_", lambda y: _F_of(y).hardsigmoid(y, inplace=True), lambda x: np.clip(x + 3, 0, 6) / 6,
         domain=_HARD)
row("softsign", lambda T, x: _F(T).softsign(x), lambda x: x / (1 + np.abs(x)), ONE, domain=away_from(0.0))
row("tanhshrink", lambda T, x: _F(T).tanhshrink(x), lambda x: x - np.tanh(x), ONE)
row("softmin", lambda T, x: _F(T).softmin(x, 1), lambda x: _softmax(-x, 1), CUBE)
row("threshold", lambda T, x: _F(T).threshold(x, 0.1, 20.0), lambda x: np.where(x > 0.1, x, 20.0), ONE,
    domain=away_from(0.1))
_inplace("threshold_", lambda y: _F_of(y).threshold(y, 0.1, -2.0, inplace=True), lambda x: np.where(x > 0.1, x, -2.0),
         domain=away_from(0.1))
row("glu", lambda T, x: _F(T).glu(x), lambda x: _glu_ref(x, -1), (((2, 4),),))
row("glu_dim0", lambda T, x: _F(T).glu(x, 0), lambda x: _glu_ref(x, 0), (((4, 3),),))
row("prelu", lambda T, x, w: _F(T).prelu(x, w), lambda x, w: np.where(x > 0, x, w[:, None] * x),
    (((2, 3, 2), (3,)),), domain=(away_from(0.0), real(-0.5, 0.5)))
row("prelu_one_weight", lambda T, x, w: _F(T).prelu(x, w), lambda x, w: np.where(x > 0, x, w.reshape(()) * x),
    (((2, 3), (1,)), ((), (1,))), domain=(away_from(0.0), real(-0.5, 0.5)))
row("normalize", lambda T, x: _F(T).normalize(x), lambda x: x / _l2(x, 1), (((2, 3),),))
row("normalize_p1_dim0", lambda T, x: _F(T).normalize(x, p=1, dim=0),
    lambda x: x / np.abs(x).sum(0, keepdims=True), (((3, 2),),), domain=away_from(0.0))
row("cosine_similarity", lambda T, x, y: _F(T).cosine_similarity(x, y), _cosine_ref,
    (((2, 3), (2, 3)), ((2, 3), (1, 3))))
row("pairwise_distance", lambda T, x, y: _F(T).pairwise_distance(x, y),
    lambda x, y: np.linalg.norm(np.atleast_1d(x - y + 1e-6), axis=-1), (((2, 3), (2, 3)), ((), ())))
row("pairwise_distance_p1_keepdim", lambda T, x, y: _F(T).pairwise_distance(x, y, p=1, keepdim=True),
    lambda x, y: np.abs(x - y + 1e-6).sum(-1, keepdims=True), (((2, 3), (3,)),), domain=(positive(), real(-2.0, -0.5)))
row("smooth_l1_loss", lambda T, x, t: _F(T).smooth_l1_loss(x, t), lambda x, t: _huber_ref(x, t, 1.0),
    (((2, 3), (2, 3)),), domain=(_OFF_INTEGERS, ints(-1, 2)))
row("smooth_l1_loss_none_beta", lambda T, x, t: _F(T).smooth_l1_loss(x, t, reduction="none", beta=0.5),
    lambda x, t: _huber_ref(x, t, 0.5, lambda v: v, scale=0.5), (((2, 3), (2, 3)),),
    domain=(away_from(-1.5, -0.5, 0.5, 1.5), ints(-1, 2)))
row("smooth_l1_loss_beta0", lambda T, x, t: _F(T).smooth_l1_loss(x, t, reduction="sum", beta=0.0),
    lambda x, t: np.abs(x - t).sum(), (((2, 3), (2, 3)),), domain=(_OFF_INTEGERS, ints(-1, 2)))
row("huber_loss", lambda T, x, t: _F(T).huber_loss(x, t), lambda x, t: _huber_ref(x, t, 1.0),
    (((2, 3), (2, 3)),), domain=(_OFF_INTEGERS, ints(-1, 2)))
row("huber_loss_weight", lambda T, x, t, w: _F(T).huber_loss(x, t, reduction="sum", delta=0.5, weight=w),
    lambda x, t, w: _huber_ref(x, t, 0.5, lambda v: (v * w).sum()), (((2, 3), (2, 3), (2, 3)),),
    domain=(away_from(-1.5, -0.5, 0.5, 1.5), ints(-1, 2), real()))
row("kl_div", lambda T, x, t: _F(T).kl_div(x, t), lambda x, t: _kl_ref(x, t).mean(), (((2, 3), (2, 3)),),
    domain=_LOG_PROBS)
row("kl_div_batchmean", lambda T, x, t: _F(T).kl_div(x, t, reduction="batchmean"),
    lambda x, t: _kl_ref(x, t).sum() / (x.shape[0] if x.ndim else 1), (((2, 3), (2, 3)), ((), ())), domain=_LOG_PROBS)
row("kl_div_log_target", lambda T, x, t: _F(T).kl_div(x, t, reduction="none", log_target=True),
    lambda x, t: np.exp(t) * (t - x), (((2, 3), (2, 3)),), domain=(real(-3.0, 0.0), real(-3.0, 0.0)))
row("kl_div_zero_target", lambda T, x: _F(T).kl_div(x, T.tensor(_KL_TARGET, dtype=x.dtype), reduction="sum"),
    lambda x: _kl_ref(x, _KL_TARGET).sum(), (((2, 3),),), domain=real(-3.0, 0.0))

ERROR_ROWS += [
    ErrorRow("celu_alpha_zero", lambda T: _F(T).celu(_ones(T, 3), 0.0), RuntimeError,
             r"^ZeroDivisionError: alpha cannot be 0 for CELU$"),
    ErrorRow("elu_inplace_on_leaf", lambda T: _F(T).elu(_ones(T, 3, grad=True), inplace=True), RuntimeError,
             r"^a leaf Variable that requires grad is being used in an in-place operation"),
    ErrorRow("hardtanh_min_above_max", lambda T: _F(T).hardtanh(_ones(T, 3), 2.0, 1.0), ValueError,
             r"^min_val cannot be greater than max_val$"),
    ErrorRow("glu_odd", lambda T: _F(T).glu(_ones(T, 2, 3)), RuntimeError,
             r"^Halving dimension must be even, but dimension 1 is size 3$"),
    ErrorRow("glu_scalar", lambda T: _F(T).glu(T.ones(())), RuntimeError,
             r"^glu does not support scalars because halving size must be even$"),
    ErrorRow("glu_bad_dim", lambda T: _F(T).glu(_ones(T, 2, 4), 2), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)$"),
    ErrorRow("prelu_channels", lambda T: _F(T).prelu(_ones(T, 2, 3), _ones(T, 2)), RuntimeError,
             r"^Mismatch of parameter numbers and input channel size\. Found parameter numbers = 2 and channel "
             r"size = 3\.$"),
    ErrorRow("prelu_dtypes", lambda T: _F(T).prelu(_ones(T, 2, 3), T.ones(1, dtype=T.float64)), RuntimeError,
             r"^prelu: Type promoting not supported\. Got Float and Double$"),
    ErrorRow("prelu_zero_dim_input", lambda T: _F(T).prelu(T.ones(()), _ones(T, 3)), RuntimeError,
             r"^Not allow zero-dim input tensor\.$"),
    ErrorRow("prelu_2d_weight", lambda T: _F(T).prelu(_ones(T, 2, 3), _ones(T, 1, 1)), RuntimeError,
             r"^prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = 2$"),
    ErrorRow("cosine_similarity_shapes", lambda T: _F(T).cosine_similarity(_ones(T, 2, 3), _ones(T, 2, 4)),
             ShapeError, r"the size of tensor a \(3\) must match the size of tensor b \(4\) at non-singleton "
                         r"dimension 1"),
    ErrorRow("cosine_similarity_integers", lambda T: _F(T).cosine_similarity(T.ones(2, 3, dtype=T.int64),
                                                                             T.ones(2, 3, dtype=T.int32)),
             RuntimeError, r"^expected common dtype to be floating point, yet common dtype is Long$"),
    ErrorRow("normalize_bad_dim", lambda T: _F(T).normalize(_ones(T, 3)), IndexError,
             r"^Dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)$"),
    ErrorRow("smooth_l1_loss_negative_beta", lambda T: _F(T).smooth_l1_loss(_ones(T, 3), _ones(T, 3), beta=-1.0),
             RuntimeError, r"^smooth_l1_loss does not support negative values for beta\.$"),
    ErrorRow("huber_loss_zero_delta", lambda T: _F(T).huber_loss(_ones(T, 3), _ones(T, 3), delta=0.0),
             RuntimeError, r"^huber_loss does not support non-positive values for delta\.$"),
    ErrorRow("huber_loss_bad_reduction_first", lambda T: _F(T).huber_loss(_ones(T, 3), _ones(T, 3), "foo", -1.0),
             ValueError, r"^foo is not a valid value for reduction$"),
    ErrorRow("huber_loss_weight_shape", lambda T: _F(T).huber_loss(_ones(T, 3), _ones(T, 3), weight=_ones(T, 2)),
             ValueError, r"^Weights and input must have the same size\.$"),
    ErrorRow("huber_loss_weight_bad_reduction",
             lambda T: _F(T).huber_loss(_ones(T, 3), _ones(T, 3), "foo", weight=_ones(T, 3)), ValueError,
             r"^Invalid reduction mode: foo\. Expected one of 'none', 'mean', 'sum'\.$"),
    ErrorRow("kl_div_bad_reduction", lambda T: _F(T).kl_div(_ones(T, 3), _ones(T, 3), reduction="foo"), ValueError,
             r"^foo is not a valid value for reduction$"),
]


# ============================================================================= conv1d, pooling 1d, group/instance
# norm, attention, interpolate. 1-D references are the 2-D loops above on a unit height; attention and
# nearest-neighbour references are written out directly.


def _unit_height(ref, *args, **kw):
    """A 2-D reference run on (N, C, 1, L) arrays (and (Cout, C, 1, k) weights), its results
    squeezed back to (N, C, L)."""
    def run(x, *more):
        out = ref(x[..., None, :], *[m[..., None, :] if m.ndim == 3 else m for m in more], *args, **kw)
        return tuple(o[..., 0, :] for o in out) if isinstance(out, tuple) else out[..., 0, :]
    return run


def _attention_ref(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale + mask) v, with a boolean mask's False positions left out and rows
    that attend to nothing giving zeros."""
    scores = q @ np.swapaxes(k, -1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    top = scores.max(-1, keepdims=True)
    none = np.isneginf(top)
    e = np.exp(scores - np.where(none, 0.0, top))
    return (np.where(none, 0.0, e / np.where(none, 1.0, e.sum(-1, keepdims=True)))) @ v


def _mha_ref(q, k, v, in_w, in_b, out_w, out_b, heads, key_padding_mask, attn_mask):
    """Multi-head attention of (L, N, E) inputs, head by head, with boolean masks (True: left out);
    returns the output (L, N, E) and the weights averaged over heads (N, L, S)."""
    tgt, batch, embed = q.shape
    d = embed // heads
    wq, wk, wv = np.split(in_w, 3)
    bq, bk, bv = np.split(in_b, 3)
    out = np.zeros((tgt, batch, embed))
    weights = np.zeros((batch, tgt, k.shape[0]))
    for n in range(batch):
        keep = ~(attn_mask | key_padding_mask[n][None, :])
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            qh, kh, vh = (q[:, n] @ wq.T + bq)[:, cols], (k[:, n] @ wk.T + bk)[:, cols], (v[:, n] @ wv.T + bv)[:, cols]
            scores = np.where(keep, qh @ kh.T / np.sqrt(d), -np.inf)
            p = np.exp(scores - scores.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, n, cols] = p @ vh
            weights[n] += p / heads
    return out @ out_w.T + out_b, weights


def _nearest_ref(x, sizes, exact=False):
    """Each output cell copies input cell floor(i * in / out) (nearest) or floor((i + 1/2) * in / out)
    (nearest-exact) along each spatial axis, in exact integer arithmetic."""
    for axis, out in enumerate(sizes, start=2):
        size = x.shape[axis]
        i = np.arange(out)
        x = np.take(x, np.minimum((2 * i + 1) * size // (2 * out) if exact else i * size // out, size - 1), axis)
    return x


def _pixel_shuffle_ref(x, r):
    *batch, c, h, w = x.shape
    out = np.zeros((*batch, c // (r * r), h * r, w * r))
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                out[..., ch // (r * r), i * r + ch % (r * r) // r, j * r + ch % r] = x[..., ch, i, j]
    return out


def _pixel_unshuffle_ref(x, r):
    *batch, c, h, w = x.shape
    out = np.zeros((*batch, c * r * r, h // r, w // r))
    for ch in range(c * r * r):
        for i in range(h // r):
            for j in range(w // r):
                out[..., ch, i, j] = x[..., ch // (r * r), i * r + ch % (r * r) // r, j * r + ch % r]
    return out


_ATTN_BOOL = np.array([[True, False, True], [False, False, False], [True, True, False]])   # a row with no keys
_ATTN_FLOAT = np.array([[0.5, -np.inf, 0.0, 1.0, -1.0], [0.0, 0.25, -np.inf, -np.inf, 0.0],
                        [-0.5, 0.0, 0.0, 2.0, 0.0]])
_MHA_PADDING = np.array([[False, True, False, False], [False, False, False, True]])
_MHA_MASK = np.array([[False, False, True, False], [True, False, False, False], [False, True, False, True]])
_CONV = dict(rtol32=1e-4, atol32=1e-5)

row("conv1d", lambda T, x, w, b: _F(T).conv1d(x, w, b, padding=1),
    _unit_height(_conv_ref, padding=(0, 1)), (((2, 3, 7), (4, 3, 3), (4,)),), **_CONV)
row("conv1d_stride_dilation_groups", lambda T, x, w: _F(T).conv1d(x, w, stride=2, padding=2, dilation=2, groups=2),
    _unit_height(_conv_ref, stride=(1, 2), padding=(0, 2), dilation=(1, 2), groups=2), (((1, 4, 9), (6, 2, 3)),),
    **_CONV)
row("conv1d_same_unbatched", lambda T, x, w: _F(T).conv1d(x, w, padding="same", dilation=(2,)),
    lambda x, w: _unit_height(_conv_ref, padding="same", dilation=(1, 2))(x[None], w)[0], (((3, 6), (2, 3, 2)),),
    **_CONV)
row("max_pool1d", lambda T, x: _F(T).max_pool1d(x, 3, 2, 1, ceil_mode=True),
    lambda x: _unit_height(_pool_ref, (1, 3), (1, 2), (0, 1), ceil_mode=True)(x)[0], (((2, 3, 8),),),
    domain=distinct())
row("max_pool1d_with_indices_unbatched", lambda T, x: _F(T).max_pool1d(x, 2, 1, 1, 2, return_indices=True),
    lambda x: tuple(o[0] for o in _unit_height(_pool_ref, (1, 2), 1, (0, 1), (1, 2))(x[None])),
    (((2, 7),),), domain=distinct(), out_dtype=(None, "int64"))
row("avg_pool1d_ceil_exclude_pad", lambda T, x: _F(T).avg_pool1d(x, 3, 2, 1, True, False),
    _unit_height(_pool_ref, (1, 3), (1, 2), (0, 1), ceil_mode=True, mode="avg", count_include_pad=False),
    (((2, 3, 8),),))
row("avg_pool1d_unbatched", lambda T, x: _F(T).avg_pool1d(x, 2),
    lambda x: _unit_height(_pool_ref, (1, 2), mode="avg")(x[None])[0], (((3, 7),),))
row("adaptive_avg_pool1d", lambda T, x: _F(T).adaptive_avg_pool1d(x, 3), _unit_height(_adaptive_ref, (1, 3)),
    (((2, 3, 7),),))
row("group_norm", lambda T, x, w, b: _F(T).group_norm(x, 2, w, b),
    lambda x, w, b: _norm_ref(x.reshape(2, 2, 12), (2,)).reshape(x.shape) * w.reshape(1, 4, 1, 1)
    + b.reshape(1, 4, 1, 1), (((2, 4, 3, 2), (4,), (4,)),), rtol32=1e-4, atol32=1e-5)
row("group_norm_no_affine", lambda T, x: _F(T).group_norm(x, 3, eps=1e-3),
    lambda x: _norm_ref(x.reshape(3, 3, 10), (2,), eps=1e-3).reshape(x.shape), (((3, 6, 5),),),
    rtol32=1e-4, atol32=1e-5)
row("instance_norm", lambda T, x, w, b: _F(T).instance_norm(x, weight=w, bias=b),
    lambda x, w, b: _norm_ref(x, (2,)) * w[:, None] + b[:, None], (((2, 3, 5), (3,), (3,)),),
    rtol32=1e-4, atol32=1e-5)
row("instance_norm_running_stats", lambda T, x: _F(T).instance_norm(
    x, T.tensor(_RUNNING_MEAN).to(x.dtype), T.tensor(_RUNNING_VAR).to(x.dtype), use_input_stats=False),
    lambda x: _norm_ref(x, None, _RUNNING_MEAN, _RUNNING_VAR, shape=(1, 3, 1, 1)), (((2, 3, 2, 2),),))
row("scaled_dot_product_attention", lambda T, q, k, v: _F(T).scaled_dot_product_attention(q, k, v),
    _attention_ref, (((2, 3, 4), (2, 5, 4), (2, 5, 6)),), **_CONV)
row("scaled_dot_product_attention_bool_mask",
    lambda T, q, k, v: _F(T).scaled_dot_product_attention(q, k, v, T.tensor(_ATTN_BOOL)),
    lambda q, k, v: _attention_ref(q, k, v, _ATTN_BOOL), (((2, 3, 4), (2, 3, 4), (2, 3, 2)),), **_CONV)
row("scaled_dot_product_attention_float_mask_scale",
    lambda T, q, k, v: _F(T).scaled_dot_product_attention(q, k, v, T.tensor(_ATTN_FLOAT).to(q.dtype), scale=0.5),
    lambda q, k, v: _attention_ref(q, k, v, _ATTN_FLOAT, 0.5), (((3, 4), (5, 4), (5, 3)),), **_CONV)
row("scaled_dot_product_attention_causal",
    lambda T, q, k, v: _F(T).scaled_dot_product_attention(q, k, v, is_causal=True),
    lambda q, k, v: _attention_ref(q, k, v, np.tri(3, 5, dtype=bool)), (((2, 3, 4), (2, 5, 4), (2, 5, 2)),), **_CONV)
row("scaled_dot_product_attention_gqa",
    lambda T, q, k, v: _F(T).scaled_dot_product_attention(q, k, v, enable_gqa=True),
    lambda q, k, v: _attention_ref(q, np.repeat(k, 2, 1), np.repeat(v, 2, 1)), (((1, 4, 3, 2), (1, 2, 3, 2),
                                                                                  (1, 2, 3, 2)),), **_CONV)
row("multi_head_attention_forward", lambda T, q, k, v, in_w, in_b, out_w, out_b: _F(T).multi_head_attention_forward(
    q, k, v, 4, 2, in_w, in_b, None, None, False, 0.0, out_w, out_b, key_padding_mask=T.tensor(_MHA_PADDING),
    attn_mask=T.tensor(_MHA_MASK)),
    lambda *xs: _mha_ref(*xs, 2, _MHA_PADDING, _MHA_MASK),
    (((3, 2, 4), (4, 2, 4), (4, 2, 4), (12, 4), (12,), (4, 4), (4,)),), **_CONV)
row("interpolate_nearest_scale", lambda T, x: _F(T).interpolate(x, scale_factor=2),
    lambda x: _nearest_ref(x, (8,)), (((2, 3, 4),),))
row("interpolate_nearest_size", lambda T, x: _F(T).interpolate(x, size=(4, 7)),
    lambda x: _nearest_ref(x, (4, 7)), (((1, 2, 3, 5),),))
row("interpolate_nearest_exact", lambda T, x: _F(T).interpolate(x, size=(3, 8), mode="nearest-exact"),
    lambda x: _nearest_ref(x, (3, 8), exact=True), (((1, 2, 5, 3),),))
row("pixel_shuffle", lambda T, x: _F(T).pixel_shuffle(x, 2), lambda x: _pixel_shuffle_ref(x, 2), (((2, 8, 2, 3),),))
row("pixel_unshuffle", lambda T, x: _F(T).pixel_unshuffle(x, 2), lambda x: _pixel_unshuffle_ref(x, 2),
    (((2, 4, 6),),))

ERROR_ROWS += [
    ErrorRow("conv1d_channels", lambda T: T.nn.functional.conv1d(_ones(T, 1, 4, 5), _ones(T, 2, 3, 3)), RuntimeError,
             r"^Given groups=1, weight of size \[2, 3, 3\], expected input\[1, 4, 5\] to have 3 channels, but got 4 "
             r"channels instead"),
    ErrorRow("conv1d_4d_input", lambda T: T.nn.functional.conv1d(_ones(T, 1, 4, 5, 5), _ones(T, 2, 4, 3)),
             RuntimeError, r"^Expected 2D \(unbatched\) or 3D \(batched\) input to conv1d, but got input of size: "
                           r"\[1, 4, 5, 5\]"),
    ErrorRow("conv1d_kernel_too_big", lambda T: T.nn.functional.conv1d(_ones(T, 1, 4, 2), _ones(T, 2, 4, 3)),
             RuntimeError, r"^Calculated padded input size per channel: \(2\)\. Kernel size: \(3\)\. Kernel size "
                           r"can't be greater than actual input size"),
    ErrorRow("conv1d_pair_stride", lambda T: T.nn.functional.conv1d(_ones(T, 1, 4, 5), _ones(T, 2, 4, 3),
                                                                      stride=(1, 1)),
             RuntimeError, r"^expected stride to be a single integer value or a list of 1 values to match the "
                           r"convolution dimensions, but got stride=\[1, 1\]"),
    ErrorRow("conv1d_bias_size", lambda T: T.nn.functional.conv1d(_ones(T, 1, 4, 5), _ones(T, 2, 4, 3),
                                                                    _ones(T, 1)),
             RuntimeError, r"^Given weight of size \[2, 4, 3\], expected bias to be 1-dimensional with 2 elements, "
                           r"but got bias of size \[1\] instead"),
    ErrorRow("max_pool1d_4d_input", lambda T: T.nn.functional.max_pool1d(_ones(T, 2, 2, 1, 4), 2), RuntimeError,
             r"^max_pool1d: Expected 2D or 3D \(batch mode\) tensor with optional 0 dim batch size for input, but "
             r"got:\[2, 2, 1, 4\]"),
    ErrorRow("max_pool1d_pair_kernel", lambda T: T.nn.functional.max_pool1d(_ones(T, 1, 1, 4), (2, 2)), RuntimeError,
             r"^max_pool1d\(\) kernel_size must be an int, list of ints or tuple of ints of size 1 but got size 2"),
    ErrorRow("avg_pool1d_too_small", lambda T: T.nn.functional.avg_pool1d(_ones(T, 1, 1, 2), 3), RuntimeError,
             r"^Given input size: \(1x1x2\)\. Calculated output size: \(1x1x0\)\. Output size is too small"),
    ErrorRow("adaptive_avg_pool1d_1d_input", lambda T: T.nn.functional.adaptive_avg_pool1d(_ones(T, 4), 2),
             RuntimeError, r"^Expected 2 to 3 dimensions, but got 1-dimensional tensor for argument #1 'self' \(while "
                           r"checking arguments for adaptive_avg_pool1d\)"),
    ErrorRow("group_norm_groups", lambda T: T.nn.functional.group_norm(_ones(T, 2, 3, 4), 2), RuntimeError,
             r"^Expected number of channels in input to be divisible by num_groups, but got input of shape \[2, 3, 4\] "
             r"and num_groups=2"),
    ErrorRow("group_norm_weight", lambda T: T.nn.functional.group_norm(_ones(T, 2, 4, 4), 2, _ones(T, 3)),
             RuntimeError, r"^Expected weight to be a vector of size equal to the number of channels in input, but got "
                           r"weight of shape \[3\] and input of shape \[2, 4, 4\]"),
    ErrorRow("instance_norm_one_element", lambda T: T.nn.functional.instance_norm(_ones(T, 2, 3, 1)), ValueError,
             r"^Expected more than 1 spatial element when training, got input size torch\.Size\(\[2, 3, 1\]\)"),
    ErrorRow("sdpa_causal_and_mask", lambda T: T.nn.functional.scaled_dot_product_attention(
        _ones(T, 2, 3), _ones(T, 2, 3), _ones(T, 2, 3), _ones(T, 2, 2), is_causal=True), RuntimeError,
        r"^_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True"),
    ErrorRow("sdpa_mask_dtype", lambda T: T.nn.functional.scaled_dot_product_attention(
        _ones(T, 2, 3), _ones(T, 2, 3), _ones(T, 2, 3), T.ones(2, 2, dtype=T.int64)), RuntimeError,
        r"^Expected attn_mask dtype to be bool or float or to match query dtype, but got attn_mask\.dtype: long"),
    ErrorRow("mha_embed_dim", lambda T: T.nn.functional.multi_head_attention_forward(
        _ones(T, 3, 2, 4), _ones(T, 3, 2, 4), _ones(T, 3, 2, 4), 6, 2, _ones(T, 12, 4), None, None, None, False, 0.0,
        _ones(T, 4, 4), None), AssertionError, r"^was expecting embedding dimension of 6, but got 4"),
    ErrorRow("interpolate_size_and_scale", lambda T: T.nn.functional.interpolate(_ones(T, 1, 1, 4), 8, 2.0),
             ValueError, r"^only one of size or scale_factor should be defined"),
    ErrorRow("pixel_shuffle_channels", lambda T: T.nn.functional.pixel_shuffle(_ones(T, 1, 6, 2, 2), 2), RuntimeError,
             r"^pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of upscale_factor, "
             r"but input\.size\(-3\)=6 is not divisible by 4"),
]


# ============================================================================= einsum: NumPy's einsum is the reference
_EINSUM = [
    ("einsum_matmul", "ij,jk->ik", ((2, 3), (3, 4))),
    ("einsum_implicit", "ij,kj", ((2, 3), (4, 3))),
    ("einsum_batched", "bij,bjk->bik", ((2, 3, 4), (2, 4, 2))),
    ("einsum_attention", "bhqd,bhkd->bhqk", ((1, 2, 3, 4), (1, 2, 2, 4))),
    ("einsum_ellipsis_broadcast", "...ij,...jk->...ik", ((2, 1, 3, 2), (4, 2, 3))),
    ("einsum_diagonal", "ii->i", ((3, 3),)),
    ("einsum_trace", "iij->j", ((3, 3, 2),)),
    ("einsum_outer", "i,j->ij", ((2,), (3,))),
    ("einsum_dot", "i,i->", ((4,), (4,))),
    ("einsum_three", "ij,jk,kl->il", ((2, 3), (3, 2), (2, 4))),
    ("einsum_permute_sum", "ijk->ki", ((2, 3, 4),)),
    ("einsum_broadcast_label", "bi,bi->b", ((1, 3), (4, 3))),
]
for _name, _eq, _shapes in _EINSUM:
    row(_name, lambda T, *xs, eq=_eq: T.einsum(eq, *xs), lambda *xs, eq=_eq: np.einsum(eq, *xs), (_shapes,))

ERROR_ROWS += [
    ErrorRow("einsum_sizes", lambda T: T.einsum("ij,jk->ik", _ones(T, 2, 3), _ones(T, 4, 4)), RuntimeError,
             r"^einsum\(\): subscript j has size 4 for operand 1 which does not broadcast with previously seen size 3$"),
    ErrorRow("einsum_unknown_output", lambda T: T.einsum("ij->k", _ones(T, 2, 3)), RuntimeError,
             r"^einsum\(\): output subscript k does not appear in the equation for any input operand$"),
    ErrorRow("einsum_repeated_output", lambda T: T.einsum("ij->ii", _ones(T, 2, 2)), RuntimeError,
             r"^einsum\(\): output subscript i appears more than once in the output$"),
    ErrorRow("einsum_bad_subscript", lambda T: T.einsum("i1->i", _ones(T, 2, 2)), RuntimeError,
             r"^einsum\(\): invalid subscript given at index 1 in the equation string, subscripts must be in "
             r"\[a-zA-Z\]$"),
    ErrorRow("einsum_dims", lambda T: T.einsum("ij", _ones(T, 2, 3, 4)), RuntimeError,
             r"^einsum\(\): the number of subscripts in the equation \(2\) does not match the number of dimensions "
             r"\(3\) for operand 0 and no ellipsis was given$"),
    ErrorRow("einsum_operands", lambda T: T.einsum("ij,jk", _ones(T, 2, 3)), RuntimeError,
             r"^einsum\(\): fewer operands were provided than specified in the equation$"),
]
