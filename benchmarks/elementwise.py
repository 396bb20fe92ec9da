"""A fusible elementwise function and its gradients, large and small.

    f = 0.5*x*(1 + tanh(0.7978845608*(x + 0.044715*x**3)))*sigmoid(y) + sin(x)*cos(y)
    f.sum().backward()            # gradients for x and y, float32

at N = 4,000,000 (memory-bound: what fusing forward and backward into one pass saves) and at
N = 1,000 (overhead-bound: what a compiled replay costs when there is nothing to compute).

Rows: fusegrad.compile of the whole call (fresh leaves in, x.grad and y.grad out; every timed
call asserted to be a replay of the compiled plan), fusegrad eager (interpreted, and with its
backward auto-compiled), the same function and its analytic derivative written by hand in NumPy,
PyTorch eager, torch.compile of the gradient computation (torch.autograd.grad; its compilation
timed separately) and jax.jit(jax.grad) when JAX is importable. Every implementation is checked
against a float64 NumPy reference before timing, in the process that times it. For N = 4M the
memory-bandwidth floor is printed: the bytes that must move (x and y read, two gradients written:
4 arrays x N x 4 bytes) at the copy bandwidth measured with np.copyto on 64 MB.

    python benchmarks/elementwise.py [--repeats N] [--quick]
"""
import os
import sys
import time
import types

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

_threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

import numpy as np  # noqa: E402

from benchmarks._harness import (Case, auto_compiled, cache_checked, chained, fmt_time, fresh_leaves,  # noqa: E402
                                 have, interpreted, prime_compiled, prime_eager_compilation, print_flush, replayed,
                                 standalone_main, table, time_target_line, timed, torch_compiled)

SIZES = (4_000_000, 1_000)
REPEATS = {4_000_000: 20, 1_000: 300}
WARMUP = {4_000_000: 2, 1_000: 20}
QUICK_REPEATS = {4_000_000: 3, 1_000: 30}
QUICK_WARMUP = 1
TARGETS = {4_000_000: 6e-3, 1_000: 20e-6}   # issue 5: seconds per call of the compiled function
C, A = 0.7978845608, 0.044715


def inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def f(lib, x, y):
    return 0.5 * x * (1 + lib.tanh(C * (x + A * x ** 3))) * lib.sigmoid(y) + lib.sin(x) * lib.cos(y)


# ---------------------------------------------------------------- autograd libraries (fusegrad, torch)

def fusegrad_grads(x, y):
    import fusegrad
    f(fusegrad, x, y).sum().backward()
    return x.grad, y.grad


def torch_grads(x, y):
    import torch
    f(torch, x, y).sum().backward()
    return x.grad, y.grad


def torch_autograd_grads(x, y):
    """What torch.compile compiles: the gradients by torch.autograd.grad."""
    import torch
    return torch.autograd.grad(f(torch, x, y).sum(), (x, y))


# ---------------------------------------------------------------- hand-written NumPy

def numpy_grads(x, y):
    """f's gradients by hand: with u = C*(x + A*x^3), t = tanh(u), s = sigmoid(y), g = 0.5*x*(1 + t),
    df/dx = s*(0.5*(1 + t) + 0.5*x*(1 - t^2)*C*(1 + 3*A*x^2)) + cos(x)*cos(y) and
    df/dy = g*s*(1 - s) - sin(x)*sin(y). (The forward value is computed too, as autograd does.)"""
    t = np.tanh(C * (x + A * x ** 3))
    s = 1 / (1 + np.exp(-y))
    g = 0.5 * x * (1 + t)
    sin_x, cos_y = np.sin(x), np.cos(y)
    value = (g * s + sin_x * cos_y).sum()
    gx = s * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * A * x * x)) + np.cos(x) * cos_y
    gy = g * s * (1 - s) - sin_x * np.sin(y)
    return value, gx, gy


# ---------------------------------------------------------------- JAX (when importable)

def jax_grads():
    import jax
    import jax.numpy as jnp
    lib = types.SimpleNamespace(tanh=jnp.tanh, sigmoid=jax.nn.sigmoid, sin=jnp.sin, cos=jnp.cos)
    return jax.jit(jax.grad(lambda x, y: f(lib, x, y).sum(), argnums=(0, 1)))


# ---------------------------------------------------------------- correctness check

def _same(name, ref, got):
    for which, r, g in zip("xy", ref, got):
        g = np.asarray(g)
        assert g.shape == r.shape and g.dtype == np.float32, (name, which, g.shape, g.dtype)
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=f"{name}: gradient of {which}")


def check(arrays, impls):
    """Every implementation's gradients against the float64 NumPy reference."""
    ref = numpy_grads(*(a.astype(np.float64) for a in arrays))[1:]
    for name, (fn, setup, to_numpy) in impls.items():
        _same(name, ref, to_numpy(fn(*setup())))


# ---------------------------------------------------------------- cases

def copy_bandwidth(repeats=10):
    """Bytes per second np.copyto moves (read + write) on a 64 MB float32 array: median of repeats."""
    src = np.ones(16 * 2 ** 20, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / float(np.median(times))


def cases(n, kinds, quick, out):
    """The rows of `kinds` at size n, each checked against the float64 NumPy reference."""
    arrays = inputs(n)
    rows, impls = [], {}
    if "fusegrad" in kinds:
        import fusegrad
        from fusegrad.runtime import backward_graphs

        def fg_numpy(grads):
            return [g.numpy() for g in grads]

        compiled = fusegrad.compile(fusegrad_grads)
        prime_compiled(compiled, fresh_leaves(fusegrad, arrays), out)
        replay_hook, replay_after = replayed(compiled)
        warm_hook, warm_after = chained(cache_checked(backward_graphs, cold=False), interpreted())
        auto_hook, auto_after = chained(cache_checked(backward_graphs, cold=False), auto_compiled(backward_graphs))
        prime_eager_compilation(fusegrad_grads, fresh_leaves(fusegrad, arrays))
        rows += [Case("fusegrad compiled", compiled, fresh_leaves(fusegrad, arrays, replay_hook), "fusegrad",
                      replay_after),
                 Case("fusegrad eager", fusegrad_grads, fresh_leaves(fusegrad, arrays, warm_hook), "fusegrad",
                      warm_after),
                 Case("fusegrad eager (auto-compiled backward)", fusegrad_grads,
                      fresh_leaves(fusegrad, arrays, auto_hook), "fusegrad", auto_after)]
        impls["fusegrad compiled"] = (compiled, fresh_leaves(fusegrad, arrays), fg_numpy)
        impls["fusegrad eager"] = (fusegrad_grads, fresh_leaves(fusegrad, arrays), fg_numpy)
    if "numpy" in kinds:
        rows.append(Case("numpy (hand-written)", numpy_grads, lambda: arrays, "numpy"))
        impls["numpy (hand-written)"] = (numpy_grads, lambda: arrays, lambda r: r[1:])
    if kinds & {"torch", "torch.compile"}:
        import torch

        def torch_numpy(grads):
            return [g.detach().numpy() for g in grads]

        if "torch" in kinds:
            rows.append(Case("torch eager", torch_grads, fresh_leaves(torch, arrays), "torch"))
            impls["torch eager"] = (torch_grads, fresh_leaves(torch, arrays), torch_numpy)
        inductor = None
        if "torch.compile" in kinds:
            inductor = torch_compiled(torch_autograd_grads, fresh_leaves(torch, arrays), quick, out)
        if inductor is not None:
            rows.append(Case("torch.compile", inductor, fresh_leaves(torch, arrays), "torch.compile"))
            impls["torch.compile"] = (inductor, fresh_leaves(torch, arrays), torch_numpy)
    if "jax" in kinds:
        import jax
        import jax.numpy as jnp
        grads = jax_grads()
        args = tuple(jnp.asarray(a) for a in arrays)
        jax.block_until_ready(grads(*args))   # compiles

        def run_jax(x, y):
            return jax.block_until_ready(grads(x, y))

        rows.append(Case("jax.jit(jax.grad)", run_jax, lambda: args, "jax"))
        impls["jax.jit(jax.grad)"] = (run_jax, lambda: args, lambda r: [np.asarray(g) for g in r])
    check(arrays, impls)
    return rows


def run(repeats=None, quick=False, out=print_flush):
    """Check, then time both sizes; print and return [(title, results, target)]."""
    return [run_size(n, repeats, quick, out) for n in SIZES]


def run_size(n, repeats, quick, out):
    """Time one size (each implementation checked where it is built, before timing); print and return
    (title, results, target)."""
    title = f"elementwise, N = {n:,}: f(x, y) and its gradients for x and y, float32"
    out(title)
    results = timed(cases, (n,), repeats or (QUICK_REPEATS[n] if quick else REPEATS[n]),
                    QUICK_WARMUP if quick else WARMUP[n], quick, out, collect_every=10)
    out(f"elementwise, N = {n:,}: gradients of every implementation agree with the float64 NumPy reference"
        + ("" if have("jax") else "; JAX not importable, skipped"))
    if n == SIZES[0]:
        bandwidth = copy_bandwidth()
        out(f"memory-bandwidth floor: 4 arrays x {n:,} x 4 bytes = {16 * n / 1e6:.0f} MB at the copy bandwidth "
            f"{bandwidth / 1e9:.1f} GB/s (np.copyto, 64 MB) = {fmt_time(16 * n / bandwidth)}")
    out("")
    out(table(title, results))
    target = time_target_line(results, "fusegrad compiled", TARGETS[n])
    out(target)
    out("")
    return title, results, target


def main(argv=None):
    standalone_main(__doc__, run, REPEATS[SIZES[1]], "calls", argv)


if __name__ == "__main__":
    main()
