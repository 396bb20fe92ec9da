"""CPU loop kernels: a re-rolled loop (ir/loops.py) run as one Numba function.

A loop whose body plan is fusion-group kernels only, and which keeps no stacks, becomes one
module holding the body's kernels (renamed k0, k1, ...; their constants k0_c0, ...) and a `kernel`
that runs the whole loop: it allocates each body kernel's outputs, calls the kernels, and carries
the results into the next iteration, in compiled code. A replay then pays one call for the loop
instead of a Python-driven body plan per iteration. `build` returns None for any other loop,
which the plan runs through its body's plan instead (ir.loops.run_while / run_reverse).
"""
import hashlib
import re

import numpy as np

from ..ir.fusion import FusionGroup
from ..ir.loops import LOOP, TripCountOutsideTrace
from .cpu import FAST_MATH_PRELUDE, FASTMATH, python_literal
from .store import store

_CONSTANT = re.compile(r"\bc(\d+)\b")


def build(node, body, cache_dir=None):
    """A function with the calling convention of the loop node's impl, or None when the loop
    cannot run as one kernel (see the module's docstring)."""
    attrs = node.attrs
    forward = node.op is LOOP
    if (forward and (attrs["saved"] or attrs["carried_saved"])) or (not forward and attrs["stacks"]):
        return None
    if any(k.flagged for k in body.kernels) or not all(
            isinstance(s, FusionGroup) or s.op.name in ("placeholder", "const") for s in body.steps):
        return None
    graph = body.graph
    produced = {n for k in body.kernels for n in k.outs}
    if not all(o in produced for o in graph.outputs):   # an input or a constant handed straight back
        return None
    source = _source(graph, body.kernels, attrs, forward)
    module = f"fusegrad_loop_{hashlib.sha1(source.encode()).hexdigest()[:20]}"
    loaded = []   # the Numba function, loaded at the first call

    def kernel():
        if not loaded:
            loaded.append(store(cache_dir).numba_kernel(source, module))
        return loaded[0]
    if forward:
        min_trips = attrs["min_trips"]

        def run(condition, *values):
            out = (loaded[0] if loaded else kernel())(bool(condition), *map(np.asarray, values))
            if out[-1] < min_trips:
                raise TripCountOutsideTrace(f"the loop ran {out[-1]} times; its trace covers {min_trips} or more")
            return out
    else:
        def run(trips, *values):
            return (loaded[0] if loaded else kernel())(trips, *map(np.asarray, values))
    run.source = source
    return run


def _dtype(dtype):
    return "np.bool_" if dtype.np == np.bool_ else f"np.{dtype.np.name}"


def _source(graph, kernels, attrs, forward):
    carried = attrs["carried"]
    inputs = graph.inputs
    names = {}
    for i, p in enumerate(inputs):   # invariants as C-contiguous arrays, which flat kernels read flattened
        names[p] = f"s{i}" if i < carried else f"a{i}" if not p.shape else f"f{i}"
    header, functions, prelude = [], [], False
    for j, kernel in enumerate(kernels):
        text = kernel.source
        split = text.rindex("\n\n\n@njit(")
        head, function = text[:split], text[split + 3:]
        if FAST_MATH_PRELUDE in head:
            head = head.replace(FAST_MATH_PRELUDE, "")
            prelude = True
        header += [_CONSTANT.sub(lambda m: f"k{j}_c{m.group(1)}", line) for line in head.splitlines()
                   if _CONSTANT.match(line)]
        functions.append(_CONSTANT.sub(lambda m: f"k{j}_c{m.group(1)}", function).replace("def kernel(", f"def k{j}(", 1))
    lines = []
    count = 0
    for j, kernel in enumerate(kernels):
        outs = []
        for node, (shape, dtype, init) in zip(kernel.outs, kernel.buffers):
            buf = f"b{count}"
            count += 1
            if init is None:
                lines.append(f"{buf} = np.empty({shape!r}, {_dtype(dtype)})")
            else:
                lines.append(f"{buf} = np.full({shape!r}, {python_literal(init)}, {_dtype(dtype)})")
            outs.append(buf)
        flat = kernel.space != tuple(kernel.group.shape)   # one flat loop: arrays passed flattened
        args = [repr(n) for n in kernel.space] + [
            names[a] + ("[()]" if not a.shape else ".reshape(-1)" if flat else "") for a in kernel.args]
        lines.append(f"k{j}({', '.join(args + outs)})")
        for node, buf, (shape, dtype, init) in zip(kernel.outs, outs, kernel.buffers):
            # a reduction, from its keepdim accumulator; an output of a flat loop: to its own shape
            if shape != node.shape or dtype is not node.dtype:
                fixed = f"b{count}"
                count += 1
                if node.shape == ():   # its one element, as a 0-d array of its dtype
                    lines += [f"{fixed} = np.empty((), {_dtype(node.dtype)})",
                              f"{fixed}[()] = {buf}[{', '.join(['0'] * len(shape)) or '()'}]"]
                else:
                    lines.append(f"{fixed} = {buf}" + (f".reshape({node.shape!r})" if shape != node.shape else "")
                                 + (f".astype({_dtype(node.dtype)})" if dtype is not node.dtype else ""))
                buf = fixed
            names[node] = buf
    outputs = graph.outputs
    state = [f"s{i}" for i in range(carried)]
    extras = outputs[carried + 1:] if forward else outputs[carried:]
    params = ["condition" if forward else "trips"] + [f"x{i}" for i in range(carried)] + \
        [f"a{i}" for i in range(carried, len(inputs))]
    body = [f"s{i} = x{i}.copy()" for i in range(carried)]   # one array type through the iterations
    body += [f"f{i} = np.ascontiguousarray(a{i})" for i, p in enumerate(inputs) if i >= carried and p.shape]
    body += [f"e{i} = np.empty({o.shape!r}, {_dtype(o.dtype)})" for i, o in enumerate(extras)]
    if forward:
        body += ["trips = 0", f"while condition == {attrs['continues']!r}:"]
    else:
        body += ["for _ in range(trips):"]
    body += ["    " + line for line in lines]
    body += [f"    {s} = {names[o]}" for s, o in zip(state, outputs[:carried])]
    body += [f"    e{i} = {names[o]}" for i, o in enumerate(extras)]
    if forward:
        body += [f"    condition = {names[outputs[carried]]}[()]", "    trips += 1"]
    results = state + [f"e{i}" for i in range(len(extras))] + (["trips"] if forward else [])
    body.append(f"return ({', '.join(results)},)")
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    parts = ["# a re-rolled loop: its body's kernels and the loop that calls them",
             "import numpy as np", "from numba import njit, prange", ""]
    if prelude:
        parts.append(FAST_MATH_PRELUDE)
    parts += header + ["", ""] + functions + [
        "", f"@njit(cache=True, nogil=True, error_model='numpy', fastmath={flags})",
        f"def kernel({', '.join(params)}):"] + ["    " + line for line in body]
    return "\n".join(parts) + "\n"
