"""Loops re-rolled from traces: iterations of a Python loop on a tensor condition become one node.

Capture unrolls a Python `while` loop: each iteration appends the same ops to the trace and the
loop condition is a `bool(t)` decision per iteration. `reroll` finds such a loop in a trace,
given the decisions of one loop condition (the tracer picks them: same call stack of code
positions, same Python state at each, see tracer/capture.py): the ops recorded between
consecutive decisions must be structurally identical segments (ops, attributes, shapes, dtypes,
Python scalars), each reading only its own ops, the previous segment's values at the same
positions (carried values), and the same values from outside the loop (invariants). The loop then
becomes one `loop` node running the segment while the condition keeps its traced outcome, the
trip count decided at run time. The backward ops that autograd derived from those iterations
(each recorded with the forward op it came from) must repeat the same way, in reverse; they become
one `loop_back` node running the body's VJP once per forward iteration, with what it reads of
each forward iteration taken from stacks the forward loop fills.

Anything else refuses with a reason, and the trace stays as captured (one trip count). `loop` and
`loop_back` evaluate their body with the ops' NumPy impls here; compiled plans run a compiled
body through the same driving functions (`run_while`, `run_reverse`).
"""
import numpy as np

from . import dtypes as D
from .autodiff import topological_order
from .graph import Graph, Node, format_nodes
from .op import OPS, ShapeError, defop


class TripCountOutsideTrace(RuntimeError):
    """A re-rolled loop ran fewer times than its trace shows it may: the caller runs eagerly."""


class LoopBody:
    """The body of a re-rolled loop: a graph and what its outputs are (see `run_while`)."""
    __slots__ = ("graph", "text")

    def __init__(self, graph):
        self.graph = graph
        self.text = "; ".join(line.strip() for line in format_nodes(graph.nodes, graph.inputs, graph.outputs,
                                                                     name="body").splitlines())

    def __repr__(self):
        return f"<{self.text}>"

    def evaluate(self, *values):
        """The body's outputs for its inputs, with the ops' NumPy impls."""
        env = dict(zip(self.graph.inputs, values))
        with np.errstate(all="ignore"):
            for node in self.graph.nodes:
                if node.op.name == "const":
                    env[node] = np.asarray(node.attrs["value"], node.attrs["dtype"].np)
                    continue
                args = [env[v] if isinstance(v, Node) else v for v in node.inputs]
                out = node.op.impl(*args, **node.attrs) if node.attrs else node.op.impl(*args)
                env[node] = out if type(out) is np.ndarray else np.asarray(out)
        return [env[o] for o in self.graph.outputs]


def run_while(step, *values, carried, extras, saved, carried_saved, continues, min_trips):
    """Inputs: the condition, the carried values, the invariants. While bool(condition) is
    `continues`, step(*carried, *invariants) returns the next carried values, the next
    condition, `extras` more values read after the loop, and `saved` values read by the
    backward loop. Returns the last carried and extra values, a stack per saved value, a stack per
    carried value the backward loop reads (its value before each iteration), the trip count."""
    condition, state, invariant = values[0], list(values[1:1 + carried]), values[1 + carried:]
    stacks = [[] for _ in range(saved)]
    carried_stacks = [[] for _ in carried_saved]
    last = [None] * extras
    trips = 0
    while bool(condition) == continues:
        for stack, k in zip(carried_stacks, carried_saved):
            stack.append(state[k])
        outs = step(*state, *invariant)
        state, condition = outs[:carried], outs[carried]
        last = outs[carried + 1:carried + 1 + extras]
        for stack, value in zip(stacks, outs[carried + 1 + extras:]):
            stack.append(value)
        trips += 1
    if trips < min_trips:
        raise TripCountOutsideTrace(f"the loop ran {trips} times; its trace covers {min_trips} or more")
    return (*state, *last, *stacks, *carried_stacks, trips)


def run_reverse(step, *values, carried, stacks):
    """Inputs: the trip count, the stacks, the carried values, the invariants. For each forward
    iteration, last first, step(*carried, *that iteration's stacked values, *invariants)
    returns the next carried values and then values read after the loop (from its last step)."""
    trips, piles = values[0], values[1:1 + stacks]
    state, invariant = list(values[1 + stacks:1 + stacks + carried]), values[1 + stacks + carried:]
    outs = []
    for i in range(trips - 1, -1, -1):
        outs = step(*state, *[pile[i] for pile in piles], *invariant)
        state = outs[:carried]
    return (*state, *outs[carried:])


def _loop_impl(*values, body, **attrs):
    return run_while(body.evaluate, *values, **attrs)


def _loop_back_impl(*values, body, **attrs):
    return run_reverse(body.evaluate, *values, **attrs)


def _output_impl(values, index):
    return values[index]


def _built_by_reroll(shapes, dtypes, attrs):
    raise ShapeError("loop, loop_back and loop_output nodes are made by ir.loops.reroll, which knows their types")


LOOP = defop("loop", _loop_impl, _built_by_reroll, kind="loop")
LOOP_BACK = defop("loop_back", _loop_back_impl, _built_by_reroll, kind="loop")
LOOP_OUTPUT = defop("loop_output", _output_impl, _built_by_reroll, kind="loop")


# ---------------------------------------------------------------------------- finding loops

class Refused(Exception):
    """Why a trace's repeated segments cannot be one loop."""


def reroll(nodes, outputs, visits, continues, origins, decisions_inside, loop_outputs_dropped):
    """Re-roll one loop of a trace. nodes: the trace's nodes in order; outputs: its outputs;
    visits: (position, condition node) of each decision of the loop condition, the last one the
    exit (position: how many nodes the trace held when it was taken); origins: backward node ->
    the forward node it was derived from; decisions_inside: whether any other decision on a
    tensor value was taken between the first and the last visit; loop_outputs_dropped: output
    indices of the loop condition's guards, which the loop replaces.

    Returns (nodes, outputs, min_trips) of the re-rolled trace; raises Refused."""
    if decisions_inside:
        raise Refused("another decision on a tensor value is taken inside the loop")
    positions = [p for p, _ in visits]
    m = len(visits) - 1
    segments = [nodes[positions[j]:positions[j + 1]] for j in range(m)]
    size = len(segments[0])
    if size == 0 or any(len(s) != size for s in segments):
        raise Refused("the iterations record different numbers of ops")
    where = {n: (j, t) for j, s in enumerate(segments) for t, n in enumerate(s)}
    condition = set()
    for j in range(1, m + 1):
        place = where.get(visits[j][1])
        if place is None or place[0] != j - 1:
            raise Refused("the loop condition is not computed inside each iteration")
        condition.add(place[1])
    if len(condition) != 1:
        raise Refused("the loop condition is not computed at the same place in each iteration")
    condition = condition.pop()
    if visits[0][1] in where:
        raise Refused("the first loop condition is computed inside the loop")
    for s in segments:
        for n in s:
            if n.op.kind in ("random", "opaque", "loop"):
                raise Refused(f"the loop body holds a {n.op.name} op")
    forward = _classify(segments, where, +1)

    init = forward.init
    for u, x in init.items():
        if (x.shape, x.dtype) != (segments[0][u].shape, segments[0][u].dtype):
            raise Refused("a value carried into the loop changes shape or dtype after the first iteration")
    backward_segments = [[] for _ in range(m)]
    for n in nodes:
        if n not in where:
            origin = origins.get(n)
            if origin in where:
                backward_segments[where[origin][0]].append(n)
    has_backward = any(backward_segments)
    bwhere = {n: (j, t) for j, s in enumerate(backward_segments) for t, n in enumerate(s)}
    if has_backward:
        if any(len(s) != len(backward_segments[0]) for s in backward_segments):
            raise Refused("the backward pass of each iteration records different ops (gradients summed over "
                          "iterations, or a value whose gradient is needed in some iterations only)")
        backward = _classify(backward_segments, bwhere, -1, forward=(where, forward.carried, init))
        for u, x in backward.init.items():
            if (x.shape, x.dtype) != (backward_segments[0][u].shape, backward_segments[0][u].dtype):
                raise Refused("a gradient carried into the backward loop changes shape or dtype")

    # what the rest of the trace reads of the loop: only the last iteration, forward and backward
    finals, bfinals = set(), set()
    for n in nodes:
        if n in where or n in bwhere:
            continue
        for v in n.inputs:
            _read_after(v, where, bwhere, m, finals, bfinals)
    for k, o in enumerate(outputs):
        if k not in loop_outputs_dropped:
            _read_after(o, where, bwhere, m, finals, bfinals)
    # after no iteration the values read after the loop are the carried values' initial ones; a
    # value read after the loop that is not carried, or carried from a trace input (a replay would
    # hand back the caller's own array where eager mode hands back its tensor), needs an iteration
    min_trips = 1 if (finals - set(forward.carried)) or (has_backward and bfinals - set(backward.carried)) \
        or any(init[u].op.name == "placeholder" for u in finals & set(forward.carried)) else 0

    # the forward loop
    carried = sorted(forward.carried)
    extras = sorted(finals - set(carried))
    saved = sorted(backward.saved) if has_backward else []
    carried_saved = sorted(backward.carried_in) if has_backward else []
    body, invariants = _body(segments[0], forward, carried, carried + [condition] + extras + saved)
    loop = Node(LOOP, (visits[0][1], *[init[u] for u in carried], *invariants),
                {"body": LoopBody(body), "carried": len(carried), "extras": len(extras), "saved": len(saved),
                 "carried_saved": tuple(carried.index(u) for u in carried_saved), "continues": continues,
                 "min_trips": min_trips}, (), _NOMINAL)
    replaced = {}
    index = 0
    for u in carried + extras:
        replaced[segments[-1][u]] = Node(LOOP_OUTPUT, (loop,), {"index": index}, segments[-1][u].shape,
                                         segments[-1][u].dtype)
        index += 1
    piles = []
    for _ in saved + carried_saved:
        piles.append(Node(LOOP_OUTPUT, (loop,), {"index": index}, (), _NOMINAL))
        index += 1
    trips = Node(LOOP_OUTPUT, (loop,), {"index": index}, (), _NOMINAL)

    if has_backward:   # the backward loop
        bcarried = sorted(backward.carried)
        bextras = sorted(bfinals - set(bcarried))
        bbody, binvariants = _body(backward_segments[0], backward, bcarried, bcarried + bextras, saved, carried_saved)
        back = Node(LOOP_BACK, (trips, *piles, *[backward.init[u] for u in bcarried], *binvariants),
                    {"body": LoopBody(bbody), "carried": len(bcarried), "stacks": len(piles)}, (), _NOMINAL)
        for i, u in enumerate(bcarried + bextras):
            replaced[backward_segments[0][u]] = Node(LOOP_OUTPUT, (back,), {"index": i},
                                                     backward_segments[0][u].shape, backward_segments[0][u].dtype)
    nodes, outputs = _rebuild(nodes, outputs, where, bwhere, replaced, loop_outputs_dropped, trips)
    return nodes, outputs, min_trips


_NOMINAL = D.int64   # the nominal dtype of a node whose value is not an array (a loop's tuple, a stack, a count)


def _read_after(v, where, bwhere, m, finals, bfinals):
    if not isinstance(v, Node):
        return
    if v in where:
        j, u = where[v]
        if j != m - 1:
            raise Refused("a value of an earlier iteration is read after the loop")
        finals.add(u)
    elif v in bwhere:
        j, u = bwhere[v]
        if j != 0:
            raise Refused("a gradient of a later iteration is read after the backward loop")
        bfinals.add(u)


class _Slots:
    """How each input of each position of the segments is read: ('internal', u), ('carried', u)
    (from the neighbouring segment), ('saved', u) / ('carried_in', u) (backward segments reading
    their forward iteration), ('invariant', node) or ('value', python value). init: carried
    position -> the node read from outside by the segment that has no neighbour."""

    def __init__(self):
        self.kinds = {}
        self.init = {}
        self.carried = set()
        self.saved = set()
        self.carried_in = set()


def _classify(segments, where, direction, forward=None):
    """The slots of structurally identical segments. direction +1: segment j reads segment j - 1
    (forward); -1: segment j reads segment j + 1 (backward, whose first segment is the last)."""
    m = len(segments)
    first = 0 if direction > 0 else m - 1   # the segment whose carried inputs come from outside
    slots = _Slots()
    for t in range(len(segments[0])):
        reference = segments[0][t]
        key = _structure(reference)
        for j in range(1, m):
            if _structure(segments[j][t]) != key:
                raise Refused(f"iteration {j + 1} records {_describe(segments[j][t])} where iteration 1 records "
                              f"{_describe(reference)}")
        for s in range(len(reference.inputs)):
            kinds = [_read(segments[j][t].inputs[s], j, t, where, direction, forward) for j in range(m)]
            neighbours = [k for j, k in enumerate(kinds) if j != first]
            if neighbours[0][0] == "carried" and all(k == neighbours[0] for k in neighbours) \
                    and kinds[first][0] == "outside":
                u = neighbours[0][1]
                if slots.init.setdefault(u, kinds[first][1]) is not kinds[first][1]:
                    raise Refused("a carried value starts from two different values")
                slots.carried.add(u)
                slots.kinds[t, s] = ("carried", u)
            elif forward is not None and kinds[0][0] == "outside" and len(kinds) > 1 \
                    and all(k == kinds[1] for k in kinds[1:]) and kinds[1][0] == "carried_in" \
                    and kinds[0][1] is forward[2].get(kinds[1][1]):
                slots.carried_in.add(kinds[1][1])
                slots.kinds[t, s] = kinds[1]
            elif all(k == kinds[0] for k in kinds) and kinds[0][0] not in ("carried", "carried_in"):
                kind = kinds[0]
                if kind[0] == "outside":
                    kind = ("invariant", kind[1])
                elif kind[0] == "saved":
                    slots.saved.add(kind[1])
                slots.kinds[t, s] = kind
            else:
                raise Refused(f"{_describe(reference)} reads different values in different iterations (a Python "
                              f"value that changes, or a value of an earlier iteration)")
    return slots


def _read(v, j, t, where, direction, forward):
    """How segment j's op at position t reads input v (see _Slots), before reconciling segments."""
    if not isinstance(v, Node):
        return ("value", _value_key(v))
    place = where.get(v)
    if place is not None:
        if place[0] == j:
            return ("internal", place[1])
        if place[0] == j - direction:
            return ("carried", place[1])
        raise Refused("the loop body reads a value from two or more iterations back")
    if forward is not None:   # a backward segment reading its forward iteration
        fwhere, fcarried, _ = forward
        place = fwhere.get(v)
        if place is not None:
            if place[0] == j:
                return ("saved", place[1])
            if place[0] == j - 1 and place[1] in fcarried:
                return ("carried_in", place[1])
            raise Refused("the backward pass of an iteration reads another iteration's values")
    return ("outside", v)


def _value_key(v):
    if isinstance(v, float):
        return (float, repr(v))
    if isinstance(v, np.ndarray):
        return (np.ndarray, id(v))
    return (type(v), v)


def _structure(node):
    attrs = node.attrs
    return (node.op, node.shape, node.dtype, len(node.inputs),
            tuple((k, _value_key(a) if not isinstance(a, (tuple, list)) else tuple(map(_value_key, a)))
                  for k, a in attrs.items()) if attrs else None)


def _describe(node):
    return f"{node.op.name} ({node.shape}, {node.dtype.name if node.dtype else ''})"


def _body(segment, slots, carried, outputs, saved=(), carried_saved=()):
    """The body graph of a loop from one segment: placeholders for the carried values (positions
    `carried`), then the values of the forward iteration (backward bodies: `saved` positions, then
    `carried_saved` positions before the iteration), then the invariants; `outputs`: positions of
    the segment to return. Returns the graph and the invariants, in the order of its inputs."""
    carried_inputs = {u: Node(OPS["placeholder"], (), None, segment[u].shape, segment[u].dtype) for u in carried}
    stacked = {}
    invariants, invariant_inputs = [], {}
    made = []
    for t, node in enumerate(segment):
        inputs = []
        for s, v in enumerate(node.inputs):
            kind, what = slots.kinds[t, s]
            if kind == "internal":
                inputs.append(made[what])
            elif kind == "value":
                inputs.append(v)
            elif kind == "carried":
                inputs.append(carried_inputs[what])
            elif kind == "invariant":
                if what not in invariant_inputs:
                    invariants.append(what)
                    invariant_inputs[what] = Node(OPS["placeholder"], (), None, what.shape, what.dtype)
                inputs.append(invariant_inputs[what])
            else:   # "saved" or "carried_in": a value of the forward iteration, from a stack
                if (kind, what) not in stacked:
                    stacked[kind, what] = Node(OPS["placeholder"], (), None, v.shape, v.dtype)
                inputs.append(stacked[kind, what])
        made.append(Node(node.op, tuple(inputs), node.attrs, node.shape, node.dtype))
    placeholders = ([carried_inputs[u] for u in carried] + [stacked["saved", u] for u in saved]
                    + [stacked["carried_in", u] for u in carried_saved] + [invariant_inputs[x] for x in invariants])
    return Graph(made, placeholders, [made[u] for u in outputs]), invariants


def _rebuild(nodes, outputs, where, bwhere, replaced, dropped, trips):
    """The trace with the loops' segments replaced by the loops: a copy of every other node,
    reading the loops' outputs where it read the last iteration; the dropped outputs (the loop
    condition's guards) become the trip count. Returns (nodes in a topological order, outputs)."""
    mapping = dict(replaced)

    def mapped(v):
        return mapping.get(v, v) if isinstance(v, Node) else v

    for n in nodes:
        if n not in where and n not in bwhere:
            mapping[n] = Node(n.op, tuple(mapped(v) for v in n.inputs), n.attrs, n.shape, n.dtype)
    for loop in {o.inputs[0] for o in [*replaced.values(), trips]}:
        loop.inputs = tuple(mapped(v) for v in loop.inputs)
    new_outputs = [trips if k in dropped else mapped(o) for k, o in enumerate(outputs)]
    roots = [mapping[n] for n in nodes if n not in where and n not in bwhere] + list(replaced.values()) + new_outputs
    return [n for n in topological_order(roots) if n.op.name != "placeholder"], new_outputs
