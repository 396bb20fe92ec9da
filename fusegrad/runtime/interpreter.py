"""The graph interpreter: runs a Graph node by node with each op's NumPy implementation.

Always correct, and the reference that compiled plans are checked against. `apply` can replace
the NumPy evaluation (the tracer passes its own ops to record a graph of the graph, which is how
`create_graph=True` makes backward graphs differentiable)."""
import numpy as np

from .events import notify, now, observers


def _numpy_apply(node, values):
    attrs = node.attrs
    return node.op.impl(*values, **attrs) if attrs else node.op.impl(*values)


def run_graph(graph, bindings, apply=None):
    """Evaluate `graph` with its placeholders bound to `bindings`; returns the output values."""
    apply = apply or _numpy_apply
    env = {id(p): v for p, v in zip(graph.inputs, bindings)}
    remaining = {}
    for node in graph.nodes:
        for v in node.inputs:
            remaining[id(v)] = remaining.get(id(v), 0) + 1
    keep = {id(o) for o in graph.outputs}
    with np.errstate(all="ignore"):   # log(0), 0/0 and overflow give inf/nan, as in PyTorch
        for node in graph.nodes:
            values = [env[id(v)] for v in node.inputs]
            if observers and apply is _numpy_apply:   # tracer ops report themselves
                start = now()
                env[id(node)] = apply(node, values)
                notify(node.op.name, start, values)
            else:
                env[id(node)] = apply(node, values)
            for v in node.inputs:   # free intermediates after their last use
                key = id(v)
                remaining[key] -= 1
                if not remaining[key] and key not in keep:
                    del env[key]
    return [env[id(o)] for o in graph.outputs]
