"""The Tensor: a NumPy array, plus the recorded node that produced it when autograd tracks it.

Ops are attached as methods by `functions.py`; this module holds the state and the protocol
methods (conversion, printing, autograd entry points)."""
import warnings

import numpy as np

from ..ir import dtypes
from ..ir.dtypes import from_numpy_dtype
from ..runtime import devices
from ..runtime.devices import CPU
from . import printing
from .capture import active as capturing


class Size(tuple):
    """torch.Size: a tuple of ints that prints as `torch.Size([2, 3])`."""

    def __repr__(self):
        return f"torch.Size({list(self)})"

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n


class ViewOf:
    """How a tensor views its parent's memory, and the value of the shared version counter that
    its recorded node describes (a write through another view makes the node stale)."""
    __slots__ = ("parent", "op", "attrs", "index", "version", "made_without_grad")

    def __init__(self, parent, op, attrs, index, version, made_without_grad):
        self.parent, self.op, self.attrs, self.index, self.version = parent, op, attrs, index, version
        self.made_without_grad = made_without_grad


class Tensor:
    __slots__ = ("_data", "_device", "_node", "_rg", "_grad", "_vc", "_view", "_accum", "_hooks",
                 "_post_accumulate_hooks", "__weakref__")
    __hash__ = object.__hash__
    __array_priority__ = 1000   # NumPy defers to our reflected operators

    def __init__(self, *args):
        from .factories import tensor
        if len(args) == 1 and not isinstance(args[0], int):
            data = tensor(args[0], dtype=dtypes.default_float)._data
        else:
            data = np.empty(tuple(args), dtypes.default_float.np)
        Tensor._init(self, data)

    @staticmethod
    def _init(t, data, device=CPU):
        t._data = data
        t._device = device   # canonical: CPU or the one object for each GPU (runtime.devices)
        t._node = None    # the recorded node that produced this value, when autograd tracks it
        t._rg = False     # requires_grad
        t._grad = None
        t._vc = [0]       # version counter, shared with the tensors viewing the same memory
        t._view = None    # a ViewOf when this shares its parent's memory
        t._accum = None   # weakref to the AccumulateGrad node of a leaf
        t._hooks = None   # a leaf's tensor hooks
        t._post_accumulate_hooks = None   # a leaf's hooks run after backward accumulates into .grad
        return t

    @staticmethod
    def _make(data, device=CPU):
        """A tensor around `data` (storage of `device`) without copying or checks: the constructor
        of every op result."""
        return Tensor._init(object.__new__(Tensor), data, device)

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self):
        return Size(self._data.shape)

    def size(self, dim=None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_dim(dim, self._data.ndim)]

    @property
    def dtype(self):
        return from_numpy_dtype(self._data.dtype)

    @property
    def device(self):
        return self._device

    @property
    def is_cuda(self):
        return self._device.type == "cuda"

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    ndimension = dim

    def numel(self):
        return self._data.size

    nelement = numel

    def element_size(self):
        return self._data.itemsize

    def stride(self, dim=None):
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        return strides if dim is None else strides[_dim(dim, self._data.ndim)]

    def is_contiguous(self, memory_format=None):
        return self._data.flags.c_contiguous

    def is_floating_point(self):
        return self._data.dtype.kind == "f"

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def grad_fn(self):
        view = self._view
        if view is not None and self._rg and view.version != self._vc[0]:
            from .dispatch import refresh_view
            refresh_view(self)
        return self._node

    @property
    def requires_grad(self):
        return self._rg

    @requires_grad.setter
    def requires_grad(self, value):
        if self._node is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you want to "
                               "use a computed variable in a subgraph that doesn't require differentiation "
                               "use var_no_grad = var.detach().")
        if value and self._data.dtype.kind != "f":
            raise RuntimeError("only Tensors of floating point dtype can require gradients")
        self._rg = bool(value)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self):
        if self._node is not None and self._node.retain is None:
            warnings.warn("The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
                          ".grad attribute won't be populated during autograd.backward(). If you indeed want "
                          "the .grad field to be populated for a non-leaf Tensor, use .retain_grad() on the "
                          "non-leaf Tensor.", UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of type "
                                f"{type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(f"assigned grad has data of a different size: expected "
                                   f"{list(self._data.shape)}, got {list(value._data.shape)}")
            if value._data.dtype != self._data.dtype:
                raise RuntimeError(f"assigned grad has data of a different type: expected {self.dtype}, "
                                   f"got {value.dtype}")
        trace = capturing()
        if trace is not None:
            trace.note_grad(self)
        self._grad = value

    @property
    def retains_grad(self):
        return self._node is not None and self._node.retain is not None

    @property
    def _version(self):
        return self._vc[0]

    @property
    def data(self):
        """The same memory without autograd history (and with a version counter of its own)."""
        return Tensor._make(self._data, self._device)

    @data.setter
    def data(self, value):
        trace = capturing()
        if trace is not None and not (isinstance(value, Tensor) and value._data is self._data):
            # a replay would write the values, not rebind the memory (`p.data -= g` rebinds p's own)
            trace.break_("it assigns a tensor's .data (rebinding its memory, which a replay does not redo)")
        if isinstance(value, Tensor):
            self._data, self._device = value._data, value._device
        else:
            self._data, self._device = np.asarray(value), CPU

    # ------------------------------------------------------------------ conversion
    def numpy(self, force=False):
        if self._rg and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                               "instead.")
        if self._device is not CPU:
            raise TypeError(f"can't convert {self._device} device type tensor to numpy. Use Tensor.cpu() to "
                            "copy the tensor to host memory first.")
        trace = capturing()
        if trace is not None:   # what NumPy code computes from it, a replay could not recompute
            trace.break_("it hands tensor data to NumPy (numpy(), np.asarray), where fusegrad cannot follow it")
        return self._data

    def __array__(self, dtype=None, copy=None):
        """NumPy 2's protocol: `np.array(t)` asks for a copy (copy=True), `np.asarray(t)` takes the
        tensor's own memory when it can (copy=None) and `copy=False` must never copy."""
        data = self.numpy()
        converts = dtype is not None and np.dtype(dtype) != data.dtype
        if copy is False and converts:
            raise ValueError(f"Unable to avoid copy while creating an array as requested: the tensor holds "
                             f"{data.dtype}, not {np.dtype(dtype)}")
        if converts:
            return data.astype(dtype)
        return data.copy() if copy else data

    # Python values of tensor data: while a function is being captured for compilation, each one
    # is a decision (or an output) that a compiled replay must check or recompute.
    def item(self):
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        value = self._data.reshape(()).item()
        trace = capturing()
        return value if trace is None else trace.item(self._data, value)

    def tolist(self):
        value = devices.to_host(self._data).tolist()
        trace = capturing()
        if trace is not None:
            trace.value_guard(self._data, "array", self._data.copy())
        return value

    def __float__(self):
        return float(self._checked_scalar("float"))

    def __int__(self):
        return int(self._checked_scalar("int"))

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._checked_scalar("int"))

    def _checked_scalar(self, kind):
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        value = self._data.reshape(()).item()
        trace = capturing()
        if trace is not None:
            trace.value_guard(self._data, "item", value)
        return value

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        value = bool(self._data.reshape(()))
        trace = capturing()
        if trace is not None:
            trace.value_guard(self._data, "bool", value)
        return value

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __format__(self, spec):
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def __repr__(self):
        suffixes = []
        if self._node is not None:
            suffixes.append(f"grad_fn=<{self._node.name()}>")
        elif self._rg:
            suffixes.append("requires_grad=True")
        dt = self.dtype
        default = dt is dtypes.default_float or dt is dtypes.int64 or dt is dtypes.bool_
        shown = None if self._device is CPU else str(self._device)
        return printing.format_tensor(devices.to_host(self._data), dtype_name=repr(dt), is_default_dtype=default,
                                      suffixes=suffixes, device=shown)

    def __str__(self):
        return self.__repr__()

    def __reduce__(self):
        return (_rebuild, (devices.to_host(self._data), self._rg, str(self._device)))

    def __deepcopy__(self, memo):
        if self._node is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) support the "
                               "deepcopy protocol at the moment.")
        t = Tensor._make(self._data.copy(), self._device)
        t._rg = self._rg
        if self._grad is not None:
            t._grad = Tensor._make(self._grad._data.copy(), self._grad._device)
        memo[id(self)] = t
        return t

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        from .engine import backward
        backward((self,), None if gradient is None else (gradient,), retain_graph, create_graph, inputs)

    def retain_grad(self):
        if not self._rg:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._node is not None and self._node.retain is None:
            import weakref
            self._node.retain = weakref.ref(self)

    def register_hook(self, hook):
        """Call hook(grad) when this tensor's gradient is computed; a returned tensor replaces it."""
        from .node import RemovableHandle
        if not self._rg:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        # A leaf keeps its hooks itself; a computed tensor's hooks live on its node, so they run
        # even when the tensor object is gone before backward.
        owner = self if self._node is None else self._node
        if owner._hooks is None:
            owner._hooks = []
        owner._hooks.append(hook)
        return RemovableHandle(owner._hooks, hook)

    def __getattr__(self, name):   # only for names the class lacks: no cost to the others
        from ..unimplemented import missing_attribute
        raise missing_attribute("'Tensor' object", "Tensor", name)

    def register_post_accumulate_grad_hook(self, hook):
        """Call hook(tensor) after backward has accumulated this leaf's gradient into .grad."""
        from .node import RemovableHandle
        if not self._rg:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._node is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = []
        self._post_accumulate_hooks.append(hook)
        return RemovableHandle(self._post_accumulate_hooks, hook)

    def detach(self):
        t = Tensor._make(self._data, self._device)
        t._vc = self._vc
        return t

    def detach_(self):
        if self._view is not None and self._view.parent._rg:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self._node = None
        self._rg = False
        return self

    # ------------------------------------------------------------------ devices and types
    def to(self, *args, **kwargs):
        from .functions import to
        return to(self, *args, **kwargs)

    def cpu(self):
        return self.to(CPU)

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def type(self, dtype=None):
        if dtype is None:
            return f"torch.{self.dtype.scalar_name}Tensor"
        return self.to(dtype)


def _rebuild(data, requires_grad, device="cpu"):
    where = devices.canonical(device)
    t = Tensor._make(devices.to_device(data, where), where)
    t._rg = requires_grad
    return t


def _dim(dim, ndim):
    """Normalise a possibly negative dim, raising PyTorch's IndexError when out of range."""
    lo, hi = -max(ndim, 1), max(ndim, 1) - 1
    if not lo <= dim <= hi:
        raise IndexError(f"Dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})")
    return dim + max(ndim, 1) if dim < 0 else dim
