"""Symbolic reverse-mode differentiation: from forward nodes to a backward graph of IR.

`backward_graph` walks the nodes reachable from the roots, applies each op's VJP rule in reverse
topological order and sums the cotangents that meet at a node. The result is an ordinary Graph
whose placeholders are the root cotangents and the values the rules need from the forward pass.
"""
from .dtypes import DType, from_numpy_dtype
from .graph import Builder, Graph, Node
from .passes import dead_code_elimination


def topological_order(roots):
    """Nodes reachable from `roots` through node inputs, each after all of its inputs."""
    order, seen = [], set()
    for root in roots:
        if id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(root.inputs))]
        while stack:
            node, inputs = stack[-1]
            for v in inputs:
                if isinstance(v, Node) and id(v) not in seen:
                    seen.add(id(v))
                    stack.append((v, iter(v.inputs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _value_type(value):
    dtype = value.dtype
    return value.shape, dtype if isinstance(dtype, DType) else from_numpy_dtype(dtype)


def backward_graph(roots, root_cotangents, wanted, saved_values, on_cotangent=None):
    """Build the graph computing the cotangent of every node for which `wanted(node)` is true.

    roots / root_cotangents: forward nodes and the values (bound to placeholders) of their
    cotangents. saved_values(node) returns what the node's op saved, in the order of `op.saves`.
    on_cotangent(builder, node, g) may replace a node's total cotangent (tensor hooks).
    Returns (graph, outputs, bindings, order): outputs maps id(node) of each wanted node that
    received a cotangent to that cotangent's node (the graph's outputs, in the same order),
    bindings are the placeholder values and order the forward nodes that were visited."""
    order = topological_order(roots)
    wanted_ids = {id(n) for n in order if wanted(n)}
    needed = set()
    for node in order:  # inputs come first, so a node is needed if it leads to a wanted node
        if id(node) in wanted_ids or any(id(v) in needed for v in node.inputs if isinstance(v, Node)):
            needed.add(id(node))

    b = Builder()
    cotangents = {}
    for root, value in zip(roots, root_cotangents):
        if id(root) not in needed:
            continue
        g = b.placeholder(value, *_value_type(value))
        previous = cotangents.get(id(root))
        cotangents[id(root)] = g if previous is None else b.add(previous, g)

    outputs = {}
    for node in reversed(order):
        g = cotangents.pop(id(node), None)
        if g is None or id(node) not in needed:
            continue
        if on_cotangent is not None:
            g = on_cotangent(b, node, g)
        if id(node) in wanted_ids:
            outputs[id(node)] = g
        if not node.inputs or not any(id(v) in needed for v in node.inputs if isinstance(v, Node)):
            continue
        saved = tuple(v if isinstance(v, (bool, int, float)) else b.placeholder(v, *_value_type(v))
                      for v in saved_values(node))
        in_cotangents = node.op.vjp(b, g, node, saved)
        for v, c in zip(node.inputs, in_cotangents):
            if c is None or not isinstance(v, Node) or id(v) not in needed:
                continue
            if c.shape != v.shape:
                c = b.sum_to(c, v.shape)
            if c.dtype is not v.dtype:
                c = b.cast(c, dtype=v.dtype)
            previous = cotangents.get(id(v))
            cotangents[id(v)] = c if previous is None else b.add(previous, c)

    graph = dead_code_elimination(b.graph(list(outputs.values())))
    return graph, outputs, b.bindings, order


__all__ = ["Graph", "backward_graph", "topological_order"]
