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
    dims = tuple(range(input.ndim - len(shape), input.ndim))
    centered = input - input.mean(dims, keepdim=True)
    out = centered * fg.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)
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
