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
import re

import numpy as np

from ..ir import dtypes as D
from ..ir import rolling
from ..ir.fusion import REDUCTIONS, is_broadcast_view
from ..ir.graph import Node
from .store import store

KERNEL_DTYPES = {D.bool_, D.int32, D.int64, D.float32, D.float64}
# Ops whose scalar expression means the same for integers as NumPy's impl (no division, no overflow
# checks that differ); everything else is fused for floating point (and bool results) only.
INTEGER_SAFE = {"add", "sub", "mul", "neg", "abs", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
                "where", "cast", "copy", "logical_not", "logical_and", "logical_or", "logical_xor", "sign"}
LOGICAL = {"logical_not", "logical_and", "logical_or", "logical_xor"}
# no nnan/ninf: NaN and inf behave as in NumPy. No nsz either: with reassoc it lets LLVM fold
# (v + M) - M to v, which the prelude's rounding relies on not happening (and it loses -0.0).
# 'reassoc' (which in-loop sums need to vectorise) lets the vector loop and the scalar loop LLVM
# falls back to when two arrays lie within one vector block (256 bytes: arrays under 64 float32
# elements, its run-time overlap check) round differently in the last bit: a kernel over such small
# arrays can differ by 1 ulp with where they were allocated (tests/test_native.py keeps them apart)
FASTMATH = {"reassoc", "contract"}
_NP_NAME = {D.bool_: "np.bool_", D.int32: "np.int32", D.int64: "np.int64", D.float32: "np.float32",
            D.float64: "np.float64"}
_LITERAL = re.compile(r"(?<![\w.{])(\d+(?:\.\d*)?)(?![\w}.])")

# float32 transcendentals written with arithmetic, selects and bit casts only, so that loops calling
# them vectorise (Numba calls libm's expf/tanhf one element at a time: 10-20x slower than NumPy's
# SIMD loops); nothing in them is wider than 32 bits, so a float32 kernel vectorises 16-wide where
# the CPU has 512-bit vectors. Pasted into each kernel module that uses them, so Numba's cache sees
# every change. Accuracy (tested against float64 NumPy over the whole float32 range, sin and cos
# up to TRIG_LIMIT): exp within 1 ulp (NumPy's own float32 exp: 2.5), tanh 1.3, sigmoid 2.3, sin
# and cos 1.52 (every float32 up to TRIG_LIMIT checked); inf, -inf, nan and -0.0 as NumPy gives
# them, denormal results rounded once.
FAST_MATH_PRELUDE = '''
from numba import config, types
from numba.extending import intrinsic


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@intrinsic
def _bits_of_float32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))
    return types.int32(types.float32), codegen


if config.DISABLE_JIT:   # the kernel runs as plain Python: the same casts through NumPy
    def _float32_from_bits(bits):
        return np.int32(bits).view(np.float32)

    def _bits_of_float32(x):
        return np.float32(x).view(np.int32)


# Adding 1.5 * 2^23 rounds a float32 below 2^22 in magnitude to an integer, which the sum's low
# mantissa bits then hold (plus what the constant adds beyond 1.5 * 2^23). This needs (v + M) - M
# kept as written: LLVM folds it to v under 'reassoc' with 'nsz', so FASTMATH must not have 'nsz'.
_ROUND = np.float32(1.5 * 2 ** 23)
_EXP_BIAS_LOW = np.float32(1.5 * 2 ** 23 + 191)    # _exp_reduced's scale is 2^(n + 64), for n in [-190, 63]
_EXP_BIAS_HIGH = np.float32(1.5 * 2 ** 23 + 63)    # 2^(n - 64), for n in [-62, 191]
_EXP_BIAS_UNIT = np.float32(1.5 * 2 ** 23 + 127)   # 2^n, for n in [-126, 127]
_TWO_64 = np.float32(2.0 ** 64)
_TWO_MINUS_64 = np.float32(2.0 ** -64)
_SIGN_BIT = np.int32(-2 ** 31)


@njit(inline="always", error_model="numpy")
def _exp_reduced(x, bias):
    # e^x = 2^n e^r: n = round(x / ln2), read from the bits of x / ln2 + bias (one of the
    # constants above), r = x - n ln2 (ln2 in two parts), |r| <= ln2 / 2. Returns e^r - 1 by
    # Cephes' polynomial and the scale 2^(n + b - 127): those bits shifted into the exponent field
    s = x * np.float32(1.4426950408889634) + bias
    n = s - bias
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return p * r * r + r, _float32_from_bits(_bits_of_float32(s) << np.int32(23))


@njit(inline="always", error_model="numpy")
def exp32(x):
    # n in [-150, 128] does not fit one exponent field: below zero 2^(n + 64) * 2^-64 (down to
    # the denormals, rounded there once), above it 2^(n - 64) * 2^64. The clamps let nan through
    xc = np.float32(89.0) if x > np.float32(89.0) else np.float32(-104.0) if x < np.float32(-104.0) else x
    high = xc > np.float32(0.0)
    q, scale = _exp_reduced(xc, _EXP_BIAS_HIGH if high else _EXP_BIAS_LOW)
    return (q * scale + scale) * (_TWO_64 if high else _TWO_MINUS_64)


@njit(inline="always", error_model="numpy")
def tanh32(x):
    # small |x|: Cephes' odd polynomial; otherwise 1 - 2 / (e^2|x| + 1) (both computed: a select,
    # not a branch). From |x| = 10 on, tanh rounds to 1; the clamp lets nan through
    a = abs(x)
    z = x * x
    p = np.float32(-5.70498872745e-3)
    p = p * z + np.float32(2.06390887954e-2)
    p = p * z - np.float32(5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z - np.float32(3.33332819422e-1)
    small = p * z * a + a
    q, scale = _exp_reduced(np.float32(20.0) if a > np.float32(10.0) else a + a, _EXP_BIAS_UNIT)
    large = np.float32(1.0) - np.float32(2.0) / (q * scale + scale + np.float32(1.0))
    return np.copysign(small if a < np.float32(0.625) else large, x)


@njit(inline="always", error_model="numpy")
def sigmoid32(x):
    # e^-|x| only: tiny results for very negative x stay accurate, down to the denormals
    m = -abs(x)
    m = np.float32(-104.0) if m < np.float32(-104.0) else m
    q, scale = _exp_reduced(m, _EXP_BIAS_LOW)
    e = (q * scale + scale) * _TWO_MINUS_64
    return (np.float32(1.0) if x >= np.float32(0.0) else e) / (np.float32(1.0) + e)


@njit(inline="always", error_model="numpy")
def _reduce_half_pi(a):
    # Cephes: a = m pi/2 + r, |r| <= pi/4, pi/2 in four parts: sin and cos within 1.52 ulp up to
    # a = 8192 (three parts: 690 ulp near their zeros). That takes the last two products fused
    # into their subtractions ('contract': every CPU with FMA); without FMA, 31 ulp near the zeros.
    # m is rounded by adding 1.5 * 2^23; the sum's bits, returned, hold its low bits: the quadrant
    s = a * np.float32(0.6366197723675814) + _ROUND
    m = s - _ROUND
    r = (((a - m * np.float32(1.5703125)) - m * np.float32(4.837512969970703125e-4))
         - m * np.float32(7.54978995489188216e-8)) - m * np.float32(-1.7151245e-15)
    z = r * r
    sin_r = ((np.float32(-1.9515295891e-4) * z + np.float32(8.3321608736e-3)) * z - np.float32(1.6666654611e-1)) * z * r + r
    cos_r = (((np.float32(2.443315711809948e-5) * z - np.float32(1.388731625493765e-3)) * z
              + np.float32(4.166664568298827e-2)) * z * z - np.float32(0.5) * z + np.float32(1.0))
    return _bits_of_float32(s), sin_r, cos_r


@njit(inline="always", error_model="numpy")
def sin32(q, s, c, x):
    # from _reduce_half_pi(abs(x)), which sin and cos of the same x share. sin x = sign(x) sin|x|:
    # bit 1 of the quadrant q and x's sign each flip the result's sign bit
    v = c if q & np.int32(1) else s
    return _float32_from_bits(_bits_of_float32(v) ^ (((q << np.int32(30)) ^ _bits_of_float32(x)) & _SIGN_BIT))


@njit(inline="always", error_model="numpy")
def cos32(q, s, c):
    v = s if q & np.int32(1) else c
    return _float32_from_bits(_bits_of_float32(v) ^ (((q + np.int32(1)) << np.int32(30)) & _SIGN_BIT))
'''
FAST_MATH = {"exp": "exp32({0})", "tanh": "tanh32({0})", "sigmoid": "sigmoid32({0})"}
TRIG_LIMIT = 8192.0   # sin32/cos32 reduce arguments exactly up to here; larger ones take the exact kernel
# Groups at least this large run their outermost loop with prange on every core (W2 at 4M elements:
# 7.7 -> 4.1 ms on two cores). Smaller ones stay serial: a parallel kernel compiles ~3x slower
# and waking threads costs more than a small loop. So do the kernels of a plan that also calls
# BLAS (runtime.plan): OpenBLAS's threads spin for a while after each product, and a parallel
# kernel's threads then wait for a core (the CNN step at default thread counts: 24 ms, 5.3 ms
# with one thread per pool, 4.4 ms with BLAS on two and the kernels serial).
PARALLEL_MIN_ELEMENTS = 1 << 18
# what changes the generated code besides the graph: part of a plan's cache key
CONFIG = {"TRIG_LIMIT": TRIG_LIMIT, "PARALLEL_MIN_ELEMENTS": PARALLEL_MIN_ELEMENTS}


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
    """A compiled fusion group: call fn(*sizes, *args, *outs[, flags]). `args` are the values the
    driver passes (nodes; 0-d ones as scalars, `a[()]`), `outs` the members it allocates outputs
    for, with each output's buffer shape and dtype (reductions accumulate in a keepdim buffer,
    float32 sums in float64). `space` is the iteration space the sizes, arguments and buffers
    have: the group's shape, or (its size,) when the group runs as one flat loop (`flat_space`):
    then every array argument is passed flattened.

    A `flagged` kernel uses sin32/cos32 and writes a nonzero flags[0] when some argument was
    beyond TRIG_LIMIT (inf included, nan not); the driver then runs `exact()` (the same group
    with libm's sin and cos, built the first time it is needed) on fresh output buffers.

    `written` ({output: input}): outputs the kernel stores into an input's array (a donated buffer:
    no output allocated, no copy back): element by element after reading it through its argument,
    or, where the kernel never reads the input, as the output's buffer (the output is in `outs`;
    the driver passes the input's array for it). The output is that array after the call."""
    __slots__ = ("name", "source", "_fn", "args", "outs", "buffers", "group", "flagged", "cache_dir", "module",
                 "_exact", "space", "written", "parallel")

    def __init__(self, name, source, fn, args, outs, buffers, group, flagged, cache_dir=None, module=None,
                 space=None, written=None, parallel=True):
        self.name, self.source, self._fn, self.args, self.outs = name, source, fn, args, outs
        self.buffers, self.group, self.flagged, self.cache_dir = buffers, group, flagged, cache_dir
        self.module, self._exact = module, None   # module: the name of the kernel's module file
        self.space = tuple(group.shape) if space is None else space
        self.written = written or {}
        self.parallel = parallel   # whether it may run on Numba's thread pool (build's `parallel`)

    def arg_shape(self, node):
        """The shape argument `node` is passed with."""
        return self.space if node.shape and self.space != tuple(self.group.shape) else node.shape

    @property
    def fn(self):
        """The compiled kernel, loaded at first use: a plan that never runs loads nothing (and a
        process whose kernels all have native libraries never imports Numba)."""
        if self._fn is None:
            self._fn = store(self.cache_dir).kernel(self)
        return self._fn

    def exact(self, *args):
        """Same arguments as fn (the flags last, which the exact kernel has no use for)."""
        if self._exact is None:
            self._exact = build(self.group, self.name, exact_trig=True, cache_dir=self.cache_dir,
                                parallel=self.parallel).fn
        return self._exact(*args[:-1])


class _Emitter:
    fast_forms = FAST_MATH   # op -> this target's own float32 form (the CUDA backend has none)

    def __init__(self, group, exact_trig, space=None):
        self.group = group
        self.members = set(group.nodes)
        self.space = tuple(group.shape) if space is None else space   # what the loops run over
        self.flat = self.space != tuple(group.shape)
        self.ndim = len(self.space)
        self.args = []          # nodes passed in as arrays
        self.arg_names = {}
        self.loads = {}         # (arg name, pattern) -> local name
        self.load_lines = []
        self.constants = {}     # (np name, repr) -> global name
        self.locals = {}        # member -> local name
        self.remote = {}        # member -> where a later loop nest reads it (re-rolled kernels)
        self.fast_math = False  # whether the kernel calls the FAST_MATH_PRELUDE functions
        self.exact_trig = exact_trig
        self.trig_args = {}     # local -> names of its shared range reduction (for sin32/cos32)
        self.statements = []    # lines to emit before the current member's own

    # -- operands
    def literal(self, value, dtype):
        if dtype is D.bool_:
            return "True" if value else "False"
        if dtype.category == 2:
            value = float(value)
            if abs(value) > float(np.finfo(dtype.np).max) and value == value:   # past float32's range: its inf
                with np.errstate(over="ignore"):   # (NumPy's cast), not a warning as the module loads
                    value = float(np.array(value, dtype.np))
        text = python_literal(value if dtype.category == 2 else int(value))
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
        if v in self.remote:
            return self.remote[v]
        pattern = self.pattern_of(v)
        while v not in self.members and is_broadcast_view(v) and isinstance(v.inputs[0], Node):
            v, pattern = v.inputs[0], _source_pattern(v, pattern)
        if v.op.name in ("const", "full"):
            return self.literal(v.attrs["value"], v.dtype)
        name = self.arg_names.get(v)
        if name is None:
            name = self.arg_names[v] = f"x{len(self.args)}"
            self.args.append(v)
        if not v.shape:   # a 0-d value is passed in as a scalar of its dtype, not loaded per element
            return name
        index = "i0" if self.flat else ", ".join(pattern) if pattern else "()"
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
        if node.dtype is D.float32 and op.name in ("sin", "cos") and not self.exact_trig:
            self.fast_math = True
            x = args[0]
            reduced = self.trig_args.get(x)
            if reduced is None:
                k = len(self.trig_args)
                reduced = self.trig_args[x] = f"trig_q{k}, trig_s{k}, trig_c{k}"
                self.statements.append(f"{reduced} = _reduce_half_pi(abs({x}))")
            return f"sin32({reduced}, {x})" if op.name == "sin" else f"cos32({reduced})"
        if node.dtype is D.float32 and op.name in self.fast_forms:
            self.fast_math = True
            return self.fast_forms[op.name].format(*args)
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


def _reduction(e, node, outs, buffers):
    """A reduction's operand, and its output buffer added to `outs`/`buffers`: keepdim (in the
    emitted space), float32 sums accumulating in float64. Returns (operand, buffer name, axes,
    accumulator dtype)."""
    x = e.operand(node.inputs[0], node.dtype)
    axes = (0,) if e.flat else node.attrs["axes"]
    acc_dtype = D.float64 if node.op.name == "sum" and node.dtype is D.float32 else node.dtype
    out = f"y{len(outs)}"
    outs.append(node)
    buffers.append((tuple(1 if k in axes else n for k, n in enumerate(e.space)), acc_dtype,
                    _INIT[node.op.name]))
    return x, out, axes, acc_dtype


def flat_space(group):
    """(size,) when the group can run as one flat loop: it has several dimensions, everything it
    reads from outside is a scalar, a constant or a value with its elements in the group's order
    (no broadcast), and its reductions reduce all of it. None otherwise. One loop compiles faster
    than a nest and vectorises over small inner dimensions."""
    if len(group.shape) < 2:
        return None
    members = set(group.nodes)
    kept = tuple(n for n in group.shape if n != 1)
    for node in group.nodes:
        if node.op.name in REDUCTIONS and len(node.attrs["axes"]) != len(group.shape):
            return None
        for v in node.inputs:
            if not isinstance(v, Node) or v in members:
                continue
            while is_broadcast_view(v) and isinstance(v.inputs[0], Node):
                v = v.inputs[0]
            if v.shape and v.op.name not in ("const", "full") and tuple(n for n in v.shape if n != 1) != kept:
                return None
    return (int(np.prod(group.shape)),)


def emit(group, exact_trig=False, inplace=None, parallel=True):
    """Python source of the kernel for `group` (a function named `kernel`), plus what the driver
    must pass and allocate, whether it reports out-of-range trigonometric arguments, the space it
    runs over (see Kernel), and which of the outputs `inplace` offers ({output: input}) it stores
    into the input's array instead of a buffer (see _overwrite; re-rolled kernels never do).
    `parallel=False` keeps a large group's loop serial (see PARALLEL_MIN_ELEMENTS).
    Sizes are arguments and names are not part of it, so every group of the same computation, in
    any plan and of any size, shares one module and one compilation."""
    rolled = rolling.roll(group)
    if rolled is not None:
        return _emit_rolled(group, rolled) + ({},)
    e = _Emitter(group, exact_trig, flat_space(group))
    inplace = dict(inplace or {})
    element = ", ".join(f"i{k}" for k in range(e.ndim)) or "()"   # the index a loop iteration computes
    deferred = []   # (output, local) of the outputs that may go to an input's array
    body = []
    stores, outs, buffers = [], [], []
    full_reductions = []
    inner_reductions = []   # (loop depth, register, initial value, the line adding it to the output)
    for node in group.nodes:
        if node.op.name in REDUCTIONS:
            x, out, axes, acc_dtype = _reduction(e, node, outs, buffers)
            index = ", ".join("0" if k in axes else f"i{k}" for k in range(e.ndim))
            if len(axes) == e.ndim:   # a full reduction: one accumulator in a register
                acc = f"acc{len(full_reductions) + len(inner_reductions)}"
                full_reductions.append((acc, out, e.literal(_INIT[node.op.name], acc_dtype)))
                body.append(f"{acc} += {x}" if node.op.name == "sum" else f"{acc} = {_accumulate(node.op.name, acc, x)}")
            elif e.ndim - 1 in axes:
                # The innermost loops are reduced: they accumulate in a register, added to the
                # output once per run of them (a load and store of the output per element is a
                # loop-carried dependence through memory that stops vectorisation: 3 ns an element)
                depth = e.ndim - 1
                while depth - 1 in axes:
                    depth -= 1
                acc = f"acc{len(full_reductions) + len(inner_reductions)}"
                inner_reductions.append((depth, acc, e.literal(_INIT[node.op.name], acc_dtype),
                                         f"{out}[{index}] = {_accumulate(node.op.name, f'{out}[{index}]', acc)}"))
                body.append(f"{acc} += {x}" if node.op.name == "sum" else f"{acc} = {_accumulate(node.op.name, acc, x)}")
            else:
                body.append(f"{out}[{index}] = {_accumulate(node.op.name, f'{out}[{index}]', x)}")
            continue
        local = f"v{len(e.locals)}"
        expression = e.expression(node)
        body += e.statements
        e.statements.clear()
        body.append(f"{local} = {expression}")
        e.locals[node] = local
        if node in inplace and node in group.outputs:
            deferred.append((node, local))
        elif node in group.outputs:
            out = f"y{len(outs)}"
            outs.append(node)
            buffers.append((e.space, node.dtype, None))
            stores.append(f"{out}[{element}] = {local}")
    written = {}   # output -> the input whose array it is stored into
    for node, local in deferred:
        source = inplace[node]
        kind = _overwrite(e, node, source, element)
        if kind is not None:
            written[node] = source
        if kind == "read":   # through the argument the loop reads it from
            stores.append(f"{e.arg_names[source]}[{element}] = {local}")
        else:   # into an output buffer, which is the input's array when the loop never reads it
            outs.append(node)
            buffers.append((e.space, node.dtype, None))
            stores.append(f"y{len(outs) - 1}[{element}] = {local}")

    if e.trig_args:
        limit = e.literal(TRIG_LIMIT, D.float32)
        beyond = " | ".join(f"(abs({a}) > {limit})" for a in e.trig_args)
        # counted in float32 (exact to 2^24, never zero again after a hit) by a masked add: an
        # int64 count would make the loop vectorise 8-wide for its lanes' sake, not 16-wide
        no_count = e.literal(0, D.float32)
        body.append(f"nbig += {e.literal(1, D.float32)} if {beyond} else {no_count}")
    numel = 1
    for n in group.shape:
        numel *= n
    # prange only where every reduction is a full sum into a register (`acc += v`, a reduction
    # Numba's parfors know); partial ones write shared memory and max/min are conditional updates
    parallel = (parallel and numel >= PARALLEL_MIN_ELEMENTS and e.ndim >= 1
                and all(o.op.name == "sum" and set(b[0]) == {1} for o, b in zip(outs, buffers) if b[2] is not None))
    sizes = [f"n{k}" for k in range(e.ndim)]
    params = sizes + [e.arg_names[a] for a in e.args] + [f"y{k}" for k in range(len(outs))]
    if e.trig_args:
        params.append("flags")
    lines = [f"# a fusion group of {len(group.nodes)} ops over {e.ndim} dimensions",
             "import numpy as np", "from numba import njit, prange", ""]
    if e.fast_math:
        lines.append(FAST_MATH_PRELUDE)
    lines += [f"{g} = {np_name}({text})" for (np_name, text), g in e.constants.items()]
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    lines += ["", "", f"@njit(cache=True, nogil=True, error_model='numpy', fastmath={flags}"
              f"{', parallel=True' if parallel else ''})",
              f"def kernel({', '.join(params)}):"]
    indent = "    "
    for acc, _, init in full_reductions:
        lines.append(f"{indent}{acc} = {init}")
    if e.trig_args:
        lines.append(f"{indent}nbig = {no_count}")
    for k in range(e.ndim):
        lines += [f"{indent}{acc} = {init}" for depth, acc, init, _ in inner_reductions if depth == k]
        loop = "prange" if parallel and k == 0 else "range"
        lines.append(f"{indent}for i{k} in {loop}(n{k}):")
        indent += "    "
    for line in e.load_lines + body + stores:
        lines.append(indent + line)
    for k in reversed(range(e.ndim)):
        lines += ["    " * (k + 1) + add for depth, _, _, add in inner_reductions if depth == k]
    for acc, out, _ in full_reductions:
        lines.append(f"    {out}[{', '.join(['0'] * e.ndim) or '()'}] = {acc}")
    if e.trig_args:
        lines.append("    flags[0] = np.int64(nbig)")
    return "\n".join(lines) + "\n", e.args, outs, buffers, bool(e.trig_args), e.space, written


def _overwrite(e, node, source, element):
    """How `node` can be stored into the array of `source` (a value the caller offers, of the same
    dtype and shape) instead of a buffer of its own: "read" where the loop reads that array, each
    read of the element the same iteration stores (read before the store, so no iteration sees
    another's new value); "unread" where the loop never reads it (the array is the output buffer);
    None otherwise. Never in a kernel that a call redoes (exact trigonometry)."""
    if e.trig_args or source.dtype is not node.dtype or not (
            tuple(source.shape) == tuple(node.shape) == tuple(e.group.shape)):
        return None
    name = e.arg_names.get(source)
    if name is None:
        return "unread"
    return "read" if all(i == element for n, i in e.loads if n == name) else None


def _emit_rolled(group, rolled):
    """The kernel of a group with repeated regions (ir.rolling): a sequence of loop nests over
    the iteration space, one per stretch of straight members, and for each region one nest
    inside a loop over its repetitions that emits the region's body once. Values cross nests
    through arrays the kernel allocates: a straight member read later, a carried value (one
    array updated in place each repetition), a stacked offset (every repetition's value).
    Region bodies use libm's sin and cos, so the kernel never needs its exact twin."""
    e = _Emitter(group, exact_trig=True, space=flat_space(group))
    index = ", ".join(f"i{k}" for k in range(e.ndim))
    space = "(" + ", ".join(f"n{k}" for k in range(e.ndim)) + ",)"
    place = rolled.place
    allocations, nests = [], []
    outs, buffers = [], []
    names = iter(range(1 << 62))   # locals are unique in the kernel: Numba types each name once

    def array(name, dtype, reps=None):
        shape = space if reps is None else f"({reps}, {space[1:]}"
        allocations.append(f"{name} = np.empty({shape}, {_NP_NAME[dtype]})")
        return name

    # where later nests read each region member and each straight member used outside its nest
    for piece in rolled.pieces:
        if isinstance(piece, rolling.Region):
            for o in piece.carried:
                array(f"c{piece.index}_{o}", piece.template[o].dtype)
            for j in sorted(piece.stacked):
                array(f"s{piece.index}_{j}", piece.template[j].dtype, piece.reps)
    for node, (region, q, j) in place.items():
        e.remote[node] = (f"c{region.index}_{j}[{index}]" if rolled.final(node)
                          else f"s{region.index}_{j}[{q}, {index}]")
    # straight member -> the stretch of straight members (loop nest) it is in; those read from
    # another nest (everything read comes from an earlier piece, so one pass sees every writer)
    run_of, runs, crossing = {}, 0, set()
    for piece in rolled.pieces:
        if isinstance(piece, rolling.Region):   # its carried values start in the nest before it
            crossing.update(v for v, how in piece.reads.items() if how[0] == "fixed")
            crossing.update(v for v in piece.carried.values() if run_of.get(v, runs) != runs)
            runs += 1
        else:
            run_of[piece] = runs
            crossing.update(v for v in piece.inputs if run_of.get(v, runs) != runs)
    for node in rolled.pieces:
        if node in crossing and node in run_of:
            e.remote[node] = f"{array(f't{len(allocations)}', node.dtype)}[{index}]"

    def nest(statements, reps=None):
        indent = "    "
        lines = []
        if reps is not None:
            lines.append(f"{indent}for r in range({reps}):")
            indent += "    "
        for k in range(e.ndim):
            lines.append(f"{indent}for i{k} in range(n{k}):")
            indent += "    "
        nests.append(lines + [indent + s for s in e.load_lines + statements])
        e.locals, e.loads, e.load_lines = {}, {}, []

    def output(node, value):
        outs.append(node)
        buffers.append((e.space, node.dtype, None))
        return f"y{len(outs) - 1}[{index}] = {value}"

    run = []   # statements of the current stretch of straight members (and the next region's start)
    for piece in rolled.pieces:
        if isinstance(piece, rolling.Region):
            region = piece
            run += [f"c{region.index}_{o}[{index}] = {e.operand(v, region.template[o].dtype)}"
                    for o, v in region.carried.items()]
            if run:
                nest(run)
                run = []
            for v, how in region.reads.items():
                if how[0] == "carry":
                    e.locals[v] = f"carried{region.index}_{how[1]}"
                elif how[0] == "stacked":
                    source, j, q0, step = how[1:]
                    e.locals[v] = f"s{source.index}_{j}[{q0} {'+' if step > 0 else '-'} r, {index}]"
            body = [f"carried{region.index}_{o} = c{region.index}_{o}[{index}]" for o in region.carried]
            for node in region.template:
                local = f"v{next(names)}"
                body.append(f"{local} = {e.expression(node)}")
                e.locals[node] = local
            for j in sorted(region.stacked):
                body.append(f"s{region.index}_{j}[r, {index}] = {e.locals[region.template[j]]}")
            for o in region.carried:
                body.append(f"c{region.index}_{o}[{index}] = {e.locals[region.template[o]]}")
            nest(body, region.reps)
            continue
        node = piece
        if node.op.name in REDUCTIONS:
            x, out, axes, _ = _reduction(e, node, outs, buffers)
            at = ", ".join("0" if k in axes else f"i{k}" for k in range(e.ndim))
            run.append(f"{out}[{at}] = {_accumulate(node.op.name, f'{out}[{at}]', x)}")
            continue
        local = f"v{next(names)}"
        run.append(f"{local} = {e.expression(node)}")
        e.locals[node] = local
        if node in e.remote:
            run.append(f"{e.remote[node]} = {local}")
        if node in group.outputs:
            run.append(output(node, local))
    run += [output(node, e.remote[node]) for node in group.outputs if node in place]
    if run:
        nest(run)
    params = [f"n{k}" for k in range(e.ndim)] + [e.arg_names[a] for a in e.args] + [f"y{k}" for k in range(len(outs))]
    lines = [f"# a fusion group of {len(group.nodes)} ops over {e.ndim} dimensions, re-rolled: "
             f"{sum(isinstance(p, rolling.Region) for p in rolled.pieces)} loops",
             "import numpy as np", "from numba import njit", ""]
    if e.fast_math:
        lines.append(FAST_MATH_PRELUDE)
    lines += [f"{g} = {np_name}({text})" for (np_name, text), g in e.constants.items()]
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    lines += ["", "", f"@njit(cache=True, nogil=True, error_model='numpy', fastmath={flags})",
              f"def kernel({', '.join(params)}):"]
    lines += ["    " + a for a in allocations]
    for block in nests:
        lines += block
    return "\n".join(lines) + "\n", e.args, outs, buffers, False, e.space


def statements(group):
    """How many statements the group's kernel has: one per member, fewer when re-rolled."""
    rolled = rolling.roll(group)
    return len(group.nodes) if rolled is None else rolled.statements


def build(group, name="kernel", exact_trig=False, cache_dir=None, inplace=None, parallel=True):
    """The kernel of `group`, loaded at its first use from its module file in the cache
    (`cache_dir`, or the default): one module per distinct source, shared by every group that
    emits it, in this process and, through Numba's cache (or the kernel's native library), across
    processes. `inplace` ({output: input}) offers outputs to store into their input's array;
    `parallel=False` keeps the kernel off Numba's thread pool."""
    source, args, outs, buffers, flagged, space, written = emit(group, exact_trig, inplace, parallel)
    module_name = f"fusegrad_k_{hashlib.sha1(source.encode()).hexdigest()[:20]}"
    return Kernel(name, source, None, args, outs, buffers, group, flagged, store(cache_dir).root, module_name, space,
                  written, parallel)


__all__ = ["can_fuse", "build", "emit", "statements", "Kernel", "python_literal", "TRIG_LIMIT", "PARALLEL_MIN_ELEMENTS"]
