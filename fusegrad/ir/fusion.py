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
    values are needed outside the group (or are graph outputs)."""
    __slots__ = ("nodes", "shape", "inputs", "outputs", "index")

    def __init__(self, shape, index):
        self.nodes = []
        self.shape = shape
        self.inputs = []
        self.outputs = []
        self.index = index

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

    Greedy, in topological order: a fusable node joins, and so merges, every group among its
    inputs' groups that has its iteration space, as long as the merged group stays convex (no
    value flows out of it and back in through an outside node) and no member reads a reduction
    of its own group (that value is complete only after the loop)."""
    parent = {}          # union-find over group ids
    space = {}           # group id -> iteration shape
    has_reduction = {}   # node -> True for reductions (members never read these in-group)
    group_id = {}        # node -> group id (not canonical)
    upstream = {}        # node -> frozenset of group ids (not canonical) its value depends on
    outside_up = {}      # group id -> group ids upstream of the group's outside inputs

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def canon(ids):
        return {find(g) for g in ids}

    for node in graph.nodes:
        ins = [v for v in node.inputs if isinstance(v, Node)]
        ups = frozenset().union(*(upstream.get(v, frozenset()) for v in ins))
        if not can_fuse(node):
            upstream[node] = ups
            continue
        is_reduction = node.op.name in REDUCTIONS
        in_space = ins[0].shape if is_reduction else node.shape
        candidates = [ins[0]] if is_reduction else ins
        joined = set()
        for v in candidates:
            g = group_id.get(v)
            if g is None or space[find(g)] != in_space or (has_reduction.get(v) and not is_reduction):
                continue
            joined.add(find(g))
        joined = _convex_subset(joined, ins, group_id, upstream, outside_up, find, canon, has_reduction)
        g = len(parent)
        parent[g] = g
        space[g] = in_space
        outside = set()
        for v in ins:
            vg = group_id.get(v)
            if vg is None or find(vg) not in joined:
                outside |= canon(upstream.get(v, ()))
        for j in joined:
            outside |= canon(outside_up[j])
            parent[j] = g
        outside_up[g] = outside
        group_id[node] = g
        if is_reduction:
            has_reduction[node] = True
        upstream[node] = ups | {g}

    _merge_siblings(graph, group_id, upstream, space, parent, find, canon)
    groups = {}
    steps = []
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


def _merge_siblings(graph, group_id, upstream, space, parent, find, canon):
    """Merge groups over the same iteration space when neither depends on the other: one loop
    instead of two, and inputs they share are read once."""
    depends = {}   # root -> group ids (not canonical) upstream of its members
    order = []
    for node in graph.nodes:
        g = group_id.get(node)
        if g is None:
            continue
        root = find(g)
        if root not in depends:
            depends[root] = set()
            order.append(root)
        depends[root] |= upstream[node]
    by_space = {}
    for r in order:
        for other in by_space.get(space[r], ()):
            o = find(other)
            if o != r and r not in canon(depends[o]) and o not in canon(depends[r]) - {r}:
                parent[r] = o
                depends[o] |= depends[r]
                break
        else:
            by_space.setdefault(space[r], []).append(r)


def _convex_subset(joined, ins, group_id, upstream, outside_up, find, canon, has_reduction):
    """The groups among `joined` that the node can merge with: drop any group that an outside
    input of the node, or another joined group's outside inputs, depend on."""
    joined = set(joined)
    changed = True
    while changed and joined:
        changed = False
        for j in list(joined):
            blocked = False
            for v in ins:
                vg = group_id.get(v)
                inside = vg is not None and find(vg) in joined and not has_reduction.get(v)
                if not inside and j in canon(upstream.get(v, ())):
                    blocked = True
                    break
            if not blocked:
                blocked = any(j in canon(outside_up[k]) for k in joined if k != j)
            if blocked:
                joined.discard(j)
                changed = True
    return joined


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
