"""One Adam training step of an MLP classifier, compiled and eager.

    Linear(784, 256) -> ReLU -> Linear(256, 256) -> ReLU -> Linear(256, 10), batch 128
    optimizer.zero_grad(); loss = nn.CrossEntropyLoss()(model(x), labels); loss.backward(); optimizer.step()
    # Adam(lr=1e-3)

Rows: fusegrad.compile of the whole step (every timed call asserted to be a replay), fusegrad eager
(interpreted; cold; with its backward auto-compiled), PyTorch eager, torch.compile of the same step
(its compilation timed separately) and the step by hand in NumPy (forward, softmax cross-entropy's
derivative, the backward through the layers, the Adam update): the floor for "NumPy".

Every implementation starts from the same weights (uniform in +-1/sqrt(fan_in), like nn.Linear)
and batch. Before timing, fusegrad eager and PyTorch take one step and fusegrad compiled four, each
checked step by step against the NumPy step: loss, every gradient, every parameter after the update.

    python benchmarks/mlp_step.py [--repeats N] [--quick]
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
                                 step_report, timed, torch_compiled, training_step_cases)

BATCH_SIZE, SIZES = 128, (784, 256, 256, 10)
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
REPEATS = 300       # timed steps per implementation
WARMUP = 20
QUICK_REPEATS, QUICK_WARMUP = 20, 3
COMPILED_TARGET = 1.2e-3   # issue 5: a compiled step in at most 1.2 ms
# Parameters after an update agree to 2% of a step's size: Adam's step, lr * m / (sqrt(v) + eps), turns
# float32 rounding differences in gradients as small as eps into differences of that order. Where a
# gradient is within its own tolerance (GRAD_TOLERANCE) of 0, its first step, lr * g / (|g| + eps),
# can be anything up to lr: PyTorch on an AVX2 machine moved one weight of 200,704 by 2.9e-5 more.
PARAM_TOLERANCE = 0.02 * LR
GRAD_TOLERANCE = 1e-6
NAMES = tuple(f"{layer}.{kind}" for layer in ("0", "2", "4") for kind in ("weight", "bias"))


def initial_state(seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:])):
        bound = 1 / math.sqrt(fan_in)
        params[f"{2 * i}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        params[f"{2 * i}.bias"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    x = rng.standard_normal((BATCH_SIZE, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], BATCH_SIZE)
    return params, x, labels


# ---------------------------------------------------------------- autograd libraries (fusegrad, torch)

def lib_setup(lib, state):
    params, x, labels = state
    nn = lib.nn
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.ReLU(), nn.Linear(SIZES[1], SIZES[2]), nn.ReLU(),
                          nn.Linear(SIZES[2], SIZES[3]))
    model.load_state_dict({k: lib.tensor(v) for k, v in params.items()})
    optimizer = lib.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    return model, optimizer, nn.CrossEntropyLoss(), lib.tensor(x), lib.tensor(labels)


def lib_step(model, optimizer, criterion, x, labels):
    optimizer.zero_grad()
    loss = criterion(model(x), labels)
    loss.backward()
    optimizer.step()
    return loss


def lib_state(model, loss):
    named = dict(model.named_parameters())
    return (float(loss.item()), {k: named[k].grad.detach().numpy().copy() for k in NAMES},
            {k: named[k].detach().numpy().copy() for k in NAMES})


# ---------------------------------------------------------------- hand-written NumPy

class NumpyMLP:
    """The MLP's parameters and Adam state as arrays, with a hand-derived training step."""

    def __init__(self, state):
        params, x, labels = state
        self.params = [params[k].copy() for k in NAMES]
        self.x, self.labels = x.copy(), labels.copy()
        self.exp_avg = [np.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [np.zeros_like(p) for p in self.params]
        self.steps = 0
        self.grads = None

    def step(self):
        self.grads = None                                           # zero_grad (set_to_none)
        w1, b1, w2, b2, w3, b3 = self.params
        x, batch = self.x, np.arange(BATCH_SIZE)
        h1 = x @ w1.T + b1                                          # forward
        a1 = np.maximum(h1, 0)
        h2 = a1 @ w2.T + b2
        a2 = np.maximum(h2, 0)
        logits = a2 @ w3.T + b3
        shifted = logits - logits.max(1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = -(shifted - log_z)[batch, self.labels].mean()
        g_logits = np.exp(shifted - log_z)                          # backward: softmax - onehot, / batch
        g_logits[batch, self.labels] -= 1
        g_logits /= BATCH_SIZE
        g_h2 = (g_logits @ w3) * (h2 > 0)
        g_h1 = (g_h2 @ w2) * (h1 > 0)
        self.grads = [g_h1.T @ x, g_h1.sum(0), g_h2.T @ a1, g_h2.sum(0), g_logits.T @ a2, g_logits.sum(0)]
        self.steps += 1                                             # Adam, in place
        correction1, correction2 = 1 - BETAS[0] ** self.steps, 1 - BETAS[1] ** self.steps
        for p, g, m, v in zip(self.params, self.grads, self.exp_avg, self.exp_avg_sq):
            m += (1 - BETAS[0]) * (g - m)
            v *= BETAS[1]
            v += (1 - BETAS[1]) * g * g
            p -= LR / correction1 * m / (np.sqrt(v) / math.sqrt(correction2) + EPS)
        return loss

    def state(self, loss):
        return float(loss), dict(zip(NAMES, self.grads)), dict(zip(NAMES, self.params))


# ---------------------------------------------------------------- correctness check

def _same(name, ref, got, rtol=1e-4):
    ref_loss, ref_grads, ref_params = ref
    loss, grads, params = got
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, err_msg=f"{name}: loss")
    for k in NAMES:
        assert grads[k].shape == ref_grads[k].shape and grads[k].dtype == ref_grads[k].dtype, (name, k)
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=rtol, atol=GRAD_TOLERANCE,
                                   err_msg=f"{name}: grad of {k}")
        atol = np.where(np.abs(ref_grads[k]) <= GRAD_TOLERANCE, LR, PARAM_TOLERANCE)
        off = np.abs(params[k] - ref_params[k]) > atol + rtol * np.abs(ref_params[k])
        np.testing.assert_allclose(params[k][off], ref_params[k][off], rtol=rtol, atol=PARAM_TOLERANCE,
                                   err_msg=f"{name}: {k} after step (the values out of tolerance)")


def check_steps(name, lib, state, steps, step=lib_step):
    """`steps` steps of `step` on a fresh `lib` model, each against the NumPy step."""
    args = lib_setup(lib, state)
    reference = NumpyMLP(state)
    for i in range(steps):
        loss = step(*args)
        _same(f"{name}, step {i + 1}", reference.state(reference.step()), lib_state(args[0], loss))


def check(state, use_torch):
    import fusegrad
    check_steps("fusegrad eager", fusegrad, state, 1)
    compiled = fusegrad.compile(lib_step)
    check_steps("fusegrad compiled", fusegrad, state, 4, compiled)
    assert compiled.replays > 0, f"fusegrad compiled: no replay in 4 steps ({compiled.last_reason})"
    if use_torch:
        import torch
        check_steps("torch eager", torch, state, 1)


# ---------------------------------------------------------------- cases

def cases(kinds, quick, out):
    state = initial_state()
    rows = training_step_cases(lib_step, lambda lib: lib_setup(lib, state), kinds, out, auto=True, compiled=True)
    if "torch.compile" in kinds:
        import torch
        args = lib_setup(torch, state)
        inductor = torch_compiled(lib_step, lambda: args, quick, out)
        if inductor is not None:
            rows.append(Case("torch.compile", inductor, lambda: args, "torch.compile"))
    if "numpy" in kinds:
        rows.append(Case("numpy (hand-written)", NumpyMLP(state).step, None, "numpy"))
    return rows


def run(repeats=None, quick=False, out=print_flush):
    """Check, then time the step; print and return [(title, results, target)]."""
    check(initial_state(), have("torch"))
    out("mlp_step: loss, gradients and updated parameters agree with the NumPy reference "
        "(fusegrad compiled: over its first 4 steps)")
    title = (f"mlp_step: MLP {'-'.join(map(str, SIZES))} Adam step (zero_grad, forward, cross-entropy, backward, "
             f"step), batch {BATCH_SIZE}")
    results = timed(cases, (), repeats or (QUICK_REPEATS if quick else REPEATS), QUICK_WARMUP if quick else WARMUP,
                    quick, out, collect_every=20)
    return step_report(title, results, COMPILED_TARGET, out)


def main(argv=None):
    standalone_main(__doc__, run, REPEATS, "steps", argv)


if __name__ == "__main__":
    main()
