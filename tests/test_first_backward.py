"""The first backward of a new structure runs each node's VJP rule at once, without deriving the
whole backward graph; the second sighting derives the graph (cached by structure), later ones fetch
it and, once it repeats, run it compiled. These tests hold the two paths to the same bits, and the
first one to finite differences, through what backward offers: several roots, `inputs=`,
`retain_graph`, hooks, in-place checks, freed saved values, custom Functions, integer operands,
frozen parts and capture."""
import gc
import weakref

import numpy as np
import pytest

import fusegrad as torch
from fusegrad.ir import Derivation
from fusegrad.runtime import backward_graphs, events
from test_custom_function import Cube, SplitScale


def sightings(run, count=3):
    """run() from an empty structure cache `count` times, with the kinds of the cache entries after
    each: the first sighting leaves a mark, the second a derived graph."""
    backward_graphs.clear()
    results, kinds = [], []
    for _ in range(count):
        results.append(run())
        kinds.append({type(entry) for entry in backward_graphs.entries.values()})
    assert Derivation not in kinds[0] and kinds[0], kinds
    assert kinds[1] == {Derivation}, kinds
    return results


def assert_same_bits(results):
    first, *later = results
    for other in later:
        assert len(other) == len(first)
        for a, b in zip(first, other):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(b, a)


def numeric_gradient(f, arrays, i, eps=1e-6):
    """d f(*arrays) / d arrays[i] by central differences, in float64."""
    x = arrays[i]
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shifted = []
        for sign in (1, -1):
            moved = [a.copy() for a in arrays]
            moved[i][index] += sign * eps
            shifted.append(f(*moved))
        grad[index] = (shifted[0] - shifted[1]) / (2 * eps)
    return grad


def grads(*tensors):
    return [None if t.grad is None else t.grad.detach().numpy().copy() for t in tensors]


def leaves(*arrays):
    return [torch.tensor(a, requires_grad=True) for a in arrays]


RNG = np.random.default_rng(7)
X = RNG.uniform(0.5, 2.0, (2, 3))
Y = RNG.uniform(0.5, 1.0, (2, 3))
Z = RNG.uniform(-1.0, 1.0, (2, 3))


def profiler_loop(x, y, z, steps=4):
    for _ in range(steps):
        z = (z / x) * y
    return z


def test_profiler_loop_first_backward_matches_derived_graph_and_finite_differences():
    def run():
        x, y, z = leaves(X, Y, Z)
        profiler_loop(x, y, z).sum().backward()
        return grads(x, y, z)

    results = sightings(run)
    assert_same_bits(results)
    loss = lambda x, y, z: profiler_loop(x, y, z).sum()  # noqa: E731  (NumPy arrays run the same loop)
    for i, got in enumerate(results[0]):
        np.testing.assert_allclose(got, numeric_gradient(loss, [X, Y, Z], i), rtol=1e-6, atol=1e-8)


def test_several_roots_with_given_cotangents():
    g1, g2 = RNG.standard_normal((2, 3)), RNG.standard_normal(3)

    def run():
        x, y = leaves(X, Y)
        h = x.sin() * y
        torch.autograd.backward([h * x, (h / y).sum(0)], [torch.tensor(g1), torch.tensor(g2)])
        return grads(x, y)

    results = sightings(run)
    assert_same_bits(results)

    def loss(x, y):
        h = np.sin(x) * y
        return np.sum(g1 * h * x) + np.sum(g2 * (h / y).sum(0))

    for i, got in enumerate(results[0]):
        np.testing.assert_allclose(got, numeric_gradient(loss, [X, Y], i), rtol=1e-6, atol=1e-8)


def test_inputs_restricts_what_is_accumulated_and_computed():
    def run():
        x, y = leaves(X, Y)
        h = x.exp()
        h.retain_grad()
        (h * y).tanh().sum().backward(inputs=[h, y])
        return grads(x, y, h)

    results = sightings(run)
    assert_same_bits(results)
    assert results[0][0] is None                     # x was not asked for
    t = np.tanh(np.exp(X) * Y)
    np.testing.assert_allclose(results[0][1], (1 - t * t) * np.exp(X))
    np.testing.assert_allclose(results[0][2], (1 - t * t) * Y)


def test_autograd_grad_of_an_intermediate_and_an_unused_input():
    def run():
        x, y, unused = leaves(X, Y, Z)
        h = x * x
        gh, gy, gu = torch.autograd.grad((h * y).sum(), (h, y, unused), allow_unused=True)
        assert gu is None and x.grad is None
        return [gh.numpy(), gy.numpy()]

    results = sightings(run)
    assert_same_bits(results)
    np.testing.assert_array_equal(results[0][0], Y)
    np.testing.assert_array_equal(results[0][1], X * X)


def test_retain_graph_then_a_second_backward_and_freed_values_without_it():
    x, y = leaves(X, Y)
    backward_graphs.clear()
    loss = (x.sin() * y).sum()
    loss.backward(retain_graph=True)      # first sighting: at once
    loss.backward()                       # second: the derived graph, on the same saved values
    np.testing.assert_array_equal(x.grad.numpy(), 2 * (np.cos(X) * Y))
    with pytest.raises(RuntimeError, match="^Trying to backward through the graph a second time"):
        loss.backward()

    backward_graphs.clear()
    loss = (x.cos() * y).sum()
    loss.backward()                        # a new structure, without retain_graph
    with pytest.raises(RuntimeError, match="^Trying to backward through the graph a second time"):
        loss.backward()


def test_saved_values_are_released_by_the_first_backward():
    backward_graphs.clear()
    x = leaves(X)[0]
    loss = x.exp().sin().sum()
    sin_node = loss.grad_fn.next_functions[0][0]
    saved = weakref.ref(sin_node.saved[0])      # exp's output: saved by exp and by sin, held by nothing else
    loss.backward()
    gc.collect()
    assert saved() is None
    np.testing.assert_allclose(x.grad.numpy(), np.cos(np.exp(X)) * np.exp(X))


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_hooks_run_once_each_in_order_and_match_the_graph_run_by_tracer_ops():
    def run(create_graph):
        calls = []
        x, y = leaves(X, Y)
        x.register_hook(lambda g: calls.append("x") or g * 2)
        x.register_post_accumulate_grad_hook(lambda t: calls.append("x accumulated"))
        h = x * y
        h.register_hook(lambda g: calls.append("h") or g + 1)
        out = h.sin()
        out.grad_fn.register_prehook(lambda gs: calls.append("sin pre-hook") or (gs[0] * 3,))
        out.sum().backward(create_graph=create_graph)
        return calls, grads(x, y)

    backward_graphs.clear()
    calls, at_once = run(create_graph=False)
    assert calls == ["sin pre-hook", "h", "x", "x accumulated"]
    assert not backward_graphs.entries          # hooks run Python: never cached by structure
    _, traced = run(create_graph=True)          # the derived graph, run with the tracer's ops
    assert_same_bits([at_once, traced])
    gh = 3 * np.cos(X * Y) + 1
    np.testing.assert_allclose(at_once[0], 2 * gh * Y)
    np.testing.assert_allclose(at_once[1], gh * X)


def _modified_saved_output():
    x = leaves(X)[0]
    h = x * 1.5
    e = h.exp()                 # exp saves its output
    loss = (e * e).sum()
    e.add_(1)
    return x, loss


def test_inplace_change_of_a_saved_value_raises_the_same_error_on_both_paths():
    backward_graphs.clear()
    messages = []
    for _ in range(2):          # first sighting at once, second through the derived graph
        x, loss = _modified_saved_output()
        with pytest.raises(RuntimeError) as error:
            loss.backward()
        messages.append(str(error.value))
        assert x.grad is None
    assert {type(entry) for entry in backward_graphs.entries.values()} == {Derivation}
    assert messages[0] == messages[1]
    assert messages[0].startswith("one of the variables needed for gradient computation has been modified by an "
                                  "inplace operation: [torch.DoubleTensor [2, 3]], saved by MulBackward0 (its input 0), "
                                  "is at version 1; expected version 0 instead.")


def test_inplace_change_of_a_saved_value_no_rule_reads_is_fine():
    def run():
        x = leaves(X)[0]
        c = torch.tensor(Y)                  # needs no gradient
        h = x + 0
        y = h * c                            # saves h, but only c's cotangent would read it
        h.add_(1)
        y.sum().backward()
        return grads(x)

    results = sightings(run)
    assert_same_bits(results)
    np.testing.assert_array_equal(results[0][0], Y)


def test_integer_and_boolean_operands():
    index = np.array([[2, 0, 1], [1, 1, 0]])
    mask = X > 1.0
    scale = np.array([[1, -2, 3], [4, 0, -1]])

    def run():
        x = leaves(X)[0]
        picked = x.gather(1, torch.tensor(index))
        mixed = torch.where(torch.tensor(mask), picked * torch.tensor(scale), x.exp())
        (mixed * mixed).sum().backward()
        return grads(x)

    results = sightings(run)
    assert_same_bits(results)

    def loss(x):
        picked = np.take_along_axis(x, index, 1)
        mixed = np.where(mask, picked * scale, np.exp(x))
        return np.sum(mixed * mixed)

    np.testing.assert_allclose(results[0][0], numeric_gradient(loss, [X], 0), rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_custom_functions_in_a_new_structure():
    def run(create_graph):
        x, y = leaves(X, Y)
        prod, sin, _ = SplitScale.apply(x, y)       # several outputs: a tuple of cotangents meets
        (Cube.apply(prod) / y + sin * 2).sum().backward(create_graph=create_graph)
        return grads(x, y)

    backward_graphs.clear()
    at_once = run(create_graph=False)
    assert_same_bits([at_once, run(create_graph=True)])
    np.testing.assert_allclose(at_once[0], 3 * X ** 2 * Y ** 2 + 2 * np.cos(X))
    np.testing.assert_allclose(at_once[1], 2 * X ** 3 * Y)


def test_frozen_operands_get_no_backward_work():
    weight = RNG.standard_normal((3, 4))
    names = []
    observer = lambda name, start, end, shapes: names.append(name)  # noqa: E731
    backward_graphs.clear()
    x = leaves(X)[0]
    loss = (x @ torch.tensor(weight)).tanh().sum()
    events.observers.append(observer)
    try:
        loss.backward()
    finally:
        events.observers.remove(observer)
    assert names.count("matmul") == 1          # x's cotangent only: the frozen weight gets none
    t = np.tanh(X @ weight)
    np.testing.assert_allclose(x.grad.numpy(), ((1 - t * t) @ weight.T))


def test_a_root_cotangent_passed_through_is_not_aliased():
    backward_graphs.clear()
    x = leaves(X)[0]
    g = torch.tensor(Y.copy())
    x.clone().backward(g)
    g.add_(1)
    np.testing.assert_array_equal(x.grad.numpy(), Y)


def test_second_sighting_derives_and_later_ones_compile(monkeypatch):
    from fusegrad.runtime import plan
    monkeypatch.setattr(plan, "COMPILE_AFTER", 2)

    def run():
        x, y, z = leaves(X, Y, Z)
        profiler_loop(x, y, z).sum().backward()
        return grads(x, y, z)

    results = sightings(run, count=4)
    graph = next(iter(backward_graphs.entries.values())).graph
    assert isinstance(plan._eager_plans.get(graph), plan.Plan)   # the graph's second run compiled it
    for compiled, first in zip(results[-1], results[0]):
        np.testing.assert_allclose(compiled, first, rtol=1e-12)


def test_capture_records_the_backward_of_a_new_structure():
    def step(x, y):
        (x.sin() * y).sum().backward()
        return x.grad

    compiled = torch.compile(step)
    backward_graphs.clear()
    for _ in range(3):
        x, y = leaves(X, Y)
        np.testing.assert_allclose(compiled(x, y).numpy(), np.cos(X) * Y)
    assert compiled.replays == 2


def _ops_and_grads(run):
    names = []
    observer = lambda name, start, end, shapes: names.append(name)  # noqa: E731
    events.observers.append(observer)
    try:
        result = run()
    finally:
        events.observers.remove(observer)
    return names, result


def test_transposes_of_x_at_w_t_cancel_on_both_paths():
    """In a whole graph, the cotangent of W in x @ W.t() is transposed back by W.t()'s own rule and
    Builder.permute cancels the two; the first backward takes both rules in one NodeVJP and runs
    the same ops, leaving a contiguous gradient, not a transposed view."""
    weight = RNG.standard_normal((4, 3))

    def run():
        x, w = leaves(X, weight)
        (x @ w.t()).sin().sum().backward()
        assert w.grad.numpy().flags.c_contiguous
        return grads(x, w)

    results = sightings(lambda: _ops_and_grads(run))
    assert results[0][0] == results[1][0] == results[2][0]
    assert results[0][0].count("permute") == 3       # w.t(); in backward only g.T and (w.t()).T, no transpose back
    assert_same_bits([r[1] for r in results])
    np.testing.assert_allclose(results[0][1][1], (np.cos(X @ weight.T)).T @ X)


def test_a_transpose_used_twice_or_hooked_is_differentiated_on_its_own():
    weight = RNG.standard_normal((4, 3))

    def run(hooked):
        x, w = leaves(X, weight)
        wt = w.t()
        if hooked:
            wt.register_hook(lambda g: g * 2)
        ((x @ wt).sin().sum() + (wt * wt).sum()).backward()
        return grads(x, w)

    assert_same_bits(sightings(lambda: run(False)))
    backward_graphs.clear()
    hooked = run(True)
    np.testing.assert_allclose(hooked[1], 2 * ((np.cos(X @ weight.T)).T @ X + 2 * weight))
