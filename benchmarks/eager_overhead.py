"""Eager overhead: the autograd tutorial's profiler workload.

    x = randn(2, 3), y = rand(2, 3), z = ones(2, 3), all requiring grad
    1000 times: z = (z / x) * y
    z.sum().backward()

The tensors are tiny, so the time is almost all per-op overhead (dispatch, graph recording, backward
graph derivation and execution). Timed as
  (a) the forward loop only (recording the graph, no backward), and
  (b) forward loop + z.sum().backward(),
for fusegrad (warm: backward-graph structure cache already populated; cold: cache cleared before each
call, so the backward graph is derived again), PyTorch eager, a hand-written NumPy version (the loop, and
the hand-derived backward with the same math as PyTorch's div/mul derivatives: the floor for "NumPy"),
and JAX when importable (jax.grad of the same Python function, with and without jax.jit).

All implementations get the same fixed inputs (seeded NumPy float32 arrays) so they compute the same
numbers; fresh leaves are made before each call, outside the timed region. After 1000 steps most
entries of z have overflowed to inf or underflowed to 0 (as in the tutorial); that is part of the
workload. Before timing, the gradients of every implementation are checked against the NumPy reference
(on a 10-step loop, where everything is finite, and on the full loop).

    python benchmarks/eager_overhead.py [--repeats N] [--quick]
"""
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

THREADS = _threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

import numpy as np  # noqa: E402

from benchmarks._harness import (Case, cache_checked, have, measure, standalone_main,  # noqa: E402
                                print_flush, table, target_line)

STEPS = 1000
REPEATS = 50        # timed rounds (each implementation once per round)
WARMUP = 3
QUICK_REPEATS, QUICK_WARMUP = 5, 1


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y = rng.random((2, 3)).astype(np.float32)
    z = np.ones((2, 3), np.float32)
    return x, y, z


# ---------------------------------------------------------------- autograd libraries (fusegrad, torch)

def lib_leaves(lib, arrays):
    return tuple(lib.tensor(a, requires_grad=True) for a in arrays)


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
    x, y, z = lib_leaves(lib, arrays)
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

def cases(arrays, use_torch, use_jax):
    import fusegrad
    from fusegrad.runtime import backward_graphs

    def leaves(lib, hook=None):
        def setup():
            if hook is not None:
                hook()
            return lib_leaves(lib, arrays)
        return setup

    def np_setup():
        return tuple(a.copy() for a in arrays)

    forward = [Case("fusegrad", lib_forward, leaves(fusegrad), "fusegrad")]
    full = []
    warm_hook, warm_after = cache_checked(backward_graphs, cold=False)
    cold_hook, cold_after = cache_checked(backward_graphs, cold=True)
    full.append(Case("fusegrad (warm)", lib_forward_backward, leaves(fusegrad, warm_hook), "fusegrad", warm_after))
    full.append(Case("fusegrad (cold)", lib_forward_backward, leaves(fusegrad, cold_hook), "fusegrad", cold_after))
    if use_torch:
        import torch
        forward.append(Case("torch eager", lib_forward, leaves(torch), "torch"))
        full.append(Case("torch eager", lib_forward_backward, leaves(torch), "torch"))
    forward.append(Case("numpy (hand-written)", np_forward, np_setup, "numpy"))
    full.append(Case("numpy (hand-written)", np_forward_backward, np_setup, "numpy"))
    if use_jax:
        import jax
        import jax.numpy as jnp
        fns = jax_functions()
        args = tuple(jnp.asarray(a) for a in arrays)

        def ready(fn):
            return lambda: jax.block_until_ready(fn(*args))

        forward.append(Case("jax (no jit)", ready(fns["forward"]), None, "jax"))
        forward.append(Case("jax.jit", ready(fns["forward_jit"]), None, "jax"))
        full.append(Case("jax.grad (no jit)", ready(fns["grad"]), None, "jax"))
        full.append(Case("jax.jit(jax.grad)", ready(fns["grad_jit"]), None, "jax"))
    return forward, full


def run(repeats=None, quick=False, out=print_flush):
    """Check, then time both workloads; print and return [(title, results, target)]."""
    _threads.apply_to_torch(THREADS)
    with warnings.catch_warnings(), np.errstate(all="ignore"):   # the loop overflows, as in the tutorial
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return _run(repeats, quick, out)


def _run(repeats, quick, out):
    use_torch, use_jax = have("torch"), have("jax")
    arrays = inputs()
    check(arrays, use_torch, use_jax)
    out(f"eager_overhead: loss and gradients of every implementation agree with the NumPy reference "
        f"(10 and {STEPS} steps){'' if use_jax else '; JAX not importable, skipped'}")
    warmup = QUICK_WARMUP if quick else WARMUP
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    forward, full = cases(arrays, use_torch, use_jax)
    reports = []
    for title, group in ((f"eager_overhead (a): forward loop only, {STEPS} x z = (z / x) * y on 2x3", forward),
                         ("eager_overhead (b): forward loop + z.sum().backward()", full)):
        results = measure(group, repeats, warmup)
        out("")
        out(table(title, results))
        target = target_line(results, "fusegrad (warm)") if group is full else None
        if target:
            out(target)
        reports.append((title, results, target))
    return reports


def main(argv=None):
    standalone_main(__doc__, run, REPEATS, "rounds", argv)


if __name__ == "__main__":
    main()
