"""Symbolic reverse-mode differentiation: from forward nodes to a backward graph of IR.

`backward_graph` walks the nodes reachable from the roots, applies each op's VJP rule in reverse
topological order and sums the cotangents that meet at a node. The result is an ordinary Graph
whose placeholders are the root cotangents and the values the rules need from the forward pass.
`evaluate_backward` takes the same walk with values instead of graph nodes, for a structure seen
once: each node's rule is a small graph of its own (NodeVJP), cached by the node's signature.
"""
import numpy as np

from .dtypes import DType, from_numpy_dtype
from .graph import Builder, Node
from .op import OPS
from .passes import dead_code_elimination

_PERMUTE = OPS["permute"]


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


def _needed(order, wanted):
    """The nodes of `order` that lead to a wanted node (their cotangents are worth computing), and
    how many times each permute node is an input (evaluate_backward's `absorbs`)."""
    needed, uses = set(), {}
    for node in order:  # inputs come first, so a node is needed if it leads to a wanted node
        leads = wanted(node)
        for v in node.inputs:
            if isinstance(v, Node):
                if v.op is _PERMUTE:
                    uses[v] = uses.get(v, 0) + 1
                leads = leads or v in needed
        if leads:
            needed.add(node)
    return needed, uses


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


def _saved_placeholders(b, values):
    """A node's saved values as its VJP rule takes them: Python scalars as they are, every other
    value a placeholder of b (the Nodes among them)."""
    return [v if v.__class__ in (bool, int, float) else b.placeholder(v, *_value_type(v)) for v in values]


def _input_cotangents(b, node, g, saved, needed):
    """node's VJP rule applied with b: per input, its cotangent summed down to the input's shape
    and cast to its dtype, or None when the input needs none. Into a node with several outputs,
    a cotangent is a tuple with one entry (or None) per output."""
    out = []
    for v, c in zip(node.inputs, node.op.vjp(b, g, node, saved)):
        if c is not None and isinstance(v, Node) and v in needed:
            if c.__class__ is not tuple:
                if c.shape != v.shape:
                    c = b.sum_to(c, v.shape)
                if c.dtype is not v.dtype:
                    c = b.cast(c, dtype=v.dtype)
            out.append(c)
        else:
            out.append(None)
    return out


def _reverse_walk(order, roots, root_cotangents, wanted, needed, add, hooked, input_cotangents, begin=None):
    """Cotangents flowing from the roots through `order` in reverse: the one walk that both derives
    backward graphs (cotangents are nodes, add emits) and evaluates them directly (cotangents are
    arrays, add computes). hooked(node, g) replaces a node's total cotangent (tensor hooks);
    input_cotangents(node, g, p) applies the rule of the p-th node; begin(p), when given, is called
    before the p-th node's cotangent is handled. Returns the cotangents of the wanted nodes,
    {node: g}, and the positions of the nodes whose rules were applied."""
    cotangents = {}
    for root, value in zip(roots, root_cotangents):
        if root in needed:
            _add_into(cotangents, root, value, add)
    outputs, ran = {}, []
    for p in range(len(order) - 1, -1, -1):
        node = order[p]
        g = cotangents.pop(node, None)
        if g is None or node not in needed:
            continue
        if begin is not None:
            begin(p)
        if hooked is not None:
            g = hooked(node, g)
        if wanted(node):
            outputs[node] = g
        for v in node.inputs:
            if isinstance(v, Node) and v in needed:
                break
        else:
            continue   # a leaf, or nothing upstream is wanted: the VJP need not run
        ran.append(p)
        for v, c in zip(node.inputs, input_cotangents(node, g, p)):
            if c is not None:
                if v in cotangents:
                    _add_into(cotangents, v, c, add)
                else:   # the first cotangent to arrive (most are), without a call
                    cotangents[v] = c
    return outputs, ran


def _add_into(cotangents, v, c, add):
    """Add cotangent c into what has arrived at node v so far."""
    previous = cotangents.get(v)
    if previous is None:
        cotangents[v] = c
    elif c.__class__ is tuple:   # one cotangent or None per output of a node with several
        cotangents[v] = tuple(q if p is None else p if q is None else add(p, q) for p, q in zip(previous, c))
    else:
        cotangents[v] = add(previous, c)


def backward_graph(roots, root_cotangents, wanted, saved_values, hook=None, order=None):
    """Derive the graph computing the cotangent of every node for which `wanted(node)` is true.

    roots / root_cotangents: forward nodes and (values shaped like) their cotangents.
    saved_values(node) returns what the node's op saved, in the order of `op.saves` (used for
    shapes, dtypes and Python scalars only). hook(node), when given, returns None or a function
    that a node's total cotangent passes through (tensor hooks: a `callback` node). `order` is
    topological_order(roots) when already known. Returns a Derivation."""
    if order is None:
        order = topological_order(roots)
    needed = _needed(order, wanted)[0]
    b = Builder()
    sources = {}
    cotangent_placeholders = []
    for k, value in enumerate(root_cotangents):
        g = b.placeholder(value, *_value_type(value))
        sources[g] = ("root", k)
        cotangent_placeholders.append(g)

    ruled = set()   # positions whose rules were applied

    def input_cotangents(node, g, p):
        ruled.add(p)
        saved = _saved_placeholders(b, saved_values(node))
        sources.update(((s, (p, j)) for j, s in enumerate(saved) if isinstance(s, Node)))
        return _input_cotangents(b, node, g, saved, needed)

    origins, handling = {}, [None, 0]   # the node being handled, and where its emissions start

    def begin(p):   # what the previous node's rule and the sums into its inputs emitted came from it
        if handling[0] in ruled:
            origins.update((n, handling[0]) for n in b.nodes[handling[1]:])
        handling[:] = p, len(b.nodes)

    outputs, ran = _reverse_walk(order, roots, cotangent_placeholders, wanted, needed, b.add,
                                 _hooks_as_callbacks(b, hook), input_cotangents, begin)
    begin(None)
    graph = dead_code_elimination(b.graph(list(outputs.values())))
    position = {node: p for p, node in enumerate(order)}
    return Derivation(graph, [sources[p] for p in graph.inputs], [position[n] for n in outputs], ran, origins)


def _hooks_as_callbacks(b, hook):
    if hook is None:
        return None

    def hooked(node, g):
        fn = hook(node)
        return g if fn is None else b.callback(g, fn=fn)
    return hooked


class NodeVJP:
    """One node's VJP rule as a graph of its own, which serves every node of the same signature
    (see vjp_signature). Called with the node's cotangent g and saved values s, it returns one
    cotangent (or None) per node input: runtime.interpreter.run_lowered binds and delivers its
    first runs with `bind` and `deliver`, and then writes them into one generated function
    (`parameters`, `inputs`, `returns`).

    graph: inputs are placeholders, outputs the input cotangents.
    sources: per graph input, where its value comes from: j >= 0 the j-th saved value, -1 the
    cotangent, -2 - k entry k of a cotangent that is a tuple.
    outputs: per node input, None (no cotangent), the index of its graph output, or a tuple of
    those for an input with several outputs.
    reads: the saved values it reads (to check for in-place changes), in order.
    absorbed: the inputs whose rule it applies too (permute nodes, see evaluate_backward): for
    those, the cotangent is that of the permute's own input.
    passed: the inputs whose cotangent is a saved value passed through unchanged.
    lowered: None, or the executor's form of graph, made at its first run."""
    __slots__ = ("graph", "sources", "outputs", "reads", "absorbed", "passed", "lowered")
    parameters = "g, s"

    def __init__(self, node, g, values, needed, absorbed):
        b = Builder()
        where = {}
        if g.__class__ is tuple:
            cotangent = tuple(None if c is None else b.placeholder(c, *_value_type(c)) for c in g)
            where.update((p, -2 - k) for k, p in enumerate(cotangent) if p is not None)
        else:
            cotangent = b.placeholder(g, *_value_type(g))
            where[cotangent] = -1
        saved = _saved_placeholders(b, values)
        where.update((p, j) for j, p in enumerate(saved) if isinstance(p, Node))
        cotangents = _input_cotangents(b, node, cotangent, saved, needed)
        for i in absorbed:   # a permute saves nothing
            if cotangents[i] is not None:
                cotangents[i] = _input_cotangents(b, node.inputs[i], cotangents[i], (), needed)[0]
        flat = []

        def output(c):   # c's index among the graph outputs (a tuple of those, or None)
            if c is None:
                return None
            if c.__class__ is tuple:
                return tuple(output(q) for q in c)
            flat.append(c)
            return len(flat) - 1

        self.outputs = [output(c) for c in cotangents]
        self.graph = dead_code_elimination(b.graph(flat))
        self.sources = [where[p] for p in self.graph.inputs]
        self.reads = tuple(j for j in self.sources if j >= 0)
        self.absorbed = absorbed
        self.passed = tuple(i for i, c in enumerate(cotangents)
                            if c.__class__ is not tuple and where.get(c, -1) >= 0)
        self.lowered = None

    def bind(self, g, s):
        """The graph's input values."""
        return [s[j] if j >= 0 else g if j == -1 else g[-2 - j] for j in self.sources]

    def deliver(self, results):
        """The cotangent (or None) of each node input, from the graph's output values."""
        return [None if o is None else results[o] if o.__class__ is int else
                tuple(None if i is None else results[i] for i in o) for o in self.outputs]

    @property
    def inputs(self):
        """bind, as one expression per graph input."""
        return [f"s[{j}]" if j >= 0 else "g" if j == -1 else f"g[{-2 - j}]" for j in self.sources]

    @property
    def returns(self):
        """deliver, as a str.format template over the graph outputs."""
        def text(o):
            if o is None or o.__class__ is int:
                return "None" if o is None else "{%d}" % o
            return "(" + "".join(text(i) + ", " for i in o) + ")"
        return "[" + ", ".join(text(o) for o in self.outputs) + "]"


class _Forwarded:
    """The cotangent of an absorbed permute node: already taken through the permute's rule by its
    consumer's NodeVJP, so it is the cotangent of the permute's input."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def vjp_signature(node, needed, absorbs):
    """What a node's VJP rule may read from it, hashable: a NodeVJP made for one node serves every
    node with an equal signature. Rules read their node's op, attributes and type, their inputs'
    types (matmul also its right operand's op), the Python scalars they save (by repr, which tells
    0.0 from -0.0), and which inputs need a cotangent; an absorbed input adds its own attributes
    and input. Returns (signature, the positions of the absorbed inputs); the signature is None for
    an opaque op (its rule runs Python that may differ per call). Hashing a signature raises
    TypeError when an attribute is not hashable."""
    op = node.op
    if op.kind == "opaque":
        return None, ()
    inputs, absorbed = [], ()
    saves = None
    for k, v in enumerate(node.inputs):
        if isinstance(v, Node):
            if v.op is _PERMUTE and absorbs(v):
                absorbed += (k,)
                u = v.inputs[0]
                inputs.append((v.op, v.attrs["axes"], v.shape, v.dtype, u.op, u.shape, u.dtype))
            else:
                inputs.append((v in needed, v.op, v.shape, v.dtype))
        elif isinstance(v, np.ndarray):
            inputs.append((v.shape, v.dtype))
        else:
            saves = saves or op.saved_slots(len(node.inputs))
            inputs.append((v.__class__, repr(v)) if k in saves else v.__class__)
    attrs = node.attrs
    return (op, tuple(inputs), tuple(attrs.items()) if attrs else None, node.shape, node.dtype), absorbed


def evaluate_backward(order, roots, root_cotangents, wanted, saved_values, check_saved, hook, run, vjps, add):
    """The cotangents that running backward_graph's graph would give, bit for bit, computed at once
    without deriving the whole graph: each node's rule runs as its NodeVJP graph (the same IR the
    whole graph is made of, so the same NumPy calls on the same values), and cotangents meeting at
    a node are summed as the whole graph's `add` nodes sum them, in the same order.

    order: topological_order(roots). saved_values and hook as for backward_graph (the function hook
    returns is called with the cotangent); check_saved(node, reads) checks the saved values a rule
    reads against in-place changes; run(vjp, g, values) calls a NodeVJP; vjps caches
    NodeVJPs by signature (get/put); add(a, b) sums two cotangents as the `add` op does. Returns
    the cotangents of the wanted nodes {node: value}, the positions of the nodes whose rules ran,
    and the ids of delivered values that are saved values passed through (others hold those)."""
    needed, uses = _needed(order, wanted)
    rooted = set(roots)
    held = set()
    seen = {}   # the NodeVJPs of this pass by signature: a dict lookup, not the shared cache's

    def absorbs(v):
        """Whether a consumer takes permute node v's cotangent through v's rule itself: in a whole
        graph, Builder.permute cancels a permute of a permute (the transposes of x @ W.t()), which
        needs both in one graph. Only where nothing else meets at v (one consumer, not a root, not
        wanted, no hook), so that every sum happens as in the whole graph, in the same order."""
        return (uses[v] == 1 and v not in rooted and not wanted(v) and (hook is None or hook(v) is None)
                and isinstance(v.inputs[0], Node) and v.inputs[0] in needed)

    def input_cotangents(node, g, p):
        if g.__class__ is _Forwarded:
            return [g.value]
        values = saved_values(node)
        signature, absorbed = vjp_signature(node, needed, absorbs)
        try:
            vjp = seen.get(signature)
            if vjp is None and signature is not None:
                vjp = vjps.get(signature)
                if vjp is None:
                    vjp = NodeVJP(node, g, values, needed, absorbed)
                    vjps.put(signature, vjp)
                seen[signature] = vjp
        except TypeError:   # an unhashable attribute
            vjp = None
        if vjp is None:   # an opaque node, or one whose signature is not hashable: not cached
            vjp = NodeVJP(node, g, values, needed, absorbed)
        if vjp.reads:
            check_saved(node, vjp.reads)
        cotangents = run(vjp, g, values)
        if vjp.passed:
            held.update(id(cotangents[i]) for i in vjp.passed)
        for i in vjp.absorbed:
            if cotangents[i] is not None:
                cotangents[i] = _Forwarded(cotangents[i])
        return cotangents

    def hooked(node, g):
        fn = hook(node)
        return g if fn is None else fn(g)

    outputs, ran = _reverse_walk(order, roots, root_cotangents, wanted, needed, add,
                                 None if hook is None else hooked, input_cotangents)
    return outputs, ran, held
