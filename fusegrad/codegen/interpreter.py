"""Fusion groups too large to compile, over small iteration spaces, run by one compiled interpreter.

Numba compiles about 4 ms per kernel statement, so a group of thousands of ops (a Python loop that
capture unrolled) that does not re-roll into loops (ir.rolling: its steps differ, in a constant for
instance) cannot become a kernel of its own. When such a group computes in one float dtype over few
elements, its ops become an instruction list over a
register file (a row per value, a column per element), run by an interpreter that is compiled once
per dtype and then loaded from Numba's cache. It runs instruction by instruction, each a short loop
over the elements; the instruction set is generated from the ops' own `expr` templates, so an op
computes exactly what its kernel form computes (libm's functions, not the fast float32 forms).

Reductions end a group: the interpreter leaves the reduced value's row, and the driver reduces it
with NumPy (float32 sums accumulate in float64, as kernels do).
"""
import hashlib

import numpy as np

from ..ir import OPS
from ..ir import dtypes as D
from ..ir.fusion import REDUCTIONS, is_broadcast_view
from ..ir.graph import Node
from .cpu import _LITERAL, _source_pattern, python_literal
from .store import store

# the interpreter tests opcodes in this order: the arithmetic that unrolled loops are made of first
INSTRUCTIONS = ("mul", "div", "add", "sub", "neg", "pow", "exp", "log", "sin", "cos", "tan", "tanh", "sigmoid",
                "sqrt", "abs", "copy", "maximum", "minimum")
OPCODE = {name: k for k, name in enumerate(INSTRUCTIONS)}
ARITHMETIC = 5   # programs of only the first five opcodes run on the interpreter's short form
MAX_ELEMENTS = 4096   # above this, NumPy's whole-array calls per op beat interpreting element columns
LANES = 8             # register rows are padded to a multiple of this (the padding computes on ones)
_NP_TYPE = {D.float32: "np.float32", D.float64: "np.float64"}


def can_interpret(group):
    dtype = group.nodes[0].dtype
    if dtype not in _NP_TYPE or int(np.prod(group.shape)) > MAX_ELEMENTS:
        return False
    reductions = {n for n in group.nodes if n.op.name in REDUCTIONS}
    for node in group.nodes:
        if node.dtype is not dtype or (node not in reductions and node.op.name not in OPCODE):
            return False
        if any(v in reductions for v in node.inputs):
            return False
    return True


def _source(dtype):
    """The interpreter for one dtype: code rows are (opcode, out, a, b). Two entry points: `kernel`
    runs every opcode, `arithmetic` only the first ARITHMETIC ones, for programs made of nothing
    else; a dispatch over all 18 opcodes compiles to a jump table that made each instruction of
    the profiler loop's 10,000 over twice as slow (150 against 58 us)."""
    np_type = _NP_TYPE[dtype]

    def typed(match):
        return f"{np_type}({python_literal(float(match.group(1)))})"

    def interpreter(name, opcodes):
        lines = ["", "", "@njit(cache=True, nogil=True, error_model='numpy', fastmath={'contract', 'reassoc'})",
                 f"def {name}(code, R):", "    n = R.shape[1]", "    for k in range(code.shape[0]):",
                 "        op, out, a, b = code[k, 0], R[code[k, 1]], R[code[k, 2]], R[code[k, 3]]"]
        for k, opcode in enumerate(opcodes):   # rows are whole blocks of LANES: the inner loop unrolls
            expression = _LITERAL.sub(typed, OPS[opcode].expr).format("a[e]", "b[e]")
            lines += [f"        {'if' if k == 0 else 'elif'} op == {OPCODE[opcode]}:",
                      f"            for block in range(0, n, {LANES}):",
                      f"                for e in range(block, block + {LANES}):",
                      f"                    out[e] = {expression}"]
        return lines

    lines = ["# fusegrad's interpreter for fusion groups too large to compile", "import numpy as np",
             "from numba import njit"]
    lines += interpreter("kernel", INSTRUCTIONS) + interpreter("arithmetic", INSTRUCTIONS[:ARITHMETIC])
    return "\n".join(lines) + "\n"


def _interpreter(dtype, cache_dir, entry):
    """The interpreter of `dtype`'s entry point `entry` ("kernel" or "arithmetic")."""
    source = _source(dtype)
    module = f"fusegrad_interpreter_{hashlib.sha1(source.encode()).hexdigest()[:20]}"
    return store(cache_dir).numba_kernel(source, module, entry)


class Interpreted:
    """A group as instructions. Call it with the values of `args` (each read broadcast to the
    iteration space); it returns the values of `outs` (members needed outside, and reductions).
    The interpreter is loaded at the first call."""

    def __init__(self, group, name, cache_dir=None):
        self.group, self.name, self.cache_dir = group, name, cache_dir
        self.dtype = group.nodes[0].dtype
        self.args, self.aligned = [], []   # read values and the shape each is reshaped to
        registers, constants, code = {}, [], []
        members = set(group.nodes)

        def register(v):
            if not isinstance(v, Node) or v.op.name in ("const", "full"):
                constants.append(v.attrs["value"] if isinstance(v, Node) else v)
                return -len(constants)   # numbered after the arguments and members, below
            if v in members:
                return registers[v]
            pattern = [f"i{len(group.shape) - len(v.shape) + j}" if n != 1 else "0" for j, n in enumerate(v.shape)]
            while v not in members and is_broadcast_view(v) and isinstance(v.inputs[0], Node):
                v, pattern = v.inputs[0], _source_pattern(v, pattern)
            if v in members:   # a member read through a view: never absorbed by fusion, but be safe
                raise ValueError("interpreter: a member read through a broadcast view")
            if v.op.name in ("const", "full"):
                return register(v)
            aligned = [1] * len(group.shape)
            for j, index in enumerate(pattern):
                if index != "0":
                    aligned[int(index[1:])] = v.shape[j]
            # one register per value *and* the way it is read: v.reshape(4, 1) and v broadcast as a
            # row are different registers of the same argument
            key = (v, tuple(aligned))
            if key not in registers:
                registers[key] = len(self.args)
                self.args.append(v)
                self.aligned.append(tuple(aligned))
            return registers[key]

        self.outs, self.reduce_rows = [], []
        reductions = []
        for node in group.nodes:
            if node.op.name in REDUCTIONS:
                reductions.append((node, register(node.inputs[0])))
                continue
            operands = [register(v) for v in node.inputs] + [0, 0]
            registers[node] = ("member", len(code))
            code.append([OPCODE[node.op.name], ("member", len(code)), operands[0], operands[1]])
        # members share rows: a value's row is reused once its last reader has run, so the register
        # file stays small enough for the caches (the profiler loop: 2,000 rows live of 10,000)
        outputs = [n for n in group.outputs if n.op.name not in REDUCTIONS]
        kept = {registers[n] for n in outputs} | {r for _, r in reductions if isinstance(r, tuple)}
        last_read = {}
        for k, (_, _, a, b) in enumerate(code):
            last_read[a] = last_read[b] = k
        rows, free, used = {}, [], 0
        for k, (_, out, a, b) in enumerate(code):
            for r in {a, b}:
                if isinstance(r, tuple) and last_read[r] == k and r not in kept:
                    free.append(rows[r])   # the instruction may write where it reads: same element
            if free:
                rows[out] = free.pop()
            else:
                rows[out], used = used, used + 1
            if out not in last_read and out not in kept:
                free.append(rows[out])
        members_base = len(self.args)
        constants_base = members_base + used

        def resolve(r):
            if isinstance(r, tuple):
                return members_base + rows[r]
            return constants_base + (-r - 1) if r < 0 else r

        self.code = np.array([[op, resolve(o), resolve(a), resolve(b)] for op, o, a, b in code], np.int64)
        self.constants = np.array(constants, self.dtype.np)
        self.size = int(np.prod(group.shape))
        self.whole = [k for k, v in enumerate(self.args) if v.shape == self.aligned[k] == tuple(group.shape)]
        self.broadcast = [k for k in range(len(self.args)) if k not in set(self.whole)]
        self.padded = -(-self.size // LANES) * LANES
        self.fn = None
        self.register_count = constants_base + len(constants)
        self.outs = outputs
        self.out_rows = [resolve(registers[n]) for n in self.outs]
        for node, row in reductions:
            self.outs.append(node)
            self.reduce_rows.append((resolve(row), node))

    def __call__(self, *values):
        if self.fn is None:
            arithmetic = len(self.code) and self.code[:, 0].max() < ARITHMETIC
            self.fn = _interpreter(self.dtype, self.cache_dir, "arithmetic" if arithmetic else "kernel")
        R = np.ones((self.register_count, self.padded), self.dtype.np)
        if self.whole:   # one stacking copy for the arguments of the group's own shape (a backward
            R[self.whole, :self.size] = np.reshape([values[k] for k in self.whole], (len(self.whole), -1))
        for k in self.broadcast:   # graph binds thousands of saved values)
            R[k, :self.size] = np.broadcast_to(np.reshape(values[k], self.aligned[k]), self.group.shape).reshape(-1)
        R[self.register_count - len(self.constants):] = self.constants[:, None]
        self.fn(self.code, R)
        results = [R[row, :self.size].reshape(self.group.shape) for row in self.out_rows]
        for row, node in self.reduce_rows:
            values = R[row, :self.size].reshape(self.group.shape)
            if node.op.name == "sum":   # float32 sums accumulate in float64, as in kernels
                reduced = np.sum(values, axis=tuple(node.attrs["axes"]), dtype=np.float64)
            else:
                reduced = node.op.impl(values, **node.attrs)
            results.append(np.asarray(reduced, self.dtype.np).reshape(node.shape))
        return results
