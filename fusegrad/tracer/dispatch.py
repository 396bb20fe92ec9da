"""The one path every eager op takes: run the op's NumPy impl now, record a node if grad is needed.

`apply` (and its fast path `apply_binary`) runs out-of-place ops; `run_inplace` runs in-place ones
(leaf checks, version counters, rebinding the tensor and the tensors it views to new nodes).
Public functions in `functions.py` only normalise their arguments (dims, dtype promotion, Python
scalars) and then call these."""

import numpy as np

from ..ir import OPS, dtypes, shape_of
from ..ir.dtypes import from_numpy_dtype, result_type
from ..runtime.devices import CPU
from ..runtime.events import notify, now, observers
from ..runtime.quiet import quiet as _quiet, restore as _restore
from . import grad_mode
from .capture import active as capturing, write_back
from .node import RecordedNode, accumulate_node
from .tensor import Tensor, ViewOf

_new_tensor = Tensor._make
_DTYPES = dtypes.BY_NUMPY


def edge(t):
    """The graph input standing for tensor `t` in a recorded node."""
    view = t._view
    if view is not None and t._rg and view.version != t._vc[0]:
        refresh_view(t)
    if t._node is not None:
        return t._node
    if t._rg:
        return accumulate_node(t)
    return t._data


def result_device(inputs):
    """The device of an op's result: that of its tensor operands, which must agree, except that a
    0-d CPU tensor may join tensors of another device (PyTorch's rule for CPU scalars)."""
    for x in inputs:
        if isinstance(x, Tensor) and x._device is not CPU:
            common = x._device
            for y in inputs:
                if isinstance(y, Tensor) and y._device is not common and (y._device is not CPU or y._data.ndim):
                    raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                                       f"devices, {common} and {y._device}!")
            return common
    return CPU


def _dtype_of(value):
    return from_numpy_dtype(value.dtype) if isinstance(value, np.ndarray) else dtypes.scalar_dtype(value)


def op_error(op, inputs, attrs, error):
    """Turn a NumPy failure into an error that names the op and the operand shapes."""
    shapes = tuple(shape_of(x._data if isinstance(x, Tensor) else x) for x in inputs)
    kinds = tuple(_dtype_of(x._data if isinstance(x, Tensor) else x) for x in inputs)
    if op.infer is not None:
        op.infer(shapes, kinds, attrs)   # raises ShapeError with the op's own wording
    if isinstance(error, IndexError):
        return IndexError(f"{op.name}: {error}")
    return RuntimeError(f"{op.name}: {error} (operand shapes {', '.join(map(str, shapes))})")


def record(op, inputs, arrays, out, out_version, attrs, label, device):
    """The node for `out = op(*inputs)`: its graph inputs and what its VJP rule will need."""
    edges = [edge(x) if isinstance(x, Tensor) else x for x in inputs]
    saves = op.saved_slots(len(inputs))
    saved = versions = None
    if saves:
        saved = []
        versions = []
        for i in saves:
            if i < 0:
                saved.append(out)
                versions.append((out_version, out_version[0], -1))
            else:
                saved.append(arrays[i])
                x = inputs[i]
                if isinstance(x, Tensor):
                    versions.append((x._vc, x._vc[0], i))
        saved = tuple(saved)
    dtype = _DTYPES.get(out.dtype) or from_numpy_dtype(out.dtype)
    node = RecordedNode(op, tuple(edges), attrs, out.shape, dtype, saved, versions, label, device)
    trace = capturing()
    if trace is not None:
        trace.note_recorded(node, out)
    return node


def _compute(op, inputs, arrays, attrs):
    """The op's NumPy impl (or its eager replacement), silent about inf/nan, with errors that name
    the op and shapes."""
    token = _quiet()
    impl = op.eager or op.impl
    try:
        out = impl(*arrays, **attrs) if attrs else impl(*arrays)
    except (ValueError, IndexError, TypeError, OverflowError) as e:
        raise op_error(op, inputs, attrs, e) from None
    finally:
        _restore(token)
    out = out if type(out) is np.ndarray else np.asarray(out)
    trace = capturing()
    if trace is not None:
        trace.record(op, arrays, attrs, out)
    return out


def apply(op, inputs, attrs=None, label=None):
    """Run `op` on Tensors / Python scalars (already of the result dtype) and record it."""
    arrays = [x._data if isinstance(x, Tensor) else x for x in inputs]
    device = result_device(inputs)
    if observers:
        start = now()
    out = _compute(op, inputs, arrays, attrs)
    t = _new_tensor(out, device)
    if op.is_view:
        parent = inputs[0]
        if np.may_share_memory(out, parent._data):
            t._vc = parent._vc
            t._view = ViewOf(parent, op, attrs, inputs[1:], parent._vc[0], not grad_mode.state.enabled)
    if grad_mode.state.enabled and op.differentiable and out.dtype.kind == "f":   # integer results: no grad
        for x in inputs:
            if isinstance(x, Tensor) and x._rg:
                t._rg = True
                t._node = record(op, inputs, arrays, out, t._vc, attrs, label, device)
                break
    if observers:
        notify(op.name, start, arrays)
    return t


def apply_binary(op, a, b, label=None):
    """apply() for an elementwise op on two tensors: the hot path of eager code."""
    if observers:
        return apply(op, (a, b), None, label)
    device = a._device
    if device is not b._device:
        device = result_device((a, b))
    arrays = (a._data, b._data)
    out = _compute(op, (a, b), arrays, None)
    t = _new_tensor(out, device)
    if (a._rg or b._rg) and grad_mode.state.enabled and op.differentiable and out.dtype.kind == "f":
        t._rg = True
        t._node = record(op, (a, b), arrays, out, t._vc, None, label, device)
    return t


def run_inplace(target, compute, name):
    """target <- compute(target), written into the target's memory, as PyTorch's `op_` variants.

    When the result is recorded, the computation sees a stand-in holding a copy of the old value,
    so whatever the op saved for backward is not overwritten by the write. Writing through a view
    rewrites the history of the tensors it views (PyTorch's CopySlices), so their gradients see it."""
    if not grad_mode.state.enabled:
        result = compute(target)
    else:
        if target._node is None and target._rg:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        if target._view is not None:
            if target._rg and target._view.version != target._vc[0]:
                refresh_view(target)   # written through its base or another view since its node
            root = view_root(target)
            if root._node is None and root._rg:
                raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place "
                                   "operation.")
            if root._rg and target._view.made_without_grad:
                raise RuntimeError("A view was created in no_grad mode and is being modified inplace with grad "
                                   "mode enabled. Given that this use case is ambiguous and error-prone, it is "
                                   "forbidden. You can clarify your code by moving both the view and the inplace "
                                   "either both inside the no_grad block (if you don't want the inplace to be "
                                   "tracked) or both outside (if you want the inplace to be tracked).")
        result = None if target._rg else compute(target)
        if result is None or result._node is not None:   # recorded: compute on a copy of the old value
            old = _new_tensor(_compute(OPS["copy"], (target,), (target._data,), None), target._device)
            old._node, old._rg = target._node, target._rg
            result = compute(old)
    out = result._data
    data = target._data
    if out.dtype != data.dtype and not np.can_cast(out.dtype, data.dtype, "same_kind"):
        raise RuntimeError(f"{name}: result type {from_numpy_dtype(out.dtype).name} can't be cast to the "
                           f"desired output type {from_numpy_dtype(data.dtype).name}")
    if out.shape != data.shape:
        raise RuntimeError(f"{name}: output with shape {list(data.shape)} doesn't match the broadcast "
                           f"shape {list(out.shape)}")
    write_into(target, out)
    if result._node is not None:
        previous = target._node
        target._node = result._node
        target._rg = True
        if previous is not None and previous.retain is not None:
            target._node.retain, previous.retain = previous.retain, None
    elif grad_mode.state.enabled and target._node is not None:
        target._node, target._rg = None, False   # the new value depends on nothing that needs grad
    if target._view is not None:
        target._view.version = target._vc[0]   # its new node is current
        if grad_mode.state.enabled and (target._rg or view_root(target)._rg):
            _rebase_viewed(target)
    return target


def view_root(t):
    while t._view is not None:
        t = t._view.parent
    return t


def refresh_view(t):
    """Give a view the node of viewing its parent's current history: after a write through the
    parent or another view, its recorded node describes an older value (PyTorch regenerates a
    view's grad_fn the same way)."""
    view = t._view
    parent = view.parent
    if parent._view is not None and parent._rg and parent._view.version != parent._vc[0]:
        refresh_view(parent)
    with grad_mode.enable_grad():
        fresh = apply(view.op, (parent,) + tuple(view.index), view.attrs)
    if fresh._node is not None:
        t._node, t._rg = fresh._node, True
    view.version = t._vc[0]


def _rebase_viewed(view):
    """After `view` was written in place, give each tensor it views a node that scatters the new
    values into the old ones (the memory already holds the result; only history changes)."""
    child = view
    while child._view is not None:
        parent, op, attrs, index = child._view.parent, child._view.op, child._view.attrs, child._view.index
        old = _new_tensor(parent._data, parent._device)
        old._node, old._rg = parent._node, parent._rg
        back, back_attrs, with_old = write_back(op, attrs, parent._data.shape)
        new = apply(back, (old, child) + tuple(index) if with_old else (child,), back_attrs)
        if new._node is not None:
            new._node.label = "CopySlices"
            previous, parent._node, parent._rg = parent._node, new._node, True
            if previous is not None and previous.retain is not None:
                new._node.retain, previous.retain = previous.retain, None
        if parent._view is not None:
            parent._view.version = parent._vc[0]
        child = parent


def write_into(target, value):
    """Copy `value` into the target's memory and bump its version counter."""
    trace = capturing()
    if trace is not None:
        views, t = [], target
        while t._view is not None:
            views.append((t._view.parent._data, t._view.op, t._view.attrs))
            t = t._view.parent
        trace.write(target._data, value, views)
    try:
        np.copyto(target._data, value, casting="unsafe")
    except ValueError as e:
        if not target._data.flags.writeable:
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor "
                               "refers to a single memory location. Please clone() the tensor before "
                               "performing the operation.") from None
        raise RuntimeError(str(e)) from None
    target._vc[0] += 1


def promote_operands(name, operands, float_result=False):
    """Cast tensor operands to PyTorch's result dtype; Python scalars stay as they are (NumPy
    treats them as weakly typed, which is PyTorch's rule for scalars too)."""
    first = None
    same = True
    for x in operands:
        if isinstance(x, Tensor):
            if first is None:
                first = x._data.dtype
            elif x._data.dtype != first:
                same = False
    if first is None:
        raise TypeError(f"{name}: expected at least one Tensor operand")
    if same:
        dt = from_numpy_dtype(first)
        for x in operands:
            if not isinstance(x, Tensor) and dtypes.scalar_dtype(x).category > dt.category:
                same = False
                break
    if same and not (float_result and from_numpy_dtype(first).category < 2):
        return operands
    dt = result_type([(from_numpy_dtype(x._data.dtype), x._data.ndim) if isinstance(x, Tensor) else x
                      for x in operands])
    if float_result and dt.category < 2:
        dt = dtypes.default_float
    return [cast(x, dt) if isinstance(x, Tensor) else x for x in operands]


def cast(t, dtype):
    if t._data.dtype == dtype.np:
        return t
    return apply(OPS["cast"], (t,), {"dtype": dtype})
