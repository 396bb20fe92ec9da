"""Fusion: partition a graph into fusion groups and the single nodes left between them.

A fusion group is a convex set of elementwise nodes over one iteration space (the shape every
member produces), possibly ending in reductions over that space. A backend emits one kernel per
group; every other node runs on its own (matmul through BLAS, indexing through NumPy, ...).

Which nodes a backend can put into a kernel is its business: `partition` takes a predicate, so
nothing here assumes a target. Views that only broadcast (`expand`) or add and drop size-1 axes
are absorbed into the reading group as index patterns instead of being materialised.
"""
from .graph import Node

REDUCTIONS = ("sum", "amax", "amin", "prod")


class FusionGroup:
    """nodes: members in execution order; shape: the iteration space; inputs: values read from
    outside (nodes or array constants), each with the shape it is read at; outputs: members whose
    values are needed outside the group (or are graph outputs); rolled: its re-rolled form once
    ir.rolling has looked for one (None: it has none)."""
    __slots__ = ("nodes", "shape", "inputs", "outputs", "index", "rolled")

    def __init__(self, shape, index):
        self.nodes = []
        self.shape = shape
        self.inputs = []
        self.outputs = []
        self.index = index
        self.rolled = NotImplemented   # not looked for yet

    def __repr__(self):
        return f"<fusion group {self.index}: {len(self.nodes)} ops over {list(self.shape)}>"


def is_broadcast_view(node):
    """An expand, or a reshape that only inserts or removes size-1 axes: reading the source with a
    broadcast index pattern gives the same values, so no copy is needed."""
    name = node.op.name
    if name == "expand":
        return True
    if name == "reshape" and isinstance(node.inputs[0], Node):
        src = node.inputs[0].shape
        return tuple(n for n in src if n != 1) == tuple(n for n in node.shape if n != 1)
    return False


def partition(graph, can_fuse):
    """Split `graph.nodes` into steps: FusionGroups and single nodes, in an order that respects
    every dependency. `can_fuse(node)` says whether the backend can emit the node in a kernel.

    Greedy, in topological order: a fusable node joins, and so merges, the groups among its
    inputs' groups that have its iteration space. The invariant that keeps the steps acyclic:
    every value a group reads from outside is ready before the group's first member, where a
    group member is ready at its group's start and any other node as soon as its inputs are.
    So a group that reads another starts after it. Members never read a reduction of their own
    group (its value is complete only after the loop)."""
    ready = {p: -1 for p in graph.inputs}
    parent, start, last_input, space = {}, {}, {}, {}
    group_id = {}        # node -> group id (canonical through find)
    reductions = set()

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def readiness(v):
        g = group_id.get(v)
        return ready[v] if g is None else start[find(g)]

    def outside_positions(ins, joined):
        return [readiness(v) for v in ins
                if v in reductions or group_id.get(v) is None or find(group_id[v]) not in joined]

    for index, node in enumerate(graph.nodes):
        if not can_fuse(node):
            ready[node] = max((readiness(v) for v in node.inputs if isinstance(v, Node)), default=-1)
            continue
        ins = [v for v in node.inputs if isinstance(v, Node)]
        is_reduction = node.op.name in REDUCTIONS
        in_space = ins[0].shape if is_reduction else node.shape
        joined = set()
        for v in (ins[:1] if is_reduction else ins):
            g = group_id.get(v)
            if g is not None and v not in reductions and space[find(g)] == in_space:
                joined.add(find(g))
        while joined:   # drop the latest-starting group until the invariant holds
            first = min(start[g] for g in joined)
            if max(outside_positions(ins, joined) + [last_input[g] for g in joined], default=-1) < first:
                break
            joined.discard(max(joined, key=start.get))
        g = len(parent)
        parent[g] = g
        space[g] = in_space
        start[g] = min([start[j] for j in joined] + [index])
        last_input[g] = max(outside_positions(ins, joined) + [last_input[j] for j in joined], default=-1)
        for j in joined:
            parent[j] = g
        group_id[node] = g
        if is_reduction:
            reductions.add(node)

    _merge_siblings(graph, group_id, find, parent, start, last_input, space)
    groups, steps = {}, []
    for node in graph.nodes:
        g = group_id.get(node)
        if g is None:
            steps.append(node)
            continue
        root = find(g)
        group = groups.get(root)
        if group is None:
            group = groups[root] = FusionGroup(space[root], len(groups))
            steps.append(group)
        group.nodes.append(node)
    member_of = {n: groups[find(g)] for n, g in group_id.items()}
    outputs = set(graph.outputs)
    for group in groups.values():
        _close(group, member_of, graph, outputs)
    return _schedule(steps, member_of)


def _merge_siblings(graph, group_id, find, parent, start, last_input, space):
    """Merge a group into an earlier one over the same space when everything it reads comes
    before the earlier one starts (so neither reads the other): one loop instead of two, and
    the inputs they share are read once."""
    roots = list(dict.fromkeys(find(group_id[n]) for n in graph.nodes if n in group_id))
    by_space = {}
    for r in sorted(roots, key=start.get):
        for o in by_space.get(space[r], ()):
            if last_input[r] < start[o]:
                parent[r] = o
                last_input[o] = max(last_input[o], last_input[r])
                break
        else:
            by_space.setdefault(space[r], []).append(r)


def _close(group, group_of, graph, outputs):
    """Fill in the group's inputs and outputs once membership is final."""
    members = set(group.nodes)
    seen = set()
    for node in group.nodes:
        for v in node.inputs:
            if isinstance(v, Node) and v not in members and id(v) not in seen:
                seen.add(id(v))
                group.inputs.append(v)
    readers = {}
    for node in graph.nodes:
        if node in members:
            continue
        for v in node.inputs:
            if isinstance(v, Node) and v in members:
                readers[v] = True
    group.outputs = [n for n in group.nodes if n in readers or n in outputs]


def _schedule(steps, group_of):
    """Order the steps so that each runs after the steps producing its inputs. A group is listed
    where its first member was, but a later member may read a node listed after that point."""
    def unit(v):
        return group_of.get(v, v)

    def inputs_of(step):
        nodes = step.nodes if isinstance(step, FusionGroup) else (step,)
        return [unit(v) for n in nodes for v in n.inputs if isinstance(v, Node) and unit(v) is not step]

    order, done = [], set()
    for step in steps:
        if id(step) in done:
            continue
        stack = [(step, iter(inputs_of(step)))]
        done.add(id(step))
        while stack:
            current, pending = stack[-1]
            for dep in pending:
                if id(dep) not in done:
                    done.add(id(dep))
                    stack.append((dep, iter(inputs_of(dep))))
                    break
            else:
                stack.pop()
                order.append(current)
    return order
