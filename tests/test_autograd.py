"""Autograd engine semantics: accumulation, retain_grad, hooks, grad modes, higher order, in-place
rules and version counters, the errors PyTorch users expect, and graph lifetime."""
import gc
import math
import weakref

import numpy as np
import pytest

import fusegrad as torch
from fusegrad.runtime import backward_graphs


def t64(*values, requires_grad=True):
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def test_grad_accumulates_across_backward_calls():
    x = t64(1.0, 2.0, 3.0)
    for _ in range(3):
        (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * 2 * np.array([1.0, 2.0, 3.0]))


def test_grad_tensor_is_accumulated_in_place():
    x = t64(1.0, 2.0)
    (x * 3).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    assert x.grad is first
    np.testing.assert_allclose(first.numpy(), [6.0, 6.0])


def test_gradients_of_broadcast_inputs_are_reduced_to_their_shape():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 1, dtype=torch.float64, requires_grad=True)
    ((x * y + b) ** 2).sum().backward()
    xs, ys, bs = x.detach().numpy(), y.detach().numpy(), b.detach().numpy()
    g = 2 * (xs * ys + bs[None])          # shape (2, 4, 3)
    np.testing.assert_allclose(x.grad.numpy(), (g * ys).sum(axis=(0, 1)))
    np.testing.assert_allclose(y.grad.numpy(), (g * xs).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(b.grad.numpy(), g.sum(axis=(0, 2))[:, None])


def test_non_leaf_grad_is_none_with_a_warning_unless_retained():
    x = t64(1.0, 2.0)
    y = x * 2
    z = y * y
    y.retain_grad()
    w = x + 1
    z.sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), 2 * y.detach().numpy())
    assert y.retains_grad and not w.retains_grad
    with pytest.warns(UserWarning, match="is not a leaf Tensor is being accessed"):
        assert w.grad is None


def test_grad_fn_names_next_functions_and_accumulate_grad_identity():
    a = torch.linspace(0.0, 1.0, 5, requires_grad=True)
    b = torch.sin(a)
    d = 2 * b + 1
    assert d.grad_fn.name() == "AddBackward0"
    (mul_fn, _), (none, index) = d.grad_fn.next_functions
    assert (mul_fn.name(), none, index) == ("MulBackward0", None, 0)
    (sin_fn, _), _ = mul_fn.next_functions
    assert sin_fn.name() == "SinBackward0" and repr(sin_fn).startswith("<SinBackward0 object at 0x")
    (acc, _), = sin_fn.next_functions
    assert acc.name() == "AccumulateGrad" and acc.variable is a and acc.next_functions == ()
    assert (a * 3).grad_fn.next_functions[0][0] is acc     # one AccumulateGrad per leaf
    assert a.grad_fn is None and a.is_leaf and not d.is_leaf
    # the reference tutorial's shorthand follows the first entry
    assert d.grad_fn.next_functions.next_functions[0][0] is sin_fn


def test_hooks_on_leaf_and_non_leaf_can_replace_the_gradient_and_be_removed():
    x = t64(1.0, 2.0)
    y = x * 3
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = x.register_hook(lambda g: g * 10)
    (y * y).sum().backward()
    np.testing.assert_allclose(seen[0], 2 * y.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), 10 * 3 * 2 * y.detach().numpy())
    handle.remove()
    x.grad = None
    (x * 1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_hook_on_tensor_not_requiring_grad_is_an_error():
    with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):
        torch.ones(2).register_hook(lambda g: g)


def test_grad_modes_as_context_managers_and_decorators():
    x = t64(1.0)
    with torch.no_grad():
        assert not torch.is_grad_enabled()
        assert (x * 2).grad_fn is None and not (x * 2).requires_grad
        with torch.enable_grad():
            assert (x * 2).requires_grad
    assert torch.is_grad_enabled()

    @torch.no_grad()
    def doubled(v):
        return v * 2

    @torch.enable_grad()
    def tracked(v):
        return v * 2

    assert not doubled(x).requires_grad
    with torch.no_grad():
        assert tracked(x).requires_grad
    torch.set_grad_enabled(False)
    assert not (x * 2).requires_grad
    torch.set_grad_enabled(True)
    with torch.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad
    with torch.inference_mode():
        assert not (x * 2).requires_grad
    with torch.inference_mode(False):
        assert (x * 2).requires_grad


def test_detach_requires_grad_and_detach_inplace():
    x = t64(1.0, 2.0)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None
    d[0] = 5.0                                     # shares memory with y
    assert y[0].item() == 5.0
    y.detach_()
    assert y.grad_fn is None and not y.requires_grad
    z = x * 2
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        z.requires_grad = False
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        torch.tensor([1, 2]).requires_grad_()


def test_second_order_gradients_through_create_graph():
    x = t64(0.5, -1.5, 2.0)
    y = (x ** 3).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    assert g.requires_grad and g.grad_fn is not None
    np.testing.assert_allclose(g.detach().numpy(), 3 * x.detach().numpy() ** 2)
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.detach().numpy())


def test_third_order_and_mixed_partials():
    x, y = t64(0.7), t64(-0.3)
    f = torch.sin(x * y) + x ** 2 * y
    (fx,) = torch.autograd.grad(f, x, create_graph=True)
    (fxy,) = torch.autograd.grad(fx, y, create_graph=True)
    (fxyx,) = torch.autograd.grad(fxy, x)
    xv, yv = 0.7, -0.3
    expected_fxy = math.cos(xv * yv) - xv * yv * math.sin(xv * yv) + 2 * xv
    expected_fxyx = (-2 * yv * math.sin(xv * yv) - xv * yv * yv * math.cos(xv * yv) + 2)
    assert fxy.item() == pytest.approx(expected_fxy)
    assert fxyx.item() == pytest.approx(expected_fxyx)


def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x = t64(2.0)
    with pytest.warns(UserWarning, match="create a reference cycle between the parameter and its gradient"):
        (x ** 4).backward(create_graph=True)
    assert x.grad.requires_grad
    (gg,) = torch.autograd.grad(x.grad, x)
    assert gg.item() == pytest.approx(12 * 2.0 ** 2)


def test_autograd_grad_returns_without_touching_dot_grad():
    x, y = t64(1.0, 2.0), t64(3.0, 4.0)
    gx, gy = torch.autograd.grad((x * y).sum(), (x, y))
    np.testing.assert_allclose(gx.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(gy.numpy(), [1.0, 2.0])
    assert x.grad is None and y.grad is None
    (gx,) = torch.autograd.grad(x * y, x, grad_outputs=t64(1.0, 0.5, requires_grad=False))
    np.testing.assert_allclose(gx.numpy(), [3.0, 2.0])


def test_grad_of_non_leaf_input_and_unused_inputs():
    x = t64(1.0, 2.0)
    h = x * 3
    out = (h * h).sum()
    (gh,) = torch.autograd.grad(out, h, retain_graph=True)
    np.testing.assert_allclose(gh.numpy(), 2 * h.detach().numpy())
    unused = t64(5.0)
    with pytest.raises(RuntimeError, match="One of the differentiated Tensors appears to not have been used in "
                                           "the graph. Set allow_unused=True"):
        torch.autograd.grad(out, (x, unused), retain_graph=True)
    gx, gu = torch.autograd.grad(out, (x, unused), allow_unused=True, retain_graph=True)
    assert gu is None
    _, gz = torch.autograd.grad(out, (x, unused), materialize_grads=True)
    assert gz.item() == 0.0


def test_backward_inputs_argument_limits_accumulation():
    x, y = t64(1.0), t64(2.0)
    (x * y).backward(inputs=[x])
    assert x.grad.item() == 2.0 and y.grad is None


# ----------------------------------------------------------------------------- errors


def test_backward_of_non_scalar_needs_a_gradient():
    y = t64(1.0, 2.0) * 2
    with pytest.raises(RuntimeError, match="^grad can be implicitly created only for scalar outputs$"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_output\[0\] has a shape of "
                                           r"torch.Size\(\[3\]\) and output\[0\] has a shape of "
                                           r"torch.Size\(\[2\]\)"):
        y.backward(torch.ones(3))


def test_backward_of_tensor_without_grad():
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does not have a "
                                           "grad_fn"):
        torch.ones(2).sum().backward()


def test_second_backward_through_freed_graph():
    x = t64(1.0, 2.0)
    y = (x.sin() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="^Trying to backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = t64(1.0, 2.0)
    y = (x.sin() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    xs = np.array([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.cos(xs) * xs + np.sin(xs)))


def test_graph_without_saved_values_can_be_backwarded_twice():
    x = t64(1.0, 2.0)
    y = (x + 1).sum()
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_inplace_on_leaf_requiring_grad():
    a = torch.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)
    message = "^a leaf Variable that requires grad is being used in an in-place operation.$"
    with pytest.raises(RuntimeError, match=message):
        torch.sin_(a)
    with pytest.raises(RuntimeError, match=message):
        a.add_(1)
    with pytest.raises(RuntimeError, match=message):
        a[0] = 1.0
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used in an "
                                           "in-place operation."):
        a[0:3].mul_(2)
    np.testing.assert_allclose(a.detach().numpy(), np.linspace(0, 2 * math.pi, 25, dtype=np.float32))
    with torch.no_grad():
        a.add_(1)                      # allowed without grad: an optimizer update
    assert a._version == 1


def test_inplace_change_of_a_saved_tensor_is_reported_at_backward_with_the_op_name():
    a = t64(0.5, 1.0)
    b = a * 1
    c = b.sin()
    b.add_(1)
    with pytest.raises(RuntimeError, match=r"one of the variables needed for gradient computation has been "
                                           r"modified by an inplace operation: \[torch.DoubleTensor \[2\]\], "
                                           r"saved by SinBackward0 \(its input 0\), is at version 1; expected "
                                           r"version 0 instead"):
        c.sum().backward()


def test_inplace_change_of_a_saved_output_through_a_view():
    a = t64(0.5, 1.0)
    e = a.exp()
    e[0:1].mul_(2)                     # the view shares e's version counter
    with pytest.raises(RuntimeError, match=r"saved by ExpBackward0 \(its output\)"):
        e.sum().backward()


def test_inplace_ops_on_non_leaves_are_differentiated():
    a = t64(1.0, 2.0)
    x = a * 1
    x.mul_(a)                          # x = a * a
    x.add_(3)
    x.sin_()
    x.sum().backward()
    av = np.array([1.0, 2.0])
    np.testing.assert_allclose(a.grad.numpy(), np.cos(av * av + 3) * 2 * av)
    assert x.grad_fn.name() == "SinBackward0"


def test_setitem_with_grad_flows_to_value_and_base():
    a = t64(1.0, 2.0, 3.0)
    v = t64(10.0)
    x = a * 2
    x[1] = v * v
    x[a.detach() > 2.5] = 0.0
    (x * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 0.0, 0.0])
    np.testing.assert_allclose(v.grad.numpy(), [2.0 * 2 * 10.0])
    assert x.grad_fn.name() == "IndexPutBackward0"     # a boolean-mask write, as PyTorch names it


def test_setitem_and_inplace_without_grad_write_through_views():
    x = torch.zeros(2, 3)
    row = x[1]
    row[1:] = torch.tensor([5.0, 6.0])
    x[0, 0] = 7
    x[:, 0] += 1
    np.testing.assert_array_equal(x.numpy(), [[8, 0, 0], [1, 5, 6]])


def test_inplace_dtype_and_shape_errors():
    with pytest.raises(RuntimeError, match="result type float32 can't be cast to the desired output type int64"):
        torch.tensor([1, 2]).add_(0.5)
    with pytest.raises(RuntimeError, match=r"output with shape \[3\] doesn't match the broadcast shape \[2, 3\]"):
        torch.zeros(3).add_(torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="unsupported operation: more than one element of the written-to "
                                           "tensor refers to a single memory location"):
        torch.zeros(1).expand(3).add_(1)


def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(RuntimeError, match=r"^add: shapes \[2, 3\] and \[4\] are not broadcastable: the size "
                                           r"of tensor a \(3\) must match the size of tensor b \(4\) at "
                                           r"non-singleton dimension 1$"):
        torch.ones(2, 3) + torch.ones(4)
    with pytest.raises(RuntimeError, match=r"^matmul: shapes \[2, 3\] and \[4, 5\] cannot be multiplied "
                                           r"\(2x3 and 4x5\)$"):
        torch.ones(2, 3) @ torch.ones(4, 5)


def test_dim_out_of_range():
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but "
                                         r"got 2\)"):
        torch.ones(2, 3).sum(2)


# ----------------------------------------------------------------------------- lifetime and caching


def test_graph_is_freed_when_its_tensors_die():
    x = t64(1.0, 2.0)
    y = (x * 2).sin()
    node = weakref.ref(y.grad_fn)
    inner = weakref.ref(y.grad_fn.next_functions[0][0])
    del y
    assert node() is None and inner() is None     # freed by reference counting, no cycles


def test_leaf_accumulate_node_does_not_keep_a_cycle():
    x = t64(1.0)
    y = x * 2
    acc = weakref.ref(y.grad_fn.next_functions[0][0])
    leaf = weakref.ref(x)
    del x, y
    assert acc() is None and leaf() is None


def test_long_eager_training_loop_runs_in_flat_memory():
    import tracemalloc
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = torch.randn(32, 8), torch.randn(32, 1)

    def steps(n):
        for _ in range(n):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), target)
            loss.backward()
            opt.step()
        return loss.item()

    steps(200)
    gc.collect()
    tracemalloc.start()
    steps(1000)
    after_1k = tracemalloc.get_traced_memory()[0]
    final = steps(9000)
    after_10k = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert math.isfinite(final)
    assert after_10k - after_1k < 64 * 1024, (after_1k, after_10k)


def test_repeated_structure_reuses_the_backward_graph_with_identical_results():
    backward_graphs.clear()
    results = []
    for i in range(3):
        x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
        scale = torch.tensor(float(i + 1), dtype=torch.float64)   # a constant tensor: same structure
        y = torch.tensor([1.5, 0.5, -0.7], dtype=torch.float64, requires_grad=True) * scale
        ((x / y).tanh() * x.exp()).sum().backward()
        results.append(x.grad.numpy())
    assert backward_graphs.misses == 1 and backward_graphs.hits == 2
    for i, grad in enumerate(results):
        xs, ys = np.array([0.3, -1.2, 2.0]), np.array([1.5, 0.5, -0.7]) * (i + 1)
        t = np.tanh(xs / ys)
        np.testing.assert_allclose(grad, (1 - t * t) / ys * np.exp(xs) + t * np.exp(xs))


def test_structure_cache_distinguishes_python_scalars_and_shapes():
    backward_graphs.clear()
    x = t64(1.0, 2.0)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])
    z = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (z * 2).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [2.0, 2.0, 2.0])
    assert backward_graphs.hits == 0


def test_recorded_and_backward_graphs_print_as_python_like_text():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * 2).sin().sum()
    assert str(torch.autograd.graph.forward_graph(y)) == (
        "def graph(%0: f32[3]):\n"
        "    %1 = mul(%0, 2)  # f32[3]\n"
        "    %2 = sin(%1)  # f32[3]\n"
        "    %3 = sum(%2, axes=(0,), keepdim=False)  # f32[]\n"
        "    return %3")
    text = str(torch.autograd.graph.backward_graph(y))
    assert text.startswith("def graph(%0: f32[], ")
    assert "= cos(" in text and "= mul(" in text and "= expand(" in text


def test_inplace_through_views_rewrites_the_base_history():
    a = t64(1.0, 2.0, 3.0, 4.0)
    x = a * 1
    x[1:3].mul_(a[1:3])                    # x = [a0, a1², a2², a3]
    x.reshape(2, 2).t()[0].add_(10)        # a view of a view: x[0] and x[2] += 10
    assert x.grad_fn.name() == "CopySlices"
    (x * x).sum().backward()
    av = np.array([1.0, 2.0, 3.0, 4.0])
    xv = np.array([av[0] + 10, av[1] ** 2, av[2] ** 2 + 10, av[3]])
    np.testing.assert_allclose(x.detach().numpy(), xv)
    np.testing.assert_allclose(a.grad.numpy(), [2 * xv[0], 2 * xv[1] * 2 * av[1], 2 * xv[2] * 2 * av[2],
                                                2 * xv[3]])


def test_writing_a_constant_through_a_view_zeroes_that_part_of_the_gradient():
    a = t64(1.0, 2.0, 3.0)
    x = a * 2
    x[0:1].zero_()
    x.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 2.0, 2.0])


def test_setitem_drops_leading_size_one_dims_of_the_value():
    x = torch.zeros(3)
    x[1] = torch.tensor([5.0])
    x[0:2] = torch.tensor([[1.0, 2.0]])
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0, 0.0])


def test_gradcheck_catches_a_wrong_gradient_and_warns_about_single_precision():
    from fusegrad.autograd.gradcheck import GradcheckError
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: (a * a.sin()).sum(), (x,))
    assert torch.autograd.gradgradcheck(lambda a: a * a.sin(), (x,))
    with pytest.raises(GradcheckError, match="Jacobian mismatch for output 0 with respect to input 0"):
        torch.autograd.gradcheck(lambda a: a.detach() * a, (x,))    # detach hides half the derivative
    assert not torch.autograd.gradcheck(lambda a: a.detach() * a, (x,), raise_exception=False)
    y = torch.randn(3, requires_grad=True)
    with pytest.warns(UserWarning, match="Input #1 requires gradient and is not a double precision"):
        torch.autograd.gradcheck(lambda a, b: a * b, (x, y), atol=1e-2, rtol=1e-2)


def test_structure_cache_tells_signed_zeros_apart_and_ignores_scalars_no_vjp_reads():
    backward_graphs.clear()
    x = t64(1.0, 2.0)
    (x / 0.0).sum().backward()
    assert x.grad.tolist() == [math.inf, math.inf]
    x.grad = None
    (x / -0.0).sum().backward()
    assert x.grad.tolist() == [-math.inf, -math.inf]
    misses = backward_graphs.misses
    for i in range(5):
        (x + float(i)).sum().backward()     # add's VJP never reads the scalar: one graph serves all
    assert backward_graphs.misses == misses + 1


def test_backward_frees_only_the_nodes_it_ran():
    x = t64(0.5, 1.0)
    h = x.sin()
    y = (h * h).sum()
    (gh,) = torch.autograd.grad(y, h)
    np.testing.assert_allclose(gh.numpy(), 2 * np.sin([0.5, 1.0]))
    h.sum().backward()                       # sin's node did not run above, so it still has its saves
    np.testing.assert_allclose(x.grad.numpy(), np.cos([0.5, 1.0]))


def test_in_place_change_of_a_saved_value_no_gradient_reads_is_not_an_error():
    a = t64(1.0, 2.0)
    c = torch.tensor([3.0, 4.0], dtype=torch.float64)
    b = (a * c).sum()                        # mul saves a and c; a's gradient reads only c
    with torch.no_grad():
        a.add_(1)
    b.backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])


def test_integer_indexing_to_zero_dims_is_a_view():
    b = torch.arange(3.0)
    b[0].mul_(10)
    b.unbind(0)[2].fill_(7)
    assert b.tolist() == [0.0, 1.0, 7.0]
    a = t64(1.0, 2.0, 3.0)
    y = a * 1
    y[0].mul_(5)
    y.sum().backward()
    assert a.grad.tolist() == [5.0, 1.0, 1.0]


def test_integer_results_never_require_grad():
    x = t64(1.5, 2.5)
    assert not x.long().requires_grad and not (x * 2).argmax().requires_grad
    assert not (x > 2).requires_grad


def test_hooks_under_create_graph_stay_differentiable():
    x = t64(1.0, 2.0)
    y = x * 3
    y.register_hook(lambda g: g * 2)
    (g,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), [36.0, 72.0])
    (gg,) = torch.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), [72.0, 72.0])        # PyTorch gives the same


def test_hook_results_are_checked_and_never_aliased():
    held = torch.ones(2, dtype=torch.float64)
    w = t64(1.0, 2.0)
    w.register_hook(lambda g: held)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    assert held.tolist() == [1.0, 1.0] and w.grad.tolist() == [2.0, 2.0]
    v = t64(1.0, 2.0)
    v.register_hook(lambda g: g.sum())
    with pytest.raises(RuntimeError, match=r"hook '<lambda>' has changed the size of value"):
        (v * 1).sum().backward()


def test_create_graph_gradients_are_not_shared_between_leaves_or_with_the_caller():
    a, b = t64(1.0), t64(2.0)
    seed = torch.ones(1, dtype=torch.float64)
    with pytest.warns(UserWarning, match="reference cycle"):
        (a + b).backward(seed, create_graph=True)
    assert a.grad is not b.grad and a.grad is not seed
    a.grad.add_(5)
    assert b.grad.item() == 1.0 and seed.item() == 1.0


def test_overwriting_in_place_keeps_a_tensor_in_the_graph_with_zero_gradient():
    x = t64(1.0, 2.0, 3.0)
    for overwrite in (lambda t: t.zero_(), lambda t: t.fill_(2.0), lambda t: t.uniform_(),
                      lambda t: t.copy_(torch.zeros(3, dtype=torch.float64))):
        y = x * 3
        overwrite(y)
        assert y.requires_grad
        y.sum().backward()
        assert x.grad.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        x[0:2].uniform_()


def test_copy_of_a_grad_requiring_tensor_gives_the_overwritten_value_a_zero_gradient():
    # found by the differential fuzz: PyTorch gives what the old value came from zeros, not None
    x, s = t64(1.0, 2.0), t64(3.0)
    y = x * 3
    y.copy_(s * 2)
    assert y.grad_fn.name() == "CopyBackwards"
    (y * y).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0] and s.grad.tolist() == [48.0]


def test_inplace_write_through_an_expand_that_broadcasts_nothing():
    x = t64(1.0, 2.0, 3.0)
    a = x * 2
    a.expand(1, 1, 3).mul_(x)             # PyTorch allows it: no element stands for several
    a.sum().backward()
    assert a.detach().tolist() == [2.0, 8.0, 18.0] and x.grad.tolist() == [4.0, 8.0, 12.0]
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor refers to a single "
                                           "memory location"):
        (x * 2).unsqueeze(0).expand(2, 3).add_(1)


def test_grad_assignment_and_backward_inputs_are_validated():
    x = t64(1.0, 2.0)
    with pytest.raises(RuntimeError, match="assigned grad has data of a different type: expected torch.float64, "
                                           "got torch.float32"):
        x.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="One of the differentiated Tensors does not require grad"):
        (x * 2).sum().backward(inputs=[torch.ones(2)])
    with pytest.raises(NotImplementedError, match="is_grads_batched"):
        torch.autograd.grad((x * 2).sum(), x, is_grads_batched=True)


def test_views_see_writes_made_through_their_base_or_other_views():
    a = t64(1.0, 2.0, 3.0)
    b = a * 1
    v = b[:2]
    b.mul_(10)
    (v * 1).sum().backward()
    assert a.grad.tolist() == [10.0, 10.0, 0.0]            # PyTorch: the view's grad_fn is regenerated

    a = t64(1.0, 2.0, 3.0)
    b = a * 1
    first, second = b[0:2], b[1:3]                          # overlapping views
    first.mul_(3)
    (second * second).sum().backward()
    assert a.grad.tolist() == [0.0, 36.0, 6.0]

    a = t64(1.0, 2.0, 3.0)
    b = a * 1
    b.retain_grad()
    b[0:1].mul_(2)
    b.sum().backward()
    assert b.retains_grad and b.grad.tolist() == [1.0, 1.0, 1.0] and a.grad.tolist() == [2.0, 1.0, 1.0]


def test_grad_mode_is_per_thread():
    import threading
    seen = {}

    def worker():
        seen["starts_enabled"] = torch.is_grad_enabled()
        with torch.no_grad():
            seen["inside"] = torch.is_grad_enabled()
            started.set()
            resume.wait(5)

    started, resume = threading.Event(), threading.Event()
    thread = threading.Thread(target=worker)
    with torch.no_grad():
        thread.start()
        started.wait(5)
    assert torch.is_grad_enabled()            # the other thread's no_grad does not leak here
    resume.set()
    thread.join()
    assert seen == {"starts_enabled": True, "inside": False}


def test_inplace_on_a_plain_tensor_with_a_grad_requiring_operand():
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    w = t64(3.0, 4.0)
    b.mul_(w)                      # mul saves b's old value: it must survive the write
    b.add_(w)
    (b * b).sum().backward()
    bv = np.array([1.0, 2.0]) * np.array([3.0, 4.0]) + np.array([3.0, 4.0])
    np.testing.assert_allclose(w.grad.numpy(), 2 * bv * (np.array([1.0, 2.0]) + 1))


def test_inplace_on_a_view_made_without_grad_is_refused_under_grad():
    a = t64(1.0, 2.0)
    b = a * 2
    with torch.no_grad():
        v = b[0:1]
    with pytest.raises(RuntimeError, match="A view was created in no_grad mode and is being modified inplace "
                                           "with grad mode enabled"):
        v.mul_(3)
    with torch.no_grad():
        v.mul_(3)                       # both inside no_grad: allowed, not tracked
    assert b.detach().tolist() == [6.0, 4.0]


def test_no_grad_and_enable_grad_decorate_with_or_without_parentheses():
    x = t64(1.0)

    @torch.no_grad
    def bare(v):
        return v * 2

    @torch.enable_grad
    def tracked(v):
        return v * 2

    assert not bare(x).requires_grad and bare.__name__ == "bare"
    with torch.no_grad():
        assert tracked(x).requires_grad


def test_fuzz_found_cases_match_pytorch():
    # a write through a view taken before an in-place change of its base
    x = t64(1.0, 2.0)
    a = x * 1
    v = a[:]
    a.mul_(2)
    v.mul_(x)
    a.sum().backward()
    assert x.grad.tolist() == [4.0, 8.0]
    # norm and std have zero gradient where they are zero (PyTorch masks the 0 * inf)
    z = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    (z.norm() + (z + 1).std(correction=0) + torch.norm(z, dim=0)).backward()
    assert z.grad.tolist() == [0.0, 0.0]
    # softmax, log_softmax and max(dim) of 0-d tensors
    s = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (torch.softmax(s * 2, 0) + torch.log_softmax(s, -1) + s.max(dim=0).values).backward()
    assert s.grad.item() == 1.0 and s.max(dim=0).indices.item() == 0


def test_boolean_and_integer_power_rules_follow_pytorch():
    with pytest.raises(RuntimeError, match="Subtraction, the `-` operator, with a bool tensor is not supported"):
        torch.tensor([1.5]) - True
    with pytest.raises(NotImplementedError, match="\"floor_divide\" not implemented for 'Bool'"):
        torch.tensor([True]) // torch.tensor([True])
    assert (torch.tensor([True, False]) ** False).tolist() == [True, True]
    assert (torch.tensor([2, 1, -1, -1, 0, 3]) ** torch.tensor([-2, -3, -3, -2, -1, 0])).tolist() == [
        0, 1, -1, 1, 0, 1]
    r = 2 ** torch.tensor([1, -2, 3], dtype=torch.int32)
    assert r.dtype is torch.int32 and r.tolist() == [2, 0, 8]


def test_integer_tensor_to_a_negative_python_int_power_is_refused():
    with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed."):
        torch.tensor(1, dtype=torch.int32) ** -3
    with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed."):
        torch.tensor([True, False]).pow(-2)     # found by the differential fuzz
