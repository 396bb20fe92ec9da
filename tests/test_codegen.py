"""Fusion and the CPU backend: compiled plans against the interpreter, kernel types, fusion shape."""
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.ir import Builder, dtypes as D
from fusegrad.ir.fusion import FusionGroup, partition
from fusegrad.codegen import cpu, interpreter
from fusegrad.runtime.interpreter import run_graph
from fusegrad.runtime import plan as plans
from fusegrad.runtime.plan import Plan

W2 = "0.5*x*(1+fg.tanh(0.7978845608*(x+0.044715*x**3)))*fg.sigmoid(y) + fg.sin(x)*fg.cos(y)"

EXPRESSIONS = {
    "w2": W2,
    "broadcast_reduce": "(x * y).sum(0) + (x - y).amax(1).sum()",
    "div_pow_where": "fg.where(x > 0, x / (y + 3), x ** 2) * fg.exp(-x.abs())",
    "max_min": "fg.maximum(x, y) - fg.minimum(x, 0.25) + x.clamp(-0.5, 0.5)",
    "softmax_chain": "fg.softmax(x * y, dim=1) * fg.log_softmax(x, dim=0)",
    "matmul_epilogue": "fg.relu(x @ y.reshape(5, 1).expand(5, 3) + 1).sum(1)",
    "mean_var": "(x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True) + 1e-5).sqrt() * y",
}


def _inputs(dtype, special):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(dtype)
    y = rng.standard_normal(5).astype(dtype)
    if special:
        x[0, 0], x[1, 2], y[3] = np.nan, np.inf, -np.inf
    return x, y


def _grads(expr, x, y):
    xt = fg.tensor(x, requires_grad=True)
    yt = fg.tensor(y, requires_grad=True)
    out = eval(expr, {"fg": fg, "x": xt, "y": yt})
    out.sum().backward()
    return out.detach().numpy(), xt.grad.numpy(), yt.grad.numpy()


@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan_inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_compiled_backward_equals_interpreted(name, dtype, special, monkeypatch):
    """Eager backward compiles a structure once it repeats; the compiled gradients equal the
    interpreted ones to rounding, NaN and inf included."""
    monkeypatch.setattr(plans, "COMPILE_AFTER", 2)
    x, y = _inputs(dtype, special)
    first = _grads(EXPRESSIONS[name], x, y)    # interpreted
    for _ in range(2):                          # compiled at the second run, then run compiled
        again = _grads(EXPRESSIONS[name], x, y)
        for a, b in zip(first, again):
            np.testing.assert_allclose(b, a, rtol=2e-6 if dtype == np.float32 else 1e-12, atol=1e-6,
                                       equal_nan=True)


def _w2_graph():
    """The backward graph of W2 over (64, 64) float32 inputs."""
    from fusegrad.tracer import engine
    from fusegrad.ir import backward_graph, topological_order
    x = fg.randn(64, 64, requires_grad=True)
    y = fg.randn(64, 64, requires_grad=True)
    f = eval(W2, {"fg": fg, "x": x, "y": y}).sum()
    roots, cotangents = engine._root_gradients((f,), None, False)
    order = topological_order(roots)
    derivation = backward_graph(roots, cotangents, lambda n: isinstance(n, engine.AccumulateGrad),
                                engine._saved_arrays, engine._on_cotangent, order)
    return derivation.graph, engine._bind(order, cotangents, derivation.sources, engine._saved_arrays)


def test_w2_backward_is_one_kernel():
    graph, bindings = _w2_graph()
    plan = Plan(graph)
    assert len(plan.kernels) == 1, plan.describe()
    for a, b in zip(run_graph(graph, bindings), plan(bindings)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_float32_kernels_compute_in_float32():
    """No float64 arithmetic in float32 kernels: Numba widens untyped literals silently."""
    graph, bindings = _w2_graph()
    plan = Plan(graph)
    plan(bindings)
    for kernel in plan.kernels:
        for signature, ir in kernel.fn.inspect_llvm().items():
            # the kernel's own functions; the CPython wrapper unboxes a float32 scalar argument
            # through PyFloat_AsDouble, which is exact, and is not kernel arithmetic
            bodies = [f for f in ir.split("\ndefine ")[1:] if "cpython" not in f.split("\n")[0]]
            assert bodies and not any("double" in body for body in bodies), kernel.source


def test_float32_literals_past_the_range_are_inf():
    """A Python scalar too large for float32 is inf in a float32 kernel, as in eager mode's NumPy,
    and loading the kernel's module does not warn of an overflowing cast."""
    step = fg.compile(lambda x, s: x * s + 1.0)
    x = fg.tensor([1.0, -2.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e40, 1e40, -1e39, -1e39, 3.4028235e38):
            np.testing.assert_array_equal(step(x, scale).numpy(), (x * scale + 1.0).numpy())
    assert step.replays == 2


def test_fusion_keeps_groups_convex():
    """A node joining a group may not read a value that depends on the group through an outside
    node (here a matmul): that would be a cycle between the kernel and the matmul."""
    b = Builder()
    x = b.placeholder(None, (3, 3), D.float32)
    e = b.exp(x)
    m = b.matmul(e, e)
    out = b.add(e, m)
    steps = partition(b.graph([out]), cpu.can_fuse)
    groups = [s for s in steps if isinstance(s, FusionGroup)]
    assert [len(g.nodes) for g in groups] == [1, 1]
    assert steps.index(groups[0]) < steps.index(m) < steps.index(groups[1])


def _run_without_jit(code, cache_dir, **env):
    """`python -c code` with NUMBA_DISABLE_JIT=1 and its own kernel cache; the run must succeed."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", FUSEGRAD_CACHE_DIR=str(cache_dir), **env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_kernels_run_as_plain_python_without_jit(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the generated source as Python (readable errors when debugging)."""
    code = ("import numpy as np, fusegrad as fg\n"
            "x = fg.tensor([1., -2., float('nan')], requires_grad=True)\n"
            "for _ in range(3):\n"
            "    x.grad = None\n"
            "    (fg.sigmoid(x) * x ** 3).sum().backward()\n"
            "print(repr(x.grad.numpy().tolist()))\n")
    result = _run_without_jit(code, tmp_path, FUSEGRAD_LOGS="recompiles", FUSEGRAD_EAGER_COMPILE_AFTER="2")
    assert "compiled after 2 runs" in result.stderr
    x = np.array([1., -2., np.nan], np.float32)
    s = 1 / (1 + np.exp(-x))
    expected = s * (1 - s) * x ** 3 + s * 3 * x ** 2
    np.testing.assert_allclose(eval(result.stdout, {"nan": np.nan}), expected, rtol=1e-6)


def test_window_kernels_run_as_plain_python_without_jit(tmp_path):
    """The window kernels (im2col, col2im, pooling with its window codes) run as Python too: a
    convolution and pooling step there, compiled and eager on the kernels (its third call),
    equals eager mode's NumPy impls (its first)."""
    code = ("import numpy as np, fusegrad as fg\n"
            "F = fg.nn.functional\n"
            "def step(x, w):\n"
            "    y = F.max_pool2d(F.max_pool2d(F.conv2d(x, w, padding=1), 2), 3, stride=1, padding=1)\n"
            "    y.sum().backward()\n"
            "    return y\n"
            "rng = np.random.default_rng(0)\n"
            "x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))\n"
            "results = []\n"
            "for f in (step, step, step, fg.compile(step, fullgraph=True)):\n"
            "    tx, tw = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)\n"
            "    results.append([f(tx, tw).detach().numpy(), tx.grad.numpy(), tw.grad.numpy()])\n"
            "print(max(float(np.abs(a - b).max()) for other in results[2:] for a, b in zip(results[0], other)))\n")
    result = _run_without_jit(code, tmp_path, FUSEGRAD_LOGS="fallbacks", FUSEGRAD_EAGER_COMPILE_AFTER="3")
    assert "fallbacks" not in result.stderr, result.stderr
    assert float(result.stdout) < 1e-12


def _float32_sweep():
    """Values over the whole float32 range: random magnitudes 1e-45..3e38 of both signs, and the
    edges (zeros, denormals, overflow thresholds, inf, nan)."""
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-45, 38.5, 200_000)
    values = (magnitudes * rng.choice([-1.0, 1.0], magnitudes.size)).astype(np.float32)
    dense = rng.uniform(-120, 120, 200_000).astype(np.float32)
    edges = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 0.625, -0.625, 88.72, 88.73, -87.33, -103.97, -104.5,
                      9.0, -9.0, 20.0, np.inf, -np.inf, np.nan], np.float32)
    return np.concatenate([values, dense, edges])


_FLOAT64_REFERENCE = {"exp": np.exp, "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "sin": np.sin,
                      "cos": np.cos}


def _elementwise_plan(op, x):
    b = Builder()
    p = b.placeholder(None, x.shape, D.float32)
    plan = Plan(b.graph([getattr(b, op)(p)]))
    assert f"{op}32" in plan.kernels[0].source
    return plan


def _assert_within_ulps(op, x, got, ulps):
    """got = op(x) within `ulps` of float64 NumPy where that is finite in float32; inf, -inf,
    nan and the sign of zeros exactly as NumPy gives them."""
    with np.errstate(all="ignore"):
        ref = _FLOAT64_REFERENCE[op](x.astype(np.float64))
        ref32 = ref.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref32))
    finite = np.isfinite(ref32)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(ref32)], ref32[~finite & ~np.isnan(ref32)])
    ulp = np.spacing(np.abs(ref32[finite])).astype(np.float64)
    err = np.abs(got[finite].astype(np.float64) - ref[finite]) / np.maximum(ulp, np.spacing(np.float32(0)))
    assert err.max() <= ulps, (op, x[finite][err.argmax()], err.max())
    zero = x == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(ref32[zero]))


# measured: exp 0.98 ulp, tanh 1.26, sigmoid 2.27; sin and cos here take the exact (libm) kernel,
# the sweep having arguments beyond TRIG_LIMIT (their fast path: the test after the next)
@pytest.mark.parametrize("op, ulps", [("exp", 1), ("tanh", 1.5), ("sigmoid", 2.5), ("sin", 2), ("cos", 2)])
def test_vectorised_float32_transcendentals(op, ulps):
    """The float32 kernels' own exp/tanh/sigmoid agree with float64 NumPy to a few ulp over the
    whole float32 range, and give inf, -inf, nan, -0.0 as NumPy does."""
    x = _float32_sweep()
    _assert_within_ulps(op, x, _elementwise_plan(op, x)([x])[0], ulps)


def test_fast_sin_cos_stay_on_the_fast_path_within_range():
    """Arguments within TRIG_LIMIT never take the exact (libm) kernel; one beyond it does."""
    b = Builder()
    p = b.placeholder(None, (1000,), D.float32)
    plan = Plan(b.graph([b.sin(p)]))
    kernel = plan.kernels[0]
    x = np.linspace(-cpu.TRIG_LIMIT, cpu.TRIG_LIMIT, 1000).astype(np.float32)
    np.testing.assert_allclose(plan([x])[0], np.sin(x), atol=2e-7)
    assert kernel._exact is None
    x[3] = 1e30
    np.testing.assert_allclose(plan([x])[0], np.sin(x), atol=2e-7)
    assert kernel._exact is not None


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_fast_sin_cos_are_accurate_up_to_the_limit(op):
    """The fast path itself: within 2 ulp of float64 NumPy for arguments up to TRIG_LIMIT (1.52
    over every float32 there), the float32 values nearest the multiples of pi/2 included (where
    sin or cos is tiny: pi/2 in three parts was 690 ulp off); -0.0 and nan as NumPy gives them."""
    x = _float32_sweep()
    rng = np.random.default_rng(1)
    near_zeros = (np.arange(1, int(cpu.TRIG_LIMIT / (np.pi / 2)) + 1) * (np.pi / 2)).astype(np.float32)
    x = np.concatenate([x[(np.abs(x) <= cpu.TRIG_LIMIT) | np.isnan(x)], near_zeros, -near_zeros,
                        rng.uniform(-cpu.TRIG_LIMIT, cpu.TRIG_LIMIT, 200_000).astype(np.float32),
                        np.float32([cpu.TRIG_LIMIT, -cpu.TRIG_LIMIT])])
    plan = _elementwise_plan(op, x)
    got = plan([x])[0]
    assert plan.kernels[0]._exact is None
    _assert_within_ulps(op, x, got, 2)


def test_parallel_kernels_see_a_huge_trig_argument_anywhere():
    """The out-of-range count is a reduction over every thread's part of a parallel kernel: one
    argument beyond TRIG_LIMIT, in either input, first or last, takes the exact kernel; nan does
    not (it is nan on the fast path as well)."""
    n = cpu.PARALLEL_MIN_ELEMENTS + 5
    rng = np.random.default_rng(0)
    clean = [rng.uniform(-100, 100, n).astype(np.float32) for _ in range(2)]
    clean[0][7] = clean[1][n - 2] = np.nan
    for which, at in [(None, None), (0, n - 1), (1, n - 1), (1, 0)]:
        b = Builder()
        p, q = (b.placeholder(None, (n,), D.float32) for _ in range(2))
        plan = Plan(b.graph([b.mul(b.sin(p), b.cos(q))]))
        (kernel,) = plan.kernels
        assert "prange(n0)" in kernel.source and kernel.flagged
        x, y = (v.copy() for v in clean)
        if which is not None:
            (x, y)[which][at] = 3e9
        got = plan([x, y])[0]
        assert (kernel._exact is not None) == (which is not None), (which, at)
        np.testing.assert_allclose(got, np.sin(x) * np.cos(y), atol=3e-7)


def test_float32_kernels_vectorise_without_64_bit_lanes():
    """W2's kernel (tanh, sigmoid, sin and cos sharing a reduction, the out-of-range count)
    vectorises with float32 and int32 lanes only: one 64-bit lane (an int64 count, a quadrant
    widened by Numba's integer typing) would halve how many elements an instruction does."""
    graph, bindings = _w2_graph()
    plan = Plan(graph)
    plan(bindings)
    for kernel in plan.kernels:
        for ir in kernel.fn.inspect_llvm().values():
            lanes = set(re.findall(r"<\d+ x (\w+)>", ir))
            assert "float" in lanes and not lanes & {"i64", "double"}, (lanes, kernel.source)


def test_fast_math_runs_as_plain_python(tmp_path):
    """Under NUMBA_DISABLE_JIT=1 the prelude's bit casts run through NumPy: the same values as
    the compiled kernels, to the ulp (plain Python rounds every product: no fused multiply-add)."""
    x = np.float32([0.0, -0.0, 1e-40, -2.5, 0.3, 0.7, 7.0, 30.0, -95.0, 100.0, 5000.0, np.inf, -np.inf, np.nan])
    code = ("import numpy as np\n"
            "from fusegrad.ir import Builder, dtypes as D\n"
            "from fusegrad.runtime.plan import Plan\n"
            f"x = np.array({x.view(np.int32).tolist()!r}, np.int32).view(np.float32)\n"
            "for op in ('exp', 'tanh', 'sigmoid', 'sin', 'cos'):\n"
            "    b = Builder()\n"
            "    p = b.placeholder(None, x.shape, D.float32)\n"
            "    plan = Plan(b.graph([getattr(b, op)(p)]))\n"
            "    assert not hasattr(plan.kernels[0].fn, 'overloads')\n"
            "    with np.errstate(all='ignore'):\n"
            "        print(plan([x])[0].tolist())\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", FUSEGRAD_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for op, line in zip(("exp", "tanh", "sigmoid", "sin", "cos"), result.stdout.splitlines()):
        plain = np.float32(eval(line, {"nan": np.nan, "inf": np.inf}))
        compiled = _elementwise_plan(op, x)([x])[0]
        np.testing.assert_array_max_ulp(plain, compiled, maxulp=1)
        numbers = ~np.isnan(compiled)
        np.testing.assert_array_equal(np.signbit(plain[numbers]), np.signbit(compiled[numbers]))


def test_large_groups_run_in_parallel_and_agree():
    """Groups of at least PARALLEL_MIN_ELEMENTS run their outer loop with prange, full sums as
    parallel reductions; a partial reduction (shared output memory) keeps a group serial."""
    n = cpu.PARALLEL_MIN_ELEMENTS
    x = np.random.default_rng(0).standard_normal((n // 64, 64)).astype(np.float32)

    def plan_of(emit):
        b = Builder()
        return Plan(b.graph(emit(b, b.placeholder(None, x.shape, D.float32))))

    def elementwise_and_total(b, p):
        e = b.mul(b.tanh(p), b.sin(p))
        return [e, b.sum(e, axes=(0, 1), keepdim=False)]

    def column_sums(b, p):
        return [b.sum(b.exp(p), axes=(0,), keepdim=False)]

    for emit, parallel in ((elementwise_and_total, True), (column_sums, False)):
        plan = plan_of(emit)
        (kernel,) = plan.kernels
        assert ("prange(n0)" in kernel.source) == parallel, kernel.source
        for got, want in zip(plan([x]), run_graph(plan.graph, [x])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_kernels_of_a_plan_that_calls_blas_stay_serial():
    """OpenBLAS's threads spin for a while after each product, and a parallel kernel's threads then
    wait for a core (the compiled CNN step took 24 ms at default thread counts, 5 ms with one
    thread per pool): a plan that calls BLAS keeps its kernels serial, and so does the exact-
    trigonometry twin a kernel builds when an argument is out of the fast range, and a plan told so
    by its caller (a loop's body inside such a plan)."""
    n = cpu.PARALLEL_MIN_ELEMENTS
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n // 64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    x[5, 7] = 1e5   # beyond TRIG_LIMIT: the kernel redoes the group with libm's sin

    b = Builder()
    h = b.matmul(b.placeholder(None, x.shape, D.float32), b.placeholder(None, w.shape, D.float32))
    e = b.mul(b.tanh(h), b.sin(h))
    plan = Plan(b.graph([e, b.sum(e, axes=(0, 1), keepdim=False)]))
    (kernel,) = plan.kernels
    assert not plan.parallel and "prange" not in kernel.source.replace("import njit, prange", ""), kernel.source
    for got, want in zip(plan([x, w]), run_graph(plan.graph, [x, w])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert kernel._exact is not None and not kernel.parallel

    b = Builder()
    p = b.placeholder(None, x.shape, D.float32)
    e = b.mul(b.tanh(p), b.exp(p))
    graph = b.graph([e, b.sum(e, axes=(0, 1), keepdim=False)])
    told, free = Plan(graph, parallel=False), Plan(graph)
    assert "prange(n0)" not in told.kernels[0].source and "prange(n0)" in free.kernels[0].source
    assert told.key != free.key   # the kernels differ, so do the cache entries


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
def test_reductions_over_the_innermost_axes_accumulate_in_registers(dtype):
    """A partial reduction whose innermost axes are reduced (a convolution's bias gradient, sums
    over (0, 2, 3)) adds into a register over them and into its output once per run; one over an
    outer axis only adds into the output per element. Both agree with the interpreter, NaN
    propagating through amax as in NumPy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype.np)
    x[1, 2, 3, 4] = np.nan
    b = Builder()
    p = b.placeholder(None, x.shape, dtype)
    masked = b.where(b.le(p, 0.0), 0.0, p)
    graph = b.graph([masked, b.sum(masked, axes=(0, 2, 3), keepdim=False),
                     b.amax(p, axes=(2, 3), keepdim=False, nans_win=True), b.prod(p, axes=(3,), keepdim=False),
                     b.sum(p, axes=(1,), keepdim=False)])
    plan = Plan(graph)
    sources = "\n".join(k.source for k in plan.kernels)
    assert "y1[0, i1, 0, 0] = y1[0, i1, 0, 0] + acc0" in sources, sources
    assert "y4[i0, 0, i2, i3] = y4[i0, 0, i2, i3] + x0_0" in sources, sources
    for got, want in zip(plan([x]), run_graph(graph, [x])):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype is D.float32 else 1e-12, equal_nan=True)
    assert np.isnan(plan([x])[2][1, 2])


# (input shape, weight or kernel size, stride, padding ((top, bottom), (left, right)), dilation)
WINDOW_GEOMETRIES = [
    ((2, 3, 9, 8), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),     # the CNNs' 3 x 3 "same"
    ((2, 2, 9, 7), (3, 2, 3, 2), (2, 1), ((1, 0), (2, 2)), (1, 2)),     # strided, uneven, dilated
    ((1, 2, 6, 6), (2, 2, 1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1)),     # resnet's 1 x 1 shortcut
    ((2, 1, 7, 9), (2, 1, 3, 3), (2, 3), ((1, 1), (1, 1)), (2, 1)),
    ((2, 2, 7, 6), (3, 2, 3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2)),     # dilated "same": rows copied as one run
    ((1, 2, 5, 6), (2, 2, 2, 3), (1, 1), ((0, 1), (1, 1)), (1, 1)),     # PyTorch's "same" for an even kernel
]
POOLINGS = [
    ((2, 3, 8, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),          # tiles the plane
    ((2, 2, 9, 7), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),          # resnet's stem: overlapping, padded
    ((1, 2, 7, 8), (2, 3), (1, 2), ((1, 2), (0, 1)), (2, 1)),          # ceil_mode's extra padding, dilated
    ((2, 2, 9, 7), (2, 2), (3, 2), ((0, 0), (0, 0)), (1, 1)),          # tiles with gaps, cells left over
    ((1, 3, 8, 9), (2, 3), (4, 3), ((0, 0), (0, 0)), (2, 1)),          # dilated tiles
    ((2, 2, 6, 6), (2, 2), (2, 2), ((1, 1), (1, 1)), (1, 1)),          # padded: not tiles
]


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
@pytest.mark.parametrize("geometry", WINDOW_GEOMETRIES)
def test_convolutions_run_as_window_kernels_in_plans(geometry, dtype):
    """A plan runs conv2d and its two gradients with the window kernels (im2col and col2im in
    Numba around the matmuls); they agree with the ops' NumPy impls to rounding, for any stride,
    padding and dilation, and for a non-contiguous input."""
    x_shape, w_shape, stride, padding, dilation = geometry
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((x_shape[0], x_shape[1], x_shape[3], x_shape[2])).astype(dtype.np).transpose(0, 1, 3, 2)
    w = rng.standard_normal(w_shape).astype(dtype.np)
    b = Builder()
    px, pw = b.placeholder(None, x_shape, dtype), b.placeholder(None, w_shape, dtype)
    out = b.conv2d(px, pw, **attrs)
    g = b.mul(out, out)   # a cotangent that is not the output itself
    graph = b.graph([out, b.conv2d_input_grad(g, pw, input_shape=x_shape, **attrs),
                     b.conv2d_weight_grad(px, g, weight_shape=w_shape, **attrs)])
    alone = Builder()   # a weight gradient without the forward pass
    qx, qg = alone.placeholder(None, x_shape, dtype), alone.placeholder(None, out.shape, dtype)
    gradient_only = alone.graph([alone.conv2d_weight_grad(qx, qg, weight_shape=w_shape, **attrs)])
    cotangent = rng.standard_normal(out.shape).astype(dtype.np)
    for graph, values in ((graph, [x, w]), (gradient_only, [x, cotangent])):
        plan = Plan(graph)
        assert {n.op.name for n in plan.lowered} == {n.op.name for n in graph.nodes if n.op.name.startswith("conv")}
        assert "on window kernels" in plan.describe()
        for _ in range(2):
            for got, want in zip(plan(values), run_graph(graph, values)):
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_allclose(got, want, rtol=1e-4 if dtype is D.float32 else 1e-10,
                                           atol=1e-4 if dtype is D.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
@pytest.mark.parametrize("geometry", POOLINGS)
def test_max_pooling_runs_as_window_kernels_in_plans(geometry, dtype):
    """max_pool2d and its gradient in a plan run the window kernels: equal to the ops' impls,
    ties going to the first maximal cell, NaN winning its window and its last NaN taking the gradient, -inf
    windows and windows reaching into the padding included."""
    x_shape, kernel, stride, padding, dilation = geometry
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    x = _pooling_input(x_shape, dtype)
    graph = _pooling_graph(x_shape, dtype, attrs)
    plan = Plan(graph)
    assert sorted(n.op.name for n in plan.lowered) == ["max_pool2d", "max_pool2d_backward"]
    for _ in range(2):   # the second run shares the forward's window codes again
        for got, want in zip(plan([x]), run_graph(graph, [x])):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def _pooling_graph(x_shape, dtype, attrs):
    """max_pool2d of a placeholder and its gradient for a cotangent that is not the output."""
    b = Builder()
    px = b.placeholder(None, x_shape, dtype)
    out = b.max_pool2d(px, **attrs)
    return b.graph([out, b.max_pool2d_backward(b.add(out, 1.5), px, out, **attrs)])


def _pooling_input(x_shape, dtype):
    """Integers in a small range (many ties, -0 beside +0), NaN of either sign, -inf, and a window
    of -inf only."""
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 3, x_shape).astype(dtype.np)
    x[(x == 0) & (rng.random(x_shape) < 0.5)] = -0.0
    x[-1, -1, -1, -1] = np.copysign(np.nan, -1)
    x[0, 0, 1, 1], x[1 % x_shape[0], 1, 2, 3] = np.nan, -np.inf
    x[0, 1, :3, :3] = -np.inf
    x[0, 2 % x_shape[1], 4, :] = np.nan   # windows with two NaN: the last takes the gradient, as in PyTorch
    return x


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
@pytest.mark.parametrize("geometry", POOLINGS)
def test_max_pooling_gradient_alone_runs_as_window_kernels(geometry, dtype):
    """max_pool2d_backward in a plan without its forward pass (windows that tile the plane find
    each window's cell from x and the pooled values, the forward's codes not being there) equals
    the op's impl."""
    x_shape, kernel, stride, padding, dilation = geometry
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    x = _pooling_input(x_shape, dtype)
    out = run_graph(_pooling_graph(x_shape, dtype, attrs), [x])[0]
    b = Builder()
    px, pout = b.placeholder(None, x_shape, dtype), b.placeholder(None, out.shape, dtype)
    graph = b.graph([b.max_pool2d_backward(b.add(pout, 1.5), px, pout, **attrs)])
    plan = Plan(graph)
    assert [n.op.name for n in plan.lowered] == ["max_pool2d_backward"]
    for _ in range(2):
        [got] = plan([x, out])
        np.testing.assert_array_equal(got, run_graph(graph, [x, out])[0])


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
@pytest.mark.parametrize("geometry", POOLINGS)
def test_relu_before_max_pooling_masks_the_gradient_at_the_pooled_size(geometry, dtype):
    """where(m, 0, max_pool2d_backward(g, relu(x), out)) with relu's own mask m = le(x, 0) runs in
    a plan as max_pool2d_backward(where(le(out, 0), 0, g), ...), and a sum over the planes of the
    gradient without padding as that sum of its cotangent: the same values (windows whose maximum
    is 0, NaN, ties), and the gradient of another mask is left as it is."""
    x_shape, kernel, stride, padding, dilation = geometry
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    x = _pooling_input(x_shape, dtype)   # integers from -3: windows whose maximum is 0 after the ReLU
    b = Builder()
    px = b.placeholder(None, x_shape, dtype)
    mask = b.le(px, 0)
    relu = b.where(mask, 0, px)
    out = b.max_pool2d(relu, **attrs)
    pg = b.placeholder(None, out.shape, dtype)
    masked = b.where(mask, 0, b.max_pool2d_backward(pg, relu, out, **attrs))
    other = b.where(b.le(px, 1), 0, b.max_pool2d_backward(b.mul(pg, 2.0), relu, out, **attrs))
    graph = b.graph([masked, b.sum(masked, axes=(0, 2, 3), keepdim=True), other])
    plan = Plan(graph)
    wheres = [n for n in plan.graph.nodes if n.op.name == "where"]
    assert sorted(n.shape == out.shape for n in wheres) == [False, False, True]   # relu, other; g masked
    [pooled_sum] = [n for n in plan.graph.nodes if n.op.name == "sum"]
    assert pooled_sum.inputs[0].shape == (out.shape if padding == ((0, 0), (0, 0)) else x_shape)
    g = np.random.default_rng(2).standard_normal(out.shape).astype(dtype.np)
    g[0, 0, 0, 0] = np.nan
    got, want = plan([x, g]), run_graph(graph, [x, g])
    for got_value, want_value in zip(got, want):   # overlapping windows add their cotangents in another order
        np.testing.assert_allclose(got_value, want_value, rtol=1e-5 if dtype is D.float32 else 1e-12, atol=0,
                                   equal_nan=True)


def _eager_windows_calls(x, w, times):
    """`times` eager conv2d + max_pool2d calls (the modules' own functions, as a model calls them)."""
    results = []
    for _ in range(times):
        y = fg.nn.functional.conv2d(fg.tensor(x), fg.tensor(w), padding=1)
        results.append((y.numpy(), fg.nn.functional.max_pool2d(y, 2).numpy()))
    return results


def test_eager_convolution_and_pooling_run_window_kernels_once_a_call_repeats(monkeypatch):
    """Eager conv2d and max_pool2d run their NumPy impls until the same call (shapes, dtypes,
    attributes) has come COMPILE_AFTER times, then the window kernels: the same values (pooling
    exactly, NaN and -0 included; convolution to rounding), and nothing but that call switches."""
    from fusegrad.codegen import windows
    from fusegrad.ir.op import OPS
    monkeypatch.setattr(plans, "COMPILE_AFTER", 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    x[0, 0, 2, 2], x[1, 2, 5, 5] = np.nan, -0.0
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    attrs = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    want = OPS["conv2d"].impl(x, w, **attrs)
    pooled = OPS["max_pool2d"].impl(want, kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)),
                                    dilation=(1, 1))
    conv = OPS["conv2d"].eager
    key = (((x.shape, x.dtype), (w.shape, w.dtype)), tuple(sorted(attrs.items())))
    results = _eager_windows_calls(x, w, 2)
    assert conv.signatures[key] == 2
    results += _eager_windows_calls(x, w, 2)
    assert isinstance(conv.signatures[key], windows._Lowered)
    _eager_windows_calls(x[:1], w, 1)   # another batch size: another call, counted on its own
    assert conv.signatures[(((x[:1].shape, x.dtype),) + key[0][1:], key[1])] == 1
    for y, p in results:
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5, equal_nan=True)
        np.testing.assert_array_equal(p, pooled)
    # the kernels' pooling of the impl's own values is bit for bit the impl's
    np.testing.assert_array_equal(fg.nn.functional.max_pool2d(fg.tensor(want), 2).numpy(), pooled)


def test_eager_window_kernels_stay_off_where_they_cannot_run(monkeypatch):
    """With COMPILE_AFTER = 0 eager calls never count towards the kernels; float16 keeps the
    impl (Numba has no float16); a call whose kernels fail to load keeps the impl for good,
    with the right values and a `fallbacks` message."""
    from fusegrad.ir.op import OPS
    from fusegrad.runtime import log as fusegrad_log
    rng = np.random.default_rng(1)
    conv = OPS["conv2d"].eager
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    monkeypatch.setattr(plans, "COMPILE_AFTER", 0)
    before = dict(conv.signatures)
    _eager_windows_calls(x, w, 3)
    assert conv.signatures == before

    monkeypatch.setattr(plans, "COMPILE_AFTER", 2)
    half = _eager_windows_calls(x.astype(np.float16), w.astype(np.float16), 3)
    assert all(v is plans._FAILED for k, v in conv.signatures.items() if k[0][0][1] == np.float16)
    attrs = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    np.testing.assert_array_equal(half[-1][0], OPS["conv2d"].impl(x.astype(np.float16), w.astype(np.float16), **attrs))

    listed = dict(attrs, stride=[1, 1])   # an attribute that cannot key a signature: the impl, uncounted
    count = len(conv.signatures)
    np.testing.assert_array_equal(conv(x, w, **listed), OPS["conv2d"].impl(x, w, **listed))
    assert len(conv.signatures) == count

    def broken(*arrays):
        raise RuntimeError("no kernels here")
    monkeypatch.setattr(plans.windows, "lowering", lambda *a, **k: broken)
    reported = []
    monkeypatch.setattr(fusegrad_log, "_listeners", [lambda category, text: reported.append((category, text))])
    y = rng.standard_normal((1, 2, 5, 9)).astype(np.float32)
    got = _eager_windows_calls(y, w, 3)
    for conv_out, _ in got:
        np.testing.assert_array_equal(conv_out, OPS["conv2d"].impl(y, w, **attrs))
    messages = [text for category, text in reported if category == "fallbacks"]
    assert len(messages) == 2   # conv2d and max_pool2d, once each
    assert messages[0].startswith("eager conv2d stays on its NumPy impl for inputs of shapes [(1, 2, 5, 9), "
                                  "(3, 2, 3, 3)]: its window kernels failed (RuntimeError: no kernels here)")


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((6, 7), 1), ((6, 7), 0), ((3, 4, 5), -1), ((4, 0), 1), ((0, 5), 1)])
def test_softmax_runs_as_fused_kernels_with_its_impls_values(name, dtype, shape, axis):
    """A plan computes softmax and log_softmax as fused kernels of the ops of their impls (the op
    itself gone from its graph), with the impls' values: rows holding NaN, +inf, only -inf, huge
    values, and empty dimensions."""
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype.np) * 3
    if shape == (6, 7):
        x[0, 2], x[1, 3], x[2, :], x[3, 1:3], x[4, 5] = np.nan, np.inf, -np.inf, -np.inf, 1e30
    b = Builder()
    p = b.placeholder(None, shape, dtype)
    graph = b.graph([getattr(b, name)(p, axis=axis)])
    plan = Plan(graph)
    assert not {"softmax", "log_softmax"} & {n.op.name for n in plan.graph.nodes}
    assert {step.op.name for step in plan.steps if not isinstance(step, FusionGroup)} <= {"placeholder", "const"}
    assert plan.kernels
    [want] = run_graph(graph, [x])
    eps = np.finfo(dtype.np).eps
    # log_softmax's s - log(sum(exp(s))) cancels where the two are close: an error of a few ulp of
    # the operands (|x| < 16 here, the kernel's sum in float64), large relative to a result near 0
    atol = 16 * 4 * eps if name == "log_softmax" else 0
    for _ in range(2):
        [got] = plan([x])
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=16 * eps, atol=atol, equal_nan=True)


@pytest.mark.parametrize("name", ["any", "all"])
@pytest.mark.parametrize("shape, axes, keepdim", [((64,), (0,), False), ((5, 7), (1,), True), ((5, 7), (0, 1), False),
                                                  ((0, 3), (0,), False), ((4, 0), (1,), True)])
def test_any_and_all_of_booleans_fuse_into_the_loop_making_them(name, shape, axes, keepdim):
    """any/all of a comparison run in the comparison's kernel (no NumPy reduction left in the
    plan), with the impl's values: all-true, all-false and mixed slices, and empty ones."""
    x = np.random.default_rng(4).integers(-1, 3, shape).astype(np.float32)
    if len(shape) == 2 and shape[0] == 5:
        x[0], x[1] = 5, -5   # a row where every element passes, one where none does
    b = Builder()
    p = b.placeholder(None, shape, D.float32)
    graph = b.graph([getattr(b, name)(b.gt(p, 0), axes=axes, keepdim=keepdim)])
    plan = Plan(graph)
    assert not {"any", "all"} & {n.op.name for n in plan.graph.nodes}
    assert not [s for s in plan.steps if not isinstance(s, FusionGroup) and s.op.name not in ("placeholder", "const")]
    [want] = run_graph(graph, [x])
    [got] = plan([x])
    assert got.dtype == want.dtype == np.bool_ and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _rounds(dtype, factor):
    """150 rounds of every interpreter instruction over a (2, 3) space, values kept near 1; round k
    first scales by factor(k). Returns (graph, input arrays)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (2, 3)).astype(dtype.np)
    row = rng.uniform(0.5, 1.5, (1, 3)).astype(dtype.np)
    b = Builder()
    p, r = b.placeholder(None, x.shape, dtype), b.placeholder(None, row.shape, dtype)
    rb = b.expand(r, shape=(2, 3))
    z = p
    unary = ("neg", "exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "sqrt", "abs", "copy")
    for k in range(150):
        z = b.add(b.mul(z, factor(k)), rb)
        for name in unary:
            w = getattr(b, name)(b.abs(z) if name in ("log", "sqrt") else z)
            z = b.add(b.mul(z, 0.999), b.mul(w, 0.001))
        z = b.div(b.maximum(z, rb), b.add(b.minimum(b.pow(b.abs(z), 1.5), 2.0), 1.0))
        z = b.sub(z, b.mul(rb, 0.01))
    graph = b.graph([z, b.sum(z, axes=(0, 1), keepdim=False), b.amax(z, axes=(1,), keepdim=False, nans_win=True)])
    return graph, [x, row]


def _agree_with_the_graph_interpreter(plan, graph, inputs, dtype):
    for e, g in zip(run_graph(graph, inputs), plan(inputs)):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4 if dtype is D.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
def test_groups_too_large_to_compile_run_on_the_interpreter(dtype):
    """A group of thousands of ops over few elements that does not re-roll (each round has constants
    of its own) runs on the interpreter: every instruction, broadcast inputs, constants and
    reductions agree with the graph interpreter."""
    graph, inputs = _rounds(dtype, lambda k: 0.5 + 1e-4 * k)
    plan = Plan(graph)
    [step] = [s for s in plan.steps if isinstance(s, interpreter.Interpreted)]
    assert len(step.group.nodes) > plans.MAX_KERNEL_OPS and plan.kernels == []
    _agree_with_the_graph_interpreter(plan, graph, inputs, dtype)
    assert step.fn.__name__ == "kernel"


def test_arithmetic_programs_run_on_the_short_interpreter():
    """The profiler loop's shape, z = (z / x) * y many times and its backward, with a factor of
    each step's own so that it does not re-roll."""
    x = fg.tensor([[0.9, -1.1, 1.3], [1.2, 0.8, -0.7]], requires_grad=True)
    y = fg.tensor([[1.1, 0.9, 1.0], [0.95, 1.05, 1.2]], requires_grad=True)

    def loop(x, y):
        z = fg.ones(2, 3)
        for k in range(600):
            z = (z / x) * y * (1 + 1e-6 * k)
        z.sum().backward()
        return x.grad, y.grad

    compiled = fg.compile(loop)
    for _ in range(3):
        x.grad = y.grad = None
        got = [g.numpy().copy() for g in compiled(x, y)]
    x.grad = y.grad = None
    want = [g.numpy() for g in loop(x, y)]
    [step] = [s for s in compiled.specialisations[-1].plan.steps if isinstance(s, interpreter.Interpreted)]
    assert step.fn.__name__ == "arithmetic" and compiled.replays >= 1
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5)


def test_interpreter_instructions_are_every_op_it_claims():
    """The interpreter's instruction set is generated from the ops' own expressions, typed to the
    interpreter's dtype: no float64 literal in the float32 interpreter."""
    source = interpreter._source(D.float32)
    for name, k in interpreter.OPCODE.items():
        assert f"op == {k}:" in source
    assert "np.float64" not in source and "np.float32(1.0)" in source


def test_interpreter_reads_one_argument_two_ways():
    """v read as a column (through a reshape) and as a row (broadcast) in one large group: two
    registers, not one (found in review: the second read reused the first's). Each step adds a
    constant of its own, so the loop does not re-roll."""
    v = fg.tensor(np.arange(1, 5, dtype=np.float32))

    def f(v):
        z = v.reshape(4, 1) * fg.ones(4, 4)
        z = z + v
        for k in range(1100):
            z = z + 0.001 * (1 + 1e-3 * k)
        return z

    compiled = fg.compile(f)
    for _ in range(3):
        got = compiled(v).numpy()
    assert compiled.replays >= 1
    np.testing.assert_allclose(got, f(v).numpy(), rtol=1e-6)


def _rolled(plan):
    """The plan's kernels that run re-rolled loops (ir.rolling)."""
    return [k for k in plan.kernels if "for r in range(" in k.source]


def _leaves(*arrays):
    return [fg.tensor(a, requires_grad=True) for a in arrays]


def _compiled_against_eager(step, arrays, rtol):
    """Run `step` (a function of leaves returning tensors) compiled until it replays, and eagerly;
    assert the results agree, NaN and inf included. Returns the compiled function."""
    compiled = fg.compile(step)
    for _ in range(3):
        got = [t.detach().numpy().copy() for t in compiled(*_leaves(*arrays))]
    want = [t.detach().numpy() for t in step(*_leaves(*arrays))]
    assert compiled.replays >= 1
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=0, equal_nan=True)
    return compiled


@pytest.mark.parametrize("dtype", [D.float32, D.float64])
def test_unrolled_loops_run_as_loops(dtype):
    """The interpreter test's rounds without constants of their own: the group re-rolls into a
    kernel that loops over the rounds (a few dozen statements, not 6,000), and agrees with the
    graph interpreter."""
    graph, inputs = _rounds(dtype, lambda k: 0.5)
    plan = Plan(graph)
    assert not any(isinstance(s, interpreter.Interpreted) for s in plan.steps)
    [kernel] = _rolled(plan)
    assert kernel.source.count("\n") < 400   # the float32 math prelude included
    _agree_with_the_graph_interpreter(plan, graph, inputs, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_profiler_loop_compiles_to_loops(dtype):
    """z = (z / x) * y six hundred times and its backward: a forward loop, and a backward loop
    reading the forward's values in reverse. Gradients equal eager mode's, inf and NaN included
    (x has a zero: its column overflows)."""
    x = np.array([[0.9, -1.1, 1.3], [1.2, 0.0, -0.7]], dtype)
    y = np.array([[1.1, 0.9, 1.0], [0.95, 1.05, 1.2]], dtype)

    def loop(x, y):
        z = fg.ones(2, 3, dtype=x.dtype)
        for _ in range(600):
            z = (z / x) * y
        z.sum().backward()
        return z, x.grad, y.grad

    compiled = _compiled_against_eager(loop, (x, y), 1e-5 if dtype == np.float32 else 1e-12)
    [kernel] = _rolled(compiled.specialisations[-1].plan)
    assert "- r," in kernel.source   # the backward reads the stacked forward values last first


def test_profiler_loop_over_0d_tensors_is_not_rolled_and_agrees_with_eager():
    """0-d groups are never re-rolled (ir/rolling.py): the 600 steps over 0-d tensors run off the
    kernels, with the same values as eager mode, the overflow to inf and the NaN it makes included."""
    def loop(x, y):
        z = fg.ones((), dtype=x.dtype)
        for _ in range(600):
            z = (z / x) * y
        z.backward()
        return z, x.grad, y.grad

    for x in (np.float32(0.9), np.float32(1.5)):   # z overflows to inf (its gradients: inf and NaN); z shrinks
        compiled = _compiled_against_eager(loop, (np.asarray(x), np.asarray(np.float32(1.05))), 1e-5)
        assert not _rolled(compiled.specialisations[-1].plan)


def test_rolled_loops_keep_the_values_their_backward_needs():
    """z = tanh(z) * w: each step's tanh is saved for the backward (a stack per offset); the
    gradients equal eager mode's and central finite differences, in float64."""
    rng = np.random.default_rng(1)
    z0, w = rng.uniform(-1, 1, 3), rng.uniform(1.0, 1.5, 3)

    def step(z, w):
        out = z
        for _ in range(15):
            out = fg.tanh(out) * w
        out.sum().backward()
        return out, z.grad, w.grad

    compiled = _compiled_against_eager(step, (z0, w), 1e-12)
    assert _rolled(compiled.specialisations[-1].plan)
    _, gz, gw = (t.numpy() for t in compiled(*_leaves(z0, w)))

    def loss(z, w):
        for _ in range(15):
            z = np.tanh(z) * w
        return z.sum()

    h = 1e-6
    for k in range(3):
        e = np.eye(3)[k] * h
        np.testing.assert_allclose(gz[k], (loss(z0 + e, w) - loss(z0 - e, w)) / (2 * h), rtol=1e-6)
        np.testing.assert_allclose(gw[k], (loss(z0, w + e) - loss(z0, w - e)) / (2 * h), rtol=1e-6)


def test_loops_carrying_two_values_roll():
    """a, b = b, (a + b) * 0.5: each step reads both values of the step before."""
    a0, b0 = np.array([1.0, -2.0, 3.0], np.float32), np.array([0.5, 4.0, -1.0], np.float32)

    def step(a, b):
        for _ in range(60):
            a, b = b, (a + b) * 0.5
        return a, b

    compiled = _compiled_against_eager(step, (a0, b0), 1e-6)
    assert _rolled(compiled.specialisations[-1].plan)


def test_every_step_of_a_rolled_loop_can_be_an_output():
    """Each step's value is read outside the loop (stacked into one tensor): every repetition's
    value leaves the kernel, and the gradient flows back through all of them."""
    z0 = np.array([0.3, -0.2, 0.9, 1.5], np.float32)

    def step(z):
        values = [z]
        for _ in range(50):
            values.append(fg.sin(values[-1]) * 1.5)
        stacked = fg.stack(values)
        (stacked * fg.arange(51.0).reshape(51, 1)).sum().backward()
        return stacked, z.grad

    compiled = _compiled_against_eager(step, (z0,), 1e-5)
    assert _rolled(compiled.specialisations[-1].plan)


def test_loops_with_constants_of_their_own_do_not_roll():
    """z * (1 + 0.01 k): the steps differ in a constant, so they are not repetitions of one body;
    the kernel stays straight and computes every step's own factor."""
    z0 = np.array([1.0, 2.0, -3.0], np.float32)

    def step(z):
        out = z
        for k in range(100):
            out = out * (1 + 0.01 * k)
        out.sum().backward()
        return out, z.grad

    compiled = _compiled_against_eager(step, (z0,), 1e-5)
    assert compiled.specialisations[-1].plan.kernels and not _rolled(compiled.specialisations[-1].plan)


def test_a_loop_starting_from_another_type_rolls_from_its_second_step():
    """total = ints + x, then total + x: the first step reads an int64 tensor (computed in the
    first step's own way), so the loop rolls from the second step on."""
    ints = fg.tensor(np.array([16777217, -3, 5], np.int64))
    x0 = np.array([0.25, 0.5, -0.75], np.float32)

    def step(x):
        total = ints + x
        for _ in range(70):
            total = total + x
        total.sum().backward()
        return total, x.grad

    compiled = _compiled_against_eager(step, (x0,), 0)
    assert _rolled(compiled.specialisations[-1].plan)


def test_groups_without_broadcasts_run_as_one_flat_loop():
    """Reads in the group's own element order (a transposed, non-contiguous value included),
    scalars and full reductions: one loop over every element, equal to the graph interpreter.
    A broadcast read or a partial reduction keeps the loop nest."""
    rng = np.random.default_rng(3)
    x, row = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    b = Builder()
    p, r = b.placeholder(None, (5, 4), D.float32), b.placeholder(None, (4,), D.float32)
    t = b.permute(p, (1, 0))
    flat = b.mul(b.exp(t), b.add(t, 2.0))
    graph = b.graph([flat, b.sum(flat, axes=(0, 1), keepdim=False),
                     b.add(p, b.expand(r, shape=(5, 4))), b.sum(b.mul(p, p), axes=(1,), keepdim=False)])
    plan = Plan(graph)
    spaces = sorted(k.space for k in plan.kernels)
    assert spaces == [(5, 4), (20,)], spaces
    [one] = [k for k in plan.kernels if k.space == (20,)]
    assert "for i1" not in one.source
    for want, got in zip(run_graph(graph, [x, row]), plan([x, row])):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------- donated inputs (overwritten in place)

def _sgd_graph(read_after=None):
    """p - 0.5 * g over (4, 5) float32, the update's output first; `read_after(b, p)` adds outputs
    read from p after the update."""
    b = Builder()
    p, g = b.placeholder(None, (4, 5), D.float32), b.placeholder(None, (4, 5), D.float32)
    outputs = [b.sub(p, b.mul(g, 0.5))]
    if read_after is not None:
        outputs.append(read_after(b, p))
    return b.graph(outputs)


def test_donated_input_is_overwritten_from_the_second_call():
    plan = Plan(_sgd_graph(), donate={0: 0})
    assert plan.donated == {0: 0}
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((2, 4, 5)).astype(np.float32)
    p[0, :3] = np.nan, np.inf, -np.inf
    before = p.copy()
    first = plan([p, g])[0]   # compiles the kernels: the input is copied, not overwritten
    np.testing.assert_array_equal(p, before)
    assert first is not p
    np.testing.assert_array_equal(first, before - g * np.float32(0.5))
    second = plan([p, g])[0]
    assert second is p
    np.testing.assert_array_equal(p, before - g * np.float32(0.5))
    assert "xp.empty" not in plan.source   # no buffer allocated for the update


@pytest.mark.parametrize("read_after", [
    lambda b, p: b.permute(p, axes=(1, 0)),                        # a view of the input is returned
    lambda b, p: b.sum(b.mul(b.permute(p, axes=(1, 0)), 2.0), axes=(0, 1), keepdim=False),   # read transposed after the update
], ids=["view_returned", "read_transposed"])
def test_input_read_again_is_not_overwritten(read_after):
    plan = Plan(_sgd_graph(read_after), donate={0: 0})
    assert plan.donated == {}
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal((2, 4, 5)).astype(np.float32)
    before = p.copy()
    for _ in range(2):
        values = plan([p, g])
        np.testing.assert_array_equal(p, before)
        np.testing.assert_array_equal(values[0], before - g * np.float32(0.5))


def test_kernel_reading_its_donated_input_transposed_keeps_a_buffer():
    b = Builder()
    p = b.placeholder(None, (4, 4), D.float32)
    update = b.sub(p, b.mul(b.permute(p, axes=(1, 0)), 0.5))   # reads p[j, i] while it would write p[i, j]
    plan = Plan(b.graph([update]), donate={0: 0})
    assert plan.donated == {}
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    for _ in range(2):
        np.testing.assert_array_equal(plan([x.copy()])[0], x - x.T * np.float32(0.5))


def test_check_runs_before_an_input_is_overwritten():
    b = Builder()
    p, g = b.placeholder(None, (4, 5), D.float32), b.placeholder(None, (4, 5), D.float32)
    total = b.sum(g, axes=(0, 1), keepdim=False)   # read by the update: computed before it
    graph = b.graph([b.sub(p, b.mul(g, b.mul(total, 0.5))), b.gt(total, 0.0)])

    class Refused(Exception):
        pass

    def check(value):
        if not value:
            raise Refused
    plan = Plan(graph, donate={0: 0}, check=([1], check))
    assert plan.donated == {0: 0}
    p = np.ones((4, 5), np.float32)
    plan([p, np.ones((4, 5), np.float32)])   # the first call: copied
    plan([p, np.ones((4, 5), np.float32)])   # overwritten: 1 - 20 * 0.5
    np.testing.assert_array_equal(p, np.full((4, 5), -9, np.float32))
    with pytest.raises(Refused):
        plan([p, -np.ones((4, 5), np.float32)])
    np.testing.assert_array_equal(p, np.full((4, 5), -9, np.float32))


def test_donated_input_the_kernel_never_reads_is_its_output_buffer():
    """The update reads a value computed from the input by an earlier step (here through a matmul),
    not the input: the input's array is passed as the kernel's output buffer."""
    b = Builder()
    p, g, eye = (b.placeholder(None, shape, D.float32) for shape in ((4, 5), (4, 5), (5, 5)))
    scaled = b.matmul(b.mul(p, 0.5), eye)
    plan = Plan(b.graph([b.sub(scaled, g)]), donate={0: 0})
    assert plan.donated == {0: 0}
    kernel = plan.kernels[-1]
    assert p not in kernel.args and list(kernel.written) == kernel.outs
    rng = np.random.default_rng(2)
    x, grad = rng.standard_normal((2, 4, 5)).astype(np.float32)
    expected = x * np.float32(0.5) - grad
    assert plan([x, grad, np.eye(5, dtype=np.float32)])[0] is not x
    assert plan([x, grad, np.eye(5, dtype=np.float32)])[0] is x
    np.testing.assert_array_equal(x, expected)
