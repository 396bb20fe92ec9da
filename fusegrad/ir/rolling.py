"""Re-rolling: the repeated stretches of a fusion group, found and described as loops.

Capture unrolls Python loops. The tutorial's profiler loop, `for _ in range(1000): z = (z / x) * y`
and a backward, is one fusion group of about 8,000 ops: emitted straight it would compile for
minutes (Numba takes about 4 ms per statement). But it is a few short bodies, each repeated many
times. `roll(group)` finds them, so that a backend emits each body once, inside a loop over its
repetitions, and compiles a kernel of tens of statements.

A region is `reps` repetitions of `period` consecutive members with the same ops (name, dtype,
shape, attributes) at each offset, where every read of repetition r is one of
  - a member of repetition r at a fixed offset;
  - a member of repetition r - 1 at a fixed offset, "carried" (repetition 0 reads an initial
    value of its type from before the region instead);
  - a value from outside the group, the same in every repetition;
  - a member before the region, the same in every repetition ("fixed");
  - a member of an earlier region, at a fixed offset, of repetition q0 + step * r with step
    +1 or -1 ("stacked": a backward reads the forward's values in reverse).
Then every repetition applies the same function to what it reads, and the loop computes exactly
what the straight group computes: the same scalar operations, in the same order, per element.
Regions hold no reductions. Nothing here assumes a target.
"""
import numpy as np

from .fusion import REDUCTIONS
from .graph import Node

MIN_OPS = 64        # smaller groups are emitted straight: their kernels compile quickly anyway
MIN_REPS = 3
MAX_PERIOD = 64


class Region:
    """`template`: the members of repetition 1, the body a backend emits (repetition 1 reads
    both kinds of carried value). `carried`: {offset: initial value} for offsets the next
    repetition reads; `reads`: {node outside the template that it reads: ("carry", offset) |
    ("fixed",) | ("stacked", region, offset, q0, step)}; `stacked`: offsets whose value every
    repetition keeps, because something after the region reads them."""
    __slots__ = ("index", "start", "period", "reps", "template", "carried", "reads", "stacked")

    def __init__(self, index, start, period, reps, template, carried, reads):
        self.index, self.start, self.period, self.reps = index, start, period, reps
        self.template, self.carried, self.reads = template, carried, reads
        self.stacked = set()

    def __repr__(self):
        return f"<region {self.index}: {self.reps} x {self.period} ops from member {self.start}>"


class Rolled:
    """A group as pieces in order, each a member emitted straight or a Region. `place[node]` is
    (region, repetition, offset) for members inside regions."""

    def __init__(self, pieces, place):
        self.pieces, self.place = pieces, place
        self.statements = sum(p.period if isinstance(p, Region) else 1 for p in pieces)

    def final(self, node):
        """Whether a later piece reads region member `node` from its region's carried value
        (its last repetition, at a carried offset) rather than from a stack."""
        region, q, j = self.place[node]
        return q == region.reps - 1 and j in region.carried


def _signature(node):
    attrs = tuple(sorted((k, _outside(v)) for k, v in node.attrs.items())) if node.attrs else ()
    return node.op.name, node.dtype, node.shape, attrs


def _outside(v):
    """A key equal for two values only when they are the same: nodes and arrays by identity (an
    array's repr elides its middle), anything else by type and repr."""
    if isinstance(v, (Node, np.ndarray)):
        return "object", id(v)
    return "value", type(v).__name__, repr(v)


class _Finder:
    def __init__(self, nodes):
        self.nodes = nodes
        self.position = {n: k for k, n in enumerate(nodes)}
        # each member's op and what it reads from outside the group, as small integers: a
        # candidate's repetitions must agree on these, and slices of integers compare fast
        interned, self.reduction = {}, set()
        self.signatures = []
        for n in nodes:
            key = _signature(n) + tuple(None if v in self.position else _outside(v) for v in n.inputs)
            self.signatures.append(interned.setdefault(key, len(interned)))
            if n.op.name in REDUCTIONS:
                self.reduction.add(self.signatures[-1])
        self.regions = []
        self.region_at = {}   # position -> region, for members inside regions found so far

    def reads(self, s, p, r):
        """What repetition r of a candidate region (start s, period p) reads, slot by slot."""
        return list(self.slots(s, p, r))

    def slots(self, s, p, r):
        """reads(), one slot at a time (None for a read this finder cannot express), so that a
        comparison stops at the first difference."""
        base, position = s + r * p, self.position
        for j in range(p):
            for v in self.nodes[base + j].inputs:
                m = position.get(v) if isinstance(v, Node) else None
                if m is None:
                    yield "outside", _outside(v)
                elif m >= base:
                    yield "in", m - base
                elif m >= base - p and r > 0:
                    yield "carry", m - base + p
                elif m < s:
                    yield "before", m
                else:
                    yield None   # further back inside the region: not a loop of this form

    def stacked(self, m, step, reps):
        """("stacked", region, offset, q0, step) when repetition r of the candidate reads
        repetition q0 + step * r of an earlier region (m: what repetition 1 reads) for every
        r < reps; None otherwise."""
        region = self.region_at.get(m)
        if region is None:
            return None
        q, j = divmod(m - region.start, region.period)
        q0 = q - step   # m is what repetition 1 reads
        last = q0 + step * (reps - 1)
        if not (0 <= q0 < region.reps and 0 <= last < region.reps):
            return None
        return "stacked", region, j, q0, step

    def candidate(self, s, p):
        """The region starting at s with period p, or None when it repeats fewer than MIN_REPS times."""
        nodes, sigs, n = self.nodes, self.signatures, len(self.nodes)
        if s + MIN_REPS * p > n:
            return None
        body = sigs[s:s + p]
        if not self.reduction.isdisjoint(body):
            return None
        for r in (1, 2):
            if sigs[s + r * p:s + (r + 1) * p] != body:
                return None
        first, steps = [], []   # per slot: what repetition 1 reads; how far a "before" read moves
        for a, b in zip(self.slots(s, p, 1), self.slots(s, p, 2)):
            if a is None or b is None:
                return None
            if a[0] == "before" and b[0] == "before":
                steps.append(b[1] - a[1])
            elif a != b:
                return None
            else:
                steps.append(None)
            first.append(a)
        zeroth = self.reads(s, p, 0)
        if None in zeroth:
            return None
        initial, seen = {}, {}   # carried offset -> (offset, input) of repetition 0 reading its initial value
        slots = [(j, t) for j in range(p) for t in range(len(self.nodes[s + j].inputs))]
        for slot, (a, z) in enumerate(zip(first, zeroth)):
            if a[0] == "carry":
                if z[0] not in ("before", "outside") or seen.setdefault(a[1], z) != z:
                    return None
                initial.setdefault(a[1], slots[slot])
            elif a[0] == "before":
                if z != ("before", a[1] - steps[slot]):
                    return None
            elif a != z:
                return None
        reps = 3
        while s + (reps + 1) * p <= n and sigs[s + reps * p:s + (reps + 1) * p] == body:
            if any(b is None or b != (("before", a[1] + (reps - 1) * d) if d is not None else a)
                   or (d and self.region_at.get(b[1]) is not self.region_at.get(a[1]))
                   for a, b, d in zip(first, self.slots(s, p, reps), steps)):
                break
            reps += 1
        return self.describe(s, p, reps, first, steps, initial)

    def describe(self, s, p, reps, first, steps, initial):
        """The Region for a candidate that repeats, once its "before" reads check out: each a
        fixed member or a stacked read of an earlier region (else it is not a loop we can emit)."""
        nodes = self.nodes
        template = nodes[s + p:s + 2 * p]
        reads, slot = {}, 0
        for node in template:
            for v in node.inputs:
                kind, d = first[slot], steps[slot]
                slot += 1
                if kind[0] == "carry":
                    how = ("carry", kind[1])
                elif kind[0] == "before":
                    how = ("fixed",) if d == 0 else None
                    if d and abs(d) == getattr(self.region_at.get(kind[1]), "period", None):
                        how = self.stacked(kind[1], d // abs(d), reps)
                    if how is None:
                        return None
                else:
                    continue
                if reads.setdefault(v, how) != how:   # one value read two ways: not expressible
                    return None
        carried = {o: self.nodes[s + j].inputs[t] for o, (j, t) in initial.items()}
        if any(not isinstance(v, Node) or v.dtype is not template[o].dtype for o, v in carried.items()):
            return None   # repetition 0 computes on a value of another type (a Python scalar, an int)
        return Region(len(self.regions), s, p, reps, template, carried, reads)

    def find(self):
        pieces, place, s, n = [], {}, 0, len(self.nodes)
        while s < n:
            best, tried = None, []
            for p in range(1, min(MAX_PERIOD, (n - s) // MIN_REPS) + 1):
                if any(p % q == 0 for q in tried):   # a multiple of a period that repeats covers no more
                    continue
                region = self.candidate(s, p)
                if region is not None:
                    tried.append(p)
                    if best is None or region.reps * region.period > best.reps * best.period:
                        best = region
            if best is None:
                pieces.append(self.nodes[s])
                s += 1
                continue
            self.regions.append(best)   # its index, len(self.regions) when made, is its place here
            pieces.append(best)
            for r in range(best.reps):
                for j in range(best.period):
                    m = s + r * best.period + j
                    self.region_at[m] = best
                    place[self.nodes[m]] = (best, r, j)
            s += best.reps * best.period
        return pieces, place


def roll(group):
    """The group as straight members and repeated regions, or None when re-rolling would not
    shorten it by half (or the group is small, or not all of its members span its space).
    Looked for once per group."""
    if group.rolled is NotImplemented:
        group.rolled = _roll(group)
    return group.rolled


def _roll(group):
    nodes = group.nodes
    if len(nodes) < MIN_OPS or not group.shape:
        return None
    if any(n.shape != tuple(group.shape) for n in nodes if n.op.name not in REDUCTIONS):
        return None
    pieces, place = _Finder(nodes).find()
    rolled = Rolled(pieces, place)
    if 2 * rolled.statements > len(nodes):
        return None
    _mark_stacked(rolled, group)
    return rolled


def _mark_stacked(rolled, group):
    """Which region offsets keep every repetition's value: those read after their region other
    than as its last carried value (by later members, regions, initial values or as outputs)."""
    place = rolled.place

    def read_after(v):
        if v in place and not rolled.final(v):
            region, _, j = place[v]
            region.stacked.add(j)

    for piece in rolled.pieces:
        if isinstance(piece, Region):
            for v, how in piece.reads.items():
                if how[0] == "stacked":
                    how[1].stacked.add(how[2])
                elif how[0] == "fixed":
                    read_after(v)
            for v in piece.carried.values():
                read_after(v)
        else:
            for v in piece.inputs:
                read_after(v)
    for v in group.outputs:
        read_after(v)


__all__ = ["roll", "Region", "Rolled", "MIN_OPS"]
