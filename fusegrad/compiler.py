"""fusegrad.compile: a whole training step traced into one graph, compiled, guarded, replayed.

The first call of a compiled function runs it eagerly with the tracer capturing (forward,
backward, optimizer update: one joint graph; see tracer/capture.py). Before it runs, a walk over
everything the function can see (arguments, modules, optimizers, the globals and closure
variables its code names) writes the *guards* of that call: a generated straight-line Python
function checking shapes, dtypes, requires_grad, Python scalars, module and optimizer types,
attributes, hyper-parameters and state, and grad mode. After the call the same guards are checked
again: if the call changed any of that Python state (created optimizer state, counted steps in
Python, drew random numbers), replaying the trace could not reproduce it, so the trace is not
reused. Otherwise it becomes a specialisation: an optimised plan of fused kernels.

A later call whose guards pass runs the plan, checks the value guards (decisions the Python code
took on tensor values: `bool(t)`, `t.item()`, `int(t)`) and only then commits the side effects
(parameter and state updates, gradients) and builds the return value. A failed guard means:
run eagerly (always correct) and capture again; at most MAX_SPECIALISATIONS traces are kept per
function, after which it stays eager and says so once.
"""
import builtins
import collections.abc
import copy
import functools
import inspect
import operator
import os
import random
import re
import sys
import sysconfig
import types
import warnings

import numpy as np

from .ir import OPS, backward_graph, topological_order
from .ir.dtypes import from_numpy_dtype
from .ir.graph import Graph, Node
from .ir.loops import Refused, TripCountOutsideTrace, reroll
from .nn.module import Module
from .optim.optimizer import Optimizer
from .runtime.devices import CPU
from .runtime.log import _listeners, log
from .runtime.plan import Plan
from .tracer import Tensor, grad_mode
from .tracer.capture import HyperParameter, ScalarProxy, Trace, active as capturing, memory_root, recording
from .tracer.dispatch import apply, edge
from .tracer.node import FREED, RecordedNode
from .tracer.factories import default_generator

MAX_SPECIALISATIONS = 8
_SIMPLE = (bool, int, float, str, complex, type(None))
_BIG = 64   # a container of plain values longer than this is guarded by one comparison with a copy
_BIG_ARRAY = 4096   # a NumPy array the guards reach is guarded by its values up to this size


def _plain_values(container):
    items = container.items() if isinstance(container, dict) else ((None, v) for v in container)
    return all(type(k) in _SIMPLE and type(v) in _SIMPLE for k, v in items)


_LIBRARIES = tuple({os.path.realpath(p) + os.sep for p in (
    os.path.dirname(os.path.abspath(__file__)), sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
    sysconfig.get_paths()["platlib"])})


def _users(obj):
    """Whether a module or class belongs to the user's code: defined in a file outside fusegrad,
    the standard library and installed packages, or in __main__."""
    module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", None))
    if module is None or module.__name__ == "builtins":
        return False
    path = getattr(module, "__file__", None)
    if path is None:   # one made at run time (types.ModuleType), or built into the interpreter
        spec = getattr(module, "__spec__", None)
        return getattr(spec, "origin", None) not in ("built-in", "frozen")
    return not os.path.realpath(path).startswith(_LIBRARIES)


def _slots(obj):
    """The attribute names an object keeps in __slots__ (not its __dict__ or weak references)."""
    return [name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())
            if name not in ("__dict__", "__weakref__") and isinstance(name, str)]


_new = Tensor._make


class CompileError(RuntimeError):
    """fullgraph=True and the function could not be captured as one replayable graph."""


# ---------------------------------------------------------------------------- guards

class _Guards:
    """Guards and sources for one call, built by walking what the function can reach.

    checks: (expression, expected, what, mode) with mode "==", "is" or "nan"; expressions read
    the arguments as A[i] / K[name] and held objects as O<k>. sources: id(array) -> expression
    that finds that array on a later call. tensor_paths: id(tensor) -> expression."""

    def __init__(self):
        self.checks = []
        self.objects = {}
        self.held = {}
        self.sources = {}
        self.tensor_paths = {}
        self.visited_code = set()
        self.paths = {}   # id(module or optimizer) -> the expression it was first reached by
        self.hoisted = []  # paths of tensors, modules and optimizers, read once into a local by the guard
        self.groups = []   # (optimizer, parameter group, its expression)
        self.mentions = set()   # names and strings in the code walked (see TRACED_HYPER_PARAMETERS)
        self.devices = set()   # of the tensors reached: one plan runs on one device
        self.histories = []   # (tensor, its autograd node before the call, expression, what it is)
        self.arrays = []   # (expression, array) of every tensor's data and gradient reached
        self.stateful = {}   # id -> (object with hidden state, what it is, _hidden_state before the call)
        self.stores = []   # (expression, what, tensor): another tensor the captured call stored there

    def device(self):
        """The device of the tensors reached (the CPU when none is)."""
        return min(self.devices, key=str) if self.devices else CPU

    def hold(self, obj):
        name = self.held.get(id(obj))
        if name is None:
            name = self.held[id(obj)] = f"O{len(self.objects)}"
            self.objects[name] = obj
        return name

    def check(self, expr, expected, what, mode="=="):
        if mode == "==" and isinstance(expected, float) and expected != expected:
            mode = "nan"
        self.checks.append((expr, expected, what, mode))

    # -- values
    def walk(self, obj, expr, what, depth=0):
        holder = getattr(obj, "__self__", obj)   # a bound method's object: rng.normal
        if isinstance(holder, _STATEFUL) and id(holder) not in self.stateful:
            self.stateful[id(holder)] = (holder, what, _hidden_state(holder))
        if isinstance(obj, Tensor):
            self.tensor(obj, expr, what)
        elif isinstance(obj, _SIMPLE):
            self.check(f"type({expr})", type(obj), f"{what}: type", "is")
            self.check(expr, obj, what)
        elif isinstance(obj, (list, tuple, dict)) and len(obj) > _BIG and _plain_values(obj):
            # a long container of plain values (a vocabulary, a table): one comparison with a copy
            self.check(f"type({expr})", type(obj), f"{what}: type", "is")
            self.check(expr, copy.copy(obj), f"{what}: contents")
        elif isinstance(obj, (list, tuple)):
            self.check(f"type({expr})", type(obj), f"{what}: type", "is")
            self.check(f"len({expr})", len(obj), f"{what}: length")
            for i, item in enumerate(obj):
                self.walk(item, f"{expr}[{i}]", f"{what}[{i}]", depth)
        elif isinstance(obj, dict):
            self.check(f"type({expr})", type(obj), f"{what}: type", "is")
            self.check(f"tuple({expr})", tuple(obj), f"{what}: keys")
            for k, v in obj.items():   # other keys than str and int (tuples, enums) as held objects
                key = repr(k) if type(k) in (str, int) else self.hold(k)
                self.walk(v, f"{expr}[{key}]", f"{what}[{k!r}]", depth)
        elif isinstance(obj, (Module, Optimizer)):
            # by type and contents, not identity: another instance of the same structure replays
            # the same plan with its own tensors, which are found through `expr` on each call
            first = self.paths.get(id(obj))
            if first is not None:
                self.check(f"{expr} is {first}", True, f"{what}: the same object as {first}")
                return
            self.paths[id(obj)] = expr
            self.hoisted.append(expr)
            self.check(f"type({expr})", type(obj), f"{what}: type", "is")
            (self.module if isinstance(obj, Module) else self.optimizer)(obj, expr, what)
        elif isinstance(obj, CompiledModule):   # a compiled model passed to a compiled step: its module
            self.check(f"type({expr})", type(obj), f"{what}: type", "is")
            self.walk(obj.fn, f"{expr}.fn", what, depth)
        elif isinstance(obj, np.ndarray):   # Python code may read its values (float(a[0])): small ones are guarded
            self.check(expr, obj, f"{what}: the same object", "is")
            if obj.size <= _BIG_ARRAY:
                self.check(f"{expr}.tobytes()", obj.tobytes(), f"{what}: values")
        elif isinstance(obj, CompiledFunction):
            self.check(expr, obj, f"{what}: the same object", "is")
        elif isinstance(obj, types.FunctionType) and depth < 3:
            self.check(expr, obj, f"{what}: the same function", "is")
            self.code_of(obj, depth + 1)
        elif isinstance(obj, (types.ModuleType, type)):
            self.namespace(obj, expr, what, depth)
        elif not isinstance(obj, types.BuiltinFunctionType):
            self.check(expr, obj, f"{what}: the same object", "is")
            if depth < 3 and isinstance(getattr(obj, "__dict__", None), dict) and id(obj) not in self.paths:
                # a plain object (a trainer holding a model, a config): what it holds is read too
                self.namespace(type(obj), f"type({expr})", f"{what}'s class", depth + 1)
                self.paths[id(obj)] = expr
                self.check(f"tuple({expr}.__dict__)", tuple(vars(obj)), f"{what}: attribute names")
                for key, value in vars(obj).items():
                    if key.isidentifier():
                        self.walk(value, f"{expr}.{key}", f"{what}.{key}", depth + 1)
            elif depth < 3 and _slots(obj) and id(obj) not in self.paths:   # an object with __slots__
                self.paths[id(obj)] = expr
                for key in _slots(obj):
                    if hasattr(obj, key):
                        self.walk(getattr(obj, key), f"{expr}.{key}", f"{what}.{key}", depth + 1)

    def namespace(self, obj, expr, what, depth):
        """A module or class of the user's code (not a library's): the attributes the code walked
        names (config.LR, a class constant), which a later call may find changed."""
        if depth >= 3 or id(obj) in self.paths or not _users(obj):
            return
        self.paths[id(obj)] = expr
        self.check(expr, obj, f"{what}: the same object", "is")
        attributes = vars(obj)
        for name in sorted(self.mentions.intersection(attributes)):
            value = attributes[name]
            if not isinstance(value, (types.ModuleType, classmethod, staticmethod, property)):
                self.walk(value, f"{expr}.{name}", f"{what}.{name}", depth + 1)

    def tensor(self, t, expr, what):
        first = self.tensor_paths.get(id(t))
        if first is not None:   # reached again (a parameter in a module and in an optimizer)
            self.check(f"{expr} is {first}", True, f"{what}: the same tensor as {first}")
            return
        self.tensor_paths[id(t)] = expr
        self.histories.append((t, t._node, expr, what))
        self.hoisted.append(expr)
        self.sources[id(t._data)] = f"{expr}._data"
        self.arrays.append((f"{expr}._data", t._data))
        self.check(f"type({expr})", type(t), f"{what}: type", "is")
        self.check(f"{expr}._data.shape", t._data.shape, what)
        self.check(f"{expr}._data.dtype", t._data.dtype, f"{what}: dtype")
        self.check(f"{expr}._device", t._device, f"{what}: device", "is")
        if t._device is not CPU or t._data.ndim:   # a 0-d CPU tensor (Adam's step count) joins any device
            self.devices.add(t._device)
        self.check(f"{expr}._rg", t._rg, f"{what}: requires_grad")
        self.check(f"{expr}._node is None", t._node is None, f"{what}: is a leaf")
        self.check(f"{expr}._grad is None", t._grad is None, f"{what}.grad is None")
        hooked = bool(t._hooks or t._post_accumulate_hooks)   # registered or removed between calls
        self.check(f"not ({expr}._hooks or {expr}._post_accumulate_hooks)", not hooked, f"{what}: has no hooks")
        if hooked:
            for key in ("_hooks", "_post_accumulate_hooks"):
                self.walk(getattr(t, key), f"{expr}.{key}", f"{what}: {key[1:].replace('_', ' ')}")
        if t._grad is not None:
            self.sources[id(t._grad._data)] = f"{expr}._grad._data"
            self.arrays.append((f"{expr}._grad._data", t._grad._data))
            self.check(f"{expr}._grad._data.shape", t._grad._data.shape, f"{what}.grad")
            self.check(f"{expr}._grad._data.dtype", t._grad._data.dtype, f"{what}.grad: dtype")

    def module(self, m, name, what):
        hooked = m._forward_hooks or m._forward_pre_hooks   # registered or removed between calls
        self.check(f"not ({name}._forward_hooks or {name}._forward_pre_hooks)", not hooked, f"{what}: has no hooks")
        self.check(f"tuple({name}.__dict__)", tuple(vars(m)), f"{what}: attribute names")   # one set by the call
        for key, value in vars(m).items():
            where = f"{what}.{key}"
            if key in ("_parameters", "_buffers", "_modules"):
                self.check(f"tuple({name}.{key})", tuple(value), f"{what}: {key[1:]}")
                for k, v in value.items():
                    item = f"{name}.{key}[{k!r}]"
                    if v is None:
                        self.check(f"{item} is None", True, f"{what}.{k}")
                    else:
                        self.walk(v, item, f"{what}.{k}")
            elif key in ("_forward_hooks", "_forward_pre_hooks"):
                if hooked:
                    self.check(f"tuple({name}.{key})", tuple(value), f"{what}: {key[1:].replace('_', ' ')}")
                    for k, hook in value.items():
                        self.walk(hook, f"{name}.{key}[{k!r}]", f"{what}: {key[1:-1].replace('_', ' ')} {k}")
            elif key == "_hooks_with_kwargs":
                if hooked:
                    self.check(f"sorted({name}.{key})", sorted(value), f"{what}: hooks with kwargs")
            elif isinstance(value, _SIMPLE) or (isinstance(value, tuple)
                                                and all(isinstance(x, _SIMPLE) for x in value)):
                self.check(f"{name}.__dict__[{key!r}]", value, where)
            elif key != "_non_persistent":   # tensors, containers, objects kept as plain attributes
                self.walk(value, f"{name}.__dict__[{key!r}]", where, 1)
        forward = getattr(type(m), "forward", None)
        if isinstance(forward, types.FunctionType):
            self.code_of(forward, 1)

    def optimizer(self, opt, name, what):
        self.check(f"len({name}.param_groups)", len(opt.param_groups), f"{what}: parameter groups")
        for g, group in enumerate(opt.param_groups):
            gexpr = f"{name}.param_groups[{g}]"
            self.groups.append((opt, group, gexpr))
            self.check(f"tuple({gexpr})", tuple(group), f"{what}.param_groups[{g}]: keys")
            for key, value in group.items():
                where = f"{what}.param_groups[{g}][{key!r}]"
                if key == "params":
                    self.check(f"len({gexpr}['params'])", len(value), f"{where}: length")
                    for i, p in enumerate(value):
                        self.tensor(p, f"{gexpr}['params'][{i}]", f"{where}[{i}]")
                else:
                    self.walk(value, f"{gexpr}[{key!r}]", where)
        self.check(f"len({name}.state)", len(opt.state), f"{what}.state: size")
        for p, state in opt.state.items():
            key = self.tensor_paths.get(id(p))
            if key is None:   # state of a tensor that is not in a parameter group
                key = self.hold(p)
            sexpr = f"{name}.state[{key}]"
            self.check(f"{key} in {name}.state", True, f"{what}.state: entry")
            self.check(f"tuple({sexpr})", tuple(state), f"{what}.state: keys")
            for entry, value in state.items():
                self.walk(value, f"{sexpr}[{entry!r}]", f"{what}.state[{entry!r}]")

    def code_of(self, fn, depth):
        """Guard what a Python function's code reads by name: globals and closure cells."""
        code = fn.__code__
        if code in self.visited_code:
            return
        self.visited_code.add(code)
        names = set()
        stack = [code]
        while stack:
            c = stack.pop()
            names.update(c.co_names)
            self.mentions.update(c.co_names)
            self.mentions.update(x for x in c.co_consts if isinstance(x, str))
            stack.extend(x for x in c.co_consts if isinstance(x, types.CodeType))
        env = fn.__globals__
        genv = self.hold(env)
        for name in sorted(names):
            if name in env:
                value = env[name]
                self.check(f"{name!r} in {genv}", True, f"global {name}: defined")
                self.walk(value, f"{genv}[{name!r}]", f"global {name}", depth)
        for cell_name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            self.walk(value, f"{self.hold(cell)}.cell_contents", f"closure variable {cell_name}", depth)


def _generate_guard(checks, objects, hoisted=()):
    """def guard(A, K) -> index of the first failing check, or -1. Each path in `hoisted` (a
    tensor's or module's) is read into a local before its first use, so the checks of one tensor
    do not walk `A[0]._modules['layer1']._parameters['weight']` again each time."""
    namespace = dict(objects)
    lines = []
    patterns = [(path, re.compile(re.escape(path) + r"(?=[.\[ )]|$)")) for path in hoisted
                if "." in path or "[" in path]
    aliases = {}

    def rewrite(text):
        for path, pattern in sorted(patterns, key=lambda item: -len(item[0])):
            if path in aliases:
                text = pattern.sub(aliases[path], text)
        return text

    for i, (expr, expected, _, mode) in enumerate(checks):
        for path, pattern in patterns:
            if path not in aliases and pattern.search(expr):
                value = rewrite(path)
                aliases[path] = f"L{len(aliases)}"
                lines.append(f"{aliases[path]} = {value}")
        expr = rewrite(expr)
        if mode == "nan":
            lines.append(f"if ({expr}) == ({expr}): return {i}")
            continue
        key = f"E{i}"
        namespace[key] = expected
        op = "is not" if mode == "is" else "!="
        lines.append(f"if ({expr}) {op} {key}: return {i}")
    body = "\n".join("        " + ln for ln in lines) or "        pass"
    source = (f"def guard(A, K):\n    try:\n{body}\n    except Exception:\n        return -2\n    return -1\n")
    exec(builtins.compile(source, "<fusegrad guards>", "exec"), namespace)
    return namespace["guard"], source


def _describe_failure(checks, objects, index, args, kwargs):
    """The failing check in plain words: 'x: size mismatch at dim 1, expected 640, got 8'."""
    if index == -2:   # an expression raised: find the first that does not hold
        for i in range(len(checks)):
            try:
                if not _holds(checks[i], objects, args, kwargs):
                    return _describe_failure(checks, objects, i, args, kwargs)
            except Exception as error:
                return f"{checks[i][2]}: cannot be read ({type(error).__name__}: {error})"
        return "a guard raised"
    expr, expected, what, mode = checks[index]
    actual = eval(expr, dict(objects, A=args, K=kwargs))
    if isinstance(expected, tuple) and isinstance(actual, tuple) and what.endswith(("]", ")")) is False \
            and len(expected) == len(actual) and all(isinstance(n, int) for n in expected + actual):
        dim = next(d for d, (e, a) in enumerate(zip(expected, actual)) if e != a)
        return f"{what}: size mismatch at dim {dim}, expected {expected[dim]}, got {actual[dim]}"
    if mode == "is" and what.endswith(("object", "tensor", "module", "optimizer", "function", "array")):
        return f"{what}: it is another object now"
    return f"{what}: expected {expected!r}, got {actual!r}"


def _holds(check, objects, args, kwargs):
    expr, expected, _, mode = check
    actual = eval(expr, dict(objects, A=args, K=kwargs))
    if mode == "is":
        return actual is expected
    if mode == "nan":
        return actual != actual
    return actual == expected


# ---------------------------------------------------------------------------- specialisations

class DifferentiableForward:
    """The captured forward graph of a returned tensor that requires grad. On a replay, `attach`
    gives the returned tensor one `compiled_call` node over the function's inputs; its VJP (`vjp`)
    recomputes the forward from the saved inputs and emits the forward's derived backward."""

    def __init__(self, trace, output):
        self.output = output
        self.inputs = list(trace.inputs)
        self.order = topological_order([output])

    @staticmethod
    def owners_of(trace):
        """Per trace input: the expression of the tensor whose data it is (not a gradient's), or
        None for constants."""
        return [None if not isinstance(source, str) or "._grad" in source else _owner(source)
                for source in trace.input_sources]

    def attach(self, result, tensors, bindings, versions):
        """Give `result` its compiled_call node; `tensors` are the tensors whose data each input
        is (None for constants and gradients), `bindings` the input arrays of this replay and
        `versions` their tensors' version counters before the replay committed its writes (a
        backward that reads an input the call wrote raises, as in eager mode)."""
        if not grad_mode.state.enabled:
            return result
        inputs = tuple(edge(t) if t is not None and t._rg else a for t, a in zip(tensors, bindings))
        if not any(isinstance(v, Node) for v in inputs):
            return result
        versions = [(t._vc, v, i) for i, (t, v) in enumerate(zip(tensors, versions)) if t is not None]
        result._node = RecordedNode(OPS["compiled_call"], inputs, {"forward": self}, result._data.shape,
                                    from_numpy_dtype(result._data.dtype), tuple(bindings), versions, None,
                                    result._device)
        result._rg = True
        return result

    def vjp(self, b, g, saved):
        env = dict(zip(self.inputs, saved))
        for n in self.order:
            if n in env:
                continue
            if n.op.name == "const":
                env[n] = b.const(n.attrs["value"], n.attrs["dtype"])
                continue
            env[n] = b.emit(n.op, tuple(env[v] if isinstance(v, Node) else v for v in n.inputs), n.attrs)
        wanted = set(self.inputs)
        derivation = backward_graph([self.output], [g], wanted.__contains__, _saved_nodes, order=self.order)
        mapped = {}
        for p, (where, j) in zip(derivation.graph.inputs, derivation.sources):
            if where == "root":
                mapped[p] = g
            else:
                value = _saved_nodes(self.order[where])[j]
                mapped[p] = env[value] if isinstance(value, Node) else value
        for n in derivation.graph.nodes:
            if n.op.name == "const":
                mapped[n] = b.const(n.attrs["value"], n.attrs["dtype"])
            else:
                mapped[n] = b.emit(n.op, tuple(mapped[v] if isinstance(v, Node) else v for v in n.inputs), n.attrs)
        cotangents = {self.order[p]: mapped[o] for p, o in zip(derivation.wanted, derivation.graph.outputs)}
        return tuple(cotangents.get(p) for p in self.inputs)


def _reroll(trace, outputs, value_guards, result, name):
    """The trace's nodes and outputs with its first loop that re-rolls as one loop (ir/loops.py),
    whose condition guards `value_guards` then drops; else as captured. Returns (nodes, outputs,
    a description of the loop or None)."""
    runs = trace.loop_runs()
    if runs and _differentiable(result):
        runs = []
        log("recompiles", f"{name}: a loop is not re-rolled: the call returns a tensor that requires grad, whose "
                          "backward replays the captured forward with its trip count")
    for visits, continues in runs:
        site = trace.decisions[visits[0]].site[0]
        where = f"{site[0].co_filename}:{_line_of(*site)}"
        inside = any(visits[0] < i < visits[-1] and i not in visits for i in range(len(trace.guards)))
        dropped = {value_guards[i][0] for i in visits}
        try:
            nodes, new_outputs, min_trips = reroll(trace.nodes, outputs, [
                (trace.decisions[i].position, trace.guards[i][0]) for i in visits], continues, trace.origins,
                inside, dropped)
        except Refused as why:
            log("recompiles", f"{name}: the loop at {where} is not re-rolled: {why}")
            continue
        value_guards[:] = [g for i, g in enumerate(value_guards) if i not in visits]
        loop = (f"the loop at {where} (traced {len(visits) - 1} times, {min_trips} or more "
                f"{'iteration' if min_trips == 1 else 'iterations'} replay)")
        log("recompiles", f"{name}: re-rolled {loop}")
        return nodes, new_outputs, loop
    return trace.nodes, outputs, None


def _line_of(code, offset):
    line = code.co_firstlineno
    for start, _, number in code.co_lines():
        if start <= offset and number is not None:
            line = number
    return line


def _differentiable(template):
    kind, data = template[:2]
    if kind == "differentiable":
        return True
    if kind in ("list", "tuple", "namedtuple"):
        return any(_differentiable(t) for t in data)
    if kind == "dict":
        return any(_differentiable(t) for t in data.values())
    return False


def _owner(source):
    """`X` for a data path `X._data` (the tensor whose version counter a write bumps), else None."""
    return source[:-len("._data")] if source.endswith("._data") else None


def _saved_nodes(node):
    """What a trace node's VJP reads, as nodes of the trace (or Python scalars)."""
    return [node.inputs[i] if i >= 0 else node for i in node.op.saved_slots(len(node.inputs))]


class Specialisation:
    """One captured path: guards, the plan of its joint graph, and how to commit its effects."""

    def __init__(self, guards, trace, result, label, compiled):
        self.guards = guards
        if len(guards.devices) > 1:
            trace.break_(f"it uses tensors on {' and '.join(sorted(map(str, guards.devices)))}; one plan runs on "
                         "one device")
        self.device = guards.device()
        # commits: (kind, expression, the written tensor's expression or a stored value's template, output)
        outputs, self.commits, self.value_guards = [], [], []
        objects = dict(guards.objects)

        def output(node):
            outputs.append(node)
            return len(outputs) - 1

        donatable = set()   # expressions of written arrays a plan may overwrite (see _donations)
        for array, expr in trace.written.values():   # arrays the caller sees, written in place
            if expr is None:
                expr = f"H{len(objects)}"
                objects[expr] = array
            elif _donatable(array):
                donatable.add(expr)
            self.commits.append(("write", expr, _owner(expr), output(trace.values[id(array)][0])))
        for tensor, before in trace.grads.values():
            after = tensor._grad
            if after is before:
                continue
            path = guards.tensor_paths.get(id(tensor))
            if path is None:
                trace.break_("it sets the gradient of a tensor made inside the call, which a replay cannot find")
            elif after is None:
                self.commits.append(("grad_none", path, None, None))
            elif id(after._data) not in trace.values:
                trace.break_(f"it assigns {path}.grad a tensor the trace did not compute")
            else:
                self.commits.append(("grad", path, None, output(trace.values[id(after._data)][0])))
        for expr, what, tensor in guards.stores:   # self.ema = ...: the replay stores its tensor there
            if tensor._rg:
                trace.break_(f"it stores a tensor that requires grad in {what}; a replay would not give it its "
                             "autograd history")
            self.commits.append(("store", expr, _template(tensor, trace, guards, output), None))
            guards.tensor_paths[id(tensor)] = expr   # returned, it is the stored tensor
        self.result = _template(result, trace, guards, output)
        for node, kind, expected in trace.guards:
            self.value_guards.append((output(node), kind, expected))
        if trace.draws:   # every draw runs, used or not, so the generator advances as in eager mode
            output(trace.draws[-1])
        nodes, outputs, self.loop = _reroll(trace, outputs, self.value_guards, self.result, compiled.name)
        self.graph = Graph(nodes, trace.inputs, outputs)
        donate = self._donations(trace, donatable)
        check = ([k for k, _, _ in self.value_guards], self._check_values) if donate and self.value_guards else None
        self.plan = Plan(self.graph, self.device.type, label=label, info=dict(compiled.cache_info),
                         cache_dir=compiled.cache_dir, donate=donate, check=check)
        for i in self.plan.donated:   # a later call must hand over an array of the same kind
            source = trace.input_sources[i]
            guards.check(f"donatable({source})", True, f"{source}: an array of its own, C-contiguous and "
                                                        "writable (the plan updates it in place)")
        guards.objects["donatable"] = _donatable
        if any(kind == "write" for kind, _, _, _ in self.commits):
            # the trace knows which arrays overlapped at capture; a write into one reaches the others
            # only where they share memory, so later calls must share it alike
            found = [(expr, array) for expr, array in guards.arrays if id(array) in trace.values]
            guards.objects["sharing"] = _sharing
            guards.check(f"sharing({', '.join(e for e, _ in found)})", _sharing(*(a for _, a in found)),
                         "the tensors that share memory (a write through one reaches the others)")
        self.guard_fn, self.guard_source = _generate_guard(guards.checks, guards.objects, guards.hoisted)
        self.plan.info["guards"] = self.guard_source
        self.source, self.replay = self._generate(trace, objects)

    def _donations(self, trace, donatable):
        """{input position: output position} for the arrays the call updates in place (a parameter,
        an optimizer's buffer) that a plan may overwrite instead of the commit copying the new value
        in: inputs found by a path (`donatable`: arrays of their own, so that no other input shares
        their memory, C-contiguous and writable); each becomes a guard when the plan takes it."""
        position = {source: i for i, source in enumerate(trace.input_sources) if isinstance(source, str)}
        return {position[expr]: k for kind, expr, _, k in self.commits
                if kind == "write" and expr in donatable and expr in position}

    def _check_values(self, *values):
        """The value guards, checked by the plan before it overwrites a donated array."""
        for value, (_, kind, expected) in zip(values, self.value_guards):
            if not _value_matches(value, kind, expected):
                raise ValueGuardMismatch(kind, expected, value)

    def _generate(self, trace, objects):
        """def replay(A, K) -> (result, None), or (None, mismatch) when a value guard fails: run
        the plan, check the value guards, then commit, in straight-line code."""
        namespace = dict(objects, plan=self.plan, make=functools.partial(_new, device=self.device),
                         copyto=np.copyto, view=_view, matches=_value_matches, hyper=_float64, fresh=_fresh)
        bindings = []
        for k, source in enumerate(trace.input_sources):
            if not isinstance(source, str):
                namespace[f"C{k}"] = source
                source = f"C{k}"
            bindings.append(source)
        lines = [f"B = [{', '.join(bindings)}]", "V = plan(B)"]
        for n, (k, kind, expected) in enumerate(self.value_guards):
            namespace[f"X{n}"] = expected
            lines.append(f"if not matches(V[{k}], {kind!r}, X{n}): return None, ({kind!r}, X{n}, V[{k}])")
        if any(c[0] == "grad" for c in self.commits):
            lines.append("held = {id(b) for b in B}")
        if _differentiable(self.result):   # the tensors of the inputs and their versions before the commits
            owners = DifferentiableForward.owners_of(trace)
            lines.append(f"OW = ({''.join(f'{o or None}, ' for o in owners)})")
            lines.append("VC = [None if t is None else t._vc[0] for t in OW]")
        overwritten = {k: i for i, k in self.plan.donated.items()}
        for kind, expr, owner, k in self.commits:
            if kind == "write":
                copy = f"copyto({expr}, V[{k}], casting='unsafe')"
                # a donated array is written by the plan, unless its first call wrote a copy
                lines.append(f"if V[{k}] is not B[{overwritten[k]}]: {copy}" if k in overwritten else copy)
                if owner is not None:
                    lines.append(f"{owner}._vc[0] += 1")
            elif kind == "grad":
                lines.append(f"{expr}._grad = make(fresh(V[{k}], held))")
            elif kind == "store":
                lines.append(f"{expr} = {_result_code(owner, namespace)}")
            else:
                lines.append(f"{expr}._grad = None")
        lines.append(f"return {_result_code(self.result, namespace)}, None")
        source = "def replay(A, K):\n" + "\n".join("    " + ln for ln in lines) + "\n"
        exec(builtins.compile(source, "<fusegrad replay>", "exec"), namespace)
        return source, namespace["replay"]


class ValueGuardMismatch(Exception):
    """A value guard failed inside a plan, before it overwrote a donated array: (kind, expected,
    the value computed)."""


def _donatable(array):
    """Whether a plan may overwrite `array` in place: it owns its memory (no view, so no other
    array a call binds can overlap it), C-contiguous and writable."""
    return array.base is None and array.flags.c_contiguous and array.flags.writeable


def _sharing(*arrays):
    """How the arrays share memory: None when no two do, else for each the position of the first
    with the same owner, where it starts in its owner's memory and its strides."""
    owners = [a if a.base is None else memory_root(a) for a in arrays]
    if len(set(map(id, owners))) == len(owners):
        return None
    first = {}
    return tuple((first.setdefault(id(o), k), a.__array_interface__["data"][0] - o.__array_interface__["data"][0],
                  a.strides) for k, (a, o) in enumerate(zip(arrays, owners)))


def _fresh(value, held):
    """A gradient buffer of its own: never a view, nor an array the caller passed in."""
    return value.copy() if value.base is not None or id(value) in held else value


def _result_code(template, namespace):
    kind, data = template[:2]
    if kind == "tensor":
        return f"make(V[{data}])"
    if kind == "differentiable":
        name = f"D{len(namespace)}"
        namespace[name] = template[2]
        return f"{name}.attach(make(V[{data}]), OW, B, VC)"
    if kind == "float":
        return f"V[{data}].item()"
    if kind == "path":
        return data
    if kind == "view":
        names = []
        for value in template[2:]:
            names.append(f"R{len(namespace)}")
            namespace[names[-1]] = value
        return f"view({_result_code(data, namespace)}, {', '.join(names)})"
    if kind in ("list", "tuple", "namedtuple"):
        items = ", ".join(_result_code(t, namespace) for t in data)
        if kind == "namedtuple":
            name = f"R{len(namespace)}"
            namespace[name] = template[2]
            return f"{name}({items})"
        return f"[{items}]" if kind == "list" else f"({items}{',' if len(data) == 1 else ''})"
    if kind == "dict":   # keys as constants of the namespace: any hashable key works
        entries = []
        for key, t in data.items():
            name = f"R{len(namespace)}"
            namespace[name] = key
            entries.append(f"{name}: {_result_code(t, namespace)}")
        return "{" + ", ".join(entries) + "}"
    name = f"R{len(namespace)}"
    namespace[name] = data
    return name


def _value_matches(value, kind, expected):
    if kind == "bool":
        return bool(value) == expected
    if kind == "item":
        actual = value.reshape(()).item()
        return actual == expected or (actual != actual and expected != expected)
    return value.shape == expected.shape and bool(np.all((value == expected) | ((value != value) & (expected != expected))))


def _template(obj, trace, guards, output):
    """How to rebuild the return value on a replay: ('tensor', k), ('differentiable', k, forward),
    ('float', k), ('path', expr), lists, tuples, named tuples and dicts of those, or ('const',
    value) for plain Python values. Anything else could hold this call's tensors, which a replay
    would hand back stale: it breaks the trace."""
    if isinstance(obj, ScalarProxy):
        return ("const", obj.value()) if obj.used else ("float", output(obj.node))
    if isinstance(obj, Tensor):
        if obj._device is not guards.device():
            trace.break_(f"it returns a tensor on {obj._device}, made inside the call, while the tensors it "
                         f"reads are on {', '.join(sorted(map(str, guards.devices))) or 'cpu'}")
        path = guards.tensor_paths.get(id(obj)) or next(
            (f"{expr}._grad" for t, _, expr, _ in guards.histories if t._grad is obj), None)
        if path is not None:   # an argument, a parameter or its .grad, returned: the same tensor
            return ("path", path)
        view = _caller_view(obj, guards)
        if view is not None:
            return view
        node = trace.node_of(obj._data)
        if obj._node is not None and node.op.name != "placeholder" and not _backward_ran(obj._node):
            # the caller may call backward on it: replays give it a node whose VJP is the derived
            # backward of the captured forward
            return ("differentiable", output(node), DifferentiableForward(trace, node))
        return ("tensor", output(node))
    if type(obj) in (list, tuple):
        return (type(obj).__name__, [_template(x, trace, guards, output) for x in obj])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):   # a named tuple (torch.return_types too)
        return ("namedtuple", [_template(x, trace, guards, output) for x in obj], type(obj))
    if type(obj) is dict:
        return ("dict", {k: _template(v, trace, guards, output) for k, v in obj.items()})
    if obj is not None and not isinstance(obj, _SIMPLE):
        trace.break_(f"it returns a {type(obj).__name__}, which a replay cannot rebuild")
    return ("const", obj)


def _caller_view(t, guards):
    """('view', parent's template, op, attrs, grad mode) when `t` views, through view ops without
    tensor operands, the memory of a tensor the caller holds: a replay returns the same view of
    it (sharing its memory and version counter, with the view's own history, as eager mode),
    not a copy of the values. None otherwise."""
    view = t._view
    if view is None or view.index:
        return None
    path = guards.tensor_paths.get(id(view.parent))
    parent = ("path", path) if path is not None else _caller_view(view.parent, guards)
    if parent is None:
        return None
    return ("view", parent, view.op, view.attrs, not view.made_without_grad)


def _view(parent, op, attrs, enabled):
    with grad_mode.set_grad_enabled(enabled):
        return apply(op, (parent,), attrs)


def _backward_ran(node):
    """Whether a backward pass without retain_graph went through the graph of `node` (some node of
    it has freed its saved values): eager mode raises on a second backward, so a replay must not
    give the returned tensor a backward of its own."""
    return any(n.saved is FREED for n in topological_order([node]))


def _plain(obj):
    """The return value of a captured call as the caller sees it: proxies become floats."""
    if isinstance(obj, ScalarProxy):
        return obj.value()
    if type(obj) in (list, tuple):
        return type(obj)(_plain(x) for x in obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_plain(x) for x in obj))
    if type(obj) is dict:
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _changed_state(guards, trace, args, kwargs):
    """The first guard that no longer holds after the captured call, among those describing state
    a replay does not reproduce; gradients the trace set or cleared are replayed, so theirs are
    skipped. None when the call left that state as it found it."""
    replayed = tuple(f"{guards.tensor_paths[i]}._grad" for i in trace.grads if i in guards.tensor_paths)
    for i, check in enumerate(guards.checks):
        if replayed and check[0].startswith(replayed):
            continue
        try:
            if not _holds(check, guards.objects, args, kwargs):
                return i
        except Exception:
            return i
    return None


# Objects whose state decides what a call computes but is not in their attributes: random
# generators, and iterators (their position). A call that changes one runs eagerly.
_STATEFUL = (random.Random, np.random.Generator, np.random.RandomState, np.random.BitGenerator,
             collections.abc.Iterator)


def _hidden_state(obj):
    """What a stateful object will do next, comparable with ==: a generator's state, an iterator's
    remaining length; None where it cannot be read (a generator function's, a file's)."""
    try:
        return _readable_state(obj)
    except Exception:
        return None


def _readable_state(obj):
    if isinstance(obj, random.Random):
        return obj.getstate()
    if isinstance(obj, np.random.RandomState):
        return _comparable(obj.get_state(legacy=False))
    if isinstance(obj, np.random.Generator):
        obj = obj.bit_generator
    if isinstance(obj, np.random.BitGenerator):
        return _comparable(obj.state)
    if hasattr(type(obj), "__length_hint__") and not isinstance(obj, types.GeneratorType):
        return operator.length_hint(obj)
    return None


def _comparable(state):
    if isinstance(state, dict):
        return tuple((k, _comparable(v)) for k, v in state.items())
    return state.tobytes() if isinstance(state, np.ndarray) else state


def _unreplayable_changes(guards, args, kwargs):
    """Why a replay cannot redo what the captured call did to what it reached (a random generator
    or iterator advanced, something other than a tensor stored where a tensor was, new autograd
    history given to one changed in place), or None. Tensors stored where others were (self.ema =
    ...) go to guards.stores: replays store theirs."""
    for obj, what, before in guards.stateful.values():
        if before is None or _hidden_state(obj) != before:
            kind = "an iterator" if isinstance(obj, collections.abc.Iterator) else "a random generator"
            return f"it reads {what}, {kind} whose state a replay would not advance"
    namespace = dict(guards.objects, A=args, K=kwargs)
    for t, node, expr, what in guards.histories:
        try:
            found = eval(expr, namespace)
        except Exception:
            found = None
        if found is not t:
            if not isinstance(found, Tensor) or not _STORE_TARGET.match(expr):
                return f"it stores another object where it found {what}, which a replay would not do"
            guards.stores.append((expr, what, found))
        if t._node is not node:
            return f"it changes {what} in place while recording gradients: a replay would write its values but " \
                   "not give it its new autograd history"
    return None


# Where a replay can store a tensor: an item or attribute of something reached, not an argument.
_STORE_TARGET = re.compile(r"^(?![AK]\[[^\]]*\]$).*(\]|\.\w+)$")


def _rng_states():
    return (default_generator.gen.bit_generator.state, random.getstate(), np.random.get_state()[1].tobytes())


def _unrecorded_draws(before, trace):
    """Whether the call drew random numbers a replay would not redraw: Python's or NumPy's global
    generators, or fusegrad's other than through the draws the trace recorded."""
    after = _rng_states()
    expected = trace.generator_state if trace.draws else before[0]
    return after[0] != expected or after[1:] != before[1:]


# ---------------------------------------------------------------------------- the decorator

class CompiledFunction:
    """What `fusegrad.compile(fn)` returns; call it like fn."""

    def __init__(self, fn, fullgraph=False, dynamic=False, mode=None, cache_dir=None):
        self.fn = fn
        self.fullgraph = fullgraph
        self.dynamic = dynamic
        self.mode = mode
        self.cache_dir = cache_dir
        self.specialisations = []
        self.eager_reason = None
        self.attempts = 0
        self.calls = self.replays = 0
        self.name = getattr(fn, "__qualname__", type(fn).__name__)
        try:
            self.parameter_names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            self.parameter_names = []
        functools.update_wrapper(self, fn, updated=())
        code = getattr(inspect.unwrap(getattr(fn, "forward", fn)), "__code__", None)
        self.cache_info = {"name": self.name, "source_file": code.co_filename if code else None}

    def __get__(self, instance, owner):   # a compiled method binds like a function
        if instance is None:
            return self
        bound = self.__dict__.setdefault("_bound", {})
        compiled = bound.get(id(instance))
        if compiled is None:
            compiled = bound[id(instance)] = CompiledFunction(types.MethodType(self.fn, instance),
                                                              self.fullgraph, self.dynamic, self.mode,
                                                              self.cache_dir)
        return compiled

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.eager_reason is not None or capturing() is not None:
            # inside another compiled function's capture, run the ops so that its trace records them
            return self.fn(*args, **kwargs)
        failures = []
        for spec in list(self.specialisations):   # most recently used first
            failed = spec.guard_fn(args, kwargs)
            if failed == -1:
                try:
                    result, mismatch = spec.replay(args, kwargs)
                except TripCountOutsideTrace as error:   # raised before anything was committed
                    failures.append((spec, f"value guard: {error}"))
                    continue
                except ValueGuardMismatch as error:   # checked by the plan before it overwrote anything
                    result, mismatch = None, error.args
                except Exception as error:
                    if _numba_error(error):   # a kernel that fails to compile: never use the plan
                        self.specialisations.remove(spec)
                        self._stay_eager(f"its compiled plan failed to compile ({type(error).__name__}: {error})")
                        return self.fn(*args, **kwargs)
                    # raised before anything was committed: eager mode
                    log("fallbacks", f"{self.name}: the compiled plan raised {type(error).__name__} ({error}); "
                                     "this call runs eagerly, which raises its own error or computes the result")
                    return self.fn(*args, **kwargs)
                if mismatch is None:
                    self.replays += 1
                    if spec is not self.specialisations[0]:
                        self.specialisations.remove(spec)
                        self.specialisations.insert(0, spec)
                    return result
                kind, expected, actual = mismatch   # another specialisation may have taken this path
                failures.append((spec, f"value guard: the traced call saw {kind} {expected!r}, this call "
                                       f"computes {np.asarray(actual).tolist()!r}"))
                continue
            failures.append((spec, failed))
        if failures:   # reported only when no specialisation matched: the first check each one failed
            log("guards", lambda: f"{self.name}: no specialisation matches: " + "; ".join(
                f if isinstance(f, str) else _describe_failure(s.guards.checks, s.guards.objects, f, args, kwargs)
                for s, f in failures))
        return self._capture(args, kwargs)

    def _capture(self, args, kwargs):
        try:
            guards = self._guards(args, kwargs)
        except Exception as error:   # something the walk cannot read (a property that raises): eager
            return self._not_captured(f"its guards could not be built ({type(error).__name__}: {error})",
                                      self.fn(*args, **kwargs))
        trace = Trace(guards.sources, guards.tensor_paths)
        trace.caller = sys._getframe()
        rng = _rng_states()
        hypers = _trace_hyper_parameters(guards, trace)
        try:
            with recording(trace):
                result = self.fn(*args, **kwargs)
        finally:
            for group, key, value, proxy in hypers:
                if dict.get(group, key) is proxy:
                    group[key] = value
        reason = trace.broken
        if reason is None and _unrecorded_draws(rng, trace):
            reason = "it draws random numbers a replay would not redraw (Python's random, NumPy's, or fusegrad's " \
                     "other than through rand/randn)"
        if reason is None:
            reason = _unreplayable_changes(guards, args, kwargs)
        if reason is None:
            changed = _changed_state(guards, trace, args, kwargs)
            if changed is not None:
                reason = "it changes Python state a replay would not change: " + \
                    _describe_failure(guards.checks, guards.objects, changed, args, kwargs).replace(
                        "expected", "before the call", 1).replace("got", "after it", 1)
        spec = None
        if reason is None:
            traced = {p.path for _, _, _, p in hypers if p.array is not None and not p.used}
            guards.checks = [c for c in guards.checks if c[0] not in traced]   # read afresh instead
            try:
                spec = Specialisation(guards, trace, result, f"{_identifier(self.name)}_{len(self.specialisations)}",
                                      self)
                reason = trace.broken
            except Exception as error:   # a trace the backend cannot compile runs eagerly, correctly
                reason = f"compilation failed ({type(error).__name__}: {error})"
        trace.forget_frames()
        if reason is not None:
            return self._not_captured(reason, result)
        self.attempts += 1
        self.specialisations.append(spec)
        log("recompiles", lambda: f"{self.name}: specialisation {len(self.specialisations)} compiled: "
                                  f"{len(spec.graph.nodes)} nodes, {len(spec.plan.kernels)} kernels, "
                                  f"{len(guards.checks)} guards, {spec.plan.compile_seconds:.3f} s")
        log("fusion", lambda: spec.plan.describe())
        if len(self.specialisations) >= MAX_SPECIALISATIONS:
            self._stay_eager(f"it reached {MAX_SPECIALISATIONS} specialisations")
        return _plain(result)

    def _guards(self, args, kwargs):
        """The guards of a call: a walk over what the function can reach."""
        guards = _Guards()
        names = self.parameter_names
        # which arguments the call passes: one that the capture left to its default is a constant
        guards.check("len(A)", len(args), "the number of positional arguments")
        guards.check("sorted(K)", sorted(kwargs), "the keyword arguments passed")
        for i, a in enumerate(args):
            guards.walk(a, f"A[{i}]", names[i] if i < len(names) else f"argument {i}")
        for k, v in kwargs.items():
            guards.walk(v, f"K[{k!r}]", k)
        target = self.fn
        if isinstance(target, types.MethodType):
            guards.walk(target.__self__, guards.hold(target.__self__), "self")
            target = target.__func__
        if isinstance(target, Module):
            guards.walk(target, guards.hold(target), "module")
        elif isinstance(target, types.FunctionType):
            guards.code_of(target, 0)
        guards.check(f"{guards.hold(grad_mode.state)}.enabled", grad_mode.state.enabled, "grad mode (enabled)")
        return guards

    def _not_captured(self, reason, result):
        """A call that ran eagerly and is not reused: say why (raise, with fullgraph)."""
        self.attempts += 1
        if self.fullgraph:
            raise CompileError(f"fusegrad.compile(fullgraph=True): {self.name} cannot be compiled as one "
                               f"graph: {reason}")
        log("fallbacks", f"{self.name}: this call ran eagerly and is not reused: {reason}")
        self.last_reason = reason
        if self.attempts >= 2 * MAX_SPECIALISATIONS:
            self._stay_eager(f"{self.attempts} captures could not be reused; the last because {reason}")
        return _plain(result)

    def _stay_eager(self, why):
        self.eager_reason = why
        warnings.warn(f"fusegrad.compile: {self.name} runs eagerly from now on: {why}", RuntimeWarning,
                      stacklevel=4)


# Optimizer hyper-parameters that replays read afresh, so that a schedule does not recompile
TRACED_HYPER_PARAMETERS = ("lr",)


def _trace_hyper_parameters(guards, trace):
    """Put a HyperParameter in place of each float learning rate of the optimizers the guards
    reached; returns (group, key, original value, proxy) to restore after the call.

    Only fusegrad's own optimizers, whose updates read it through optim.hyper(), and only when the
    user code the guards walked never names `param_groups` or the key: code reading the value
    itself could hand it to C (math.sqrt, formatting), past the proxy, and a replay would then use
    the value of the capture."""
    installed = []
    for opt, group, path in guards.groups:
        if not type(opt).__module__.startswith("fusegrad.optim.") or "param_groups" in guards.mentions:
            continue
        for key in TRACED_HYPER_PARAMETERS:
            value = dict.get(group, key)
            if type(value) is float and key not in guards.mentions:
                proxy = HyperParameter(value)
                proxy.trace, proxy.path, proxy.used, proxy.array = trace, f"{path}[{key!r}]", False, None
                group[key] = proxy
                installed.append((group, key, value, proxy))
    return installed


def _float64(value):
    return np.array(value, np.float64)


def _numba_error(error):
    """Whether `error` is Numba's (numba is imported only once a kernel is compiled or loaded)."""
    errors = sys.modules.get("numba.core.errors")
    return errors is not None and isinstance(error, errors.NumbaError)


def _identifier(name):
    return "".join(c if c.isalnum() else "_" for c in name)


class CompiledModule(CompiledFunction):
    """fusegrad.compile(module): calls run compiled; attributes and parameters are the module's."""

    def __getattr__(self, name):
        return getattr(self.__dict__["fn"], name)


def compile(fn=None, *, fullgraph=False, dynamic=False, mode=None, cache_dir=None):  # noqa: A001 (torch.compile)
    """Compile a function, method or nn.Module: `@fusegrad.compile` or `fusegrad.compile(model)`.

    fullgraph=True raises CompileError where the function cannot be one replayable graph, instead
    of running it eagerly. dynamic and mode are accepted for PyTorch compatibility; every new
    input shape is a specialisation of its own. cache_dir overrides where compiled kernels are
    kept (default: FUSEGRAD_CACHE_DIR, else the user cache directory; see `fusegrad cache dir`)."""
    if fn is None:
        return lambda f: compile(f, fullgraph=fullgraph, dynamic=dynamic, mode=mode, cache_dir=cache_dir)
    if isinstance(fn, Module):
        return CompiledModule(fn, fullgraph, dynamic, mode, cache_dir)
    if not callable(fn):
        raise TypeError(f"fusegrad.compile: expected a function, method or nn.Module, got {type(fn).__name__}")
    return CompiledFunction(fn, fullgraph, dynamic, mode, cache_dir)


class Explanation:
    """What `explain` found: the messages of one call, by category, and the compiled plans."""

    def __init__(self, compiled, messages):
        self.compiled = compiled
        self.messages = messages

    @property
    def specialisations(self):
        return self.compiled.specialisations

    def __str__(self):
        lines = [f"{self.compiled.name}: {len(self.specialisations)} specialisation(s), "
                 f"{self.compiled.calls} call(s), {self.compiled.replays} compiled"]
        if self.compiled.eager_reason:
            lines.append(f"runs eagerly: {self.compiled.eager_reason}")
        for i, spec in enumerate(self.specialisations):
            plan = spec.plan
            lines.append(f"specialisation {i + 1}: {len(spec.graph.nodes)} recorded ops -> "
                         f"{len(plan.graph.nodes)} after DCE/CSE/folding, {len(plan.kernels)} fused kernels "
                         f"({', '.join(f'{k.name}: {len(k.group.nodes)} ops' for k in plan.kernels)}), "
                         f"{len(spec.guards.checks)} guards, {len(spec.value_guards)} value guards, "
                         f"compiled in {plan.compile_seconds:.3f} s" + (f"; re-rolls {spec.loop}" if spec.loop else ""))
        lines += [f"[{category}] {text}" for category, text in self.messages]
        return "\n".join(lines)


def explain(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) once through the compiler and report what happened: graphs, fusion
    groups and kernels, guard failures with the first failing check, fallbacks, recompilations."""
    compiled = fn if isinstance(fn, CompiledFunction) else compile(fn)
    messages = []
    listener = lambda category, text: messages.append((category, text))  # noqa: E731
    _listeners.append(listener)
    try:
        compiled(*args, **kwargs)
    finally:
        _listeners.remove(listener)
    return Explanation(compiled, messages)
