"""CUDA backend: one numba.cuda kernel per fusion group, emitted as readable Python source from the
same op expressions as the CPU backend (`cpu.py`), whose emitter it reuses for operands, loads,
typed literals and member expressions.

A kernel is a grid-stride loop over the flat index of the group's iteration space, unravelled into
one index per dim. Elementwise outputs are stored per element. A full reduction accumulates in a
register per thread, then each block combines its threads' values by a tree reduction in shared
memory and writes one partial per block; a second pass (a reduction of the partials by the
device's array module) gives the result. A partial reduction (some axes kept) writes its input
over the iteration space, and the second pass reduces that along its axes. The second pass keeps
results deterministic and NumPy's NaN rules exact where atomics would not (max/min with NaN,
prod). float32 kernels compute in float32: literals are typed, and `math` functions on float32
lower to libdevice's `f` variants.

Under Numba's CUDA simulator the same source runs as Python, with NumPy's scalar functions in
place of `math` (which raises at log(0) or sqrt(-1) where CUDA gives -inf and nan).
`Kernel.fn` is a launcher with the CPU kernel's calling convention, so the plan's driver calls
both alike; it chooses the launch configuration from the size."""
import ast
import hashlib
import re

from ..ir.fusion import REDUCTIONS
from . import cpu
from .cpu import _INIT, _accumulate, can_fuse  # noqa: F401  (can_fuse: same ops as the CPU)
from .store import store

THREADS = 256        # threads per block at most (a power of two: the tree reduction halves it)
MAX_BLOCKS = 1024    # enough blocks to fill a GPU; the grid-stride loop covers larger sizes
SECOND_PASS = {"sum": "sum", "prod": "prod", "amax": "max", "amin": "min"}
_MATH = {"exp", "expm1", "log", "log1p", "sin", "cos", "tan", "tanh", "sqrt", "floor"}   # np.f(x) -> math.f(x)


class _DeviceForms(ast.NodeTransformer):
    """An op expression's NumPy calls as CUDA device code: np.exp(x) -> math.exp(x) (libdevice's
    expf on float32), np.abs(x) -> abs(x), and Python's max(a, b) -> (b if b > a else a), which
    keeps a NaN first argument as max does (numba.cuda compiles the builtin only with a GPU
    present). Casts such as np.float32(x) stay as they are."""

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Name) and f.id == "max" and len(node.args) == 2:
            a, b = node.args
            return ast.IfExp(test=ast.Compare(left=b, ops=[ast.Gt()], comparators=[a]), body=b, orelse=a)
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "np":
            if f.attr == "abs":
                node.func = ast.Name("abs", ast.Load())
            elif f.attr in _MATH:
                f.value = ast.Name("math", ast.Load())
        return node


PRELUDE = '''import math

import numpy as np
from numba import cuda
from numba.core import config

if config.ENABLE_CUDASIM:   # NumPy's scalar functions keep float32, and give inf and nan where math raises
    math = np
'''


class _Emitter(cpu._Emitter):
    fast_forms = {}   # libdevice's float32 functions are the fast forms on the GPU

    def __init__(self, group):
        super().__init__(group, exact_trig=True)

    def operand(self, v, like):
        name = super().operand(v, like)
        match = re.fullmatch(r"x(\d+)", name)
        if match and not self.args[int(match.group(1))].shape:
            return f"{name}[0]"   # a 0-d value arrives as a 1-element device array: no host sync
        return name

    def expression(self, node):
        return ast.unparse(_DeviceForms().visit(ast.parse(super().expression(node), mode="eval")))


class Kernel:
    """A compiled fusion group, called by the driver as the CPU backend's kernels are:
    fn(*sizes, *args, *outs). `fn` launches the CUDA kernel and runs the second pass of its
    reductions into their (keepdim) output buffers."""
    __slots__ = ("name", "source", "fn", "args", "outs", "buffers", "group", "flagged", "cuda_fn", "passes", "module",
                 "space")

    def __init__(self, name, source, cuda_fn, args, outs, buffers, group, passes, module=None):
        self.name, self.source, self.cuda_fn, self.args, self.outs = name, source, cuda_fn, args, outs
        self.buffers, self.group, self.passes, self.flagged, self.module = buffers, group, passes, False, module
        self.space = tuple(group.shape)   # grid-stride loops unravel the group's own shape
        self.fn = self.launch

    def launch(self, *values):
        ndim = len(self.group.shape)
        sizes, args, outs = values[:ndim], values[ndim:ndim + len(self.args)], values[ndim + len(self.args):]
        numel = 1
        for n in sizes:
            numel *= n
        if numel == 0:   # nothing to compute: reductions keep their initial values
            return
        xp = outs[0].__array_namespace__()   # the driver allocated them with the device's array module
        threads = min(THREADS, 1 << (numel - 1).bit_length())
        blocks = min(MAX_BLOCKS, -(-numel // threads))
        # kernels are compiled for C-contiguous arrays (a view such as a transpose is copied)
        args = [xp.ascontiguousarray(a) if node.shape else xp.asarray(a).reshape(1) for a, node in zip(args, self.args)]
        buffers = []
        for out, (kind, axes), (_, dtype, _) in zip(outs, self.passes, self.buffers):
            if kind == "store":
                buffers.append(out)
            else:
                buffers.append(xp.empty(blocks if kind == "full" else self.group.shape, dtype.np))
        self.cuda_fn[blocks, threads](*sizes, *args, *buffers)
        for out, buffer, (kind, axes), node in zip(outs, buffers, self.passes, self.outs):
            if kind != "store":
                method = getattr(buffer, SECOND_PASS[node.op.name])
                out[...] = method() if kind == "full" else method(axis=axes, keepdims=True)


def emit(group, name):
    """Python source of the CUDA kernel for `group`, what the driver must pass and allocate, and
    for each output how it is finished: ("store", None), ("full", None) (one partial per block)
    or ("partial", axes) (its input over the whole space)."""
    e = _Emitter(group)
    body, stores, outs, buffers, passes, full = [], [], [], [], [], []
    index = ", ".join(f"i{k}" for k in range(e.ndim)) or "()"
    for node in group.nodes:
        out = f"y{len(outs)}"
        if node.op.name in REDUCTIONS:
            x = e.operand(node.inputs[0], node.dtype)
            axes = node.attrs["axes"]
            outs.append(node)
            buffers.append((tuple(1 if k in axes else n for k, n in enumerate(group.shape)), node.dtype,
                            _INIT[node.op.name]))
            if len(axes) == e.ndim:   # per-thread register, then the block's tree, then the partials
                acc = f"acc{len(full)}"
                full.append((acc, out, node.op.name, e.literal(_INIT[node.op.name], node.dtype), node.dtype))
                body.append(f"{acc} = {_accumulate(node.op.name, acc, x)}")
                passes.append(("full", None))
            else:
                stores.append(f"{out}[{index}] = {x}")
                passes.append(("partial", tuple(axes)))
            continue
        local = f"v{len(e.locals)}"
        body.append(f"{local} = {e.expression(node)}")
        e.locals[node] = local
        if node in group.outputs:
            outs.append(node)
            buffers.append((group.shape, node.dtype, None))
            passes.append(("store", None))
            stores.append(f"{out}[{index}] = {local}")

    sizes = [f"n{k}" for k in range(e.ndim)]
    params = sizes + [e.arg_names[a] for a in e.args] + [f"y{k}" for k in range(len(outs))]
    lines = [f"# fusion group {group.index}: {len(group.nodes)} ops over {list(group.shape)}", PRELUDE]
    lines += [f"{g} = {np_name}({text})" for (np_name, text), g in e.constants.items()]
    lines += ["", "", "@cuda.jit(cache=True)", f"def {name}({', '.join(params)}):"]
    lines += [f"    {acc} = {init}" for acc, _, _, init, _ in full]
    lines.append(f"    for flat in range(cuda.grid(1), {' * '.join(sizes) or '1'}, cuda.gridsize(1)):")
    rest = "flat"
    for k in reversed(range(1, e.ndim)):   # unravel the flat index, innermost dim first
        lines += [f"        i{k} = {rest} % n{k}", f"        rest = {rest} // n{k}"]
        rest = "rest"
    if e.ndim:
        lines.append(f"        i0 = {rest}")
    lines += ["        " + line for line in e.load_lines + body + stores]
    if full:
        lines += ["    t = cuda.threadIdx.x"]
        for acc, _, op_name, _, dtype in full:
            lines += [f"    s{acc} = cuda.shared.array({THREADS}, np.{dtype.np.name})", f"    s{acc}[t] = {acc}"]
        lines += ["    cuda.syncthreads()", "    step = cuda.blockDim.x // 2", "    while step > 0:",
                  "        if t < step:"]
        for acc, _, op_name, _, _ in full:
            lines.append(f"            s{acc}[t] = {_accumulate(op_name, f's{acc}[t]', f's{acc}[t + step]')}")
        lines += ["        cuda.syncthreads()", "        step //= 2", "    if t == 0:"]
        lines += [f"        {out}[cuda.blockIdx.x] = s{acc}[0]" for acc, out, _, _, _ in full]
    return "\n".join(lines) + "\n", e.args, outs, buffers, passes


def argument_types(kernel):
    """The numba types the launcher passes the kernel: sizes, arguments (0-d ones as 1-element
    arrays), output buffers (a full reduction's partials are 1-d), all C-contiguous."""
    from numba import types
    from numba.np.numpy_support import from_dtype
    ndim = len(kernel.group.shape)
    arrays = [(a.dtype, len(a.shape) or 1) for a in kernel.args]
    arrays += [(dtype, 1 if kind == "full" else ndim)
               for (kind, _), (_, dtype, _) in zip(kernel.passes, kernel.buffers)]
    return (types.int64,) * ndim + tuple(types.Array(from_dtype(d.np), n, "C") for d, n in arrays)


# what changes the generated code besides the graph: part of a plan's cache key
CONFIG = {"THREADS": THREADS, "MAX_BLOCKS": MAX_BLOCKS}


def target_description():
    """The target as a plan's cache key names it: the GPU's compute capability, or the simulator."""
    from numba import cuda
    from numba.core import config
    if config.ENABLE_CUDASIM:
        return "cuda (Numba's simulator)"
    major, minor = cuda.get_current_device().compute_capability
    return f"cuda (compute capability {major}.{minor})"


def build(group, name="kernel", cache_dir=None):
    """Emit and import the kernel of `group` (its module file in the cache, as the CPU's);
    numba.cuda compiles it at its first launch."""
    source, args, outs, buffers, passes = emit(group, name)
    module = f"fusegrad_cuda_{hashlib.sha1(source.encode()).hexdigest()[:20]}"
    fn = store(cache_dir).numba_kernel(source, module, name)
    return Kernel(name, source, fn, args, outs, buffers, group, passes, module)


__all__ = ["argument_types", "can_fuse", "build", "emit", "Kernel", "THREADS", "MAX_BLOCKS"]
