"""Tensor manipulation: flip, roll, rot90, repeat, tile, repeat_interleave, diagonal, diag,
diag_embed, trace, take_along_dim, meshgrid and the Tensor.new_* factories.

Composites of recorded ops (index, cat, reshape, expand, gather, index_put), so gradients and the
compiler need nothing new; flip, and the diagonal of a layout no view of those ops reaches, are IR
ops of their own (ir/ops.py). Results take PyTorch's grad_fn names."""
import builtins
import operator
import warnings

import numpy as np

from ..ir import OPS
from . import factories
from .dispatch import apply
from .functions import (_named, _reads_data, cat, clone, expand, flatten, gather, index_select, matmul, narrow,
                        permute, reshape, sum, transpose, unsqueeze)
from .tensor import Tensor, _dim

_new = Tensor._make


def _int_list(values):
    """A tuple of ints from an int or a sequence of ints (PyTorch's `int[]` arguments)."""
    if isinstance(values, (tuple, list)):
        return tuple(operator.index(v) for v in values)
    return (operator.index(values),)


def _varargs(values):
    """x.flip(0, 1), x.flip((0, 1)) and x.flip([0, 1]) alike."""
    return _int_list(values[0]) if len(values) == 1 else _int_list(values)


def _distinct_dims(dims, ndim):
    axes = tuple(_dim(d, ndim) for d in dims)
    for i, d in enumerate(axes):
        if d in axes[:i]:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return axes


def _dim_of_tensor(dim, ndim):
    """A dim of a tensor that must have one: PyTorch's error for a 0-d tensor."""
    if ndim == 0:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    return _dim(dim, ndim)


def _own_memory(out, input):
    """`out`, or a copy where it still shares the input's memory: these functions return new
    tensors in PyTorch, never views a write would go through."""
    return clone(out) if np.may_share_memory(out._data, input._data) else out


# ----------------------------------------------------------------------------- flips and rotations


def flip(input, *dims):
    axes = _distinct_dims(_varargs(dims), input._data.ndim)
    return apply(OPS["flip"], (input,), {"axes": axes if input._data.ndim else ()})


def fliplr(input):
    if input._data.ndim < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return flip(input, 1)


def flipud(input):
    if input._data.ndim < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return flip(input, 0)


def roll(input, shifts, dims=None):
    shifts = _int_list(shifts)
    dims = () if dims is None else _int_list(dims)
    if not shifts:
        raise RuntimeError("`shifts` required")
    if len(shifts) != len(dims) and not (not dims and len(shifts) == 1):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}")
    if not dims:   # the flattened tensor, rolled, in its own shape
        return _named(reshape(roll(flatten(input), shifts, 0), input._data.shape), "RollBackward0")
    out = input
    for shift, dim in zip(shifts, dims):
        d = _dim_of_tensor(dim, input._data.ndim)
        n = input._data.shape[d]
        k = shift % n if n else 0
        if k:
            out = cat([narrow(out, d, n - k, k), narrow(out, d, 0, n - k)], d)
    return _named(out if out is not input else clone(input), "RollBackward0")


def rot90(input, k=1, dims=(0, 1)):
    dims, ndim = _int_list(dims), input._data.ndim
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    if ndim < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {ndim}")
    if dims[0] == dims[1] or abs(dims[0] - dims[1]) == ndim:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {dims[0]} and dim1 = {dims[1]}")
    d0, d1 = _dim(dims[0], ndim), _dim(dims[1], ndim)
    k %= 4
    if k == 1:
        out = transpose(flip(input, d1), d0, d1)
    elif k == 2:
        out = flip(input, d0, d1)
    elif k == 3:
        out = transpose(flip(input, d0), d0, d1)
    else:
        out = clone(input)
    return _named(out, "Rot90Backward0")


# ----------------------------------------------------------------------------- repetition


def repeat(input, *sizes):
    if not sizes:
        raise TypeError('repeat() missing 1 required positional arguments: "repeats"')
    sizes = _varargs(sizes)
    shape = input._data.shape
    if len(sizes) < len(shape):
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions of "
                           "tensor")
    shape = (1,) * (len(sizes) - len(shape)) + shape
    target = tuple(r * n for r, n in zip(sizes, shape))
    if any(t < 0 for t in target):
        bad = next(t for t in target if t < 0)
        raise RuntimeError(f"Trying to create tensor with negative dimension {bad}: {list(target)}")
    # each dimension n as (1, n), broadcast to (r, n), merged: the tensor repeated r times along it
    paired = tuple(v for n in shape for v in (1, n))
    spread = expand(reshape(input, paired), tuple(v for r, n in zip(sizes, shape) for v in (r, n)))
    return _named(_own_memory(reshape(spread, target), input), "RepeatBackward0")



def tile(input, *dims):
    dims = _varargs(dims)
    return repeat(input, (1,) * (input._data.ndim - len(dims)) + dims)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    if repeats is None:   # torch.repeat_interleave(repeats): each index i repeats[i] times
        return repeat_interleave(factories.arange(input._data.size, device=input._device), input)
    if isinstance(repeats, Tensor):
        return _repeat_by_tensor(input, repeats, dim, output_size)
    if isinstance(repeats, bool) or not isinstance(repeats, int):
        raise TypeError(f"repeat_interleave(): argument 'repeats' must be Tensor or int, not "
                        f"{type(repeats).__name__}")
    if repeats < 0:
        raise RuntimeError("Repeats must be non-negative")
    input, d = _flat_or_dim(input, dim)
    wide = unsqueeze(input, d + 1)
    shape = wide._data.shape
    spread = expand(wide, shape[:d + 1] + (repeats,) + shape[d + 2:])
    out = reshape(spread, shape[:d] + (shape[d] * repeats,) + shape[d + 2:])
    _check_output_size(out, d, output_size)
    return _named(_own_memory(out, input), "ViewBackward0")


def _repeat_by_tensor(input, repeats, dim, output_size):
    if repeats._data.ndim > 1:
        raise RuntimeError("repeats must be 0-dim or 1-dim tensor")
    if repeats._data.dtype.kind not in "iu":
        raise NotImplementedError(f'"repeat_interleave_cpu" not implemented for \'{repeats.dtype.scalar_name}\'')
    input, d = _flat_or_dim(input, dim)
    n = input._data.shape[d] if input._data.ndim else 1
    if repeats._data.size != 1 and repeats._data.shape[0] != n:
        raise RuntimeError(f"repeats must have the same size as input along dim, but got repeats.size(0) = "
                           f"{repeats._data.shape[0]} and input.size({d}) = {n}")
    _reads_data("repeat_interleave")   # the result's shape depends on the repeats' values
    counts = np.broadcast_to(repeats._data.reshape(-1), (n,))   # one count for all, or one each
    if (counts < 0).any():
        raise RuntimeError("repeats can not be negative")
    positions = _new(np.repeat(np.arange(n, dtype=np.int64), counts), input._device)
    out = index_select(input, d, positions)
    _check_output_size(out, d, output_size)
    return out


def _flat_or_dim(input, dim):
    """(input, dim) to repeat along: without a dim, the flattened input along its only one."""
    return (flatten(input), 0) if dim is None else (input, _dim(dim, input._data.ndim))


def _check_output_size(out, d, output_size):
    if output_size is not None and output_size != out._data.shape[d]:
        raise RuntimeError(f"repeat_interleave: output_size={output_size} does not match the result's size "
                           f"{out._data.shape[d]} along dimension {d}")


# ----------------------------------------------------------------------------- diagonals


def diagonal(input, offset=0, dim1=0, dim2=1):
    ndim = input._data.ndim
    d1, d2 = _dim(dim1, ndim), _dim(dim2, ndim)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    out = _diagonal_through_views(input, offset, d1, d2)
    if out is None:
        out = apply(OPS["diagonal"], (input,), {"offset": offset, "axis1": d1, "axis2": d2})
    return _named(out, "DiagonalBackward0")


def _diagonal_through_views(input, offset, d1, d2):
    """The diagonal as a view through reshape and a strided slice, which in-place writes go through
    with their gradients: the two dimensions, moved last, merged into one and read every
    (columns + 1) elements. None where the layout merges them in neither order."""
    shape = input._data.shape
    rest = tuple(a for a in range(len(shape)) if a not in (d1, d2))
    length = max(0, min(shape[d1] + min(offset, 0), shape[d2] - max(offset, 0)))
    for rows, cols, k in ((d1, d2, offset), (d2, d1, -offset)):   # the diagonal of the transpose: the same
        batch, merged = tuple(shape[a] for a in rest), (shape[rows] * shape[cols],)
        try:
            np.reshape(np.transpose(input._data, rest + (rows, cols)), batch + merged, copy=False)
        except ValueError:
            continue
        flat = reshape(permute(input, rest + (rows, cols)), batch + merged)
        start = max(-k, 0) * shape[cols] + max(k, 0)
        stop = start + (length - 1) * (shape[cols] + 1) + 1 if length else start
        return flat[(Ellipsis, slice(start, stop, shape[cols] + 1))]
    return None



_diagonal = diagonal   # diag's argument `diagonal` hides the function


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    ndim = input._data.ndim + 1
    d1, d2 = _dim(dim1, ndim), _dim(dim2, ndim)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    *batch, n = input._data.shape
    size = n + abs(offset)
    # the input written on the diagonal of the last two dimensions of zeros, which then move to d1, d2
    zeros = _new(np.zeros(tuple(batch) + (size, size), input._data.dtype), input._device)
    rows = _new(np.arange(n, dtype=np.int64) + max(-offset, 0), input._device)
    cols = _new(np.arange(n, dtype=np.int64) + max(offset, 0), input._device)
    out = apply(OPS["index_put"], (zeros, input, rows, cols), {"spec": (("e",), ("a",), ("a",))})
    order = list(range(ndim - 2))
    for d, axis in sorted(((d1, ndim - 2), (d2, ndim - 1))):
        order.insert(d, axis)
    return _named(permute(out, order), "DiagEmbedBackward0")


def diag(input, diagonal=0):
    ndim = input._data.ndim
    if ndim == 1:
        return diag_embed(input, diagonal, 0, 1)
    if ndim == 2:
        return _named(clone(_diagonal(input, diagonal)), "DiagonalBackward0_copy")
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {ndim}D")


def trace(input):
    if input._data.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input._data.ndim}")
    if input._data.dtype == np.bool_:
        raise NotImplementedError("\"trace\" not implemented for 'Bool'")
    return _named(sum(diagonal(input)), "TraceBackward0")


# ----------------------------------------------------------------------------- gathering and grids


def take_along_dim(input, indices, dim=None):
    if indices._data.dtype != np.int64:
        raise RuntimeError(f"torch.take_along_dim(): dtype of indices should be Long but got "
                           f"{indices.dtype.scalar_name}")
    if dim is None:
        return gather(flatten(input), 0, flatten(indices))
    ndim = input._data.ndim
    d = _dim(dim, ndim)
    if ndim != indices._data.ndim:
        raise RuntimeError(f"torch.take_along_dim(): input and indices should have the same number of dimensions, "
                           f"but got {ndim} dimensions for input, and {indices._data.ndim} dimensions for indices")
    if ndim == 0:
        raise IndexError(f"Dimension specified as {d} but tensor has no dimensions")
    # both broadcast to each other's shape, except along dim, where each keeps its own size
    shape, idx_shape = input._data.shape, indices._data.shape
    idx_target = _broadcast_shape(shape[:d] + (idx_shape[d],) + shape[d + 1:], idx_shape)
    target = _broadcast_shape(idx_shape[:d] + (shape[d],) + idx_shape[d + 1:], shape)
    return gather(expand(input, target), d, expand(indices, idx_target))


def _broadcast_shape(a, b):
    """np.broadcast_shapes with PyTorch's message."""
    for i, (m, n) in enumerate(zip(a, b)):
        if m != n and m != 1 and n != 1:
            raise RuntimeError(f"The size of tensor a ({m}) must match the size of tensor b ({n}) at non-singleton "
                               f"dimension {i}")
    return tuple(np.broadcast_shapes(a, b))


def meshgrid(*tensors, indexing=None):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise RuntimeError("meshgrid expects a non-empty TensorList")
    if indexing is None:
        warnings.warn("torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.",
                      UserWarning, stacklevel=2)
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f'torch.meshgrid: indexing must be one of "xy" or "ij", but received: {indexing}')
    for t in tensors:
        if t._data.ndim > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got: a tensor of "
                               f"shape {list(t._data.shape)}")
        if t._data.dtype != tensors[0]._data.dtype:
            raise RuntimeError("meshgrid expects all tensors to have the same dtype")
    swap = indexing == "xy" and len(tensors) > 1   # "xy": the first two dimensions exchanged
    order = [1, 0] + list(range(2, len(tensors))) if swap else list(range(len(tensors)))
    shape = tuple(tensors[i]._data.size for i in order)
    grids = []
    for t in tensors:
        at = order.index(len(grids))
        grids.append(expand(reshape(t, tuple(-1 if a == at else 1 for a in range(len(shape)))), shape))
    return tuple(grids)


# ----------------------------------------------------------------------------- Tensor.new_*


def _like_self(self, dtype, device):
    return dict(dtype=dtype or self.dtype, device=device or self._device)


def _new_filled(factory):
    """Tensor.new_zeros and friends: factory(*size) with self's dtype and device by default."""
    name = "new_" + factory.__name__

    def new(self, *size, dtype=None, device=None, requires_grad=False, layout=None, pin_memory=False):
        if not size:
            raise TypeError(f'{name}() missing 1 required positional arguments: "size"')
        return factory(*size, requires_grad=requires_grad, **_like_self(self, dtype, device))
    new.__name__ = name
    return new


new_zeros, new_ones, new_empty = (_new_filled(f) for f in (factories.zeros, factories.ones, factories.empty))


def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False, layout=None,
             pin_memory=False):
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"new_full(): argument 'size' (position 1) must be tuple of ints, not {type(size).__name__}")
    return factories.full(size, fill_value, requires_grad=requires_grad, **_like_self(self, dtype, device))


def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False, layout=None, pin_memory=False):
    if isinstance(data, Tensor):
        warnings.warn("To copy construct from a tensor, it is recommended to use sourceTensor.detach().clone() or "
                      "sourceTensor.detach().clone().requires_grad_(True), rather than "
                      "tensor.new_tensor(sourceTensor).", UserWarning, stacklevel=2)
    return factories.tensor(data, requires_grad=requires_grad, **_like_self(self, dtype, device))


# module functions (torch.flip, ...); Tensor methods are these and METHOD_ONLY
# ----------------------------------------------------------------------------- einsum
# Labels are tokens: a letter, or ("...", k) for the k-th dimension an ellipsis covers counted from
# the right, so that ellipses of different lengths line up as broadcasting does. Each operand first
# takes the diagonal of a repeated label and sums the labels no one else needs; operands are then
# contracted pairwise, left to right, each pair as one batched matmul (batch labels, the first's
# own labels, the labels summed, the second's own labels).


def _einsum_terms(equation, operands):
    """(input token lists, output token list) of an equation, after PyTorch's checks."""
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) < len(operands):
        raise RuntimeError("einsum(): more operands were provided than specified in the equation")
    if len(terms) > len(operands):
        raise RuntimeError("einsum(): fewer operands were provided than specified in the equation")
    offset = 0

    def tokens(term, covered):
        nonlocal offset
        for k, c in enumerate(term):
            if c != "." and not ("a" <= c <= "z" or "A" <= c <= "Z"):
                raise RuntimeError(f"einsum(): invalid subscript given at index {offset + k} in the equation "
                                   "string, subscripts must be in [a-zA-Z]")
        offset += len(term) + 1
        head, dots, tail = term.partition("...")
        return list(head) + [("...", k) for k in range(covered, 0, -1)] * bool(dots) + list(tail)

    lists = []
    for i, (term, x) in enumerate(zip(terms, operands)):
        letters = len(term.replace("...", ""))
        if "..." not in term and letters != x.ndim:
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({letters}) does not match "
                               f"the number of dimensions ({x.ndim}) for operand {i} and no ellipsis was given")
        if letters > x.ndim:
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({letters}) is more than the "
                               f"number of dimensions ({x.ndim}) for operand {i}")
        lists.append(tokens(term, x.ndim - letters))
    covered = builtins.max((builtins.sum(isinstance(t, tuple) for t in term) for term in lists), default=0)
    if arrow:
        out = tokens(output, covered)
        for t in out:
            if out.count(t) > 1:
                raise RuntimeError(f"einsum(): output subscript {t} appears more than once in the output")
            if not isinstance(t, tuple) and all(t not in term for term in lists):
                raise RuntimeError(f"einsum(): output subscript {t} does not appear in the equation for any input "
                                   "operand")
    else:   # the ellipsis dimensions, then the labels seen once, in alphabetical order
        seen = [t for term in lists for t in term if not isinstance(t, tuple)]
        out = [("...", k) for k in range(covered, 0, -1)] + sorted(t for t in set(seen) if seen.count(t) == 1)
    return lists, out


def einsum(equation, *operands):
    """Sums of products over the labelled dimensions of the operands, as numpy.einsum and PyTorch's
    (an explicit `->` output or the implicit one, `...`, repeated labels for diagonals, size-1
    dimensions broadcast); differentiable through the ops it is made of."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    terms, output = _einsum_terms(equation, operands)
    sizes = {}
    for i, (term, x) in enumerate(zip(terms, operands)):
        for t, n in zip(term, x.shape):
            seen = sizes.get(t, 1)
            if n != 1 and seen != 1 and n != seen:
                raise RuntimeError(f"einsum(): subscript {'...' if isinstance(t, tuple) else t} has size {n} for "
                                   f"operand {i} which does not broadcast with previously seen size {seen}")
            sizes[t] = n if seen == 1 else seen   # 1 broadcasts to any size, 0 included
    pending = [_einsum_prepare(x, term, terms[:i] + terms[i + 1:], output)
               for i, (term, x) in enumerate(zip(terms, operands))]
    x, term = pending[0]
    for k in range(1, len(pending)):
        later = {t for _, rest in pending[k + 1:] for t in rest}.union(output)
        x, term = _einsum_pair(x, term, *pending[k], later, sizes)
    gone = [d for d, t in enumerate(term) if t not in output]
    if gone:
        x, term = sum(x, gone), [t for t in term if t in output]
    if len(term) < len(output):   # an output label only broadcast (size 1 where it appears)
        x = reshape(x, *[x.shape[term.index(t)] if t in term else 1 for t in output])
        term = list(output)
    order = [term.index(t) for t in output]
    return permute(x, order) if order != list(range(len(order))) else x


def _einsum_prepare(x, term, others, output):
    """An operand with its repeated labels taken as diagonals, and the labels that neither another
    operand nor the output has summed out."""
    term = list(term)
    for t in list(dict.fromkeys(term)):
        while term.count(t) > 1:
            p = term.index(t)
            q = term.index(t, p + 1)
            x = diagonal(x, 0, p, q)   # the diagonal's dimension goes last
            term = [u for k, u in enumerate(term) if k not in (p, q)] + [t]
    needed = set(output).union(*map(set, others))
    gone = [d for d, t in enumerate(term) if t not in needed]
    if gone:
        x, term = sum(x, gone), [t for t in term if t in needed]
    return x, term


def _einsum_pair(a, ta, b, tb, later, sizes):
    """a and b contracted into one tensor by one batched matmul: (batch, a's own, summed) times
    (batch, summed, b's own)."""
    batch = [t for t in ta if t in tb and t in later]
    summed = [t for t in ta if t in tb and t not in later]
    left, right = [t for t in ta if t not in tb], [t for t in tb if t not in ta]
    shared = set(batch + summed)

    def arranged(x, term, groups):
        labels = [t for group in groups for t in group]
        order = [term.index(t) for t in labels]
        x = permute(x, order) if order != list(range(len(order))) else x
        full = [sizes[t] if t in shared else n for t, n in zip(labels, x.shape)]
        if list(x.shape) != full:   # a size-1 dimension broadcast against the other operand's
            x = expand(x, *full)
        size = dict(zip(labels, full))
        return reshape(x, *[_product(size[t] for t in group) for group in groups]), size

    a3, a_sizes = arranged(a, ta, (batch, left, summed))
    b3, b_sizes = arranged(b, tb, (batch, summed, right))
    shape = [sizes[t] for t in batch] + [a_sizes[t] for t in left] + [b_sizes[t] for t in right]
    return reshape(matmul(a3, b3), *shape), batch + left + right


def _product(values):
    out = 1
    for v in values:
        out *= v
    return out


__all__ = ["flip", "fliplr", "flipud", "roll", "rot90", "tile", "repeat_interleave", "diagonal", "diag",
           "diag_embed", "trace", "take_along_dim", "meshgrid", "einsum"]
METHOD_ONLY = ["repeat", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"]
METHODS = [name for name in __all__ if name not in ("meshgrid", "einsum")] + METHOD_ONLY
