"""Symbolic reverse-mode differentiation: from forward nodes to a backward graph of IR.

`backward_graph` walks the nodes reachable from the roots, applies each op's VJP rule in reverse
topological order and sums the cotangents that meet at a node. The result is an ordinary Graph
whose placeholders are the root cotangents and the values the rules need from the forward pass.
"""
import numpy as np

from .dtypes import DType, from_numpy_dtype
from .graph import Builder, Node
from .passes import dead_code_elimination


def topological_order(roots):
    """Nodes reachable from `roots` through node inputs, each after all of its inputs."""
    order, seen = [], set()
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(root.inputs))]
        while stack:
            node, inputs = stack[-1]
            for v in inputs:
                if isinstance(v, Node) and v not in seen:
                    seen.add(v)
                    stack.append((v, iter(v.inputs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def structure_key(order, roots, wanted, opaque):
    """A hashable description of everything that shapes the backward graph of `order`: per node its
    op, attrs, type, where its inputs come from (earlier node, constant of some type, or a Python
    scalar, whose value counts only where the VJP reads it) and whether its cotangent is wanted.
    None when a node's op is opaque or `opaque(node)` says so (its backward runs Python callbacks).
    Hashing it raises TypeError when an attribute is not hashable."""
    index = {}
    parts = []
    for i, node in enumerate(order):
        if node.op.kind == "opaque" or opaque(node):
            return None
        index[node] = i
        inputs = []
        saved = None
        for k, v in enumerate(node.inputs):
            if isinstance(v, Node):
                inputs.append(index[v])
            elif isinstance(v, np.ndarray):
                inputs.append((v.shape, v.dtype))
            else:
                saved = saved or node.op.saved_slots(len(node.inputs))
                # repr tells 0.0 from -0.0 and matches nan with nan
                inputs.append((v.__class__, repr(v)) if k in saved else v.__class__)
        attrs = node.attrs
        parts.append((node.op.name, tuple(inputs), tuple(attrs.items()) if attrs else None, node.shape,
                      node.dtype, wanted(node)))
    return tuple(parts), tuple(index[r] for r in roots)


def _value_type(value):
    dtype = value.dtype
    return value.shape, dtype if isinstance(dtype, DType) else from_numpy_dtype(dtype)


class Derivation:
    """A derived backward graph and how to use it again for any run with the same structure.

    graph: inputs are the placeholders some output depends on; outputs are cotangents.
    sources: per graph input, ("root", k) for the k-th root cotangent or (p, j) for the j-th saved
    value of the p-th node of the forward order.
    wanted: per graph output, the position of its forward node.
    ran: positions of the forward nodes whose VJP rules were applied.
    origins: graph node -> the position of the forward node whose VJP rule (or the cotangent sums
    into its inputs) emitted it; the root cotangents' sums have none."""
    __slots__ = ("graph", "sources", "wanted", "ran", "origins")

    def __init__(self, graph, sources, wanted, ran, origins):
        self.graph, self.sources, self.wanted, self.ran = graph, sources, wanted, ran
        self.origins = origins


def backward_graph(roots, root_cotangents, wanted, saved_values, on_cotangent=None, order=None):
    """Derive the graph computing the cotangent of every node for which `wanted(node)` is true.

    roots / root_cotangents: forward nodes and (values shaped like) their cotangents.
    saved_values(node) returns what the node's op saved, in the order of `op.saves` (used for
    shapes, dtypes and Python scalars only). on_cotangent(builder, node, g) may replace a node's
    total cotangent (tensor hooks). `order` is topological_order(roots) when already known.
    Returns a Derivation."""
    if order is None:
        order = topological_order(roots)
    needed = set()
    for node in order:  # inputs come first, so a node is needed if it leads to a wanted node
        if wanted(node):
            needed.add(node)
            continue
        for v in node.inputs:
            if isinstance(v, Node) and v in needed:
                needed.add(node)
                break

    b = Builder()
    sources = {}
    cotangents = {}
    for k, (root, value) in enumerate(zip(roots, root_cotangents)):
        if root in needed:
            g = b.placeholder(value, *_value_type(value))
            sources[g] = ("root", k)
            previous = cotangents.get(root)
            cotangents[root] = g if previous is None else b.add(previous, g)

    outputs, ran, origins = {}, [], {}
    position = {node: i for i, node in enumerate(order)}
    for node in reversed(order):
        g = cotangents.pop(node, None)
        if g is None or node not in needed:
            continue
        first = len(b.nodes)
        if on_cotangent is not None:
            g = on_cotangent(b, node, g)
        if wanted(node):
            outputs[node] = g
        inputs = node.inputs
        for v in inputs:
            if isinstance(v, Node) and v in needed:
                break
        else:
            continue   # a leaf, or nothing upstream is wanted: the VJP need not run
        ran.append(position[node])
        saved = []
        for j, v in enumerate(saved_values(node)):
            if v.__class__ in (bool, int, float):
                saved.append(v)
            else:
                p = b.placeholder(v, *_value_type(v))
                sources[p] = (position[node], j)
                saved.append(p)
        for v, c in zip(inputs, node.op.vjp(b, g, node, saved)):
            if c is None or not isinstance(v, Node) or v not in needed:
                continue
            if c.__class__ is tuple:   # into a node with several outputs: a cotangent or None per output
                previous = cotangents.get(v)
                cotangents[v] = c if previous is None else tuple(
                    q if p is None else p if q is None else b.add(p, q) for p, q in zip(previous, c))
                continue
            if c.shape != v.shape:
                c = b.sum_to(c, v.shape)
            if c.dtype is not v.dtype:
                c = b.cast(c, dtype=v.dtype)
            previous = cotangents.get(v)
            cotangents[v] = c if previous is None else b.add(previous, c)
        for emitted in b.nodes[first:]:
            origins[emitted] = position[node]

    graph = dead_code_elimination(b.graph(list(outputs.values())))
    return Derivation(graph, [sources[p] for p in graph.inputs], [position[n] for n in outputs], ran, origins)
