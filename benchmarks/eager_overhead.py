"""Eager overhead: the autograd tutorial's profiler workload.

    x = randn(2, 3), y = rand(2, 3), z = ones(2, 3), all requiring grad
    1000 times: z = (z / x) * y
    z.sum().backward()

The tensors are tiny, so the time is almost all per-op overhead (dispatch, graph recording, backward
graph derivation and execution). Timed as
  (a) the forward loop only (recording the graph, no backward), and
  (b) forward loop + z.sum().backward(),
for fusegrad (warm: backward-graph structure cache already populated; cold: caches cleared before each
call, so the structure is new: its first backward runs each node's VJP rule at once), PyTorch eager, a hand-written NumPy version (the loop, and
the hand-derived backward with the same math as PyTorch's div/mul derivatives: the floor for "NumPy"),
and JAX when importable (jax.grad of the same Python function, with and without jax.jit).

All implementations get the same fixed inputs (seeded NumPy float32 arrays) so they compute the same
numbers; fresh leaves are made before each call, outside the timed region. After 1000 steps most
entries of z have overflowed to inf or underflowed to 0 (as in the tutorial); that is part of the
workload. Before timing, the gradients of every implementation are checked against the NumPy reference
(on a 10-step loop, where everything is finite, and on the full loop).

    python benchmarks/eager_overhead.py [--repeats N] [--quick]
"""
import functools
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

_threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

import numpy as np  # noqa: E402

from benchmarks._harness import (Case, auto_compiled, cache_checked, chained, empty_kernel_cache,  # noqa: E402
                                 fresh_leaves, have, interpreted, leaves, overflow_ignored, prime_compiled,
                                 prime_eager_compilation, print_flush, replayed, speedup_target_line,
                                 standalone_main, table, target_line, time_target_line, timed)

STEPS = 1000
REPEATS = 50        # timed calls of each implementation
WARMUP = 3
QUICK_REPEATS, QUICK_WARMUP = 5, 1
COMPILED_TARGET, COMPILE_LIMIT = 100e-6, 2.0   # issue 5: the compiled loop's replay and its compilation


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y = rng.random((2, 3)).astype(np.float32)
    z = np.ones((2, 3), np.float32)
    return x, y, z


# ---------------------------------------------------------------- autograd libraries (fusegrad, torch)

def lib_forward(x, y, z, steps=STEPS):
    for _ in range(steps):
        z = (z / x) * y
    return z


def lib_forward_backward(x, y, z, steps=STEPS):
    out = lib_forward(x, y, z, steps)
    loss = out.sum()
    loss.backward()
    return loss


def lib_gradients(lib, arrays, steps):
    x, y, z = leaves(lib, arrays)
    loss = lib_forward_backward(x, y, z, steps)
    return float(loss.item()), [t.grad.detach().numpy().copy() for t in (x, y, z)]


# ---------------------------------------------------------------- hand-written NumPy

def np_forward(x, y, z, steps=STEPS):
    """The loop, keeping what the backward needs (each z / x quotient), as autograd would."""
    quotients = []
    for _ in range(steps):
        q = z / x
        quotients.append(q)
        z = q * y
    return z, quotients


def np_backward(x, y, out, quotients):
    """d out.sum() / d(x, y, z): PyTorch's derivatives of mul and div, in reverse order.

    mul q * y:  dq = g * y,  dy += g * q
    div z / x:  dz = dq / x, dx += -dq * ((z / x) / x) = -dq * (q / x)"""
    g = np.ones_like(out)
    gx = np.zeros_like(x)
    gy = np.zeros_like(y)
    for q in reversed(quotients):
        gy += g * q
        gq = g * y
        gx -= gq * (q / x)
        g = gq / x
    return gx, gy, g


def np_forward_backward(x, y, z, steps=STEPS):
    out, quotients = np_forward(x, y, z, steps)
    loss = out.sum()
    grads = np_backward(x, y, out, quotients)
    return loss, grads


def np_gradients(arrays, steps):
    loss, grads = np_forward_backward(*arrays, steps)
    return float(loss), list(grads)


# ---------------------------------------------------------------- JAX (when importable)

def jax_functions(steps=STEPS):
    import jax

    def forward(x, y, z):
        for _ in range(steps):
            z = (z / x) * y
        return z

    def loss(x, y, z):
        return forward(x, y, z).sum()

    grad = jax.grad(loss, argnums=(0, 1, 2))
    return {"forward": forward, "forward_jit": jax.jit(forward), "grad": grad, "grad_jit": jax.jit(grad),
            "loss": loss}


def jax_gradients(arrays, steps, jit):
    import jax
    import jax.numpy as jnp
    fns = jax_functions(steps)
    args = tuple(jnp.asarray(a) for a in arrays)
    grads = jax.block_until_ready((fns["grad_jit"] if jit else fns["grad"])(*args))
    return float(fns["loss"](*args)), [np.asarray(g) for g in grads]


# ---------------------------------------------------------------- correctness check

def _same(name, ref, got, rtol=1e-4, atol=1e-30):
    """Equal up to float32 rounding: inf/nan in the same places, finite values close (atol covers the
    subnormal range, where a few ulps of rounding differences are large relative errors)."""
    ref_loss, ref_grads = ref
    loss, grads = got
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{name}: loss")
    for which, r, g in zip("xyz", ref_grads, grads):
        assert g.shape == r.shape and g.dtype == r.dtype, (name, which, g.shape, g.dtype, r.shape, r.dtype)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{name}: grad of {which}")


def check(arrays, use_torch, use_jax):
    """Assert that every implementation computes the NumPy reference's loss and gradients."""
    import fusegrad
    from fusegrad.runtime import backward_graphs
    for steps in (10, STEPS):
        ref = np_gradients(arrays, steps)
        if steps == 10:
            assert np.isfinite(ref[0]) and all(np.isfinite(g).all() for g in ref[1]), "10-step check not finite"
        backward_graphs.clear()
        cold = lib_gradients(fusegrad, arrays, steps)
        assert (backward_graphs.misses, backward_graphs.hits) == (1, 0), "cold backward did not derive a graph"
        warm = lib_gradients(fusegrad, arrays, steps)
        assert (backward_graphs.misses, backward_graphs.hits) == (1, 1), "warm backward missed the cache"
        _same(f"fusegrad cold, {steps} steps", ref, cold)
        _same(f"fusegrad warm, {steps} steps", ref, warm)
        for a, b in zip(cold[1], warm[1]):   # the cached graph computes exactly what a fresh one does
            np.testing.assert_array_equal(a, b, err_msg="fusegrad: cached backward differs from fresh")
        if use_torch:
            import torch
            _same(f"torch, {steps} steps", ref, lib_gradients(torch, arrays, steps))
        if use_jax:
            _same(f"jax.grad, {steps} steps", ref, jax_gradients(arrays, steps, jit=False))
            _same(f"jax.jit(jax.grad), {steps} steps", ref, jax_gradients(arrays, steps, jit=True))


# ---------------------------------------------------------------- cases

def cases(which, kinds, quick, out):
    """The rows of `kinds` for table `which`: "forward" (the loop only) or "full" (loop and backward)."""
    arrays = inputs()
    full = which == "full"
    fn, np_fn = (lib_forward_backward, np_forward_backward) if full else (lib_forward, np_forward)
    rows = []
    if "fusegrad" in kinds:
        import fusegrad
        from fusegrad.runtime import backward_graphs
        if not full:
            rows.append(Case("fusegrad", lib_forward, fresh_leaves(fusegrad, arrays), "fusegrad"))
        else:
            warm_hook, warm_after = chained(cache_checked(backward_graphs, cold=False), interpreted())
            cold_hook, cold_after = chained(cache_checked(backward_graphs, cold=True), interpreted())
            rows.append(Case("fusegrad (warm)", fn, fresh_leaves(fusegrad, arrays, warm_hook), "fusegrad", warm_after))
            rows.append(Case("fusegrad (cold)", fn, fresh_leaves(fusegrad, arrays, cold_hook), "fusegrad", cold_after))
            prime_eager_compilation(fn, fresh_leaves(fusegrad, arrays))
            auto_hook, auto_after = chained(cache_checked(backward_graphs, cold=False), auto_compiled(backward_graphs))
            rows.append(Case("fusegrad (auto-compiled backward)", fn, fresh_leaves(fusegrad, arrays, auto_hook),
                             "fusegrad", auto_after))
    if "torch" in kinds:
        import torch
        rows.append(Case("torch eager", fn, fresh_leaves(torch, arrays), "torch"))
    if "numpy" in kinds:
        rows.append(Case("numpy (hand-written)", np_fn, lambda: tuple(a.copy() for a in arrays), "numpy"))
    if "jax" in kinds:
        import jax
        import jax.numpy as jnp
        fns = jax_functions()
        args = tuple(jnp.asarray(a) for a in arrays)

        def ready(jax_fn):
            return lambda: jax.block_until_ready(jax_fn(*args))

        names = (("jax.grad (no jit)", "grad"), ("jax.jit(jax.grad)", "grad_jit")) if full else \
            (("jax (no jit)", "forward"), ("jax.jit", "forward_jit"))
        rows += [Case(name, ready(fns[key]), None, "jax") for name, key in names]
    return rows


# ---------------------------------------------------------------- the loop as one compiled function

def compiled_loop(x, y, z):
    loss = lib_forward_backward(x, y, z)
    return loss, x.grad, y.grad, z.grad


def profiler_cases(kinds, quick, out):
    """The rows of `kinds` for profiler_loop: the compiled loop (primed until it replays), fusegrad
    eager, PyTorch eager, NumPy."""
    arrays = inputs()
    rows = []
    if "fusegrad" in kinds:
        import fusegrad
        from fusegrad.runtime import backward_graphs
        compiled = fusegrad.compile(compiled_loop)
        prime_compiled(compiled, fresh_leaves(fusegrad, arrays), out)
        hook, after = replayed(compiled)
        warm_hook, warm_after = chained(cache_checked(backward_graphs, cold=False), interpreted())
        rows += [Case("fusegrad compiled", compiled, fresh_leaves(fusegrad, arrays, hook), "fusegrad", after),
                 Case("fusegrad eager (warm)", lib_forward_backward, fresh_leaves(fusegrad, arrays, warm_hook),
                      "fusegrad", warm_after)]
    return rows + cases("full", kinds & {"torch", "numpy"}, quick, out)


def overflowing(run_workload):
    """run_workload without warnings: the loop overflows to inf and underflows to 0, as in the
    tutorial."""
    @functools.wraps(run_workload)
    def run_quietly(repeats=None, quick=False, out=print_flush):
        with overflow_ignored():
            return run_workload(repeats, quick, out)
    return run_quietly


@overflowing
def run_profiler_loop(repeats, quick, out):
    """The loop and its backward as one fusegrad.compile'd function: compile time and replay time."""
    import fusegrad
    arrays = inputs()
    compiled = fusegrad.compile(compiled_loop)
    with empty_kernel_cache():   # the target is a first run's compilation
        seconds = prime_compiled(compiled, fresh_leaves(fusegrad, arrays),
                                 lambda line: out(f"empty kernel cache: {line}"))
    loss, *grads = compiled(*fresh_leaves(fusegrad, arrays)())
    _same("fusegrad compiled", np_gradients(arrays, STEPS), (float(loss.item()), [g.numpy() for g in grads]))
    out("profiler_loop: fusegrad compiled's loss and gradients agree with the NumPy reference")
    results = timed(profiler_cases, (), repeats or (QUICK_REPEATS if quick else REPEATS),
                    QUICK_WARMUP if quick else WARMUP, quick, out, quiet=True)
    title = f"profiler_loop: {STEPS} x z = (z / x) * y; z.sum().backward(), one fusegrad.compile'd function"
    out("")
    out(table(title, results))
    compile_seconds = sum(seconds)
    target = "\n".join([time_target_line(results, "fusegrad compiled", COMPILED_TARGET),
                        f"target: fusegrad compiled's compilation (its calls up to the first replay, empty "
                        f"kernel cache) = {compile_seconds:.2f} s (target < {COMPILE_LIMIT:.0f} s: "
                        f"{'met' if compile_seconds < COMPILE_LIMIT else 'NOT met'})"])
    out(target)
    return [(title, results, target)]


@overflowing
def run(repeats, quick, out):
    """Check, then time both workloads; print and return [(title, results, target)]."""
    use_jax = have("jax")
    check(inputs(), have("torch"), use_jax)
    out(f"eager_overhead: loss and gradients of every implementation agree with the NumPy reference "
        f"(10 and {STEPS} steps){'' if use_jax else '; JAX not importable, skipped'}")
    warmup = QUICK_WARMUP if quick else WARMUP
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    reports = []
    for which, title in (("forward", f"eager_overhead (a): forward loop only, {STEPS} x z = (z / x) * y on 2x3"),
                         ("full", "eager_overhead (b): forward loop + z.sum().backward()")):
        results = timed(cases, (which,), repeats, warmup, quick, out, quiet=True)
        out("")
        out(table(title, results))
        target = None if which != "full" else "\n".join(
            [target_line(results, "fusegrad (warm)"), target_line(results, "fusegrad (cold)"),
             speedup_target_line(results, "fusegrad (auto-compiled backward)", "fusegrad (warm)", 1.5)])
        if target:
            out(target)
        reports.append((title, results, target))
    return reports


def main(argv=None):
    standalone_main(__doc__, lambda repeats, quick: run(repeats, quick) + run_profiler_loop(repeats, quick),
                    REPEATS, "calls", argv)


if __name__ == "__main__":
    main()
