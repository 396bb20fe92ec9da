"""Turn a Python indexing key into the hashable `spec` of the IR's index ops plus index arrays."""
import numpy as np

from .capture import active as capturing
from .tensor import Tensor


def normalize_key(key, shape):
    """Returns (spec, arrays): basic items become spec tuples, integer arrays (and boolean masks,
    as the integer arrays of their nonzero positions) become inputs of the index op."""
    ndim = len(shape)
    if not isinstance(key, tuple):
        key = (key,)
    spec, arrays = [], []
    dim = 0
    consumed = sum(_dims_consumed(k) for k in key)
    if consumed > ndim:
        raise IndexError(f"too many indices for tensor of dimension {ndim}")
    for k in key:
        data = isinstance(k, Tensor)
        if data:
            k = k._data
        elif isinstance(k, list) or (isinstance(k, tuple)):
            k = np.asarray(k)
        if k is None:
            spec.append(("n",))
        elif k is Ellipsis:
            spec.append(("e",))
            dim += ndim - consumed
        elif isinstance(k, slice):
            start, stop, step = (_int(v) for v in (k.start, k.stop, k.step))
            if step is not None and step <= 0:
                raise ValueError("step must be greater than zero")
            spec.append(("s", start, stop, step))
            dim += 1
        elif isinstance(k, (bool, np.bool_)):
            if not k:
                raise IndexError("indexing with a False scalar is not supported")
            spec.append(("n",))   # x[True] adds a dimension of size 1, like None
        elif isinstance(k, (int, np.integer)):
            spec.append(("i", int(k)))
            dim += 1
        elif isinstance(k, np.ndarray):
            if k.dtype == np.bool_:
                _check_mask(k.shape, shape, dim)
                if data and capturing() is not None:   # its positions are taken here as constants: a
                    capturing().value_guard(k, "array", k.copy())   # replay needs the same mask
                for idx in np.nonzero(k):
                    spec.append(("a",))
                    arrays.append(idx.astype(np.int64))
                dim += k.ndim
            elif k.dtype.kind in "iu":
                spec.append(("a",))
                arrays.append(k.astype(np.int64, copy=False))
                dim += 1
            else:
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        else:
            raise IndexError(f"only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables "
                             f"are valid indices (got {type(k).__name__})")
    return tuple(spec), arrays


def _check_mask(mask_shape, shape, dim):
    """A mask must match the dimensions it indexes: NumPy would read a shorter one as the positions
    it holds, silently."""
    for i, n in enumerate(mask_shape):
        if n != shape[dim + i]:
            raise IndexError(f"The shape of the mask {list(mask_shape)} at index {i} does not match the shape of "
                             f"the indexed tensor {list(shape)} at index {dim + i}")


def _dims_consumed(k):
    if k is None or k is Ellipsis or isinstance(k, (bool, np.bool_)):
        return 0
    if isinstance(k, Tensor):
        k = k._data
    if isinstance(k, np.ndarray) and k.dtype == np.bool_:
        return k.ndim
    return 1


def _int(v):
    return None if v is None else int(v)
