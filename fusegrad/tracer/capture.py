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
Each `bool(t)` also notes where the Python code took it (the call stack of code positions) and
what that code could see (its frames' Python values), so that a loop on a tensor condition can be
recognised and re-rolled (`loop_runs`, ir/loops.py).
"""
import dis
import functools
import inspect
import os
import sys
import threading
import types

import numpy as np

from ..ir import OPS, Node
from ..ir.dtypes import from_numpy_dtype

_state = threading.local()
_PLACEHOLDER, _CAST = OPS["placeholder"], OPS["cast"]
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def active():
    """The Trace being recorded in this thread, or None."""
    return getattr(_state, "trace", None)


def write_back(op, attrs, shape):
    """How a write through a view (`op` with `attrs`) reaches the array of `shape` it views: (op,
    attrs, whether that array's old value is an operand): the new values put into the old ones
    (index_put), or the view undone (reshape; permute by the inverse axes)."""
    if op.name == "index":
        return OPS["index_put"], {"spec": attrs["spec"]}, True
    if op.name in ("reshape", "expand"):   # an expand that can be written through broadcasts nothing
        return OPS["reshape"], {"shape": shape}, False
    if op.name == "permute":
        return OPS["permute"], {"axes": tuple(np.argsort(attrs["axes"]).tolist())}, False
    if op.name == "diagonal":
        return OPS["diagonal_put"], attrs, True
    raise RuntimeError(f"in-place modification of a tensor viewed through {op.name} is not supported; clone() it "
                       "first")


def memory_root(array):
    """The array that owns the memory `array` views (itself when it owns it)."""
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
        self.decisions = []       # per guard: its Decision (where the Python code took it)
        self.caller = None        # the frame that calls the captured function (set by the compiler)
        self.recorded = {}        # RecordedNode of an eager op -> its trace node (for backward origins)
        self.origins = {}         # backward trace node -> the forward trace node whose VJP emitted it
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
        root = memory_root(array)
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
        root = memory_root(array)
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

    def note_recorded(self, recorded, out):
        """An eager op that autograd recorded as `recorded` just computed `out`."""
        entry = self.values.get(id(out))
        if entry is not None:
            self.recorded[recorded] = entry[0]

    def backward_apply(self, origins, order):
        """run_graph's `apply` for a derived backward graph: apply_node, noting for each recorded
        node the forward trace node whose VJP emitted it (`origins`: graph node -> position in
        `order`, the forward RecordedNodes)."""
        forward = {node: self.recorded.get(order[p]) for node, p in origins.items()}

        def apply(node, values):
            out = self.apply_node(node, values)
            entry = self.values.get(id(out))
            if entry is not None and forward.get(node) is not None:
                self.origins[entry[0]] = forward[node]
            return out
        return apply

    def loop_runs(self):
        """Candidate loop conditions: runs of `bool(t)` decisions taken at one call stack of code
        positions inside one activation of the frame that loops, with one outcome two or more
        times and then the other, while everything the looping code can see stayed the same
        (see Decision). Returns [(guard indices of the visits in order, the outcome that
        continues)]; ir/loops.py decides whether the trace between them repeats."""
        by_site = {}
        for i, decision in enumerate(self.decisions):
            if decision is not None and decision.site is not None:
                by_site.setdefault(decision.site, []).append(i)
        runs = []
        for visits in by_site.values():
            start = 0
            for end, i in enumerate(visits):
                if self.guards[i][2] != self.guards[visits[start]][2]:
                    if end - start >= 2 and _one_loop([self.decisions[k] for k in visits[start:end + 1]]):
                        runs.append((visits[start:end + 1], self.guards[visits[start]][2]))
                    start = end + 1
        return runs

    def forget_frames(self):
        """Drop the frames the decisions hold (they hold this call's locals) once loops are found."""
        for decision in self.decisions:
            if decision is not None:
                decision.frames = None

    def apply_node(self, node, values):
        """run_graph's `apply` while capturing: evaluate a backward-graph node and record it."""
        if node.op.kind == "opaque":   # bound to this call's objects (a custom Function's ctx, hooks)
            self.break_("its backward runs Python bound to this call (a custom autograd Function or a "
                        "tensor hook), which a replay cannot call again")
        out = node.op.impl(*values, **node.attrs) if node.attrs else node.op.impl(*values)
        out = out if type(out) is np.ndarray else np.asarray(out)
        self.record(node.op, values, node.attrs, out)
        return out

    def write(self, target, value, views=()):
        """`target[...] = value` (same shape) is being done in place. `views`: where target is a
        view, (array, view op, attrs) of what it views, from its parent up to the memory's owner:
        each gets the new value the write gives it (index_put, reshape or permute of the child's),
        so reading them later, or committing them when the caller sees them, sees the write."""
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
        befores = [self.node_of(array) for array, _, _ in views]   # read before the write makes them stale
        if self.broken is not None:
            return
        root = memory_root(target)
        self.root_version[id(root)] = self.root_version.get(id(root), 0) + 1
        self._written(target, node)
        for (array, view_op, attrs), before in zip(views, befores):
            op, attrs, with_old = write_back(view_op, attrs, array.shape)
            node = Node(op, (before, node) if with_old else (node,), attrs, array.shape, before.dtype)
            self.nodes.append(node)
            self._written(array, node)

    def _written(self, array, node):
        """`array` holds the value `node` after an in-place write; one the caller sees is committed."""
        if id(array) not in self.internal and id(array) not in self.written:
            self.written[id(array)] = (array, self.sources.get(id(array)))
        self._register(array, node)

    # ------------------------------------------------------------------ gradients and decisions
    def note_grad(self, tensor):
        """Called before `tensor._grad` changes: remember what it held before the call."""
        if id(tensor) not in self.grads:
            self.grads[id(tensor)] = (tensor, tensor._grad)

    def guard(self, node, kind, expected):
        self.guards.append((node, kind, expected))
        self.decisions.append(Decision(len(self.nodes), self.caller) if kind == "bool" else None)

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


class Decision:
    """Where and in what Python state a `bool(t)` was taken. site: (code, offset) of each frame
    from the user code that took it up to the captured function; frames: those frames (kept, so
    that a frame's identity names one activation); states: per frame, what its Python code can
    see (its locals and the globals its code names, abstracted by `_visible`); in_for: per frame,
    whether its offset lies inside a `for` loop, whose iterator Python keeps out of sight."""
    __slots__ = ("position", "site", "frames", "states", "in_for")

    def __init__(self, position, caller):
        self.position = position   # trace nodes recorded before the decision
        frame = sys._getframe(1)
        while frame is not None and frame is not caller and frame.f_code.co_filename.startswith(_PACKAGE):
            frame = frame.f_back   # fusegrad's own frames (Tensor.__bool__, ...) below the user's
        frames = []
        while frame is not None and frame is not caller:
            frames.append(frame)
            frame = frame.f_back
        if frame is None or not frames:   # not under a captured call's frame: never a loop condition
            self.site = self.frames = self.states = self.in_for = None
            return
        self.frames = tuple(frames)
        self.site = tuple((f.f_code, f.f_lasti) for f in frames)
        self.in_for = tuple(f.f_lasti in _for_loop_offsets(f.f_code) for f in frames)
        self.states = tuple(_frame_state(f) for f in frames)


def _one_loop(visits):
    """Whether decisions at one site are the visits of one loop whose Python side repeats: the
    frame that loops is the innermost one all visits share; it must not be inside a `for` loop,
    and it and the frames it called must see the same Python state at every visit."""
    first = visits[0]
    shared = len(first.frames)
    for k in range(len(first.frames) - 1, -1, -1):
        if any(v.frames[k] is not first.frames[k] for v in visits):
            break
        shared = k
    if shared == len(first.frames) or first.in_for[shared] or first.frames[shared].f_code.co_flags & _SUSPENDS:
        return False   # a generator's caller decides whether it goes on, out of its frame's sight
    return all(v.states[:shared + 1] == first.states[:shared + 1] for v in visits)


_SUSPENDS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


@functools.lru_cache(maxsize=256)
def _for_loop_offsets(code):
    """The bytecode offsets inside `for` loops of `code` (between FOR_ITER and its exit)."""
    inside = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname == "FOR_ITER":
            inside.update(range(instruction.offset, instruction.argval))
    return frozenset(inside)


def _frame_state(frame):
    names = frame.f_code.co_names
    env = frame.f_globals
    return (_visible(dict(frame.f_locals)),
            tuple((name, _visible(env[name], 1)) for name in names if name in env))


_SCALARS = (bool, int, complex, str, bytes, type(None))
_IDENTITIES = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
               types.CodeType, types.FrameType)


def _visible(value, depth=0):
    """What Python control flow can see of a value, comparable with ==: plain values themselves
    (floats by repr, so nan equals nan), tensors by type (shape, dtype, requires_grad), small
    arrays by content, containers and plain objects by contents to a depth of 3, anything else
    by identity."""
    from .tensor import Tensor
    if isinstance(value, _FloatProxy):
        return ("float", repr(value.value()))
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, _SCALARS):
        return (type(value), value)
    if isinstance(value, Tensor):
        return ("tensor", value._data.shape, value._data.dtype.str, value._rg, value._grad is None)
    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.dtype.str, value.tobytes() if value.size <= 256 else id(value))
    if depth >= 3 or isinstance(value, _IDENTITIES):
        return ("object", id(value))
    if type(value) in (list, tuple):
        return (type(value), tuple(_visible(v, depth + 1) for v in value))
    if type(value) is dict:
        return (dict, tuple((_visible(k, 3), _visible(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return (type(value), len(value), id(value))
    contents = getattr(value, "__dict__", None)
    if isinstance(contents, dict):
        return ("object", id(value), _visible(contents, depth + 1))
    return ("object", id(value))


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
