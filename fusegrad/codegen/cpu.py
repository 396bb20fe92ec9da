"""CPU backend: one Numba kernel per fusion group, emitted as readable Python source.

A kernel is a loop nest over the group's iteration space. Each member becomes one assignment to
a local (`v3 = (v1 * v2)`) built from its op's scalar expression; inputs are loaded with the index
pattern of their broadcast; outputs are stored, and reductions accumulate into their (keepdim)
output. Every literal is a module-level constant typed to the dtype it is used in, so float32
kernels compute in float32 (Numba would otherwise widen `0.5 * x` to float64).

Kernels are compiled with `error_model='numpy'` (a division may not carry a zero check: it would
stop vectorisation and raise where NumPy gives inf/nan) and a fastmath set that keeps NaN and inf
semantics. The source is written as a module file named by its hash and imported from there, so
Numba's own on-disk cache works; `NUMBA_DISABLE_JIT=1` runs the same source as plain Python.
"""
import hashlib
import importlib.util
import os
import re
import sys

import numpy as np

from ..ir import dtypes as D
from ..ir.fusion import REDUCTIONS, FusionGroup, is_broadcast_view
from ..ir.graph import Node
from . import cache_dir

TARGET = "cpu"
KERNEL_DTYPES = {D.bool_, D.int32, D.int64, D.float32, D.float64}
# Ops whose scalar expression means the same for integers as NumPy's impl (no division, no overflow
# checks that differ); everything else is fused for floating point (and bool results) only.
INTEGER_SAFE = {"add", "sub", "mul", "neg", "abs", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
                "where", "cast", "copy", "logical_not", "logical_and", "logical_or", "logical_xor", "sign"}
LOGICAL = {"logical_not", "logical_and", "logical_or", "logical_xor"}
FASTMATH = {"reassoc", "contract"}   # no nnan/ninf: NaN and inf behave as in NumPy
_NP_NAME = {D.bool_: "np.bool_", D.int32: "np.int32", D.int64: "np.int64", D.float32: "np.float32",
            D.float64: "np.float64"}
_LITERAL = re.compile(r"(?<![\w.{])(\d+(?:\.\d*)?)(?![\w}.])")


def _dtype(v):
    return v.dtype if isinstance(v, Node) else None


def can_fuse(node):
    """Whether this backend can compute `node` inside a kernel."""
    op = node.op
    if op.name in REDUCTIONS:
        src = node.inputs[0]
        return isinstance(src, Node) and node.dtype in (D.float32, D.float64) and src.dtype is node.dtype
    if op.kind != "elementwise" or op.expr is None or node.dtype not in KERNEL_DTYPES:
        return False
    integral = node.dtype.category == 1
    for v in node.inputs:
        if isinstance(v, np.ndarray):
            return False
        if isinstance(v, Node):
            if v.dtype not in KERNEL_DTYPES:
                return False
            integral = integral or v.dtype.category == 1
            if op.name in LOGICAL and v.dtype is not D.bool_:
                return False
    return not integral or op.name in INTEGER_SAFE


class Kernel:
    """A compiled fusion group: call fn(*sizes, *args, *outs). `args` are the values the driver
    passes (nodes), `outs` the members it allocates outputs for, with each output's buffer shape
    and dtype (reductions accumulate in a keepdim buffer, float32 sums in float64)."""
    __slots__ = ("name", "source", "fn", "args", "outs", "buffers", "group")

    def __init__(self, name, source, fn, args, outs, buffers, group):
        self.name, self.source, self.fn, self.args, self.outs = name, source, fn, args, outs
        self.buffers, self.group = buffers, group


class _Emitter:
    def __init__(self, group):
        self.group = group
        self.members = set(group.nodes)
        self.ndim = len(group.shape)
        self.args = []          # nodes passed in as arrays
        self.arg_names = {}
        self.loads = {}         # (arg name, pattern) -> local name
        self.load_lines = []
        self.constants = {}     # (np name, repr) -> global name
        self.locals = {}        # member -> local name

    # -- operands
    def literal(self, value, dtype):
        if dtype is D.bool_:
            return "True" if value else "False"
        text = python_literal(float(value) if dtype.category == 2 else int(value))
        key = (_NP_NAME[dtype], text)
        name = self.constants.get(key)
        if name is None:
            name = self.constants[key] = f"c{len(self.constants)}"
        return name

    def pattern_of(self, value):
        """Index expressions for each dim of `value` read in the iteration space."""
        offset = self.ndim - len(value.shape)
        return [f"i{offset + j}" if n != 1 else "0" for j, n in enumerate(value.shape)]

    def operand(self, v, like):
        if not isinstance(v, Node):
            return self.literal(v, like)
        if v in self.locals:
            return self.locals[v]
        pattern = self.pattern_of(v)
        while v not in self.members and is_broadcast_view(v) and isinstance(v.inputs[0], Node):
            v, pattern = v.inputs[0], _source_pattern(v, pattern)
        if v.op.name in ("const", "full"):
            return self.literal(v.attrs["value"], v.dtype)
        name = self.arg_names.get(v)
        if name is None:
            name = self.arg_names[v] = f"x{len(self.args)}"
            self.args.append(v)
        index = ", ".join(pattern) if pattern else "()"
        key = (name, index)
        local = self.loads.get(key)
        if local is None:
            local = self.loads[key] = f"{name}_{len(self.loads)}"
            self.load_lines.append(f"{local} = {name}[{index}]")
        return local

    def expression(self, node):
        op = node.op
        if op.name == "pow":
            special = self.small_power(node)
            if special is not None:
                return special
        args = [self.operand(v, _literal_dtype(node, k)) for k, v in enumerate(node.inputs)]
        if op.name == "cast":
            return f"{_NP_NAME[node.attrs['dtype']]}({args[0]})"
        template = _LITERAL.sub(lambda m: self.literal(float(m.group(1)) if "." in m.group(1)
                                                        else int(m.group(1)), node.dtype), op.expr)
        return template.format(*args)

    def small_power(self, node):
        """x ** c for small integer c and 0.5 as multiplications / sqrt: `powf` is a scalar libm
        call that stops vectorisation and costs ~30x a multiply."""
        exponent = node.inputs[1]
        if isinstance(exponent, Node):
            if exponent.op.name not in ("const", "full"):
                return None
            exponent = exponent.attrs["value"]
        if node.dtype.category != 2 or isinstance(exponent, bool):
            return None
        x = self.operand(node.inputs[0], node.dtype)
        if exponent in (1, 2, 3, 4):
            return "(" + " * ".join([x] * int(exponent)) + ")"
        if exponent == 0.5:
            return f"np.sqrt({x})"
        if exponent == -1:
            return f"({self.literal(1, node.dtype)} / {x})"
        return None


def python_literal(value):
    """Source text for a number, inf and nan included (repr gives the undefined names inf, nan)."""
    text = repr(value)
    return f"float({text!r})" if text in ("inf", "-inf", "nan") else text


def _literal_dtype(node, k):
    """The dtype a Python scalar operand k computes in: NumPy treats it as weakly typed, so it
    takes the node's dtype, or for comparisons that of the tensor operand."""
    if node.op.name == "where":
        return D.bool_ if k == 0 else node.dtype
    if node.dtype is D.bool_:
        return next((v.dtype for v in node.inputs if isinstance(v, Node)), node.dtype)
    return node.dtype


def _source_pattern(view, pattern):
    """The index pattern of a broadcast view's source, given the view's own pattern."""
    src = view.inputs[0].shape
    if view.op.name == "expand":
        offset = len(view.shape) - len(src)
        return [pattern[offset + j] if n != 1 else "0" for j, n in enumerate(src)]
    kept = iter(p for p, n in zip(pattern, view.shape) if n != 1)
    return [next(kept) if n != 1 else "0" for n in src]


_INIT = {"sum": 0, "prod": 1, "amax": float("-inf"), "amin": float("inf")}


def _accumulate(op_name, acc, x):
    if op_name == "sum":
        return f"{acc} + {x}"
    if op_name == "prod":
        return f"{acc} * {x}"
    sym = ">" if op_name == "amax" else "<"
    return f"{x} if ({x} {sym} {acc} or {x} != {x}) else {acc}"


def emit(group, name):
    """Python source of the kernel for `group`, plus what the driver must pass and allocate."""
    e = _Emitter(group)
    body = []
    stores, outs, buffers = [], [], []
    full_reductions = []
    for node in group.nodes:
        if node.op.name in REDUCTIONS:
            x = e.operand(node.inputs[0], node.dtype)
            axes = node.attrs["axes"]
            acc_dtype = D.float64 if node.op.name == "sum" and node.dtype is D.float32 else node.dtype
            out = f"y{len(outs)}"
            outs.append(node)
            buffers.append((tuple(1 if k in axes else n for k, n in enumerate(group.shape)), acc_dtype,
                            _INIT[node.op.name]))
            if len(axes) == e.ndim:   # a full reduction: one accumulator in a register
                acc = f"acc{len(full_reductions)}"
                full_reductions.append((acc, out, e.literal(_INIT[node.op.name], acc_dtype)))
                body.append(f"{acc} = {_accumulate(node.op.name, acc, x)}")
            else:
                index = ", ".join("0" if k in axes else f"i{k}" for k in range(e.ndim))
                body.append(f"{out}[{index}] = {_accumulate(node.op.name, f'{out}[{index}]', x)}")
            continue
        local = f"v{len(e.locals)}"
        body.append(f"{local} = {e.expression(node)}")
        e.locals[node] = local
        if node in group.outputs:
            out = f"y{len(outs)}"
            outs.append(node)
            buffers.append((group.shape, node.dtype, None))
            index = ", ".join(f"i{k}" for k in range(e.ndim)) or "()"
            stores.append(f"{out}[{index}] = {local}")

    sizes = [f"n{k}" for k in range(e.ndim)]
    params = sizes + [e.arg_names[a] for a in e.args] + [f"y{k}" for k in range(len(outs))]
    lines = [f"# fusion group {group.index}: {len(group.nodes)} ops over {list(group.shape)}",
             "import numpy as np", "from numba import njit", ""]
    lines += [f"{g} = {np_name}({text})" for (np_name, text), g in e.constants.items()]
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    lines += ["", "", f"@njit(cache=True, nogil=True, error_model='numpy', fastmath={flags})",
              f"def {name}({', '.join(params)}):"]
    indent = "    "
    for acc, _, init in full_reductions:
        lines.append(f"{indent}{acc} = {init}")
    for k in range(e.ndim):
        lines.append(f"{indent}for i{k} in range(n{k}):")
        indent += "    "
    for line in e.load_lines + body + stores:
        lines.append(indent + line)
    for acc, out, _ in full_reductions:
        lines.append(f"    {out}[{', '.join(['0'] * e.ndim) or '()'}] = {acc}")
    return "\n".join(lines) + "\n", e.args, outs, buffers


_loaded = {}


def build(group, name="kernel"):
    """Emit, write and import the kernel of `group`; the module is shared by every group with
    the same source (in this process and, through Numba's cache, across processes)."""
    source, args, outs, buffers = emit(group, name)
    digest = hashlib.sha1(source.encode()).hexdigest()[:20]
    fn = _loaded.get(digest)
    if fn is None:
        fn = _loaded[digest] = getattr(_import(source, f"fusegrad_k_{digest}"), name)
    return Kernel(name, source, fn, args, outs, buffers, group)


def _import(source, module_name):
    directory = os.path.join(cache_dir(), "kernels")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, module_name + ".py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(source)
        os.replace(tmp, path)   # atomic: another process never sees half a file
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module   # before exec: Numba's cache pickles the module by name
    spec.loader.exec_module(module)
    return module


__all__ = ["TARGET", "can_fuse", "build", "emit", "Kernel", "FusionGroup"]
