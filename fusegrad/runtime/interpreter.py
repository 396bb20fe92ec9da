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
    numpy_apply = apply is None
    apply = apply or _numpy_apply
    env = dict(zip(graph.inputs, bindings))
    release = graph.release or {}   # set by dead_code_elimination: free values after their last read
    with np.errstate(all="ignore"):   # log(0), 0/0 and overflow give inf/nan, as in PyTorch
        for node in graph.nodes:
            values = [env[v] for v in node.inputs]
            if not numpy_apply:
                env[node] = apply(node, values)
            elif observers:   # tracer ops report themselves; NumPy evaluation is reported here
                start = now()
                env[node] = _numpy_apply(node, values)
                notify(node.op.name, start, values)
            else:
                attrs = node.attrs
                env[node] = node.op.impl(*values, **attrs) if attrs else node.op.impl(*values)
            dead = release.get(node)
            if dead:
                for v in dead:
                    del env[v]
    return [env[o] for o in graph.outputs]
