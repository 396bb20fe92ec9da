"""The graph interpreter: runs a Graph node by node with each op's NumPy implementation.

Always correct, and the reference that compiled plans are checked against. A graph that runs
again (a cached backward graph does, every training step) is lowered to a Schedule: a flat list
of steps over numbered slots, each with the slots it frees, run as a tight loop. The first run
walks the nodes directly, so a graph used once pays nothing for lowering; a small graph that runs
very often (one node's VJP) is also written out as one Python function (`run_lowered`). `apply`
can replace the NumPy evaluation (the tracer passes its own ops to record a graph of the graph,
which is how `create_graph=True` makes backward graphs differentiable)."""
import weakref

import numpy as np

from .events import notify, now, observers


class Schedule:
    """steps: (impl, input slots, attrs, output slot, slots to free after it, node) in order."""
    __slots__ = ("steps", "n_slots", "n_inputs", "outputs")

    def __init__(self, graph):
        slot = {p: i for i, p in enumerate(graph.inputs)}
        for node in graph.nodes:
            slot[node] = len(slot)
        release = graph.release or {}   # from dead_code_elimination: values after their last read
        self.steps = [(node.op.impl, tuple([slot[v] for v in node.inputs]), node.attrs or None, slot[node],
                       tuple([slot[v] for v in release.get(node, ())]), node) for node in graph.nodes]
        self.n_slots = len(slot)
        self.n_inputs = len(graph.inputs)
        self.outputs = [slot[o] for o in graph.outputs]


_runs = weakref.WeakKeyDictionary()   # graph -> its Schedule, or True after its first run


def run_graph(graph, bindings, apply=None):
    """Evaluate `graph` with its placeholders bound to `bindings`; returns the output values.
    apply(node, values), when given, computes each node instead of the op's NumPy impl."""
    seen = _runs.get(graph)
    with np.errstate(all="ignore"):   # log(0), 0/0 and overflow give inf/nan, as in PyTorch
        if seen is None:
            _runs[graph] = True
            return _walk(graph, bindings, apply)
        if seen is True:
            seen = _runs[graph] = Schedule(graph)
        return _run_schedule(seen, bindings, apply)


def run_lowered(owner, *arguments):
    """Evaluate a small graph that runs very often (a node's VJP runs once per node of its kind),
    where looping over steps would cost more than its NumPy calls. `owner.graph` is lowered to a
    Schedule at its first run and, at its second, written out as one Python function of
    `arguments` (see _as_function); both are kept in `owner.lowered`. The Schedule runs, between
    owner.bind(*arguments) and owner.deliver(outputs), until then and while observers listen (it
    reports each node). Runs inside the caller's np.errstate."""
    lowered = owner.lowered
    if lowered is None:
        schedule = Schedule(owner.graph)
        owner.lowered = (schedule, None)
    else:
        schedule, function = lowered
        if not observers:
            if function is None:
                function = _as_function(schedule, owner)
                owner.lowered = (schedule, function)
            return function(*arguments)
    return owner.deliver(_run_schedule(schedule, owner.bind(*arguments), None))


def _as_function(schedule, owner):
    """The schedule as a function of owner.parameters (a Python parameter list): it reads each
    graph input as the expression in owner.inputs, runs the steps one NumPy call a line, and
    returns owner.returns (a str.format template) filled with the outputs."""
    names = [f"v{i}" for i in range(schedule.n_slots)]
    namespace = {}
    lines = [f"def run({owner.parameters}):"]
    lines += [f"    {names[i]} = {expression}" for i, expression in enumerate(owner.inputs)]
    for k, (impl, ins, attrs, out, free, _) in enumerate(schedule.steps):
        namespace[f"op{k}"] = impl
        args = [names[i] for i in ins]
        if attrs:
            namespace[f"attrs{k}"] = attrs
            args.append(f"**attrs{k}")
        lines.append(f"    {names[out]} = op{k}({', '.join(args)})")
        if free:
            lines.append(f"    del {', '.join(names[i] for i in free)}")
    lines.append(f"    return {owner.returns.format(*[names[i] for i in schedule.outputs])}")
    exec("\n".join(lines), namespace)   # names and owner's expressions only: no user text reaches it
    return namespace["run"]


def _evaluate(impl, values, attrs, node, apply):
    if apply is not None:
        return apply(node, values)
    if observers:   # tracer ops report themselves; NumPy evaluation is reported here
        start = now()
        out = impl(*values, **attrs) if attrs else impl(*values)
        notify(node.op.name, start, values)
        return out
    return impl(*values, **attrs) if attrs else impl(*values)


def _walk(graph, bindings, apply):
    env = dict(zip(graph.inputs, bindings))
    release = graph.release or {}
    for node in graph.nodes:
        env[node] = _evaluate(node.op.impl, [env[v] for v in node.inputs], node.attrs, node, apply)
        for v in release.get(node, ()):
            del env[v]
    return [env[o] for o in graph.outputs]


def _run_schedule(schedule, bindings, apply):
    env = list(bindings) + [None] * (schedule.n_slots - schedule.n_inputs)
    if apply is None and not observers:   # the hot loop, with the NumPy call inline
        for impl, ins, attrs, out, free, node in schedule.steps:
            values = [env[i] for i in ins]
            env[out] = impl(*values, **attrs) if attrs else impl(*values)
            for i in free:
                env[i] = None
    else:
        for impl, ins, attrs, out, free, node in schedule.steps:
            env[out] = _evaluate(impl, [env[i] for i in ins], attrs, node, apply)
            for i in free:
                env[i] = None
    return [env[i] for i in schedule.outputs]
