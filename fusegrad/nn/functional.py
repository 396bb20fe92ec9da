"""nn.functional: activations and losses written as composites of fusegrad ops."""
import math
import warnings

import fusegrad as fg

from ..tracer.functions import _named


def relu(input, inplace=False):
    return input.relu_() if inplace else fg.relu(input)


def sigmoid(input):
    return fg.sigmoid(input)


def tanh(input):
    return fg.tanh(input)


def softmax(input, dim=None, dtype=None):
    return fg.softmax(input, dim, dtype)


def log_softmax(input, dim=None, dtype=None):
    return fg.log_softmax(input, dim, dtype)


def gelu(input, approximate="none"):
    if approximate == "tanh":
        inner = (input + 0.044715 * input ** 3) * math.sqrt(2 / math.pi)
        return _named(0.5 * input * (1 + fg.tanh(inner)), "GeluBackward0")
    # erf is not a primitive yet: the tanh form is within 1e-3 of the exact GELU.
    return gelu(input, "tanh")


def silu(input):
    return _named(input * fg.sigmoid(input), "SiluBackward0")


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return _named(fg.where(input > 0, input, input * negative_slope), "LeakyReluBackward0")


def linear(input, weight, bias=None):
    """input @ weight.T + bias, with PyTorch's grad_fn names (AddmmBackward0 for 2-D inputs)."""
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
        return input * 0.0
    keep = fg.rand_like(input) >= p
    return _named(input * keep.to(input.dtype) * (1.0 / (1.0 - p)), "MulBackward0")


def _reduce(loss, reduction, name):
    if reduction == "mean":
        out = loss.mean()
    elif reduction == "sum":
        out = loss.sum()
    elif reduction == "none":
        out = loss
    else:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return _named(out, name)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size "
                      f"({input.shape}). This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size.", UserWarning, stacklevel=2)
    diff = input - target
    return _reduce(diff * diff, reduction, "MseLossBackward0")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    return _reduce(fg.abs(input - target), reduction, "L1LossBackward0")


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
    if target.dtype.name not in ("int64", "int32"):
        raise RuntimeError(f"nll_loss: expected target of dtype int64 (class indices), got {target.dtype}")
    out_shape = tuple(target.shape)
    if input.ndim >= 2 and input.shape[0] != (target.shape[0] if target.ndim else 1):
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                         f"({target.shape[0] if target.ndim else 1}).")
    scores, labels = _class_last(input, target)
    classes = scores.shape[1]
    labels_np = labels.numpy()
    valid_np = labels_np != ignore_index
    bad = labels_np[valid_np & ((labels_np < 0) | (labels_np >= classes))]
    if bad.size:
        raise IndexError(f"Target {int(bad[0])} is out of bounds.")
    valid = fg.from_numpy(valid_np)
    safe = fg.where(valid, labels, 0)
    picked = -fg.gather(scores, 1, safe.unsqueeze(1)).squeeze(1)
    w = valid.to(scores.dtype)
    if weight is not None:
        w = w * weight[safe]
    loss = picked * w
    if reduction == "mean":
        return _named(loss.sum() / w.sum(), "NllLossBackward0")
    if reduction == "none":
        return _named(loss.reshape(out_shape), "NllLossBackward0")
    return _reduce(loss, reduction, "NllLossBackward0")


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """log_softmax over dim 1 (dim 0 for unbatched input) followed by nll_loss; `target` holds class
    indices or, as floats of the input's shape, class probabilities."""
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
        return _reduce(-terms.sum(class_dim), reduction, "NegBackward0")
    loss = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing:
        classes = input.shape[class_dim]
        scores, labels = _class_last(logp, target)
        valid = (labels != ignore_index).to(scores.dtype)
        per = -scores.sum(1) * valid if weight is None else -(scores * weight).sum(1) * valid
        if reduction == "mean":
            smooth = per.sum() / (valid.sum() if weight is None else (weight[fg.where(labels != ignore_index,
                                                                                        labels, 0)] * valid).sum())
        elif reduction == "sum":
            smooth = per.sum()
        else:
            smooth = per.reshape(tuple(target.shape))
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
    return loss


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    logs = fg.clamp(fg.log(input), min=-100) * target + fg.clamp(fg.log(1 - input), min=-100) * (1 - target)
    loss = -logs if weight is None else -logs * weight
    return _reduce(loss, reduction, "BinaryCrossEntropyBackward0")


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    # log(1 + exp(-|x|)) + max(x, 0) - x * t: stable for large |x|
    softplus = fg.log1p(fg.exp(-fg.abs(input))) + fg.relu(input)
    if pos_weight is None:
        loss = softplus - input * target
    else:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * (softplus - input)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "BinaryCrossEntropyWithLogitsBackward0")
