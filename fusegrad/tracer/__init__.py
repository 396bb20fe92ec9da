"""The front end users touch: Tensor, grad modes and the op functions.

Eager ops run NumPy now and record IR nodes on their outputs; `backward` turns the recorded graph
into a backward graph of IR and runs it. This module binds the op functions to Tensor as methods
and operators, as PyTorch exposes them."""
from ..runtime.devices import device
from . import factories, functions as F, manipulation
from .engine import backward, grad, zero_grads
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .node import RecordedNode
from .tensor import Size, Tensor

METHODS = (
    "add sub rsub mul div true_divide floor_divide remainder pow square maximum minimum eq ne lt le gt ge "
    "greater greater_equal less less_equal not_equal logical_and logical_or logical_xor logical_not exp log "
    "log2 log10 log1p expm1 sin cos tan tanh sigmoid sqrt rsqrt neg negative abs absolute sign floor "
    "reciprocal relu clamp clip clamp_min clamp_max lerp isnan isfinite isinf allclose isclose equal sum "
    "nansum mean prod max min amax amin argmax argmin all any var std norm logsumexp cumsum reshape view "
    "view_as reshape_as flatten unflatten squeeze unsqueeze permute transpose swapaxes swapdims t movedim "
    "expand expand_as broadcast_to contiguous clone cat narrow select split chunk unbind gather "
    "index_select masked_fill nonzero tril triu matmul mm bmm mv dot inner outer softmax log_softmax "
    "type_as zero_ fill_ copy_ double half long sort argsort msort topk kthvalue scatter scatter_add index_add "
    "index_copy index_fill"
).split() + list(F.INPLACE)

for _name in METHODS:
    setattr(Tensor, _name, getattr(F, _name))
for _name in manipulation.METHODS:
    setattr(Tensor, _name, getattr(manipulation, _name))
Tensor.float = F.float_
Tensor.int = F.int_
Tensor.bool = F.bool__
for _name in ("uniform_", "normal_", "bernoulli_", "random_"):
    setattr(Tensor, _name, getattr(factories, _name))


def _reflected(fn):
    # `2 - x` computes fn(2, x); commutative ops keep the tensor first, as PyTorch records them.
    return lambda self, other: fn(other, self)


Tensor.__add__, Tensor.__radd__, Tensor.__iadd__ = F.add, F.add, F.add_
Tensor.__sub__, Tensor.__rsub__, Tensor.__isub__ = F.sub, _reflected(F.sub), F.sub_
Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__ = F.mul, F.mul, F.mul_
Tensor.__truediv__, Tensor.__rtruediv__, Tensor.__itruediv__ = F.div, _reflected(F.div), F.div_
Tensor.__floordiv__, Tensor.__rfloordiv__ = F.floor_divide, _reflected(F.floor_divide)
Tensor.__mod__, Tensor.__rmod__ = F.remainder, _reflected(F.remainder)
Tensor.__pow__, Tensor.__rpow__, Tensor.__ipow__ = F.pow, _reflected(F.pow), F.pow_
Tensor.__matmul__, Tensor.__rmatmul__ = F.matmul, _reflected(F.matmul)
Tensor.__neg__, Tensor.__abs__, Tensor.__pos__ = F.neg, F.abs, lambda self: self
Tensor.__invert__ = F.logical_not
Tensor.__and__, Tensor.__or__, Tensor.__xor__ = F.logical_and, F.logical_or, F.logical_xor
Tensor.__eq__, Tensor.__ne__ = F.eq, F.ne
Tensor.__lt__, Tensor.__le__, Tensor.__gt__, Tensor.__ge__ = F.lt, F.le, F.gt, F.ge
Tensor.__getitem__, Tensor.__setitem__ = F.getitem, F.setitem
Tensor.T = property(lambda self: F.permute(self, tuple(reversed(range(self.ndim)))) if self.ndim > 1
                    else self)
Tensor.mT = property(lambda self: F.transpose(self, -2, -1))

__all__ = ["Tensor", "Size", "device", "backward", "grad", "no_grad", "enable_grad", "set_grad_enabled",
           "inference_mode", "is_grad_enabled", "RecordedNode", "F", "factories", "zero_grads"]
