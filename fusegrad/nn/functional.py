"""nn.functional: activations, losses, normalisation and embeddings written as composites of
fusegrad ops; convolution and pooling come from the tracer's spatial ops."""
import math
import warnings

import numpy as np

import fusegrad as fg

from ..ir import OPS, dtypes as D
from ..tracer.dispatch import apply
from ..tracer.functions import _binary_cross_entropy, _named, _reads_data
from ..tracer.tensor import _dim
from ..tracer.spatial import (adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d,  # noqa: F401
                              max_pool2d_with_indices)
from ..tracer.tensor import Tensor


def relu(input, inplace=False):
    return input.relu_() if inplace else fg.relu(input)


def sigmoid(input):
    return fg.sigmoid(input)


def tanh(input):
    return fg.tanh(input)


def _warn_implicit_dim(name, dim, stacklevel):
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include "
                      "dim=X as an argument.", UserWarning, stacklevel=stacklevel)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    _warn_implicit_dim("softmax", dim, _stacklevel)
    return fg.softmax(input, dim, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    _warn_implicit_dim("log_softmax", dim, _stacklevel)
    return fg.log_softmax(input, dim, dtype)


# Chebyshev coefficients of erfc on [0, inf) (Numerical Recipes, 3rd ed., 6.2.2): about 1e-14 relative
# accuracy, so GELU matches PyTorch's erf-based one in float64, and its derivative follows from the ops.
_ERFC_CHEBYSHEV = (
    -1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2, -9.561514786808631e-3,
    -9.46595344482036e-4, 3.66839497852761e-4, 4.2523324806907e-5, -2.0278578112534e-5, -1.624290004647e-6,
    1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8, 6.529054439e-9, 5.059343495e-9, -9.91364156e-10,
    -2.27365122e-10, 9.6467911e-11, 2.394038e-12, -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13,
    3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17)


def _erfc_nonnegative(z):
    """erfc(z) for z >= 0, by Clenshaw's recurrence on the Chebyshev series above (a composite of
    elementwise ops until erf is a primitive)."""
    t = 2.0 / (2.0 + z)
    ty = 4.0 * t - 2.0
    d, dd = 0.0, 0.0
    for c in reversed(_ERFC_CHEBYSHEV[1:]):
        d, dd = ty * d - dd + c, d
    return t * fg.exp(-z * z + 0.5 * (_ERFC_CHEBYSHEV[0] + ty * d) - dd)


def gelu(input, approximate="none"):
    if approximate == "tanh":
        inner = (input + 0.044715 * input ** 3) * math.sqrt(2 / math.pi)
        return _named(0.5 * input * (1 + fg.tanh(inner)), "GeluBackward0")
    if approximate != "none":
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    # x * Phi(x) = x/2 * (1 + erf(x/sqrt 2)), written with erfc(|u|) so negative x loses no digits
    u = input * math.sqrt(0.5)
    tail = _erfc_nonnegative(fg.abs(u))
    return _named(0.5 * input * fg.where(u >= 0, 2.0 - tail, tail), "GeluBackward0")


def silu(input, inplace=False):
    # in place: multiply by sigmoid(input), whose backward needs only its own output
    if inplace:
        return _named(input.mul_(fg.sigmoid(input)), "SiluBackward0")
    return _named(input * fg.sigmoid(input), "SiluBackward0")


def leaky_relu(input, negative_slope=0.01, inplace=False):
    if inplace:
        slope = fg.where(input > 0, fg.ones_like(input), fg.full_like(input, negative_slope))
        return _named(input.mul_(slope), "LeakyReluBackward1")
    return _named(fg.where(input > 0, input, input * negative_slope), "LeakyReluBackward0")


def _in_place(input, function, inplace, name, inplace_name=None):
    """function(input), named as PyTorch's fused kernel; with inplace=True written into input and
    returned as it. The in-place result is computed from a clone, so that no value its backward
    saved is the one overwritten (PyTorch's in-place kernels derive their gradient from the result)."""
    if inplace:
        return _named(input.copy_(function(input.clone())), inplace_name or name)
    return _named(function(input), name)


def _where_on(condition, input, function, other):
    """function(input) where condition holds, other elsewhere. function only sees input where
    condition holds (0 elsewhere), so an inf or NaN on the other side reaches neither the result
    nor, as 0 * inf in function's backward, the gradient."""
    return fg.where(condition, function(fg.where(condition, input, 0.0)), other)


def _log1p_small(x):
    """log(1 + x) for 0 <= x <= 1 to x's own precision. fg.log1p is log(1 + x), which keeps only the
    digits of x above 1's ulp (0 below it: softplus(-40) would be 0, and its log -inf). Below 1/32
    the series x - x^2/2 + x^3/3 - ... takes its place, to 11 terms: float64's precision there."""
    series = 1.0 / 11
    for k in range(10, 0, -1):   # Horner: x (1 - x (1/2 - x (1/3 - ...)))
        series = 1.0 / k - x * series
    return fg.where(x < 2.0 ** -5, x * series, fg.log(1 + x))


def _log1p_exp(input):
    """log(1 + exp(input)) without overflow: max(input, 0) + log1p(exp(-|input|)). |input| and
    max(input, 0) are taken with one mask, so that at 0 both take the same side's slope and the
    gradient there is 1/2: sigmoid(input), as everywhere."""
    positive = input >= 0
    return fg.where(positive, input, 0.0) + _log1p_small(fg.exp(-fg.where(positive, input, -input)))


def _elu(input, alpha, scale, input_scale, inplace, name, inplace_name):
    """PyTorch's elu kernel, shared by elu, selu and celu: (exp(x * input_scale) - 1) * alpha * scale
    where x <= 0, x * scale elsewhere (NaN included, with the slope `scale`)."""
    def function(x):
        return _where_on(x <= 0, x, lambda v: fg.expm1(v * input_scale) * (alpha * scale), x * scale)
    return _in_place(input, function, inplace, name, inplace_name)


def elu(input, alpha=1.0, inplace=False):
    return _elu(input, alpha, 1.0, 1.0, inplace, "EluBackward0", "EluBackward1")


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def selu(input, inplace=False):
    return _elu(input, _SELU_ALPHA, _SELU_SCALE, 1.0, inplace, "EluBackward0", "EluBackward1")


def celu(input, alpha=1.0, inplace=False):
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    return _elu(input, alpha, 1.0, 1.0 / alpha, inplace, "CeluBackward0", "CeluBackward1")


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (not where NaN)."""
    linear = input * beta > threshold
    curve = _where_on(~linear, input, lambda x: _log1p_exp(x * beta) / beta, input)
    return _named(curve, "SoftplusBackward0")


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    # at and beyond the bounds the gradient is zero; NaN passes through with its gradient (PyTorch's)
    return _in_place(input, lambda x: fg.where(x <= min_val, min_val, fg.where(x >= max_val, max_val, x)),
                     inplace, "HardtanhBackward0")


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0, inplace)


def logsigmoid(input):
    """log(sigmoid(x)) = -log(1 + exp(-x)), without overflow for large |x|."""
    return _named(-_log1p_exp(-input), "LogSigmoidBackward0")


def mish(input, inplace=False):
    return _in_place(input, lambda x: x * fg.tanh(_log1p_exp(x)), inplace, "MishBackward0")


def _hardswish(x):
    # PyTorch: x * clamp(x + 3, 0, 6) / 6, with slope 0 for x <= -3, x / 3 + 1/2 for -3 < x < 3 and 1
    # elsewhere (NaN included). x * 0 keeps its NaN at -inf, as PyTorch's value has.
    ramp = (x > -3) & (x < 3)
    return _where_on(ramp, x, lambda v: v * (v + 3) / 6, fg.where(x <= -3, x.detach() * 0.0, x))


def hardswish(input, inplace=False):
    return _in_place(input, _hardswish, inplace, "HardswishBackward0")


def _hardsigmoid(x):
    # PyTorch: clamp(x + 3, 0, 6) / 6, with slope 1/6 strictly between -3 and 3 and 0 elsewhere (NaN
    # included): the clamped value outside carries no gradient
    ramp = (x > -3) & (x < 3)
    return fg.where(ramp, x + 3, (x.detach() + 3).clamp(0, 6)) / 6


def hardsigmoid(input, inplace=False):
    return _in_place(input, _hardsigmoid, inplace, "HardsigmoidBackward0")


def softsign(input):
    return input / (fg.abs(input) + 1)


def tanhshrink(input):
    return input - fg.tanh(input)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    _warn_implicit_dim("softmin", dim, _stacklevel)
    return fg.softmax(-input, dim, dtype)


def threshold(input, threshold, value, inplace=False):
    """value where input <= threshold, input elsewhere (NaN included)."""
    return _in_place(input, lambda x: fg.where(x <= threshold, value, x), inplace, "ThresholdBackward0",
                     "ThresholdBackward1")


def glu(input, dim=-1):
    """The first half of input along dim, gated by the sigmoid of the second."""
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    dim = _dim(dim, input.ndim)
    size = input.shape[dim]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {dim} is size {size}")
    half = size // 2
    return _named(input.narrow(dim, 0, half) * fg.sigmoid(input.narrow(dim, half, half)), "GluBackward0")


def prelu(input, weight):
    """input where positive, weight * input elsewhere; weight has one element or one per channel
    (dim 1 of input)."""
    if input.dtype != weight.dtype:
        raise RuntimeError(f"prelu: Type promoting not supported. Got {input.dtype.scalar_name} and "
                           f"{weight.dtype.scalar_name}")
    if weight.numel() != 1:
        if input.ndim == 0:
            raise RuntimeError("Not allow zero-dim input tensor.")
        channels = input.shape[1] if input.ndim > 1 else 1
        if weight.numel() != channels:
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found parameter numbers = "
                               f"{weight.numel()} and channel size = {channels}.")
    if weight.ndim > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {weight.ndim}")
    if weight.ndim != input.ndim:
        shape = [1] * input.ndim
        if input.ndim > 1:
            shape[1] = weight.numel()
        weight = weight.reshape(shape)
    # the weight's gradient is input * grad where input <= 0 (or NaN), and 0, not 0 * inf, elsewhere
    positive = input > 0
    return _named(fg.where(positive, input, weight * fg.where(positive, 0.0, input)), "PreluKernelBackward0")


def linear(input, weight, bias=None):
    """input @ weight.T + bias, with PyTorch's grad_fn names (AddmmBackward0 for 2-D inputs)."""
    if input.dtype != weight.dtype:
        raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {input.dtype.scalar_name} and "
                           f"{weight.dtype.scalar_name}: linear's input (shape {list(input.shape)}) and weight "
                           f"(shape {list(weight.shape)}); convert the input with .to({weight.dtype})")
    out = fg.matmul(input, weight.t())
    if bias is not None:
        out = out + bias
        return _named(out, "AddmmBackward0" if input.ndim == 2 else "ViewBackward0")
    return _named(out, "MmBackward0" if input.ndim == 2 else "UnsafeViewBackward0")


def dropout(input, p=0.5, training=True, inplace=False):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input.mul_(0.0) if inplace else input * 0.0
    scale = (fg.rand_like(input) >= p).to(input.dtype) * (1.0 / (1.0 - p))
    return input.mul_(scale) if inplace else _named(input * scale, "MulBackward0")


def _legacy_reduction(size_average, reduce, reduction):
    """`reduction` from the deprecated size_average / reduce arguments when either is given, with
    PyTorch's warning; otherwise `reduction` itself."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
                  UserWarning, stacklevel=3)
    return reduction


def _weighted_mean(total, weight_sum):
    """total / weight_sum; when every target is ignored (weight_sum == 0), NaN with a zero gradient,
    as in PyTorch (the plain quotient's gradient would be 0 * inf = NaN)."""
    none = weight_sum == 0
    return fg.where(none, float("nan"), total / fg.where(none, 1.0, weight_sum))


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")


def _reduce(loss, reduction, name=None):
    """Apply `reduction`; name the result's grad_fn when PyTorch's is a fused kernel (None keeps
    MeanBackward0 / SumBackward0 / the elementwise op's own name)."""
    _check_reduction(reduction)
    out = loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
    return out if name is None else _named(out, name)


def _warn_if_broadcasting(input, target):
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size "
                      f"({input.shape}). This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size.", UserWarning, stacklevel=3)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _warn_if_broadcasting(input, target)
    diff = input - target
    return _reduce(diff * diff, reduction, "MseLossBackward0")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _warn_if_broadcasting(input, target)
    return _reduce(fg.abs(input - target), reduction)   # torch's grad_fn: AbsBackward0 under Mean/Sum


def _class_last(input, target):
    """(N, C, d1, ...) scores and (N, d1, ...) targets -> (M, C) and (M,)."""
    if input.ndim == 1:
        return input.unsqueeze(0), target.reshape(1)
    if input.ndim > 2:
        c = input.shape[1]
        input = fg.movedim(input, 1, -1).reshape(-1, c)
        target = target.reshape(-1)
    return input, target


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of class indices under log-probabilities `input` (N, C, ...)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if target.dtype.name not in ("int64", "int32"):
        raise RuntimeError(f"nll_loss: expected target of dtype int64 (class indices), got {target.dtype}")
    out_shape = tuple(target.shape)
    if input.ndim >= 2 and input.shape[0] != (target.shape[0] if target.ndim else 1):
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                         f"({target.shape[0] if target.ndim else 1}).")
    if input.ndim > 2 and tuple(target.shape) != (input.shape[0],) + tuple(input.shape[2:]):
        raise RuntimeError(f"Expected target size {[input.shape[0]] + list(input.shape[2:])}, "
                           f"got {list(target.shape)}")
    scores, labels = _class_last(input, target)
    classes = scores.shape[1]
    # tensor ops, not NumPy: a compiled step recomputes the mask, and checks the bounds as a guard
    valid = fg.ne(labels, ignore_index)
    out_of_bounds = valid & ((labels < 0) | (labels >= classes))
    if out_of_bounds.any():
        raise IndexError(f"Target {int(labels[out_of_bounds][0])} is out of bounds.")
    safe = fg.where(valid, labels, 0)
    picked = -fg.gather(scores, 1, safe.unsqueeze(1)).squeeze(1)
    w = valid.to(scores.dtype)
    if weight is not None:
        w = w * weight[safe]
    loss = picked * w
    # torch runs spatial inputs through nll_loss2d (a 4-D kernel: other ranks are viewed to 4-D and back)
    name = "NllLoss2DBackward0" if input.ndim > 2 else "NllLossBackward0"
    if reduction == "mean":
        return _named(_weighted_mean(loss.sum(), w.sum()), name)
    if reduction == "none":
        return _named(loss.reshape(out_shape), name if input.ndim <= 2 or input.ndim == 4 else "ViewBackward0")
    return _reduce(loss, reduction, name)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """log_softmax over dim 1 (dim 0 for unbatched input) followed by nll_loss; `target` holds class
    indices or, as floats of the input's shape, class probabilities."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    class_dim = 0 if input.ndim == 1 else 1
    logp = fg.log_softmax(input, class_dim)
    if target.is_floating_point():
        if tuple(target.shape) != tuple(input.shape):
            raise RuntimeError(f"cross_entropy: probability targets must have the input's shape "
                               f"{list(input.shape)}, got {list(target.shape)}")
        classes = input.shape[class_dim]
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / classes
        terms = logp * target if weight is None else logp * target * weight.reshape(
            (-1,) + (1,) * (input.ndim - class_dim - 1))
        loss = -terms.sum(class_dim)
        if reduction == "mean":   # torch divides by the batch size, whatever the class weights
            return _named(loss.sum() / max(1, loss.numel()), "DivBackward1")
        return _reduce(loss, reduction, "NegBackward0")
    loss = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing:
        classes = input.shape[class_dim]
        scores, labels = _class_last(logp, target)
        valid = (labels != ignore_index).to(scores.dtype)
        per = -scores.sum(1) * valid if weight is None else -(scores * weight).sum(1) * valid
        if reduction == "mean":
            smooth = _weighted_mean(per.sum(), valid.sum() if weight is None else (
                weight[fg.where(labels != ignore_index, labels, 0)] * valid).sum())
        elif reduction == "sum":
            smooth = per.sum()
        else:
            smooth = per.reshape(tuple(target.shape))
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
    return loss


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Using a target size ({target.shape}) that is different to the input size "
                         f"({input.shape}) is deprecated. Please ensure they have the same size.")
    for name, values in (("input", input.detach()), ("target", target.detach())):
        if not ((values >= 0) & (values <= 1)).all():   # NaN is out of range too
            raise RuntimeError(f"all elements of {name} should be between 0 and 1")
    loss = _binary_cross_entropy(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "BinaryCrossEntropyBackward0")


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Target size ({target.shape}) must be the same as input size ({input.shape})")
    # (1 - t) x + softplus(-x), softplus without overflow for large |x|: the gradient is sigmoid(x) - t
    softplus_neg = _log1p_exp(-input)
    if pos_weight is not None:
        softplus_neg = (1 + (pos_weight - 1) * target) * softplus_neg
    loss = (1 - target) * input + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "BinaryCrossEntropyWithLogitsBackward0")


def _huber(input, target, limit, divisor, slope):
    """PyTorch's huber and smooth_l1 kernels: 0.5 d^2 / divisor where d = input - target lies within
    +-limit, or is NaN (then with a NaN gradient, as PyTorch's); slope * (|d| - limit / 2) beyond. The
    quadratic branch sees no inf from beyond."""
    d = input - target
    beyond = (d < -limit) | (d > limit)
    return _where_on(~beyond, d, lambda v: 0.5 * v * v / divisor, slope * (fg.abs(d) - 0.5 * limit))


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    _warn_if_broadcasting(input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    input, target = fg.broadcast_tensors(input, target)
    if beta == 0.0:   # PyTorch's l1_loss
        return l1_loss(input, target, reduction=reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    return _reduce(_huber(input, target, beta, beta, 1.0), reduction, "SmoothL1LossBackward0")


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    _warn_if_broadcasting(input, target)
    input, target = fg.broadcast_tensors(input, target)
    if weight is None:
        _check_reduction(reduction)   # before the delta, as PyTorch
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    loss = _named(_huber(input, target, delta, 1.0, delta), "HuberLossBackward0")
    if weight is None:
        return _reduce(loss, reduction, "HuberLossBackward0")
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError("Weights and input must have the same size.")
    if reduction not in ("none", "mean", "sum"):   # PyTorch's own message on this path
        raise ValueError(f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")
    return _reduce(loss * weight, reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise target * (log(target) - input), input holding log-probabilities (and target too with
    log_target). reduction="mean" averages over every element, as PyTorch does (with its warning);
    "batchmean" divides the sum by the batch size, the KL divergence's definition."""
    if size_average is not None or reduce is not None:
        # PyTorch takes the legacy arguments' reduction, and still divides by the batch size after it
        # when reduction="batchmean" was passed too
        reduce_as = _legacy_reduction(size_average, reduce, reduction)
    else:
        if reduction == "mean":
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                          "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                          "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                          UserWarning, stacklevel=2)
        reduce_as = "sum" if reduction == "batchmean" else reduction
    _check_reduction(reduce_as)
    if log_target:
        loss = fg.exp(target) * (target - input)
    else:
        # xlogy(target, target): 0 where target is 0. Its gradient there is NaN, as PyTorch's (0 * log 0)
        loss = fg.where(target == 0, 0.0, target * fg.log(target)) - target * input
    out = _reduce(loss, reduce_as)
    if reduction == "batchmean" and input.ndim != 0:
        out = out / input.shape[0]
    return out


# ----------------------------------------------------------------------------- distances


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """input divided by its p-norm along dim, the norm raised to eps where smaller."""
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported")
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps).expand_as(input)


def _floor_without_gradient(norm, eps):
    """norm raised to eps where smaller, its gradient still norm's: PyTorch clamps cosine_similarity's
    norms in place under no_grad. (norm - norm.detach() is 0 with norm's gradient.)"""
    return fg.where(norm < eps, norm - norm.detach() + eps, norm)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """The cosine of the angle between x1 and x2 along dim (broadcast together): each divided by its
    2-norm first (at least eps), so the result stays within [-1, 1], as PyTorch computes it."""
    if not (x1.is_floating_point() or x2.is_floating_point()):
        common = D.result_type([(x1.dtype, x1.ndim), (x2.dtype, x2.ndim)])
        raise RuntimeError(f"expected common dtype to be floating point, yet common dtype is {common.scalar_name}")
    if not x1.is_floating_point():
        x1 = x1.to(x2.dtype)
    if not x2.is_floating_point():
        x2 = x2.to(x1.dtype)
    x1, x2 = fg.broadcast_tensors(x1, x2)
    n1 = _floor_without_gradient(x1.norm(2, dim, keepdim=True), eps)
    n2 = _floor_without_gradient(x2.norm(2, dim, keepdim=True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """The p-norm of x1 - x2 + eps over the last dim of the broadcast shape."""
    dim = max(x1.ndim, x2.ndim) - 1
    return _named(fg.norm(x1 - x2 + eps, p, dim, keepdim), "NormBackward1")


# ----------------------------------------------------------------------------- normalisation


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-05):
    """Normalise each channel (dim 1) of (N, C, ...) over the other dims: with the batch's statistics
    when training (updating the running ones in place, without recording them, with the unbiased
    variance as PyTorch does), with the running statistics otherwise. momentum=None is left to the
    caller (BatchNorm passes the cumulative-average factor)."""
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of at least 2 dimensions (N, C, ...), got shape "
                         f"{list(input.shape)}")
    channels = input.shape[1]
    dims = (0,) + tuple(range(2, input.ndim))
    per_channel = (1, channels) + (1,) * (input.ndim - 2)
    count = math.prod(input.shape[d] for d in dims)
    if not training:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm: running_mean and running_var must be given when training=False")
        # x * scale + shift per channel, as PyTorch computes eval mode (so inf and NaN meet alike)
        scale = fg.rsqrt(running_var + eps)
        if weight is not None:
            scale = scale * weight
        shift = -running_mean * scale if bias is None else bias - running_mean * scale
        return _named(input * scale.reshape(per_channel) + shift.reshape(per_channel), "NativeBatchNormBackward0")
    if count == 0:   # an empty batch: an empty output, the running statistics untouched (as PyTorch)
        centered, var = input, fg.ones(per_channel, dtype=input.dtype, device=input.device)
    else:
        if count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        mean = input.mean(dims, keepdim=True)
        centered = input - mean
        var = (centered * centered).mean(dims, keepdim=True)
        if running_mean is not None or running_var is not None:
            with fg.no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(mean.reshape(channels) * momentum)
                if running_var is not None:
                    running_var.mul_(1 - momentum).add_(var.reshape(channels) * (momentum * count / (count - 1)))
    out = centered * fg.rsqrt(var + eps)
    if weight is not None:
        out = out * weight.reshape(per_channel)
    if bias is not None:
        out = out + bias.reshape(per_channel)
    return _named(out, "NativeBatchNormBackward0")


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    """Normalise over the trailing dims given by normalized_shape (biased variance)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size{input.shape}")
    out = _standardized(input, tuple(range(input.ndim - len(shape), input.ndim)), eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return _named(out, "NativeLayerNormBackward0")


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of weight picked by the integer tensor input; the row at padding_idx gets no gradient."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    if input.dtype.name not in ("int64", "int32"):
        raise RuntimeError(f"Expected tensor for argument #1 'indices' to have one of the following scalar types: "
                           f"Long, Int; but got {input.type()} instead (while checking arguments for embedding)")
    if weight.shape[0] == 0 and input.numel():   # a RuntimeError in PyTorch (index_select's), not an IndexError
        raise RuntimeError(f"embedding: the weight of shape {list(weight.shape)} has no rows to look indices up in")
    if padding_idx is not None:
        padding_idx = padding_idx + weight.shape[0] if padding_idx < 0 else padding_idx
        is_padding = (fg.arange(weight.shape[0], device=weight.device) == padding_idx).unsqueeze(1)
        weight = fg.where(is_padding, weight.detach(), weight)
    return _named(weight[input], "EmbeddingBackward0")


# ----------------------------------------------------------------------------- one_hot and pad


def one_hot(tensor, num_classes=-1):
    """Classes as int64 indicator vectors along a new last dimension. Out-of-range classes raise
    (PyTorch's checks, in the op itself, so a compiled replay checks too)."""
    if tensor.dtype is not fg.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    if tensor.numel() == 0 and num_classes <= 0:
        raise RuntimeError("Can not infer total number of classes from empty tensor.")
    if num_classes == -1:   # the largest class + 1: read from the data
        _reads_data("one_hot")
        if tensor.numel() and int(tensor._data.min()) < 0:
            raise RuntimeError("Class values must be non-negative.")
        num_classes = int(tensor._data.max()) + 1
    return apply(OPS["one_hot"], (tensor,), {"num_classes": int(num_classes)})


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input, pad, mode="constant", value=None):
    """PyTorch's F.pad: (left, right) pairs from the last dimension backwards; negative sizes crop."""
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    pad = list(pad)
    for i, p in enumerate(pad):
        if isinstance(p, bool) or not hasattr(p, "__index__"):
            raise TypeError(f"pad(): argument 'pad' (position 2) must be tuple of ints, but found element of type "
                            f"{type(p).__name__} at pos {i}")
    pad, ndim = [int(p) for p in pad], input.ndim
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > ndim:
        raise RuntimeError(f"Padding length should be less than or equal to two times the input dimension but got "
                           f"padding length {len(pad)} and input of dimension {ndim}")
    # (dimension, left, right) for each padded dimension, the last dimension first
    sides = [(ndim - 1 - k, pad[2 * k], pad[2 * k + 1]) for k in range(len(pad) // 2)]
    if mode == "constant":
        return _named(_constant_pad(input, sides, 0 if value is None else value), "ConstantPadNdBackward0")
    if value is not None and value != 0:
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    k = len(sides)
    if not 1 <= k <= 3 or ndim not in (k + 1, k + 2):
        raise NotImplementedError(
            f"Padding size {len(pad)} is not supported for {ndim}D input tensor.\nSupported combinations for "
            f"non-constant padding:\n  - 2D or 3D input: padding size = 2 (pads last dimension)\n  - 3D or 4D input: "
            f"padding size = 4 (pads last 2 dimensions)\n  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)")
    if mode == "circular":
        return _named(_indexed_pad(input, _circular_positions(input.shape, sides)), "CopySlices")
    _check_reflect_replicate(input, sides, mode)
    positions = [(d, np.arange(-left, input.shape[d] + right)) for d, left, right in sides]
    if mode == "reflect":
        last = [input.shape[d] - 1 for d, _, _ in sides]
        positions = [(d, last_ - np.abs(last_ - np.abs(i))) for (d, i), last_ in zip(positions, last)]
    else:
        positions = [(d, np.clip(i, 0, input.shape[d] - 1)) for d, i in positions]
    label = f"{'Reflection' if mode == 'reflect' else 'Replication'}Pad{k}DBackward0"
    return _named(_indexed_pad(input, positions), label)


def _constant_pad(input, sides, value):
    """A full tensor of the padded shape with the (cropped) input put in its middle."""
    crop = [slice(None)] * input.ndim
    place = [("s", None, None, None)] * input.ndim
    shape = list(input.shape)
    for d, left, right in sides:
        size = shape[d] + left + right
        if size < 0:
            raise RuntimeError("narrow(): length must be non-negative.")
        crop[d] = slice(max(-left, 0), shape[d] - max(-right, 0))
        place[d] = ("s", max(left, 0), size - max(right, 0), None)
        shape[d] = size
    filled = fg.tensor(np.full(shape, _representable(value, input.dtype.np), input.dtype.np), device=input.device)
    return apply(OPS["index_put"], (filled, input[tuple(crop)]), {"spec": tuple(place)})


_C_TYPES = {"int64": "int64_t", "int32": "int", "float16": "c10::Half"}


def _representable(value, dtype):
    """A fill value the dtype holds: PyTorch refuses one that overflows it (NaN for an integer)."""
    if dtype.kind in "iuf" and dtype.name in _C_TYPES:
        integral = dtype.kind != "f"
        bound = int(np.iinfo(dtype).max) if integral else float(np.finfo(dtype).max)
        finite = value == value and abs(value) != float("inf")
        if (not finite and integral) or (finite and not -bound - integral <= value <= bound):
            raise RuntimeError(f"value cannot be converted to type {_C_TYPES[dtype.name]} without overflow")
    return value


def _indexed_pad(input, positions):
    """input read at integer positions along each padded dimension (gradients add up where a
    position repeats)."""
    out = input
    for d, idx in positions:
        out = out[(slice(None),) * d + (fg.tensor(idx.astype(np.int64), device=input.device),)]
    return out


def _circular_positions(shape, sides):
    """PyTorch's circular padding: negative sizes crop first; the rest wraps around what is left,
    at most once."""
    positions = []
    for d, left, right in sides:
        size = shape[d]
        if left > size or right > size:
            raise RuntimeError("Padding value causes wrapping around more than once.")
        if size + left + right < 0:
            raise RuntimeError("Negative padding value is resulting in an empty dimension")
        first, kept = max(-left, 0), size - max(-left, 0) - max(-right, 0)
        left, right = max(left, 0), max(right, 0)
        if (left or right) and (left > kept or right > kept):   # PyTorch reads memory it never wrote here
            raise RuntimeError("Padding value causes wrapping around more than once.")
        positions.append((d, first + np.arange(-left, kept + right) % max(kept, 1)))
    return positions


def _check_reflect_replicate(input, sides, mode):
    shape, k = list(input.shape), len(sides)
    if 0 in shape[input.ndim == k + 2:]:   # a batch dimension may be empty
        raise RuntimeError(f"Expected {k + 1}D or {k + 2}D (batch mode) tensor with possibly 0 batch size and other "
                           f"non-zero dimensions for input, but got: {shape}")
    if input.dtype is fg.bool:
        kernel = "reflection" if mode == "reflect" else "replication"
        raise NotImplementedError(f"\"{kernel}_pad{k}d\" not implemented for 'Bool'")
    if mode == "reflect":
        for j, (d, left, right) in enumerate(sides):
            if left >= shape[d] or right >= shape[d]:
                raise RuntimeError(f"Argument #{4 + 2 * j}: Padding size should be less than the corresponding input "
                                   f"dimension, but got: padding ({left}, {right}) at dimension {d} of input {shape}")
    out = [shape[d] + left + right for d, left, right in sides]
    if min(out) < 0:
        padded = list(shape)
        for (d, _, _), size in zip(sides, out):
            padded[d] = size
        raise RuntimeError(f"Trying to create tensor with negative dimension {min(out)}: {padded}")
    if max(out) < 1:
        names = "WHD"[:k][::-1]
        sizes = ", ".join(f"{n}: {shape[d]}" for n, (d, _, _) in zip(names, reversed(sides)))
        got = " ".join(f"{n}: {o}" for n, o in zip(names, reversed(out)))
        raise RuntimeError(f"input ({sizes}) is too small. Calculated output {got}")


# ----------------------------------------------------------------------------- conv1d, pooling 1d, group/instance
# norm, attention, interpolate. One-dimensional convolution and pooling run the 2-D ops on inputs of unit height
# (so their gradients, window kernels and compilation are the 2-D ones); the rest are composites of ops.

def _single(name, value, op):
    """An int or a sequence of one int, as an int; other lengths raise as PyTorch's 1-D ops do."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) != 1 or not isinstance(values[0], int):
        raise RuntimeError(f"{op}() {name} must be an int, list of ints or tuple of ints of size 1 but got "
                           f"{'size ' + str(len(values)) if len(values) != 1 else repr(value)}")
    return values[0]


def _check_rank_1d(op, input):
    if input.ndim not in (2, 3):
        raise RuntimeError(f"Expected 2 to 3 dimensions, but got {input.ndim}-dimensional tensor for argument #1 "
                           f"'self' (while checking arguments for {op})")


def _conv1d_geometry(input, weight, bias, stride, padding, dilation, groups):
    """The checks of PyTorch's conv1d, with its 1-D messages (the 2-D op would name 4-D shapes)."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: "
                           f"{list(input.shape)}")
    if weight.ndim < 3:
        raise RuntimeError("weight should have at least three dimensions")
    if weight.ndim != 3:
        raise RuntimeError(f"Expected {weight.ndim}-dimensional input for {weight.ndim}-dimensional weight "
                           f"{list(weight.shape)}, but got {input.ndim}-dimensional input of size "
                           f"{list(input.shape)} instead")
    for name, value in (("stride", stride), ("dilation", dilation)) + (
            () if isinstance(padding, str) else (("padding", padding),)):
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        if len(values) != 1:
            raise RuntimeError(f"expected {name} to be a single integer value or a list of 1 values to match the "
                               f"convolution dimensions, but got {name}={values}")
    if not isinstance(groups, int) or groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    channels, length = input.shape[-2:]
    c_out, c_group, kernel = weight.shape
    if c_out < 1:
        raise RuntimeError(f"Given groups={groups}, expected weight to be at least 1 at dimension 0, but got weight "
                           f"of size {list(weight.shape)} instead")
    if channels != c_group * groups or c_out % groups:
        batched = list(input.shape) if input.ndim == 3 else [1] + list(input.shape)
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{batched} to "
                           f"have {c_group * groups} channels, but got {channels} channels instead")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                           f"{c_out} elements, but got bias of size {list(bias.shape)} instead")
    if not isinstance(padding, str):
        pad = _single("padding", padding, "conv1d")
        reach = _single("dilation", dilation, "conv1d") * (kernel - 1) + 1
        if pad >= 0 and length + 2 * pad < reach:
            raise RuntimeError(f"Calculated padded input size per channel: ({length + 2 * pad}). Kernel size: "
                               f"({reach}). Kernel size can't be greater than actual input size")


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation of input (N, C, L) or (C, L) with weight (Cout, C/groups, k): conv2d of
    the input and weight with a unit height."""
    _conv1d_geometry(input, weight, bias, stride, padding, dilation, groups)
    as_pair = (lambda v: v) if isinstance(padding, str) else (lambda v: (0, _single("padding", v, "conv1d")))
    out = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, _single("stride", stride, "conv1d")),
                 as_pair(padding), (1, _single("dilation", dilation, "conv1d")), groups)
    return _named(out.squeeze(-2), "ConvolutionBackward0" if input.ndim == 3 else "SqueezeBackward1")


def _pool1d_geometry(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """(kernel, stride, padding, dilation) as ints, after PyTorch's 1-D checks: the 2-D ops would
    accept pairs and report 4-D sizes."""
    if 0 in tuple(input.shape[-2:]):
        raise RuntimeError(f"{op}: Expected 2D or 3D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got:{list(input.shape)}")
    kernel = _single("kernel_size", kernel_size, op)
    stride = kernel if stride is None or stride == [] or stride == () else _single("stride", stride, op)
    padding, dilation = _single("padding", padding, op), _single("dilation", dilation, op)
    for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if value <= 0:
            raise RuntimeError(f"{op}() {name} must be greater than zero, but got {value}")
    if padding < 0 or 2 * padding > dilation * (kernel - 1) + 1:
        raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={padding}, "
                           f"kernel_size={kernel} and dilation={dilation}")
    length = input.shape[-1]
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= length + padding:
        out -= 1
    if out < 1:
        channels = input.shape[-2]
        raise RuntimeError(f"Given input size: ({channels}x1x{length}). Calculated output size: ({channels}x1x{out})."
                           f" Output size is too small")
    return kernel, stride, padding, dilation


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Window maxima along the last dim of (N, C, L) or (C, L); with return_indices, also their
    positions in L. max_pool2d over a unit height: ties, NaN and gradients as there."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"max_pool1d: Expected 2D or 3D (batch mode) tensor with optional 0 dim batch size for "
                           f"input, but got:{list(input.shape)}")
    kernel, stride, padding, dilation = _pool1d_geometry("max_pool1d", input, kernel_size, stride, padding, dilation,
                                                         ceil_mode)
    out = max_pool2d(input.unsqueeze(-2), (1, kernel), (1, stride), (0, padding), (1, dilation), ceil_mode,
                     return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Window means along the last dim: avg_pool2d over a unit height."""
    _check_rank_1d("avg_pool1d", input)
    kernel, stride, padding, _ = _pool1d_geometry("avg_pool1d", input, kernel_size, stride, padding, 1, ceil_mode)
    return avg_pool2d(input.unsqueeze(-2), (1, kernel), (1, stride), (0, padding), ceil_mode,
                      count_include_pad).squeeze(-2)


def adaptive_avg_pool1d(input, output_size):
    """Means over the windows that split the last dim into output_size cells: adaptive_avg_pool2d
    over a unit height."""
    _check_rank_1d("adaptive_avg_pool1d", input)
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,)
    if len(sizes) != 1:
        raise RuntimeError(f"adaptive_avg_pool1d() argument 'output_size' should contain one int (got {len(sizes)})")
    if sizes[0] == 0:   # PyTorch returns an empty result (and an all-zero gradient)
        return _named(input[..., :0], "SqueezeBackward1")
    return adaptive_avg_pool2d(input.unsqueeze(-2), (1, sizes[0])).squeeze(-2)


def _standardized(input, dims, eps):
    """(x - mean) / sqrt(var + eps) over `dims`, with the biased variance."""
    centered = input - input.mean(dims, keepdim=True)
    return centered * fg.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)


def _per_channel(input, weight, bias, what):
    """input * weight + bias with weight and bias of one value per channel (dim 1)."""
    channels = input.shape[1]
    shape = (1, channels) + (1,) * (input.ndim - 2)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or t.shape[0] != channels):
            raise RuntimeError(f"Expected {name} to be a vector of size equal to the number of channels in input, "
                               f"but got {name} of shape {list(t.shape)} and input of shape {list(input.shape)}"
                               if what == "group_norm" else
                               f"{what}: expected {name} of shape [{channels}], got {list(t.shape)}")
    if weight is not None:
        input = input * weight.reshape(shape)
    if bias is not None:
        input = input + bias.reshape(shape)
    return input


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05):
    """Normalise (N, C, ...) over each group of C / num_groups channels and the other dims, then
    scale and shift per channel."""
    if input.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.ndim}")
    n, channels = input.shape[:2]
    size = [n * channels // num_groups, num_groups] + list(input.shape[2:])
    if math.prod(size[:1] + size[2:]) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
    if channels % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input of "
                           f"shape {list(input.shape)} and num_groups={num_groups}")
    per_group = channels // num_groups * math.prod(input.shape[2:])
    grouped = _standardized(input.reshape(n, num_groups, per_group), -1, eps).reshape(tuple(input.shape))
    return _named(_per_channel(grouped, weight, bias, "group_norm"), "NativeGroupNormBackward0")


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-05):
    """Normalise each channel of each sample of (N, C, ...) over its other dims. With running
    statistics and use_input_stats, they move towards the samples' mean statistics (unbiased
    variance), as PyTorch updates them; without use_input_stats, they normalise instead."""
    shape = tuple(input.shape)
    if use_input_stats and math.prod(shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.shape}")
    if input.ndim < 2:
        raise RuntimeError(f"instance_norm: expected an input of at least 2 dimensions (N, C, ...), got shape "
                           f"{list(shape)}")
    n, channels = shape[:2]
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is not None and stat.numel() * n != n * channels:
            raise RuntimeError(f"{name} should contain {n * channels} elements not {stat.numel() * n}")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
        scale = fg.rsqrt(running_var + eps).reshape((1, channels) + (1,) * (input.ndim - 2))
        out = (input - running_mean.reshape(scale.shape)) * scale
        return _named(_per_channel(out, weight, bias, "instance_norm"), "ViewBackward0")
    dims = tuple(range(2, input.ndim))
    if running_mean is not None or running_var is not None:
        count = math.prod(shape[2:])
        with fg.no_grad():
            mean = input.mean(dims)
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.mean(0) * momentum)
            if running_var is not None:
                centered = input - mean.reshape(shape[:2] + (1,) * len(dims))
                unbiased = (centered * centered).sum(dims) / (count - 1)
                running_var.mul_(1 - momentum).add_(unbiased.mean(0) * momentum)
    return _named(_per_channel(_standardized(input, dims, eps), weight, bias, "instance_norm"), "ViewBackward0")


def _float_mask(mask, dtype, name):
    """A boolean mask that marks the positions to leave out (True) as an additive float mask (-inf
    there, 0 elsewhere); float masks are returned as they are."""
    if mask is None or mask.is_floating_point():
        return mask
    if mask.dtype is not fg.bool:
        raise AssertionError(f"only bool and floating types of {name} are supported")
    return fg.zeros(tuple(mask.shape), dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def _attention_weights(scores):
    """softmax over the last dim, with rows that are all -inf (every key masked) giving zero
    weights and zero gradients, as PyTorch's attention (its math path's _safe_softmax)."""
    masked_out = fg.all(scores == float("-inf"), dim=-1, keepdim=True)
    weights = fg.softmax(fg.where(masked_out, 0.0, scores), -1)
    return fg.where(masked_out, 0.0, weights)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """softmax(query @ key^T * scale + mask) @ value over the last two dims (L, E), (S, E), (S, Ev),
    the leading dims broadcast. A boolean attn_mask marks the positions that take part, a float
    one is added; is_causal masks the positions above the diagonal of the L x S grid. Rows that
    attend to nothing give zeros. With enable_gqa, key and value heads (dim -3) are shared by
    groups of query heads."""
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise RuntimeError(f"Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: "
                           f"{query.ndim} key.dim: {key.ndim} and value.dim: {value.ndim} instead.")
    if not query.dtype is key.dtype is value.dtype:
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{query.dtype.scalar_name.lower()} key.dtype: {key.dtype.scalar_name.lower()} and "
                           f"value.dtype: {value.dtype.scalar_name.lower()} instead.")
    if attn_mask is not None and attn_mask.dtype is not fg.bool and attn_mask.dtype is not query.dtype:
        raise RuntimeError(f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                           f"attn_mask.dtype: {attn_mask.dtype.scalar_name.lower()} and  query.dtype: "
                           f"{query.dtype.scalar_name.lower()} instead.")
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    if key.shape[-1] != query.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: expected query (..., L, E), key (..., S, E) and value "
                           f"(..., S, Ev), got shapes {list(query.shape)}, {list(key.shape)} and "
                           f"{list(value.shape)}")
    if enable_gqa and query.ndim >= 3 and key.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        heads, shared = query.shape[-3], key.shape[-3]
        if heads % shared or value.shape[-3] != shared:
            raise RuntimeError(f"scaled_dot_product_attention: with enable_gqa, the number of query heads ({heads}) "
                               f"must be a multiple of the number of key and value heads ({shared}, "
                               f"{value.shape[-3]})")
        key, value = (t.unsqueeze(-3).expand(*t.shape[:-2], heads // shared, *t.shape[-2:])
                      .reshape(*t.shape[:-3], heads, *t.shape[-2:]) for t in (key, value))
    length, source = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = fg.matmul(query * scale, key.transpose(-2, -1))
    if is_causal:
        attn_mask = Tensor._make(np.tril(np.ones((length, source), bool)), query._device)
    if attn_mask is not None:   # a boolean mask as an additive one, as PyTorch: NaN scores stay NaN where masked
        scores = scores + (fg.where(attn_mask, 0.0, float("-inf")).to(scores.dtype) if attn_mask.dtype is fg.bool
                           else attn_mask)
    weights = _attention_weights(scores)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    out = fg.matmul(weights, value)
    return _named(out, "MmBackward0" if out.ndim == 2 else "UnsafeViewBackward0")


def _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads):
    """Whether the inputs are batched (3-D), after PyTorch's rank checks."""
    if query.ndim not in (2, 3):
        raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D query "
                             f"tensor")
    rank = query.ndim
    kind = "batched (3-D)" if rank == 3 else "unbatched (2-D)"
    if key.ndim != rank or value.ndim != rank:
        raise AssertionError(f"For {kind} `query`, expected `key` and `value` to be {rank}-D but found {key.ndim}-D "
                             f"and {value.ndim}-D tensors respectively")
    if key_padding_mask is not None and key_padding_mask.ndim != rank - 1:
        raise AssertionError(f"For {kind} `query`, expected `key_padding_mask` to be `None` or {rank - 1}-D but "
                             f"found {key_padding_mask.ndim}-D tensor instead")
    if attn_mask is not None and attn_mask.ndim not in (2, 3):
        raise AssertionError(f"For {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                             f"{attn_mask.ndim}-D tensor instead")
    expected = (num_heads, query.shape[0], key.shape[0])
    if rank == 2 and attn_mask is not None and attn_mask.ndim == 3 and tuple(attn_mask.shape) != expected:
        raise AssertionError(f"Expected `attn_mask` shape to be {expected} but got {attn_mask.shape}")
    return rank == 3


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    """Multi-head attention of query (L, N, E) over key (S, N, Ek) and value (S, N, Ev) (or
    unbatched (L, E), (S, Ek), (S, Ev)), PyTorch's computation step for step: (output (L, N, E),
    attention weights (N, L, S), averaged over the heads unless average_attn_weights=False, or
    None without need_weights). Boolean masks mark the positions to leave out (True), float masks
    are added to the scores."""
    batched = _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    key_padding_mask = _float_mask(key_padding_mask, query.dtype, "key_padding_mask")
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                           "method `generate_square_subsequent_mask` to create this mask.")
    attn_mask = _float_mask(attn_mask, query.dtype, "attn_mask")   # is_causal is a hint: the mask is used
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if tuple(key.shape[:2]) != tuple(value.shape[:2]):
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
        biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
        q, k, v = (linear(x, w, b) for x, w, b in zip((query, key, value),
                                                       (q_proj_weight, k_proj_weight, v_proj_weight), biases))
    else:
        if tuple(key.shape) != tuple(value.shape):
            raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")
        weights = in_proj_weight.chunk(3)
        biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
        q, k, v = (linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
    src_len = key.shape[0]
    if attn_mask is not None:
        if attn_mask.ndim == 2:
            if tuple(attn_mask.shape) != (tgt_len, src_len):
                raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be "
                                   f"{(tgt_len, src_len)}.")
            attn_mask = attn_mask.unsqueeze(0)
        elif tuple(attn_mask.shape) != (bsz * num_heads, tgt_len, src_len):
            raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                               f"{(bsz * num_heads, tgt_len, src_len)}.")

    def one_more_key(mask):   # a zero (attend) column for an appended key
        if mask is None:
            return None
        return fg.cat([mask, fg.zeros(*mask.shape[:-1], 1, dtype=mask.dtype, device=mask.device)], -1)

    if (bias_k is None) != (bias_v is None):
        raise AssertionError(f"{'bias_k' if bias_v is None else 'bias_v'} is set but "
                             f"{'bias_v' if bias_v is None else 'bias_k'} is None")
    if bias_k is not None:
        if static_k is not None or static_v is not None:
            raise AssertionError(f"bias cannot be added to static {'key' if static_k is not None else 'value'}.")
        k = fg.cat([k, bias_k.expand(1, bsz, embed_dim)])
        v = fg.cat([v, bias_v.expand(1, bsz, embed_dim)])
        attn_mask, key_padding_mask = one_more_key(attn_mask), one_more_key(key_padding_mask)
    q = q.reshape(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    heads = []
    for name, given, projected in (("static_k", static_k, k), ("static_v", static_v, v)):
        if given is None:
            heads.append(projected.reshape(projected.shape[0], bsz * num_heads, head_dim).transpose(0, 1))
            continue
        if given.shape[0] != bsz * num_heads or given.shape[2] != head_dim:
            raise AssertionError(f"expecting {name} of shape {[bsz * num_heads, '*', head_dim]}, but got "
                                 f"{list(given.shape)}")
        heads.append(given)
    k, v = heads
    if add_zero_attn:
        k = fg.cat([k, fg.zeros(bsz * num_heads, 1, head_dim, dtype=k.dtype, device=k.device)], 1)
        v = fg.cat([v, fg.zeros(bsz * num_heads, 1, head_dim, dtype=v.dtype, device=v.device)], 1)
        attn_mask, key_padding_mask = one_more_key(attn_mask), one_more_key(key_padding_mask)
    src_len = k.shape[1]
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (bsz, src_len):
            raise AssertionError(f"Expected key_padded_mask of shape {[bsz, src_len]}, but got "
                                 f"{list(key_padding_mask.shape)}")
        per_head = key_padding_mask.reshape(bsz, 1, 1, src_len).expand(bsz, num_heads, 1, src_len)
        per_head = per_head.reshape(bsz * num_heads, 1, src_len)
        attn_mask = per_head if attn_mask is None else attn_mask + per_head
    if not training:
        dropout_p = 0.0
    if need_weights:   # as PyTorch: a plain softmax, so a row with every key masked gives NaN
        scores = fg.matmul(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))
        weights = fg.softmax(scores if attn_mask is None else scores + attn_mask, -1)
        if dropout_p > 0.0:
            weights = dropout(weights, dropout_p)
        out = fg.matmul(weights, v)
    else:
        if attn_mask is not None:
            attn_mask = attn_mask.reshape(bsz, num_heads, -1, src_len) if attn_mask.shape[0] != 1 else \
                attn_mask.unsqueeze(0)
        out = scaled_dot_product_attention(q.reshape(bsz, num_heads, tgt_len, head_dim),
                                           k.reshape(bsz, num_heads, src_len, head_dim),
                                           v.reshape(bsz, num_heads, src_len, head_dim), attn_mask, dropout_p)
        out = out.permute(2, 0, 1, 3)
        weights = None
    out = out.transpose(0, 1) if need_weights else out
    out = linear(out.reshape(tgt_len * bsz, embed_dim), out_proj_weight, out_proj_bias)
    out = _named(out.reshape(tgt_len, bsz, embed_dim), "ViewBackward0")
    if weights is not None:
        weights = weights.reshape(bsz, num_heads, tgt_len, src_len)
        weights = _named(weights.mean(1), "MeanBackward1") if average_attn_weights else \
            _named(weights, "ViewBackward0")
    if not batched:
        out = out.squeeze(1)
        weights = None if weights is None else weights.squeeze(0)
    return out, weights


def _spatial_mismatch(what, spatial, given, form, letter):
    return ValueError(f"Input and {what} must have the same number of spatial dimensions, but got input with spatial "
                      f"dimensions of {spatial} and {given}. Please provide input tensor in (N, C, d1, d2, ...,dK) "
                      f"format and {form} in ({letter}1, {letter}2, ...,{letter}K) format.")


def _output_sizes(input, size, scale_factor, recompute_scale_factor):
    """(output sizes, scale factors given for the kernel or None) of interpolate, after PyTorch's
    checks of size and scale_factor."""
    dims = input.ndim - 2
    spatial = list(input.shape[2:])
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        if isinstance(size, (list, tuple)):
            if len(size) != dims:
                raise _spatial_mismatch("output", spatial, f"output size of {size}", "output size", "o")
            if not all(isinstance(s, int) for s in size):
                raise TypeError(f"expected size to be one of int or Tuple[int] or Tuple[int, int] or "
                                f"Tuple[int, int, int], but got size with types {[type(s) for s in size]}")
            return list(size), None
        return [size] * dims, None
    if scale_factor is None:
        raise ValueError("either size or scale_factor should be defined")
    if isinstance(scale_factor, (list, tuple)):
        if len(scale_factor) != dims:
            raise _spatial_mismatch("scale_factor", spatial, f"scale_factor of shape {scale_factor}", "scale_factor",
                                    "s")
        scales = [float(s) for s in scale_factor]
    else:
        scales = [float(scale_factor)] * dims
    sizes = [int(math.floor(n * s)) for n, s in zip(spatial, scales)]
    return sizes, (None if recompute_scale_factor else scales)


def _nearest_sources(size, out, scale, exact):
    """The input cell each of `out` output cells copies along an axis of `size` cells, computed in
    float32 as PyTorch's kernels compute it (nearest: floor(i * s); nearest-exact: floor((i + 0.5) * s);
    s = 1 / scale_factor when one is given, size / out otherwise)."""
    cells = np.arange(out)
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(size) / np.float32(out)
    if exact:
        positions = np.floor(((cells + 0.5) * np.float64(s)).astype(np.float32))
    else:
        positions = np.floor(cells.astype(np.float32) * s)
    return np.minimum(positions.astype(np.int64), size - 1)


def _upsample_nearest(input, sizes, scales, exact):
    """Each spatial axis gathered at its source cells: a broadcast of each cell when every cell is
    repeated the same number of times (the common integer scale factors), an index otherwise."""
    out = input
    for axis, (size, n) in enumerate(zip(input.shape[2:], sizes), start=2):
        sources = _nearest_sources(size, n, None if scales is None else scales[axis - 2], exact)
        if n == size and (sources == np.arange(size)).all():
            continue
        shape = tuple(out.shape)
        if n % size == 0 and (sources == np.arange(n) // (n // size)).all():
            repeated = out.unsqueeze(axis + 1).expand(*shape[:axis + 1], n // size, *shape[axis + 1:])
            out = repeated.reshape(*shape[:axis], n, *shape[axis + 1:])
        else:
            out = out.index_select(axis, Tensor._make(sources, input._device))
    return out


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resampling of the spatial dims of (N, C, d1, ...) to `size` or by `scale_factor`: modes
    "nearest" and "nearest-exact" (cells copied, as PyTorch picks them) and "area" (adaptive average
    pooling); the interpolating modes are not implemented."""
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise ValueError("align_corners option can only be set with the interpolating modes: linear | bilinear "
                             "| bicubic | trilinear")
    elif mode in ("linear", "bilinear", "bicubic", "trilinear"):
        raise NotImplementedError(f"interpolate: mode={mode!r} is not implemented in fusegrad; the modes are "
                                  f"'nearest', 'nearest-exact' and 'area'")
    sizes, scales = _output_sizes(input, size, scale_factor, recompute_scale_factor)
    if antialias:
        raise ValueError("Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires a 4-D "
                         "tensor as input")
    if input.ndim not in (3, 4, 5) or mode not in ("nearest", "area", "nearest-exact"):
        raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.ndim}D) for "
                                  f"the modes: nearest | linear | bilinear | bicubic | trilinear | area | "
                                  f"nearest-exact (got {mode})")
    if mode == "area":
        if input.ndim == 5:
            raise NotImplementedError("interpolate: mode='area' of a 5-D input (adaptive_avg_pool3d) is not "
                                      "implemented in fusegrad")
        return (adaptive_avg_pool1d if input.ndim == 3 else adaptive_avg_pool2d)(input, sizes)
    if min(sizes) <= 0 or min(input.shape[2:]) <= 0:
        def named(values):
            return ", ".join(f"{axis}: {v}" for axis, v in zip("DHW"[3 - len(values):], values))
        raise RuntimeError(f"Input and output sizes should be greater than 0, but got input ({named(input.shape[2:])}) "
                           f"and output ({named(sizes)})")
    out = _upsample_nearest(input, sizes, scales, mode == "nearest-exact")
    if out is input:
        out = out.clone()   # a new tensor, as PyTorch's kernel returns
    name = f"UpsampleNearest{input.ndim - 2}DBackward0" if mode == "nearest" else \
        f"UpsampleNearestExact{input.ndim - 2}DBackward0"
    return _named(out, name)


def _pixel_dims(op, input, factor, what):
    """(batch dims, C, H, W) of a pixel_shuffle/unshuffle input, after PyTorch's checks."""
    if input.ndim < 3:
        raise RuntimeError(f"{op} expects input to have at least 3 dimensions, but got input with {input.ndim} "
                           f"dimension(s)")
    if factor <= 0:
        raise RuntimeError(f"{op} expects a positive {what}, but got {factor}")
    return tuple(input.shape[:-3]), *input.shape[-3:]


def pixel_shuffle(input, upscale_factor):
    """(*, C r^2, H, W) -> (*, C, H r, W r): each r x r block of the output from r^2 channels."""
    r = upscale_factor
    batch, c, h, w = _pixel_dims("pixel_shuffle", input, r, "upscale_factor")
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of "
                           f"upscale_factor, but input.size(-3)={c} is not divisible by {r * r}")
    nb = len(batch)
    out = input.reshape(*batch, c // (r * r), r, r, h, w).permute(*range(nb), nb, nb + 3, nb + 1, nb + 4, nb + 2)
    return _named(out.reshape(*batch, c // (r * r), h * r, w * r), "PixelShuffleBackward0")


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H r, W r) -> (*, C r^2, H, W), the inverse of pixel_shuffle."""
    r = downscale_factor
    batch, c, h, w = _pixel_dims("pixel_unshuffle", input, r, "downscale_factor")
    if h % r or w % r:
        raise RuntimeError(f"pixel_unshuffle expects {'height' if h % r else 'width'} to be divisible by "
                           f"downscale_factor, but input.size({-2 if h % r else -1})={h if h % r else w} is not "
                           f"divisible by {r}")
    nb = len(batch)
    out = input.reshape(*batch, c, h // r, r, w // r, r).permute(*range(nb), nb, nb + 2, nb + 4, nb + 1, nb + 3)
    return _named(out.reshape(*batch, c * r * r, h // r, w // r), "PixelUnshuffleBackward0")
