"""Element types of the IR and PyTorch's type-promotion rules over them."""
import numpy as np


class DType:
    """A tensor element type: a NumPy dtype plus PyTorch's name and promotion category."""

    __slots__ = ("name", "np", "category", "itemsize", "scalar_name")

    def __init__(self, name, np_dtype, category, scalar_name):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category  # 0 bool, 1 integer, 2 floating point
        self.itemsize = self.np.itemsize
        self.scalar_name = scalar_name  # PyTorch's word in messages: "Float" (torch.FloatTensor)

    @property
    def is_floating_point(self):
        return self.category == 2

    def __repr__(self):
        return "torch." + self.name

    def __reduce__(self):
        return (from_numpy_dtype, (self.np,))


bool_ = DType("bool", np.bool_, 0, "Bool")
int32 = DType("int32", np.int32, 1, "Int")
int64 = DType("int64", np.int64, 1, "Long")
float16 = DType("float16", np.float16, 2, "Half")
float32 = DType("float32", np.float32, 2, "Float")
float64 = DType("float64", np.float64, 2, "Double")

ALL = (bool_, int32, int64, float16, float32, float64)
_BY_NUMPY = {d.np: d for d in ALL}
# Narrower NumPy integers have no DType of their own: copying constructors widen them.
_WIDENED = {np.dtype(np.int8): int32, np.dtype(np.int16): int32, np.dtype(np.uint8): int32,
            np.dtype(np.uint16): int32, np.dtype(np.uint32): int64}
BY_NUMPY = _BY_NUMPY

default_float = float32


def from_numpy_dtype(np_dtype):
    """The DType of a NumPy dtype that fusegrad tensors can hold as they are."""
    np_dtype = np.dtype(np_dtype)
    d = _BY_NUMPY.get(np_dtype)
    if d is None:
        raise TypeError(f"can't convert np.ndarray of type {np_dtype}. The only supported types are: "
                        "float64, float32, float16, int64, int32, and bool.")
    return d


def copy_dtype(np_dtype):
    """The DType that a copy of NumPy data gets: its own, or a wider one for narrow integers."""
    np_dtype = np.dtype(np_dtype)
    d = _BY_NUMPY.get(np_dtype) or _WIDENED.get(np_dtype)
    return d if d is not None else from_numpy_dtype(np_dtype)


def promote(a, b):
    """promote_types for two DTypes: the higher category wins; within a category the wider type."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    return a if a.itemsize >= b.itemsize else b


def scalar_dtype(value):
    """The dtype a Python scalar would get as a tensor of its own."""
    if isinstance(value, bool):
        return bool_
    if isinstance(value, int):
        return int64
    return default_float


def result_type(operands):
    """PyTorch's result type over tensors (as DTypes with a rank) and Python scalars.

    `operands` holds (dtype, ndim) pairs for tensors and Python scalars as they are. Tensors with
    dimensions decide first; zero-dim tensors and then Python scalars only count when they are of a
    higher category (a float scalar times an int tensor gives the default float type)."""
    dim = zero = scal = None
    for o in operands:
        if type(o) is tuple:
            d, ndim = o
            if ndim:
                dim = d if dim is None else promote(dim, d)
            else:
                zero = d if zero is None else promote(zero, d)
        else:
            d = scalar_dtype(o)
            scal = d if scal is None else promote(scal, d)
    result = dim
    for d in (zero, scal):
        if d is not None and (result is None or d.category > result.category):
            result = d
    return result
