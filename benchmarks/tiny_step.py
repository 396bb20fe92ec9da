"""One training step of the autograd tutorial's TinyModel.

    TinyModel: Linear(1000, 100) -> ReLU -> Linear(100, 10), batch 16
    optimizer.zero_grad(); prediction = model(x); loss = (target - prediction).pow(2).sum()
    loss.backward(); optimizer.step()          # SGD, lr=0.001

Timed per step for fusegrad (warm: backward-graph structure cache populated, the steady state of a
training loop; cold: cache cleared before each step), PyTorch eager, and a hand-written NumPy step (the
same forward, the hand-derived backward, and the in-place SGD update: the floor for "NumPy").

Every implementation starts from the same weights and data (seeded NumPy float32 arrays, initialised
like nn.Linear). Before timing, one step of each is checked against the NumPy reference: loss, every
parameter's gradient, and every parameter after the update. The timed steps keep training the same
model on the same batch, as the tutorial's loop would.

    python benchmarks/tiny_step.py [--repeats N] [--quick]
"""
import math
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _threads  # noqa: E402

_threads.limit()   # before NumPy/PyTorch are imported: see benchmarks/_threads.py

import numpy as np  # noqa: E402

from benchmarks._harness import (Case, have, print_flush, standalone_main,  # noqa: E402
                                 step_report, timed, training_step_cases)

BATCH_SIZE, DIM_IN, HIDDEN_SIZE, DIM_OUT = 16, 1000, 100, 10
LR = 0.001
REPEATS = 500       # timed steps per implementation
WARMUP = 20
QUICK_REPEATS, QUICK_WARMUP = 30, 5
COMPILED_TARGET = 120e-6   # issue 5: a compiled step in at most 120 µs
NAMES = ("layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias")


def initial_state(seed=0):
    """Parameters (like nn.Linear's init: uniform in +-1/sqrt(fan_in)), an input batch and a target."""
    rng = np.random.default_rng(seed)

    def uniform(shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    params = {
        "layer1.weight": uniform((HIDDEN_SIZE, DIM_IN), DIM_IN),
        "layer1.bias": uniform((HIDDEN_SIZE,), DIM_IN),
        "layer2.weight": uniform((DIM_OUT, HIDDEN_SIZE), HIDDEN_SIZE),
        "layer2.bias": uniform((DIM_OUT,), HIDDEN_SIZE),
    }
    x = rng.standard_normal((BATCH_SIZE, DIM_IN)).astype(np.float32)
    target = rng.standard_normal((BATCH_SIZE, DIM_OUT)).astype(np.float32)
    return params, x, target


# ---------------------------------------------------------------- autograd libraries (fusegrad, torch)

def tiny_model(lib):
    """The tutorial's TinyModel, written against `lib` (fusegrad or torch)."""

    class TinyModel(lib.nn.Module):
        def __init__(self):
            super(TinyModel, self).__init__()
            self.layer1 = lib.nn.Linear(DIM_IN, HIDDEN_SIZE)
            self.relu = lib.nn.ReLU()
            self.layer2 = lib.nn.Linear(HIDDEN_SIZE, DIM_OUT)

        def forward(self, x):
            x = self.layer1(x)
            x = self.relu(x)
            x = self.layer2(x)
            return x

    return TinyModel()


def lib_setup(lib, state):
    params, x, target = state
    model = tiny_model(lib)
    model.load_state_dict({k: lib.tensor(v) for k, v in params.items()})
    optimizer = lib.optim.SGD(model.parameters(), lr=LR)
    return model, optimizer, lib.tensor(x), lib.tensor(target)


def lib_step(model, optimizer, x, target):
    optimizer.zero_grad()
    prediction = model(x)
    loss = (target - prediction).pow(2).sum()
    loss.backward()
    optimizer.step()
    return loss


def lib_one_step(lib, state):
    model, optimizer, x, target = lib_setup(lib, state)
    loss = lib_step(model, optimizer, x, target)
    named = dict(model.named_parameters())
    return (float(loss.item()),
            {k: named[k].grad.detach().numpy().copy() for k in NAMES},
            {k: named[k].detach().numpy().copy() for k in NAMES})


# ---------------------------------------------------------------- hand-written NumPy

class NumpyTiny:
    """TinyModel's parameters as arrays, with a hand-derived training step."""

    def __init__(self, state):
        params, x, target = state
        self.w1, self.b1, self.w2, self.b2 = (params[k].copy() for k in NAMES)
        self.x, self.target = x.copy(), target.copy()
        self.grads = None

    def step(self):
        self.grads = None                                   # zero_grad (set_to_none)
        x, w1, b1, w2, b2 = self.x, self.w1, self.b1, self.w2, self.b2
        h = x @ w1.T + b1                                   # forward
        a = np.maximum(h, 0)
        prediction = a @ w2.T + b2
        diff = self.target - prediction
        loss = (diff * diff).sum()
        g_pred = -2 * diff                                  # backward
        g_w2 = g_pred.T @ a
        g_b2 = g_pred.sum(0)
        g_h = (g_pred @ w2) * (h > 0)
        g_w1 = g_h.T @ x
        g_b1 = g_h.sum(0)
        self.grads = (g_w1, g_b1, g_w2, g_b2)
        for p, g in zip((w1, b1, w2, b2), self.grads):      # SGD step, in place
            p -= LR * g
        return loss

    def params(self):
        return dict(zip(NAMES, (self.w1, self.b1, self.w2, self.b2)))


def np_one_step(state):
    model = NumpyTiny(state)
    loss = model.step()
    return (float(loss), dict(zip(NAMES, (g.copy() for g in model.grads))),
            {k: v.copy() for k, v in model.params().items()})


# ---------------------------------------------------------------- correctness check

def _same(name, ref, got, rtol=1e-4, atol=1e-5):
    ref_loss, ref_grads, ref_params = ref
    loss, grads, params = got
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, err_msg=f"{name}: loss")
    for k in NAMES:
        assert grads[k].shape == ref_grads[k].shape and grads[k].dtype == ref_grads[k].dtype, (name, k)
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=rtol, atol=atol, err_msg=f"{name}: grad of {k}")
        np.testing.assert_allclose(params[k], ref_params[k], rtol=rtol, atol=1e-7, err_msg=f"{name}: {k} after step")


def check_compiled(state, steps=4):
    """fusegrad.compile(lib_step) trains like the NumPy reference, step after step (the first calls
    capture, the later ones replay), and really replays."""
    import fusegrad
    model, optimizer, x, target = lib_setup(fusegrad, state)
    compiled = fusegrad.compile(lib_step)
    reference = NumpyTiny(state)
    named = dict(model.named_parameters())
    for i in range(steps):
        loss = compiled(model, optimizer, x, target)
        ref_loss = reference.step()
        _same(f"fusegrad compiled, step {i + 1}", (float(ref_loss), dict(zip(NAMES, reference.grads)),
                                                   reference.params()),
              (float(loss.item()), {k: named[k].grad.numpy() for k in NAMES},
               {k: named[k].detach().numpy() for k in NAMES}))
    assert compiled.replays > 0, f"fusegrad compiled: no replay in {steps} steps ({compiled.last_reason})"


def check(state, use_torch):
    import fusegrad
    from fusegrad.runtime import backward_graphs
    ref = np_one_step(state)
    backward_graphs.clear()
    cold = lib_one_step(fusegrad, state)
    warm = lib_one_step(fusegrad, state)
    assert (backward_graphs.misses, backward_graphs.hits) == (1, 1), "warm step missed the cache"
    _same("fusegrad (cold)", ref, cold)
    _same("fusegrad (warm)", ref, warm)
    for k in NAMES:
        np.testing.assert_array_equal(cold[1][k], warm[1][k], err_msg="fusegrad: cached backward differs")
    check_compiled(state)
    if use_torch:
        import torch
        _same("torch", ref, lib_one_step(torch, state))


# ---------------------------------------------------------------- cases

def cases(kinds, quick, out):
    state = initial_state()
    rows = training_step_cases(lib_step, lambda lib: lib_setup(lib, state), kinds, out, auto=True, compiled=True)
    if "numpy" in kinds:
        rows.append(Case("numpy (hand-written)", NumpyTiny(state).step, None, "numpy"))
    return rows


def run(repeats=None, quick=False, out=print_flush):
    """Check, then time the step; print and return [(title, results, target)]."""
    use_torch = have("torch")
    check(initial_state(), use_torch)
    out("tiny_step: loss, gradients and updated parameters agree with the NumPy reference "
        "(fusegrad compiled: over its first 4 steps)")
    warmup = QUICK_WARMUP if quick else WARMUP
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    title = (f"tiny_step: TinyModel SGD step (zero_grad, forward, backward, step), batch {BATCH_SIZE}, "
             f"{DIM_IN}->{HIDDEN_SIZE}->{DIM_OUT}")
    results = timed(cases, (), repeats, warmup, quick, out, collect_every=20)
    return step_report(title, results, COMPILED_TARGET, out)


def main(argv=None):
    standalone_main(__doc__, run, REPEATS, "steps", argv)


if __name__ == "__main__":
    main()
