"""nn.Parameter: a leaf Tensor that Modules register as learnable."""
from ..tracer import Tensor


class Parameter(Tensor):
    __slots__ = ()

    def __new__(cls, data=None, requires_grad=True):
        from .. import empty
        data = empty(0) if data is None else data
        if requires_grad and data._data.dtype.kind != "f":
            raise RuntimeError("Only Tensors of floating point and complex dtype can require gradients")
        p = object.__new__(cls)
        Tensor._init(p, data._data, data._device)
        p._rg = bool(requires_grad)
        return p

    def __init__(self, data=None, requires_grad=True):
        pass

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        p = Parameter(Tensor._make(self._data.copy(), self._device), self._rg)
        memo[id(self)] = p
        return p

    def __reduce__(self):
        return (Parameter, (Tensor._make(self._data, self._device), self._rg))


class Buffer(Tensor):
    """nn.Buffer: marks a tensor to register as a module buffer."""
    __slots__ = ("persistent",)

    def __new__(cls, data, *, persistent=True):
        b = object.__new__(cls)
        Tensor._init(b, data._data, data._device)
        b.persistent = persistent
        return b

    def __init__(self, data, *, persistent=True):
        pass
