"""Graph-to-graph passes: dead-code elimination, CSE, constant folding, ops rewritten as ops that
fuse (softmax, any/all of booleans), max pooling's gradient at the pooled size, and `optimize`,
the pipeline a graph goes through before fusion."""
import numpy as np

from . import dtypes as D
from .graph import Builder, Graph, Node
from .op import OPS


def dead_code_elimination(graph):
    """Drop nodes, placeholders included, that no output depends on.

    Walking backwards also finds each value's last reader: `graph.release[node]` lists the values
    no node after `node` reads, which an executor can free once `node` has run."""
    live = set(graph.outputs)
    mark_live = live.add
    kept = []
    release = {}
    # A plain loop, not comprehensions and set updates: this runs over every node of each new
    # backward graph, and each value read twice by a node (mul(g, g)) is released once.
    for node in reversed(graph.nodes):
        if node in live:
            kept.append(node)
            dead = None
            for v in node.inputs:
                if v not in live:
                    mark_live(v)
                    if dead is None:
                        dead = [v]
                    else:
                        dead.append(v)
            if dead is not None:
                release[node] = dead
    kept.reverse()
    result = Graph(kept, [p for p in graph.inputs if p in live], graph.outputs)
    result.release = release
    return result


def common_subexpressions(graph):
    """Merge nodes that apply the same op with the same attributes to the same inputs.

    Python-callback nodes are never merged (each call may have effects). Scalars are keyed by
    type and repr, so 0.0 and -0.0 (and int 1 and float 1.0) stay apart."""
    replaced = {}
    seen = {}
    nodes = []
    for node in graph.nodes:
        if replaced:
            node.inputs = tuple(replaced.get(v, v) if isinstance(v, Node) else v for v in node.inputs)
        if node.op.name in ("placeholder", "callback", "leaf") or node.op.kind in ("random", "opaque"):
            nodes.append(node)
            continue
        try:
            key = (node.op.name, tuple(id(v) if isinstance(v, Node) else (v.__class__, repr(v))
                                       for v in node.inputs),
                   tuple((k, _attr_key(a)) for k, a in node.attrs.items()) if node.attrs else None)
            hash(key)
        except TypeError:
            nodes.append(node)
            continue
        if any(isinstance(v, np.ndarray) for v in node.inputs):
            nodes.append(node)
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
            nodes.append(node)
        else:
            replaced[node] = first
    outputs = [replaced.get(o, o) for o in graph.outputs]
    return Graph(nodes, graph.inputs, outputs)


def _attr_key(value):
    if isinstance(value, float):
        return (float, repr(value))
    return value


def fold_constants(graph):
    """Evaluate elementwise nodes whose inputs are all scalar constants (0-d `const` nodes)."""
    nodes = []
    for node in graph.nodes:
        if (node.op.kind == "elementwise" and node.inputs and node.shape == ()
                and all(isinstance(v, Node) and v.op.name == "const" for v in node.inputs)):
            values = [np.asarray(v.attrs["value"], v.attrs["dtype"].np) for v in node.inputs]
            with np.errstate(all="ignore"):
                value = node.op.impl(*values, **node.attrs) if node.attrs else node.op.impl(*values)
            node.op, node.inputs = OPS["const"], ()
            node.attrs = {"value": np.asarray(value).item(), "dtype": node.dtype}
        nodes.append(node)
    return Graph(nodes, graph.inputs, graph.outputs)


def _is_zero(v):
    """A scalar zero operand: a number or a 0-d const node."""
    if isinstance(v, Node):
        return v.op.name == "const" and v.shape == () and v.attrs["value"] == 0
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and v == 0


def _relu_of(r):
    """(mask, the zero it selects) where r is relu's where(le(x, 0), 0, x), else None."""
    if r.op.name != "where" or not _is_zero(r.inputs[1]) or not isinstance(r.inputs[0], Node):
        return None
    mask = r.inputs[0]
    if mask.op.name == "le" and mask.inputs[0] is r.inputs[2] and _is_zero(mask.inputs[1]):
        return mask
    return None


def pooling_gradients(graph):
    """Rewrite max pooling's gradient where a ReLU came before the pooling, so that the backward
    pass works at the pooled size: where(m, 0, max_pool2d_backward(g, r, out)), r = relu's
    where(m, 0, x) with m = le(x, 0), becomes max_pool2d_backward(where(le(out, 0), 0, g), r, out).
    Exact: the cell a window's cotangent goes to holds the window's maximum, and it is 0, where
    m masks it, exactly when the maximum is 0. And a sum over the planes of a max_pool2d_backward
    without padding (each window's cotangent goes to one cell) sums its cotangent instead."""
    nodes = []
    for node in graph.nodes:
        if node.op.name == "where" and _is_zero(node.inputs[1]) and isinstance(node.inputs[2], Node):
            pooled = node.inputs[2]
            if pooled.op.name == "max_pool2d_backward":
                g, r, out = pooled.inputs
                mask = _relu_of(r)
                if mask is not None and node.inputs[0] is mask and g.shape == out.shape:
                    kept = Node(mask.op, (out, mask.inputs[1]), mask.attrs, out.shape, mask.dtype)
                    masked = Node(r.op, (kept, r.inputs[1], g), r.attrs, g.shape, g.dtype)
                    nodes += [kept, masked]
                    node.op, node.inputs, node.attrs = pooled.op, (masked, r, out), pooled.attrs
        elif node.op.name == "sum" and isinstance(node.inputs[0], Node):
            pooled = node.inputs[0]
            axes = {a % len(pooled.shape) for a in node.attrs["axes"]}
            if (pooled.op.name == "max_pool2d_backward" and {2, 3} <= axes
                    and pooled.attrs["padding"] == ((0, 0), (0, 0))):
                node.inputs = (pooled.inputs[0],)
        nodes.append(node)
    return Graph(nodes, graph.inputs, graph.outputs)


def _rewritten(graph, rules):
    """Each node whose op has a rule in `rules` ({op name: rule(builder, node) -> a node of the
    node's shape and dtype, or None to keep it}) computed as the ops the rule emits: the node
    itself becomes the last of them, so whatever reads it reads the result."""
    nodes = []
    for node in graph.nodes:
        rule = rules.get(node.op.name)
        b = Builder() if rule is not None else None
        result = rule(b, node) if rule is not None else None
        if result is not None:
            assert result.shape == node.shape and result.dtype is node.dtype, (node, result)
            b.nodes.remove(result)
            nodes += b.nodes
            node.op, node.inputs, node.attrs = result.op, result.inputs, result.attrs
        nodes.append(node)
    return Graph(nodes, graph.inputs, graph.outputs)


def _softmax(b, node):
    """softmax and log_softmax of float32/float64 values as the ops their impls compute, so that
    fusion runs them as a few kernels (two reductions along the axis and the elementwise ops
    around them) instead of six NumPy passes (31 us for the MLP step's 128 x 10 logits):
    s = x - amax(x), then exp(s) / sum(exp(s)), or s - log(sum(exp(s)))."""
    if node.dtype not in (D.float32, D.float64) or not node.shape:
        return None
    x, axes = node.inputs[0], (node.attrs["axis"] % len(node.shape),)
    shifted = b.sub(x, b.amax(x, axes=axes, keepdim=True, nans_win=True))
    exp = b.exp(shifted)
    total = b.sum(exp, axes=axes, keepdim=True)
    return b.div(exp, total) if node.op.name == "softmax" else b.sub(shifted, b.log(total))


def _boolean_reduction(b, node):
    """any/all of booleans as the max/min of their 0/1 values, compared with 0: reductions that
    every backend fuses, into the loop that computes the booleans (nll_loss's bounds check: a
    NumPy call of 7-11 us a step). Over nothing, -inf > 0 and inf > 0: False and True, as any/all."""
    x = node.inputs[0]
    if x.dtype is not D.bool_:
        return None
    extremum = b.amax if node.op.name == "any" else b.amin
    return b.gt(extremum(b.cast(x, dtype=D.float32), axes=node.attrs["axes"], keepdim=node.attrs["keepdim"],
                         nans_win=True), 0)


LOWERED_OPS = {"softmax": _softmax, "log_softmax": _softmax, "any": _boolean_reduction, "all": _boolean_reduction}


def optimize(graph):
    """The passes a graph goes through before fusion: a copy of it, the ops of LOWERED_OPS
    rewritten, CSE, folding, DCE. The inputs stay as they are (callers bind values to them by
    position), used or not."""
    copied = copy_graph(graph)
    result = dead_code_elimination(pooling_gradients(fold_constants(common_subexpressions(
        _rewritten(copied, LOWERED_OPS)))))
    result.inputs = copied.inputs
    return result


def copy_graph(graph):
    """A copy with new nodes, so that passes may rewrite nodes without touching the original
    (which eager mode and the graph cache still use)."""
    mapping = {p: Node(p.op, (), p.attrs, p.shape, p.dtype) for p in graph.inputs}
    nodes = []
    for node in graph.nodes:
        clone = Node(node.op, tuple(mapping.get(v, v) if isinstance(v, Node) else v for v in node.inputs),
                     node.attrs, node.shape, node.dtype)
        mapping[node] = clone
        nodes.append(clone)
    return Graph(nodes, [mapping[p] for p in graph.inputs], [mapping.get(o, o) for o in graph.outputs])
