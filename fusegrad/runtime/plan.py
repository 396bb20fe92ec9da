"""Compiled plans: a graph lowered to fusion-group kernels plus a generated driver.

`Plan(graph)` partitions the graph (ir.fusion), has the backend build one kernel per fusion
group, and generates a straight-line Python driver that allocates each kernel's outputs, calls
the kernels and the ops that stay outside kernels (matmul through BLAS, indexing, ...) in order,
and frees every buffer after its last reader. One call of the plan is one call of the driver:
a handful of Python calls per step instead of one NumPy pass per op.

The driver's source is kept (`plan.source`), and so is each kernel's, for `explain` and the
cache's `show`. With profiler observers registered, a second driver reports each kernel as a
row of its own.
"""
import functools
import os
import time
import weakref

import numpy as np

from ..codegen import cpu, cuda, interpreter, loops as cpu_loops, windows
from ..codegen.interpreter import Interpreted
from ..codegen.cpu import python_literal
from ..codegen.store import store
from ..ir import dtypes
from ..ir.fusion import FusionGroup, partition
from ..ir.graph import Node, format_nodes
from ..ir.loops import LOOP, LOOP_BACK, LOOP_OUTPUT, TripCountOutsideTrace, run_reverse, run_while
from ..ir.op import OPS
from ..ir.passes import optimize
from . import cache, devices
from .dot import plan_dot
from .events import notify, now, observers
from .log import log
from .quiet import quiet, restore

BACKENDS = {"cpu": cpu, "cuda": cuda}
INTERPRETERS = {"cpu": interpreter}
LOOP_KERNELS = {"cpu": cpu_loops}
# backends whose build takes `inplace`: kernels that store outputs into donated input arrays
OVERWRITING = {"cpu"}
# backends whose kernels may run on a CPU thread pool: build takes `parallel`, false in a plan that
# also calls BLAS, whose own pool's threads spin after each product (see codegen.cpu)
POOLED = {"cpu"}
# view ops whose impl is an ndarray method: op -> (method, the attribute it takes)
VIEW_METHODS = {"permute": ("transpose", "axes"), "reshape": ("reshape", "shape")}
# hand-written kernels that run single nodes (convolution and pooling) in place of their op's impl
LOWERINGS = {"cpu": windows.lower}
# Numba compiles about 4 ms per statement of a kernel (a 10,000-op group took 42 s). A group from
# a long straight-line trace (a Python loop unrolled by capture) is re-rolled into loops by the
# backends that can (ir.rolling). One whose kernel would still be longer than this runs on the
# backend's interpreter when it has one for the group (small iteration spaces), else as NumPy
# calls, so that its first call never stalls for minutes.
MAX_KERNEL_OPS = 1000


def _members(group):
    return len(group.nodes)


class Plan:
    """A graph compiled for one target. Call it with the graph's input values (in the order of
    `graph.inputs`); it returns the output values in the order of `graph.outputs`."""

    def __init__(self, graph, target="cpu", label="plan", info=None, cache_dir=None, donate=None, check=None,
                 parallel=True):
        started = time.perf_counter()
        backend = BACKENDS[target]
        self.label, self.target, self.cache_dir = label, target, cache_dir
        self.info = info or {"name": label}   # for the cache index: name, source_file, guards
        described = getattr(backend, "target_description", lambda: target)()   # e.g. the GPU's compute capability
        config = dict(backend.CONFIG, MAX_KERNEL_OPS=MAX_KERNEL_OPS)
        if donate:
            config["donate"] = sorted(donate.items())
        if not parallel:
            config["parallel"] = False
        self.components, self.structure = cache.components(graph, described, config)
        self.key = cache.key_of(self.components)
        self.graph = optimize(graph)
        self.steps = []
        for step in partition(self.graph, backend.can_fuse):
            if isinstance(step, FusionGroup) and getattr(backend, "statements", _members)(step) > MAX_KERNEL_OPS:
                machine = INTERPRETERS.get(target)
                if machine is not None and machine.can_interpret(step):
                    log("fusion", f"{label}: a fusion group of {len(step.nodes)} ops exceeds {MAX_KERNEL_OPS}; "
                                  "it runs on the interpreter")
                    self.steps.append(machine.Interpreted(step, f"{label}_i{len(self.steps)}", cache_dir))
                else:
                    log("fusion", f"{label}: a fusion group of {len(step.nodes)} ops exceeds {MAX_KERNEL_OPS}; "
                                  "its ops run as NumPy calls")
                    self.steps.extend(step.nodes)
            else:
                self.steps.append(step)
        offers = _donations(self.graph, self.steps, donate, check) if donate and target in OVERWRITING else {}
        # kernels run on the thread pool only where nothing calls BLAS: this graph, a loop's body,
        # nor (`parallel` false) the plan whose loop this graph is the body of
        self.parallel = parallel and not _calls_blas(self.graph)
        options = {"parallel": self.parallel} if target in POOLED else {}
        self.kernels = []
        for step in self.steps:
            if isinstance(step, FusionGroup):
                offered = {"inplace": offers[step]} if step in offers else {}
                self.kernels.append(backend.build(step, f"{label}_k{len(self.kernels)}", cache_dir=cache_dir,
                                                  **offered, **options))
        # input position -> output position: the output is that input's array, overwritten
        position = {node: k for k, node in enumerate(self.graph.outputs)}
        self.donated = {self.graph.inputs.index(source): position[out] for kernel in self.kernels
                        for out, source in getattr(kernel, "written", {}).items()}
        self.check = check
        self.xp = devices.array_module(devices.canonical(target))   # allocates the kernels' outputs
        self.loops = {}   # loop node -> (its body's Plan, the _Loop the driver calls)
        for node in self.graph.nodes:
            if node.op is LOOP or node.op is LOOP_BACK:
                body = Plan(node.attrs["body"].graph, target, f"{label}_loop{len(self.loops)}", self.info, cache_dir,
                            parallel=self.parallel)
                self.loops[node] = (body, _Loop(node, body, target, cache_dir))
        lower = LOWERINGS.get(target)
        self.lowered = {} if lower is None else lower([s for s in self.steps if isinstance(s, Node)], cache_dir)
        self.source, self._namespace, self._late = self._generate(profiled=False, overwrite=True)
        self._drivers = {}   # (profiled, overwriting donated inputs) -> the driver's run
        self._run = None     # the plain driver, once the first call has loaded the kernels
        self.compile_seconds = time.perf_counter() - started

    def __call__(self, bindings):
        if self._run is None:
            return self._first_call(bindings)
        return self._call(self._driver(True, True) if observers else self._run, bindings)

    def _call(self, run, bindings):
        token = quiet()   # inf/nan are results, not errors, as in eager mode
        try:
            return run(*bindings)
        finally:
            restore(token)

    def _driver(self, profiled, overwrite):
        """The driver's run, its kernels bound (loading them). The first call never overwrites a
        donated input: it compiles the kernels, and one failing after another had overwritten an
        input would leave that input changed by a call that then runs eagerly."""
        key = (profiled, overwrite and bool(self.donated))
        run = self._drivers.get(key)
        if run is None:
            built = key == (False, bool(self.donated))   # the driver generated with the plan
            namespace, late = (self._namespace, self._late) if built else self._generate(*key)[1:]
            namespace.update((name, kernel.fn) for name, kernel in late.items())
            run = self._drivers[key] = namespace["run"]
        return run

    def _first_call(self, bindings):
        """Numba compiles (or loads from its cache) each kernel at its first call: time that, count
        the compilations, and record the lookup in the cache index."""
        started = time.perf_counter()
        run = self._driver(bool(observers), False)   # loads the kernels
        compiled_before = self._compilations()
        values = self._call(run, bindings)
        self._run = self._driver(False, True)
        cache.record(self, time.perf_counter() - started, self._compilations() - compiled_before)
        store(self.cache_dir).build_native(list(self._late.values()))
        return values

    def _generate(self, profiled, overwrite):
        return _driver(self.graph, self.steps, self.kernels, self.xp, self.lowered, profiled=profiled,
                       loops=self.loops, overwrite=overwrite, check=self.check)

    def _compilations(self):
        # kernels of the same source share one Numba function: count each function once
        functions = {id(k.fn): k.fn for k in self._late.values() if hasattr(k.fn, "stats")}
        return sum(sum(fn.stats.cache_misses.values()) for fn in functions.values())

    def describe(self):
        """The optimised graph, the fusion groups and the generated sources, as text."""
        parts = [format_nodes(self.graph.nodes, self.graph.inputs, self.graph.outputs, name=self.label), ""]
        parts += [f"# {len(self.kernels)} kernels, {len(self.steps) - len(self.kernels)} other steps"
                  + (f" ({len(self.lowered)} on window kernels: W in the driver)" if self.lowered else ""), ""]
        parts += [f"# {k.name}: module {k.module}\n{k.source}" for k in self.kernels]
        parts += ["# driver", self.source]
        parts += [f"# loop body {body.label}\n{body.describe()}" for body, _ in self.loops.values()]
        return "\n".join(parts)

    def to_dot(self):
        """The optimised graph in Graphviz DOT, each fusion group a cluster named after its kernel."""
        return plan_dot(self)


def _calls_blas(graph):
    """Whether running `graph` calls BLAS: a node of a BLAS op, in it or in a loop's body."""
    return any(node.op.blas or ((node.op is LOOP or node.op is LOOP_BACK) and _calls_blas(node.attrs["body"].graph))
               for node in graph.nodes)


def _reads(step):
    """The values a step reads."""
    if isinstance(step, FusionGroup):
        members = set(step.nodes)
        return {v for n in step.nodes for v in n.inputs if isinstance(v, Node) and v not in members}
    if isinstance(step, Interpreted):
        return set(step.args)
    return {v for v in step.inputs if isinstance(v, Node)}


def _donations(graph, steps, donate, check):
    """{group: {output: input}}: which of the outputs in `donate` ({input position: output
    position}: the output is the input's next value, which the caller would copy into the input's
    array) a kernel may store straight into the input's array, the caller having handed that array
    over (its buffer donated). Offered when it is safe whatever the caller does after an error:
    - the output is an elementwise output of a kernel that comes after every step that can raise
      (everything but kernels) and after every value `check` (output positions, function) reads,
      so that the plan never fails after an array was overwritten;
    - nothing after that kernel reads the input, or a view of it (an op outside kernels may
      return a view of its operand), and the kernel reads no view of it, only the input itself;
    - the output is returned once, and no output is the input or a view of it;
    - the input is not 0-d (kernels take 0-d values as scalars, which they cannot store into).
    The kernel takes the offer where every read of the input in its loop is of the element the
    same iteration stores (codegen.cpu.emit)."""
    fused = {n for s in steps if isinstance(s, FusionGroup) for n in s.nodes}
    group_of = {n: (i, s) for i, s in enumerate(steps) if isinstance(s, FusionGroup) for n in s.outputs}
    barrier = max((i for i, s in enumerate(steps) if not isinstance(s, FusionGroup)
                   and not (isinstance(s, Node) and s.op.name in ("placeholder", "const"))), default=-1)
    producer = {n: i for i, s in enumerate(steps)
                for n in (s.nodes if isinstance(s, FusionGroup) else s.outs if isinstance(s, Interpreted) else (s,))}
    for k in (check[0] if check else ()):
        barrier = max(barrier, producer.get(graph.outputs[k], -1))
    aliasing = {p: {p} for p in graph.inputs}   # value -> the inputs whose array it may share
    for node in graph.nodes:
        if node not in fused and node not in aliasing:
            aliasing[node] = set().union(*(aliasing.get(v, ()) for v in node.inputs if isinstance(v, Node)))
    returned = set().union(*(aliasing.get(o, ()) for o in graph.outputs))
    offers = {}
    for i, k in donate.items():
        source, out = graph.inputs[i], graph.outputs[k]
        position, group = group_of.get(out, (-1, None))
        if (position <= barrier or not source.shape or graph.outputs.count(out) != 1 or source in returned
                or any(source in aliasing.get(v, ()) for s in steps[position + 1:] for v in _reads(s))
                or any(source in aliasing.get(v, ()) for v in _reads(group) if v is not source)):
            continue
        offers.setdefault(group, {})[out] = source
    return offers


class _Loop:
    """What a plan's driver calls for a loop node: the backend's whole-loop kernel where it has
    one for this loop (codegen/loops.py), else the loop driven from Python, its body's plan
    called once per iteration. A loop kernel that fails at its first call (Numba cannot type it)
    is dropped for the Python-driven loop, which computes the same values."""

    def __init__(self, node, body, target, cache_dir):
        attrs = {k: v for k, v in node.attrs.items() if k != "body"}
        self.driven = functools.partial(run_while if node.op is LOOP else run_reverse, _loop_step(body), **attrs)
        self.kernel = LOOP_KERNELS[target].build(node, body, cache_dir) if target in LOOP_KERNELS else None
        self.run = self.kernel or self.driven
        self.tried = self.kernel is None
        self.label, self.op = body.label, node.op.name

    def __call__(self, *values):
        if not self.tried:
            self.tried = True
            try:
                return self.run(*values)
            except TripCountOutsideTrace:
                raise
            except Exception as error:
                log("fusion", f"{self.label}: the loop kernel failed ({type(error).__name__}: {error}); the loop "
                              "runs its body's plan once per iteration")
                self.run = self.driven
        return self.run(*values)


def _loop_step(body):
    """The body's plan as a loop step: its first call loads and records it, later ones run its
    driver directly (the plan running the loop already silenced inf/nan warnings)."""
    def step(*values):
        return body._run(*values) if body._run is not None else body(values)
    return step


def _driver(graph, steps, kernels, xp, lowered, profiled, loops, overwrite=True, check=None):
    """Generate the driver: def run(*inputs) -> [outputs], allocating with the array module `xp`,
    running a node of `lowered` (node -> function of its input values) with its function instead
    of its op's impl, and a loop node with its _Loop. A kernel that stores an output into an input's
    array (kernel.written) gets that array when `overwrite`, else a copy of it; before the first
    such kernel, `check` (output positions, function) is called with those outputs' values.
    Returns its source, its namespace, and {global name: kernel} for the kernels, which the caller
    binds (kernel.fn) before the first run."""
    kernel_of = {id(k.group): k for k in kernels}
    needed = set(graph.outputs)
    emitted = []
    for step in reversed(steps):
        if isinstance(step, (FusionGroup, Interpreted)):
            kernel = kernel_of[id(step)] if isinstance(step, FusionGroup) else step
            if any(n in needed for n in kernel.outs) or any(n in needed for n in getattr(kernel, "written", ())):
                emitted.append(step)
                needed.update(kernel.args)
        elif step in needed and step.op.name != "placeholder":
            emitted.append(step)
            needed.update(v for v in step.inputs if isinstance(v, Node))
    emitted.reverse()

    names = {}
    for i, p in enumerate(graph.inputs):
        names[p] = f"a{i}"
    namespace = {"np": np, "xp": xp, "notify": notify, "now": now, "check": check and check[1]}
    checked = not (overwrite and check)
    late = {}
    lines = []

    def name_of(v):
        if isinstance(v, Node):
            return names[v]
        key = f"C{len(namespace)}"
        namespace[key] = v
        return key

    last_read = {}   # value -> index of the last emitted step reading it
    for i, step in enumerate(emitted):
        reads = kernel_of[id(step)].args if isinstance(step, FusionGroup) else step.args \
            if isinstance(step, Interpreted) else [v for v in step.inputs if isinstance(v, Node)]
        for v in reads:
            last_read[v] = i
    freed_after = {}
    for v, i in last_read.items():
        freed_after.setdefault(i, []).append(v)
    keep = set(graph.outputs)

    for i, step in enumerate(emitted):
        if isinstance(step, FusionGroup):
            kernel = kernel_of[id(step)]
            overwrites = getattr(kernel, "written", {})
            if overwrites and not checked:
                lines.append(f"check({', '.join(name_of(graph.outputs[k]) for k in check[0])})")
                checked = True
            for out, source in overwrites.items():   # the output is the input's array after the call
                names[out] = names[source]
                if not overwrite:
                    lines.append(f"{names[source]} = {names[source]}.copy()")
            kname = f"K{len(namespace)}"
            namespace[kname] = None
            late[kname] = kernel
            flat = kernel.space != tuple(step.shape)   # a flat loop: arrays passed flattened
            outs = []
            allocations = []
            for node, (shape, dtype, init) in zip(kernel.outs, kernel.buffers):
                if node in overwrites:   # the input's own array is the buffer
                    outs.append(names[node] + (".reshape(-1)" if flat else ""))
                    continue
                buf = names[node] = f"v{len(names)}"
                if init is None:
                    allocations.append(f"{buf} = xp.empty({shape!r}, np.{dtype.np.name})")
                elif init == 0:   # a sum's: np.zeros is one C call, np.full ~0.7 us of Python
                    allocations.append(f"{buf} = xp.zeros({shape!r}, np.{dtype.np.name})")
                else:
                    allocations.append(f"{buf} = xp.full({shape!r}, {python_literal(init)}, np.{dtype.np.name})")
                outs.append(buf)
            lines += allocations
            args = [repr(n) for n in kernel.space] + [
                names[a] + ("[()]" if not a.shape else ".reshape(-1)" if flat else "") for a in kernel.args] + outs
            if kernel.flagged:
                lines.append("flags = np.zeros(1, np.int64)")
                args.append("flags")
            call = f"{kname}({', '.join(args)})"
            if profiled:
                lines += ["t0 = now()", call, f"notify({kernel.name!r}, t0, ())"]
            else:
                lines.append(call)
            if kernel.flagged:   # arguments beyond the fast sin/cos range: redo with libm's
                namespace[f"{kname}x"] = kernel.exact
                lines += ["if flags[0]:"] + ["    " + a for a in allocations] + [f"    {kname}x({', '.join(args)})"]
            for node, buf, (shape, dtype, init) in zip(kernel.outs, outs, kernel.buffers):
                # a reduction, from its keepdim accumulator; an output of a flat loop: to its own shape
                fix = "" if dtype is node.dtype else f".astype(np.{node.dtype.np.name})"
                reshape = "" if shape == node.shape else f".reshape({node.shape!r})"
                if (fix or reshape) and node not in overwrites:
                    lines.append(f"{buf} = {buf}{reshape}{fix}")
            written = kernel.outs
        elif isinstance(step, Interpreted):
            iname = f"I{len(namespace)}"
            namespace[iname] = step
            outs = []
            for node in step.outs:
                names[node] = f"v{len(names)}"
                outs.append(names[node])
            call = f"{', '.join(outs)}, = {iname}({', '.join(names[a] for a in step.args)})"
            lines += ["t0 = now()", call, f"notify({step.name!r}, t0, ())"] if profiled else [call]
            written = step.outs
        else:
            node = step
            if node.op.name == "const":
                key = f"C{len(namespace)}"
                namespace[key] = np.asarray(node.attrs["value"], node.attrs["dtype"].np)
                names[node] = key
                continue
            if node.op is LOOP_OUTPUT:   # a result of a loop: an item of the tuple it returned
                out = names[node] = f"v{len(names)}"
                lines.append(f"{out} = {names[node.inputs[0]]}[{node.attrs['index']}]")
                written = (node,)
            else:
                out = names[node] = f"v{len(names)}"
                view = VIEW_METHODS.get(node.op.name) if xp is np else None
                if view is not None and isinstance(node.inputs[0], Node):   # the ndarray method the impl
                    # calls, without the two Python calls around it (0.5-0.8 us a step)
                    call = f"{out} = {name_of(node.inputs[0])}.{view[0]}({node.attrs[view[1]]!r})"
                else:
                    fname = f"{'W' if node in lowered else 'F'}{len(namespace)}"
                    if node in loops:
                        namespace[fname] = loops[node][1]
                    elif node in lowered:
                        namespace[fname] = lowered[node]
                    else:
                        namespace[fname] = functools.partial(node.op.impl, **node.attrs) if node.attrs \
                            else node.op.impl
                    call = f"{out} = {fname}({', '.join(name_of(v) for v in node.inputs)})"
                lines += ["t0 = now()", call, f"notify({node.op.name!r}, t0, ())"] if profiled else [call]
                written = (node,)
        dead = [names[v] for v in freed_after.get(i, ()) if v not in keep and names[v].startswith("v")]
        dead += [names[n] for n in written if n not in last_read and n not in keep]
        if dead:
            lines.append(f"del {', '.join(dict.fromkeys(dead))}")
    lines.append(f"return [{', '.join(name_of(o) for o in graph.outputs)}]")
    source = f"def run({', '.join(names[p] for p in graph.inputs)}):\n" + "\n".join("    " + ln for ln in lines) + "\n"
    exec(compile(source, "<fusegrad driver>", "exec"), namespace)
    return source, namespace, late


__all__ = ["Plan", "RepeatedCalls"]


# Eager backward: a graph run this many times (one structure repeating, as every step of a
# training loop does) is compiled, and runs as a plan from then on. 0 turns this off. Not at the
# second run: compiling costs 0.1-0.5 s, which a structure seen a few times (gradcheck, a short
# script) never earns back.
COMPILE_AFTER = int(os.environ.get("FUSEGRAD_EAGER_COMPILE_AFTER", "8"))
_FAILED = object()
_eager_plans = weakref.WeakKeyDictionary()   # graph -> runs so far, its Plan, or _FAILED


def eager_plan_run(graph, bindings, target="cpu"):
    """Run a cached eager graph through its plan once it has repeated; None when the caller
    should interpret it (not repeated yet, compilation off, or the graph could not compile)."""
    state = _eager_plans.get(graph, 0)
    if state.__class__ is Plan:
        return state(bindings)
    if state is _FAILED or not COMPILE_AFTER:
        return None
    state += 1
    if state < COMPILE_AFTER:
        _eager_plans[graph] = state
        return None
    try:
        plan = Plan(graph, target, label="backward", info={"name": "eager backward"})
        values = plan(bindings)   # Numba compiles each kernel at its first call
    except Exception as error:   # never fail a backward because compilation did: interpret instead
        _eager_plans[graph] = _FAILED
        log("fallbacks", f"eager backward graph of {len(graph.nodes)} nodes stays interpreted: could not "
                         f"compile it ({type(error).__name__}: {error})")
        return None
    _eager_plans[graph] = plan
    log("recompiles", lambda: f"eager backward graph of {len(graph.nodes)} nodes compiled after {state} runs: "
                              f"{len(plan.kernels)} kernels in {plan.compile_seconds:.3f} s")
    return values


class RepeatedCalls:
    """Eager mode's impl of an op that the window kernels compute (convolutions, max pooling):
    the op's NumPy impl until one call signature (input shapes, dtypes, attributes) has run
    COMPILE_AFTER times, that signature's window kernels from then on, as a repeating eager
    backward graph runs as a plan (whose kernels for the same geometry the forward pass then
    shares). The impl already accepted the signature, so the kernels only see valid input, and
    they agree with the impl to rounding (tests/test_codegen.py); a signature whose kernels
    fail to load keeps the impl. Off with COMPILE_AFTER = 0, and for anything but NumPy arrays
    of float32 or float64."""
    __slots__ = ("op", "signatures")
    LIMIT = 256   # signatures remembered; a loop over ever new shapes starts counting again

    def __init__(self, op):
        self.op, self.signatures = op, {}   # signature -> calls so far, its kernels, or _FAILED

    def __call__(self, *arrays, **attrs):
        impl = self.op.impl
        if not COMPILE_AFTER or any(a.__class__ is not np.ndarray for a in arrays):
            return impl(*arrays, **attrs)
        key = (tuple([(a.shape, a.dtype) for a in arrays]), tuple(sorted(attrs.items())))
        try:
            state = self.signatures.get(key, 0)
        except TypeError:   # an attribute that is not hashable (a list): not a signature to count
            return impl(*arrays, **attrs)
        if state.__class__ is int:
            state += 1
            if state < COMPILE_AFTER:
                if len(self.signatures) >= self.LIMIT:
                    self.signatures.clear()
                self.signatures[key] = state
                return impl(*arrays, **attrs)
            types = [dtypes.BY_NUMPY.get(a.dtype) for a in arrays]
            state = windows.lowering(self.op.name, [a.shape for a in arrays], types, attrs) or _FAILED
            self.signatures[key] = state
        if state is _FAILED:
            return impl(*arrays, **attrs)
        try:
            return state(*arrays)
        except Exception as error:   # the kernels could not load: this signature keeps the impl
            self.signatures[key] = _FAILED
            log("fallbacks", f"eager {self.op.name} stays on its NumPy impl for inputs of shapes "
                             f"{[a.shape for a in arrays]}: its window kernels failed ({type(error).__name__}: {error})")
            return impl(*arrays, **attrs)


for _name in windows.LOWERINGS:
    OPS[_name].eager = RepeatedCalls(OPS[_name])
