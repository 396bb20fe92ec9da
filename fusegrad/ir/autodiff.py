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
    scalar's value) and whether its cotangent is wanted. None when a node is `opaque` (its
    backward runs Python callbacks) or an attribute is not hashable."""
    index = {}
    parts = []
    for i, node in enumerate(order):
        if opaque(node):
            return None
        index[node] = i
        inputs = []
        for v in node.inputs:
            if isinstance(v, Node):
                inputs.append(index[v])
            elif isinstance(v, np.ndarray):
                inputs.append((v.shape, v.dtype.str))
            else:
                inputs.append((v.__class__, v))
        attrs = node.attrs
        parts.append((node.op.name, tuple(inputs), tuple(attrs.items()) if attrs else None, node.shape,
                      node.dtype, wanted(node)))
    key = (tuple(parts), tuple(index[r] for r in roots))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _value_type(value):
    dtype = value.dtype
    return value.shape, dtype if isinstance(dtype, DType) else from_numpy_dtype(dtype)


def backward_graph(roots, root_cotangents, wanted, saved_values, on_cotangent=None, order=None):
    """Build the graph computing the cotangent of every node for which `wanted(node)` is true.

    roots / root_cotangents: forward nodes and the values (bound to placeholders) of their
    cotangents. saved_values(node) returns what the node's op saved, in the order of `op.saves`.
    on_cotangent(builder, node, g) may replace a node's total cotangent (tensor hooks).
    Returns (graph, outputs, bindings, sources, order): outputs maps each wanted node that received
    a cotangent to that cotangent's node (the graph's outputs, in the same order), bindings are the
    placeholder values, sources says where each came from (("root", k) or (position of the node in
    `order`, index among its saved values)) so a cached graph can be rebound, and order lists the
    forward nodes that were visited."""
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
    sources = []
    cotangents = {}
    for k, (root, value) in enumerate(zip(roots, root_cotangents)):
        if root in needed:
            sources.append(("root", k))
            g = b.placeholder(value, *_value_type(value))
            previous = cotangents.get(root)
            cotangents[root] = g if previous is None else b.add(previous, g)

    outputs = {}
    placeholder = b.placeholder
    position = {node: i for i, node in enumerate(order)}
    for node in reversed(order):
        g = cotangents.pop(node, None)
        if g is None or node not in needed:
            continue
        if on_cotangent is not None:
            g = on_cotangent(b, node, g)
        if wanted(node):
            outputs[node] = g
        inputs = node.inputs
        if not inputs:
            continue
        saved = []
        for j, v in enumerate(saved_values(node)):
            if v.__class__ in (bool, int, float):
                saved.append(v)
            else:
                sources.append((position[node], j))
                saved.append(placeholder(v, *_value_type(v)))
        for v, c in zip(inputs, node.op.vjp(b, g, node, saved)):
            if c is None or not isinstance(v, Node) or v not in needed:
                continue
            if c.shape != v.shape:
                c = b.sum_to(c, v.shape)
            if c.dtype is not v.dtype:
                c = b.cast(c, dtype=v.dtype)
            previous = cotangents.get(v)
            cotangents[v] = c if previous is None else b.add(previous, c)

    graph = dead_code_elimination(b.graph(list(outputs.values())))
    return graph, outputs, b.bindings, sources, order
