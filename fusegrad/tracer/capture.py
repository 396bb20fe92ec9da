"""Capture mode: run Python eagerly while recording every array computation into one graph.

While a Trace is active, each op the tracer evaluates (forward ops, the interpreted backward
graph, optimizer updates under no_grad) also appends a node to the trace, and each in-place
write gives the written array a new value in the trace (values are SSA; the arrays are not).
Arrays the trace did not compute become its inputs: where the caller can say how to find one
again on a later call (an argument's data, a parameter, a gradient) it is bound by that path,
otherwise it is a constant of the trace.

What cannot be replayed faithfully breaks the trace instead of raising: the call goes on
eagerly (its effects are those of eager mode) and the compiler simply does not reuse it. Reading
memory after writing it through an alias, data-dependent shapes, and gradients set on tensors the
caller cannot name again break the trace. Python-level decisions on tensor values (`bool(t)`,
`t.item()`, `int(t)`) become value guards that a compiled replay checks before committing.
"""
import threading

import numpy as np

from ..ir import OPS, Node
from ..ir.dtypes import from_numpy_dtype

_state = threading.local()
_PLACEHOLDER, _CAST = OPS["placeholder"], OPS["cast"]


def active():
    """The Trace being recorded in this thread, or None."""
    return getattr(_state, "trace", None)


def _root(array):
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class _FloatProxy(float):
    """A float that notices when Python code uses it (arithmetic, comparison, bool, formatting):
    the trace then needs its value as a guard. Subclasses say what `_use` does."""
    __slots__ = ()

    def value(self):
        return float.__float__(self)


class ScalarProxy(_FloatProxy):
    """What `t.item()` returns while capturing a floating tensor: a float that remembers its trace
    value. Returned from the function untouched, it is an output (fresh on every replay); any
    Python-level use (comparison, arithmetic, bool, formatting) turns it into a value guard."""
    __slots__ = ("trace", "node", "used")

    def _use(self):
        if not self.used:
            self.used = True
            self.trace.guard(self.node, "item", self.value())
        return self.value()


class HyperParameter(_FloatProxy):
    """An optimizer hyper-parameter (`param_groups[i]["lr"]`) while capturing. The optimizer's
    update reads it through `traced_scalar`, which makes it an input of the trace, read afresh on
    every replay, so a learning-rate schedule replays one plan. Any other use of it in Python
    marks it `used`, and the compiler then guards its value as for any Python float."""
    __slots__ = ("trace", "path", "used", "array")

    def _use(self):
        self.used = True
        return self.value()


def _proxy_method(name):
    def method(self, *args):
        return getattr(self._use(), name)(*args)
    method.__name__ = name
    return method


for _name in ("__bool__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__add__", "__radd__",
              "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__floordiv__",
              "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__neg__", "__pos__", "__abs__",
              "__int__", "__float__", "__round__", "__trunc__", "__floor__", "__ceil__", "__format__",
              "__repr__", "__str__", "__hash__", "__divmod__", "__rdivmod__", "is_integer", "as_integer_ratio",
              "hex", "conjugate", "__reduce__", "__reduce_ex__"):
    setattr(_FloatProxy, _name, _proxy_method(_name))


def plain(value):
    """`value`, or for a captured float (item()'s or a hyper-parameter) its plain float, the use
    noted: NumPy reads a float subclass's value in C, past the proxy's methods, so every place a
    Python number enters NumPy while capturing calls this (ops' operands and attributes through
    Trace.record, scalar operands, tensor factories)."""
    return value._use() if isinstance(value, _FloatProxy) else value


def plain_data(data):
    """plain() through nested lists and tuples (a tensor factory's data) while capturing, the
    only time proxies are made; the data itself otherwise."""
    if active() is None:
        return data
    if isinstance(data, (list, tuple)):
        return [plain_data(x) for x in data]   # NumPy reads lists and tuples alike
    return plain(data)


def traced_scalar(value):
    """`value` itself, or, for a hyper-parameter being captured, a 0-d float64 array that is an
    input of the trace bound to where the value lives (see HyperParameter)."""
    if type(value) is not HyperParameter or value.trace is not active() or value.trace.broken is not None:
        return value
    if value.array is None:
        value.array = np.array(value.value(), np.float64)
        value.trace.sources[id(value.array)] = f"hyper({value.path})"
        value.trace.scalars.append(value.array)   # alive while the trace is, so its id stays its own
    return value.array


class Trace:
    """One recording. `sources` maps id(array) -> the expression that finds that array again on a
    later call (built by the compiler from the arguments, modules and optimizers); `tensor_paths`
    maps id(tensor) -> the expression naming that tensor."""

    def __init__(self, sources, tensor_paths):
        self.sources = sources
        self.tensor_paths = tensor_paths
        self.nodes = []
        self.inputs = []          # placeholder nodes
        self.input_sources = []   # per placeholder: an expression, or the array itself (a constant)
        self.values = {}          # id(array) -> (node, array, id(root), root version)
        self.root_version = {}    # id(root array) -> writes to it during the call
        self.written = {}         # id(array) -> (array, expression) of caller-visible arrays written
        self.internal = set()     # ids of arrays the trace computed
        self.guards = []          # (node, kind, expected): value-dependent decisions
        self.grads = {}           # id(tensor) -> (tensor, its .grad before the call)
        self.proxies = []
        self.scalars = []         # arrays standing for hyper-parameters (traced_scalar)
        self.draws = []           # random nodes, in the order eager mode drew them
        self.generator_state = None   # the default generator's state after the last recorded draw
        self.broken = None        # why this trace cannot be replayed, if it cannot

    # ------------------------------------------------------------------ values
    def break_(self, reason):
        if self.broken is None:
            self.broken = reason

    def _register(self, array, node):
        root = _root(array)
        self.values[id(array)] = (node, array, id(root), self.root_version.get(id(root), 0))

    def node_of(self, array):
        """The trace value an array holds now, making it an input when the trace has none."""
        entry = self.values.get(id(array))
        if entry is not None:
            node, _, root, version = entry
            if self.root_version.get(root, 0) != version:
                self.break_("a tensor was read after its memory was written through another tensor "
                            "(a view or `.data`) in the same call")
            return node
        root = _root(array)
        if self.root_version.get(id(root), 0):
            self.break_("a view was read after the memory it shows was written in the same call")
        node = Node(_PLACEHOLDER, (), None, array.shape, from_numpy_dtype(array.dtype))
        self.inputs.append(node)
        self.input_sources.append(self.sources.get(id(array), array))
        self._register(array, node)
        return node

    def record(self, op, arrays, attrs, out):
        """`out = op(*arrays, **attrs)` was just computed eagerly."""
        if self.broken is not None:
            return
        for v in (*arrays, *(attrs.values() if attrs else ())):
            if isinstance(v, _FloatProxy):   # its value is now a constant of the trace
                v._use()
        inputs = tuple(self.node_of(v) if isinstance(v, np.ndarray) else
                       (v.item() if isinstance(v, np.generic) else v) for v in arrays)
        node = Node(op, inputs, attrs, out.shape, from_numpy_dtype(out.dtype))
        self.nodes.append(node)
        self._register(out, node)
        self.internal.add(id(out))

    def record_random(self, sample, shape, dtype, out, state_after):
        """`out` was just drawn from the default generator by sample(shape)."""
        if self.broken is not None:
            return
        token = (self.draws[-1],) if self.draws else ()
        node = Node(OPS["random"], token, {"sample": sample, "shape": shape, "dtype": dtype}, out.shape, dtype)
        self.nodes.append(node)
        self.draws.append(node)
        self._register(out, node)
        self.internal.add(id(out))
        self.generator_state = state_after

    def apply_node(self, node, values):
        """run_graph's `apply` while capturing: evaluate a backward-graph node and record it."""
        if node.op.kind == "opaque":   # bound to this call's objects (a custom Function's ctx, hooks)
            self.break_("its backward runs Python bound to this call (a custom autograd Function or a "
                        "tensor hook), which a replay cannot call again")
        out = node.op.impl(*values, **node.attrs) if node.attrs else node.op.impl(*values)
        out = out if type(out) is np.ndarray else np.asarray(out)
        self.record(node.op, values, node.attrs, out)
        return out

    def write(self, target, value):
        """`target[...] = value` (same shape) was just done in place."""
        if self.broken is not None:
            return
        value = np.asarray(value)
        node = self.node_of(value)
        if node.shape != target.shape:
            self.break_(f"an in-place write broadcast a value of shape {list(value.shape)} into shape "
                        f"{list(target.shape)}")
            return
        if node.dtype.np != target.dtype:
            dtype = from_numpy_dtype(target.dtype)
            node = Node(_CAST, (node,), {"dtype": dtype}, target.shape, dtype)
            self.nodes.append(node)
        if id(target) not in self.values:
            self.node_of(target)   # its value before the write: an input
        if id(target) not in self.internal and id(target) not in self.written:
            self.written[id(target)] = (target, self.sources.get(id(target)))
        root = _root(target)
        self.root_version[id(root)] = self.root_version.get(id(root), 0) + 1
        self._register(target, node)

    # ------------------------------------------------------------------ gradients and decisions
    def note_grad(self, tensor):
        """Called before `tensor._grad` changes: remember what it held before the call."""
        if id(tensor) not in self.grads:
            self.grads[id(tensor)] = (tensor, tensor._grad)

    def guard(self, node, kind, expected):
        self.guards.append((node, kind, expected))

    def value_guard(self, array, kind, expected):
        if self.broken is None:
            self.guard(self.node_of(array), kind, expected)

    def item(self, array, value):
        """The value `t.item()` returns while capturing."""
        if self.broken is not None or not isinstance(value, float):
            if isinstance(value, (int, bool)):
                self.value_guard(array, "item", value)
            return value
        proxy = ScalarProxy(value)
        proxy.trace, proxy.node, proxy.used = self, self.node_of(array), False
        self.proxies.append(proxy)
        return proxy


class recording:
    """Context manager: make `trace` the active trace of this thread."""

    def __init__(self, trace):
        self.trace = trace

    def __enter__(self):
        self.previous = getattr(_state, "trace", None)
        _state.trace = self.trace
        return self.trace

    def __exit__(self, *exc):
        _state.trace = self.previous
        return False
