"""Convolution and pooling over image planes (N, C, H, W), with PyTorch's argument forms (ints or
pairs, padding "same"/"valid", ceil_mode, unbatched (C, H, W) inputs): conv2d and max_pool2d run
their ops; avg_pool2d and adaptive_avg_pool2d are composites (a depthwise convolution, window sums)."""

import numpy as np

from ..ir import OPS, ShapeError
from ..ir.ops import conv_windows
from .dispatch import apply, promote_operands
from .functions import _named, add, cat, div, mean, reshape, squeeze, sum as total, unsqueeze
from .tensor import Tensor


def pair(name, value):
    """An int or a sequence of one or two ints, as a pair of ints."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return values


def _batched(name, input):
    """(input as 4-D, whether it was unbatched 3-D)."""
    if input.ndim == 4:
        return input, False
    if input.ndim == 3:
        return unsqueeze(input, 0), True
    raise RuntimeError(f"Expected 3D (unbatched) or 4D (batched) input to {name}, but got input of size: "
                       f"{list(input.shape)}")


def _positive(name, values):
    if min(values) <= 0:
        raise RuntimeError(f"non-positive {name} is not supported")
    return values


def conv_padding(padding, kernel, stride, dilation):
    """((top, bottom), (left, right)) from an int, a pair, "valid" or "same" (PyTorch puts the odd
    pixel of "same" padding at the bottom/right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: {padding!r}")
        if stride != (1, 1):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    pads = pair("padding", padding)
    if min(pads) < 0:
        raise RuntimeError("negative padding is not supported")
    return tuple((p, p) for p in pads)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of input (N, C, H, W) or (C, H, W) with weight (Cout, C/groups, kH, kW)."""
    x, unbatched = _batched("conv2d", input)
    stride = _positive("stride", pair("stride", stride))
    dilation = _positive("dilation", pair("dilation", dilation))
    if not isinstance(groups, int) or groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if weight.ndim != 4:
        raise RuntimeError(f"conv2d: expected a 4-D weight (Cout, C/groups, kH, kW), got shape {list(weight.shape)}")
    if bias is not None and tuple(bias.shape) != tuple(weight.shape[:1]):   # a (1,) or (C, 1) bias would broadcast
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                           f"{weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead")
    pads = conv_padding(padding, tuple(weight.shape[2:]), stride, dilation)
    x, weight = promote_operands("conv2d", (x, weight))
    out = _checked_apply("conv2d", (x, weight),
                         {"stride": stride, "padding": pads, "dilation": dilation, "groups": groups})
    if bias is not None:
        out = _named(add(out, reshape(bias, (1, -1, 1, 1))), "ConvolutionBackward0")
    return squeeze(out, 0) if unbatched else out   # SqueezeBackward1 then, as in PyTorch


def _checked_apply(name, inputs, attrs):
    """apply() after the op's shape rule: strided windows would silently give empty results where
    PyTorch raises (a kernel larger than the padded input, too few channels)."""
    op = OPS[name]
    op.infer([tuple(x.shape) for x in inputs], [x.dtype for x in inputs], attrs)
    return apply(op, inputs, attrs)


def pool_geometry(input, kernel_size, stride, padding, dilation, ceil_mode):
    """(kernel, stride, ((top, bottom), (left, right)), dilation) of a pooling window, with ceil_mode's
    last, partial window made by extra bottom/right padding (one that starts in the input or the
    top/left padding only, as PyTorch counts them). PyTorch's errors for an input with an empty
    dimension other than the batch, and for windows that leave no output."""
    if 0 in tuple(input.shape[-3:]):
        raise RuntimeError(f"Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but "
                           f"got:{list(input.shape)}")
    kernel = _positive("kernel_size", pair("kernel_size", kernel_size))
    stride = kernel if stride is None or stride == [] or stride == () else _positive("stride", pair("stride", stride))
    pads = pair("padding", padding)
    dilation = _positive("dilation", pair("dilation", dilation))
    for p, k, d in zip(pads, kernel, dilation):
        if p < 0 or 2 * p > d * (k - 1) + 1:
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={p}, "
                               f"kernel_size={k} and dilation={d}")
    padding, sizes = [], []
    for size, p, k, s, d in zip(input.shape[-2:], pads, kernel, stride, dilation):
        span = size + 2 * p - d * (k - 1) - 1
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        padding.append((p, max(p, (out - 1) * s + d * (k - 1) + 1 - size - p)))
        sizes.append(out)
    if min(sizes) < 1:
        c, h, w = input.shape[-3:]
        raise ShapeError(f"Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{sizes[0]}x{sizes[1]}). "
                         "Output size is too small")
    return kernel, stride, tuple(padding), dilation


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Window maxima; with return_indices, also their flat positions in each (H, W) plane, as
    PyTorch returns them. The gradient goes to the cell of each window that the index names: its
    first maximal cell, or its last NaN."""
    x, unbatched = _batched("max_pool2d", input)
    kernel, stride, padding, dilation = pool_geometry(input, kernel_size, stride, padding, dilation, ceil_mode)
    attrs = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation}
    out = _checked_apply("max_pool2d", (x,), attrs)
    if unbatched:
        out = _named(squeeze(out, 0), "MaxPool2DWithIndicesBackward0")
    if not return_indices:
        return out
    indices = apply(OPS["max_pool2d_indices"], (x,), attrs)
    return out, (squeeze(indices, 0) if unbatched else indices)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Window means, as a depthwise convolution with a kernel of ones (so its gradient is the
    convolution's) divided by each window's count: with count_include_pad the padding counts, but
    not the extra bottom/right cells a ceil_mode window reaches past it, as in PyTorch."""
    x, unbatched = _batched("avg_pool2d", input)
    kernel, stride, padding, dilation = pool_geometry(input, kernel_size, stride, padding, 1, ceil_mode)
    channels = x.shape[1]
    ones = Tensor._make(np.ones((channels, 1) + kernel, x.dtype.np), x._device)
    sums = apply(OPS["conv2d"], (x, ones),
                 {"stride": stride, "padding": padding, "dilation": dilation, "groups": channels})
    if divisor_override is not None:
        out = div(sums, divisor_override)
    else:
        (top, bottom), (left, right) = padding
        h, w = x.shape[2:]
        counted = np.zeros((1, 1, top + h + bottom, left + w + right), x.dtype.np)
        if count_include_pad:
            counted[..., :h + 2 * top, :w + 2 * left] = 1
        else:
            counted[..., top:top + h, left:left + w] = 1
        counts = conv_windows(counted, kernel, stride, ((0, 0), (0, 0)), dilation).sum((-2, -1))
        out = div(sums, Tensor._make(np.ascontiguousarray(counts[0, 0]), x._device))
    return _named(squeeze(out, 0) if unbatched else out, "AvgPool2DBackward0")


def _adaptive_sums(x, axis, out_size):
    """Sums of x over the windows that split `axis` into out_size cells (cells floor(i * size / out)
    .. ceil((i + 1) * size / out) - 1), and each window's count. Windows of equal size are a reshape;
    others gather their cells, each padded to the longest with a zero cell appended to the axis, so
    no cell is ever multiplied (0 * inf would spoil windows without the inf)."""
    size = x.shape[axis]
    if size % out_size == 0:
        split = x.shape[:axis] + (out_size, size // out_size) + x.shape[axis + 1:]
        return total(reshape(x, split), axis + 1), np.full(out_size, size // out_size)
    starts = np.arange(out_size) * size // out_size
    counts = -(-(np.arange(1, out_size + 1) * size) // out_size) - starts
    cells = starts[:, None] + np.arange(counts.max())
    cells[cells >= (starts + counts)[:, None]] = size
    zero = Tensor._make(np.zeros(x.shape[:axis] + (1,) + x.shape[axis + 1:], x.dtype.np), x._device)
    gathered = cat([x, zero], axis)[(slice(None),) * axis + (Tensor._make(cells.ravel(), x._device),)]
    windows = x.shape[:axis] + (out_size, cells.shape[1]) + x.shape[axis + 1:]
    return total(reshape(gathered, windows), axis + 1), counts


def adaptive_avg_pool2d(input, output_size):
    """Means over the windows that split each plane into output_size cells: sums over the windows
    of the rows, then of the columns, divided by the windows' sizes (a mean over the plane for
    1 x 1, as PyTorch computes it)."""
    x, unbatched = _batched("adaptive_avg_pool2d", input)
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    h, w = x.shape[2:]
    out_h, out_w = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
    if min(out_h, out_w) <= 0:
        raise RuntimeError(f"adaptive_avg_pool2d: elements of output_size must be greater than or equal to 1 "
                           f"but received {{{out_h}, {out_w}}}")
    if (out_h, out_w) == (1, 1):
        return mean(input, (-2, -1), keepdim=True)
    sums, rows = _adaptive_sums(x, 2, out_h)
    sums, cols = _adaptive_sums(sums, 3, out_w)
    out = div(sums, Tensor._make(np.outer(rows, cols).astype(x.dtype.np), x._device))
    return _named(squeeze(out, 0) if unbatched else out, "AdaptiveAvgPool2DBackward0")


__all__ = ["conv2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d"]
