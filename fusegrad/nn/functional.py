"""nn.functional: activations, losses, normalisation and embeddings written as composites of
fusegrad ops; convolution and pooling come from the tracer's spatial ops."""
import math
import warnings

import numpy as np

import fusegrad as fg

from ..ir import OPS
from ..tracer.dispatch import apply
from ..tracer.functions import _binary_cross_entropy, _named, _reads_data
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


def _reduce(loss, reduction, name=None):
    """Apply `reduction`; name the result's grad_fn when PyTorch's is a fused kernel (None keeps
    MeanBackward0 / SumBackward0 / the elementwise op's own name)."""
    if reduction == "mean":
        out = loss.mean()
    elif reduction == "sum":
        out = loss.sum()
    elif reduction == "none":
        out = loss
    else:
        raise ValueError(f"{reduction} is not a valid value for reduction")
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
    # (1 - t) x + softplus(-x), softplus(-x) = log(1 + exp(-|x|)) + max(-x, 0): no overflow for large
    # |x|. |x| and max(-x, 0) are written with one mask so that their slopes at x = 0 (1 and 0) add
    # up to softplus's own there: the gradient is sigmoid(x) - t everywhere.
    positive = input >= 0
    softplus_neg = fg.log1p(fg.exp(-fg.where(positive, input, -input))) + fg.where(positive, 0.0, -input)
    if pos_weight is not None:
        softplus_neg = (1 + (pos_weight - 1) * target) * softplus_neg
    loss = (1 - target) * input + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "BinaryCrossEntropyWithLogitsBackward0")


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
