"""Tests for fusegrad.autograd.functional: the tutorial cases, analytic results, create_graph, strict
and bad-`v` errors, and torch.autograd.functional itself as an oracle (values, structure, dtypes,
requires_grad, error types and messages)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad.autograd.functional import hessian, hvp, jacobian, jvp, vhp, vjp

F = {"jacobian": jacobian, "hessian": hessian, "vjp": vjp, "jvp": jvp, "vhp": vhp, "hvp": hvp}


def arr(t):
    return np.asarray(t.detach().numpy())


# ---------------------------------------------------------------- the tutorial cases

def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


@pytest.mark.parametrize("n", [1, 3])
def test_tutorial_jacobian_exp_adder(n):
    inputs = (fg.rand(n), fg.rand(n))
    jx, jy = jacobian(exp_adder, inputs)
    assert jx.shape == (n, n) and jy.shape == (n, n)
    np.testing.assert_allclose(arr(jx), np.diag(2 * np.exp(arr(inputs[0]))), rtol=1e-6)
    np.testing.assert_allclose(arr(jy), 3 * np.eye(n))
    assert not jx.requires_grad and not jy.requires_grad


def do_some_doubling(x):
    y = x * 2
    while y.data.norm() < 1000:
        y = y * 2
    return y


def test_tutorial_vjp_doubling():
    x = fg.randn(3)
    out, grad_x = vjp(do_some_doubling, x, v=fg.tensor([0.1, 1.0, 0.0001]))
    scale = arr(out)[0] / arr(x)[0]  # the power of two the loop stopped at
    np.testing.assert_allclose(arr(out), scale * arr(x), rtol=1e-5)
    np.testing.assert_allclose(arr(grad_x), scale * np.array([0.1, 1.0, 0.0001], np.float32), rtol=1e-5)


# ---------------------------------------------------------------- torch-free, analytic results

def cube_sum(x):
    return (x ** 3).sum()


def test_hessian_of_cube_sum_is_diag_6x():
    x = fg.rand(4, dtype=fg.float64)
    np.testing.assert_allclose(arr(hessian(cube_sum, x)), np.diag(6 * arr(x)))


def test_hvp_vhp_equal_hessian_times_v():
    x, v = fg.rand(4, dtype=fg.float64), fg.rand(4, dtype=fg.float64)
    h = arr(hessian(cube_sum, x))
    for product in (hvp, vhp):
        value, hv = product(cube_sum, x, v)
        np.testing.assert_allclose(arr(value), np.sum(arr(x) ** 3))
        np.testing.assert_allclose(arr(hv), h @ arr(v))


def test_jvp_and_vjp_agree_with_jacobian_of_matrix_function():
    a, b = fg.rand(2, 3, dtype=fg.float64), fg.rand(3, 4, dtype=fg.float64)
    va, vb = fg.rand(2, 3, dtype=fg.float64), fg.rand(3, 4, dtype=fg.float64)
    u = fg.rand(2, 4, dtype=fg.float64)
    f = lambda a, b: (a @ b).sin()  # noqa: E731
    ja, jb = jacobian(f, (a, b))
    assert ja.shape == (2, 4, 2, 3) and jb.shape == (2, 4, 3, 4) and ja.dtype == fg.float64
    _, tangent = jvp(f, (a, b), (va, vb))
    expected = np.einsum("ijkl,kl->ij", arr(ja), arr(va)) + np.einsum("ijkl,kl->ij", arr(jb), arr(vb))
    np.testing.assert_allclose(arr(tangent), expected)
    _, (ga, gb) = vjp(f, (a, b), u)
    np.testing.assert_allclose(arr(ga), np.einsum("ij,ijkl->kl", arr(u), arr(ja)))
    np.testing.assert_allclose(arr(gb), np.einsum("ij,ijkl->kl", arr(u), arr(jb)))


def test_structure_of_multiple_inputs_and_outputs():
    x, y = fg.rand(2), fg.rand(3)
    f = lambda x, y: (x.exp(), y.sum() * x.sum())  # noqa: E731
    jac = jacobian(f, (x, y))
    assert [[tuple(j.shape) for j in row] for row in jac] == [[(2, 2), (2, 3)], [(2,), (3,)]]
    np.testing.assert_array_equal(arr(jac[0][1]), np.zeros((2, 3)))  # independent: zeros, not None
    assert jacobian(lambda x: (x.exp(),), x)[0].shape == (2, 2)  # tuple out, tensor in
    h = hessian(lambda x, y: (x.sum() * y.sum()), (x, y))
    assert [[tuple(j.shape) for j in row] for row in h] == [[(2, 2), (2, 3)], [(3, 2), (3, 3)]]
    np.testing.assert_array_equal(arr(h[0][1]), np.ones((2, 3)))


def test_v_defaults_to_one_for_single_elements():
    x = fg.tensor([0.5])
    assert arr(vjp(lambda x: x.exp().sum(), fg.rand(3))[1]).shape == (3,)
    np.testing.assert_allclose(arr(jvp(lambda x: x.exp(), x)[1]), np.exp([0.5]), rtol=1e-6)
    np.testing.assert_allclose(arr(hvp(lambda x: (x ** 3).sum(), x)[1]), [3.0], rtol=1e-6)
    np.testing.assert_allclose(arr(vhp(lambda x: (x ** 3).sum(), x)[1]), [3.0], rtol=1e-6)


def test_inputs_are_not_modified_and_grad_mode_is_kept():
    x = fg.rand(3)
    with fg.no_grad():
        out, g = vjp(lambda x: x.sin(), x, fg.ones(3))
        assert not fg.is_grad_enabled()
    assert not x.requires_grad and x.grad is None and not out.requires_grad and not g.requires_grad


# ---------------------------------------------------------------- create_graph=True

def test_results_keep_the_dtype_of_what_they_are_taken_with_respect_to():
    x = fg.rand(3)  # float32, through VJPs with Python-scalar constants (2 * x, x ** 3)
    for create_graph in (False, True):
        assert jacobian(lambda x: 2 * x.exp(), x, create_graph=create_graph).dtype == fg.float32
        assert hessian(cube_sum, x, create_graph=create_graph).dtype == fg.float32
        assert vjp(lambda x: 2 * x, x, x, create_graph=create_graph)[1].dtype == fg.float32
        assert jvp(lambda x: 2 * x, x, x, create_graph=create_graph)[1].dtype == fg.float32
        assert hvp(cube_sum, x, x, create_graph=create_graph)[1].dtype == fg.float32
        assert vhp(cube_sum, x, x, create_graph=create_graph)[1].dtype == fg.float32


def test_create_graph_results_can_be_differentiated_again():
    x = fg.rand(3, dtype=fg.float64, requires_grad=True)
    h = hessian(cube_sum, x, create_graph=True)
    assert h.requires_grad
    h.sum().backward()  # d/dx sum(diag(6x)) = 6
    np.testing.assert_allclose(arr(x.grad), np.full(3, 6.0))

    v = fg.rand(3, dtype=fg.float64)
    _, hv = hvp(cube_sum, x, v, create_graph=True)
    (g,) = fg.autograd.grad(hv.sum(), x)  # d/dx sum(6 x v) = 6 v
    np.testing.assert_allclose(arr(g), 6 * arr(v))

    out, jv = jvp(lambda x: x.exp(), x, v, create_graph=True)
    assert out.requires_grad and jv.requires_grad
    (g,) = fg.autograd.grad(jv.sum(), x)
    np.testing.assert_allclose(arr(g), np.exp(arr(x)) * arr(v))


def test_without_create_graph_results_are_detached():
    x = fg.rand(3, requires_grad=True)
    for result in (jacobian(lambda x: x.exp(), x), hessian(cube_sum, x), vjp(lambda x: x.exp(), x, x)[1],
                   vhp(cube_sum, x, x)[1], hvp(cube_sum, x, x)[1], jvp(lambda x: x.exp(), x, x)[1]):
        assert not result.requires_grad and result.grad_fn is None


# ---------------------------------------------------------------- errors (exact types and messages)

def unused_second(x, y):
    return x.exp().sum()


STRICT_ERRORS = [
    (jacobian, unused_second, "Output 0 of the user-provided function is independent of input 1. "
                              "This is not allowed in strict mode."),
    (vjp, unused_second, "The output of the user-provided function is independent of input 1. "
                         "This is not allowed in strict mode."),
    (hessian, lambda x: x.sum() * 2, "While computing the hessian, found that the jacobian of the "
                                     "user-provided function with respect to input 0 is independent"),
    (jacobian, lambda x: x.detach(), "Output 0 of the user-provided function does not require gradients."),
]


@pytest.mark.parametrize("fn, func, message", STRICT_ERRORS)
def test_strict_errors(fn, func, message):
    inputs = (fg.rand(2), fg.rand(2)) if func is unused_second else fg.rand(2)
    fn(func, inputs)  # not strict: fine
    with pytest.raises(RuntimeError) as info:
        fn(func, inputs, strict=True)
    assert str(info.value).startswith(message)


def test_bad_v_errors():
    x = fg.rand(3)
    with pytest.raises(RuntimeError, match="^The vector v can only be None if the user-provided function "
                                           "returns a single Tensor with a single element.$"):
        vjp(lambda x: x.exp(), x)
    with pytest.raises(RuntimeError, match="^The vector v can only be None if the input to the user-provided "
                                           "function is a single Tensor with a single element.$"):
        jvp(lambda x: x.exp(), x)
    with pytest.raises(RuntimeError, match=r"^v has invalid size: should be torch.Size\(\[3\]\) but got "
                                           r"torch.Size\(\[2\]\).$"):
        vjp(lambda x: x.exp(), x, fg.ones(2))
    with pytest.raises(RuntimeError, match=r"^Entry 1 in v has invalid size"):
        hvp(lambda x, y: (x * y).sum(), (x, x), (fg.ones(3), fg.ones(2)))
    with pytest.raises(RuntimeError, match="^v is a tuple of invalid length: should be 2 but got 1.$"):
        vhp(lambda x, y: (x * y).sum(), (x, x), (fg.ones(3),))
    with pytest.raises(RuntimeError, match="^The given v should contain a single Tensor.$"):
        jvp(lambda x: x.exp(), x, (fg.ones(3), fg.ones(3)))
    with pytest.raises(TypeError, match="^The inputs given to jacobian must be either a Tensor or a tuple "
                                        "of Tensors but the given inputs has type <class 'list'>.$"):
        jacobian(lambda x: x, [x])
    with pytest.raises(RuntimeError, match="^The Tensor returned by the function given to hessian should "
                                           "contain a single element$"):
        hessian(lambda x: x ** 2, x)


# ---------------------------------------------------------------- PyTorch as an oracle

def _exp_reducer(x):
    return x.exp().sum(dim=1)


def _multi_output(x, y):
    return x * y.sin(), (x ** 2).sum() * y.sum(), x.exp()


def _matmul_tanh(a, b):
    return (a @ b).tanh()


def _scalar_two_inputs(x, y):
    return (x ** 3).sum() + (x * y.exp()).sum() + (y ** 2).sum()


def _scalar_matrix(w):
    return ((w @ w).sin() * w).sum()


def _linear(x, y):
    return 2 * x + 3 * y


def _one_input_unused(x, y):
    return (x ** 2).sum()


def _linear_in_second(x, y):
    return (3 * x ** 2).sum() + y.sum()


def _constant_output(x):
    return x.detach() * 2


# name: (function, input shapes, dtype, returns a single element)
CASES = {
    "exp_reducer": (_exp_reducer, [(4, 4)], np.float32, False),
    "exp_adder": (exp_adder, [(3,), (3,)], np.float32, False),
    "multi_output": (_multi_output, [(3,), (3,)], np.float64, False),
    "matmul_tanh": (_matmul_tanh, [(2, 3), (3, 2)], np.float64, False),
    "scalar_two_inputs": (_scalar_two_inputs, [(3,), (3,)], np.float64, True),
    "scalar_matrix": (_scalar_matrix, [(2, 2)], np.float64, True),
    "linear": (_linear, [(2,), (2,)], np.float32, False),
    "one_input_unused": (_one_input_unused, [(2,), (3,)], np.float64, True),
    "linear_in_second": (_linear_in_second, [(2,), (2,)], np.float32, True),
    "constant_output": (_constant_output, [(3,)], np.float32, False),
}


def _compare(ours, theirs, path="result"):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _compare(a, b, f"{path}[{i}]")
        return
    assert isinstance(ours, fg.Tensor), path
    assert tuple(ours.shape) == tuple(theirs.shape), path
    assert str(ours.dtype) == str(theirs.dtype), path
    assert ours.requires_grad == theirs.requires_grad, path
    np.testing.assert_allclose(arr(ours), theirs.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=path)


def _call(lib, fn_name, name, create_graph=False, strict=False, requires_grad=False):
    """fn_name on case `name` run by `lib` (fusegrad or torch): (inputs, result, error raised)."""
    func, shapes, dtype, _ = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name + fn_name)))  # the same draws for both libraries
    xs = tuple(lib.tensor(rng.uniform(0.1, 1.0, s).astype(dtype), requires_grad=requires_grad) for s in shapes)
    kwargs = {"create_graph": create_graph, "strict": strict}
    if fn_name in ("vjp", "jvp", "vhp", "hvp"):
        with lib.no_grad():
            like = func(*xs) if fn_name == "vjp" else xs if len(xs) > 1 else xs[0]
        draw = lambda t: lib.tensor(rng.uniform(-1, 1, tuple(t.shape)).astype(dtype))  # noqa: E731
        kwargs["v"] = tuple(map(draw, like)) if isinstance(like, tuple) else draw(like)
    fn = F[fn_name] if lib is fg else getattr(lib.autograd.functional, fn_name)
    try:
        return xs, fn(func, xs if len(xs) > 1 else xs[0], **kwargs), None
    except Exception as error:  # noqa: BLE001  (the oracle decides which errors are right)
        return xs, None, error


def _run_both(name, fn_name, **kwargs):
    torch = pytest.importorskip("torch")
    return _call(fg, fn_name, name, **kwargs), _call(torch, fn_name, name, **kwargs)


def _oracle_params():
    for name, (_, _, _, scalar) in CASES.items():
        for fn_name in ("jacobian", "vjp", "jvp") + (("hessian", "vhp", "hvp") if scalar else ()):
            yield name, fn_name


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("name, fn_name", list(_oracle_params()))
def test_matches_torch(name, fn_name, create_graph):
    (_, ours, error), (_, theirs, their_error) = _run_both(name, fn_name, create_graph=create_graph)
    assert their_error is None and error is None, (error, their_error)
    _compare(ours, theirs)


@pytest.mark.parametrize("name, fn_name", list(_oracle_params()))
def test_strict_matches_torch(name, fn_name):
    for create_graph in (False, True):
        (_, ours, error), (_, theirs, their_error) = _run_both(name, fn_name, create_graph=create_graph,
                                                               strict=True)
        assert type(error) is type(their_error), (error, their_error)
        if their_error is None:
            _compare(ours, theirs)
        else:
            assert str(error) == str(their_error)


SECOND_ORDER_CASES = ("multi_output", "matmul_tanh", "scalar_two_inputs", "scalar_matrix")


@pytest.mark.parametrize("name, fn_name", [p for p in _oracle_params() if p[0] in SECOND_ORDER_CASES])
def test_second_order_through_create_graph_matches_torch(name, fn_name):
    """With inputs that require grad, create_graph=True results stay connected to them: the gradient
    of the sum of every result entry matches PyTorch's."""
    torch = pytest.importorskip("torch")
    (xs, ours, _), (ts, theirs, _) = _run_both(name, fn_name, create_graph=True, requires_grad=True)

    def leaves(r):
        return [t for e in r for t in leaves(e)] if isinstance(r, tuple) else [r]
    total_ours = sum(t.sum() for t in leaves(ours) if t.requires_grad)
    total_theirs = sum(t.sum() for t in leaves(theirs) if t.requires_grad)
    g_ours = fg.autograd.grad(total_ours, xs, allow_unused=True)
    g_theirs = torch.autograd.grad(total_theirs, ts, allow_unused=True)
    for a, b in zip(g_ours, g_theirs):
        assert (a is None) == (b is None)
        if b is not None:
            np.testing.assert_allclose(arr(a), b.numpy(), rtol=1e-5, atol=1e-6)


# (function name, func, lib -> (inputs, keyword arguments)): calls both libraries must refuse alike
BAD_CALLS = [
    ("vjp", lambda x: x.exp(), lambda lib: (lib.rand(3), {})),
    ("vjp", lambda x: x.exp(), lambda lib: (lib.rand(3), {"v": lib.ones(2)})),
    ("vjp", lambda x: x.sum(), lambda lib: (lib.rand(3), {"v": 1.0})),
    ("jvp", lambda x: x.exp(), lambda lib: (lib.rand(3), {})),
    ("jvp", lambda x, y: x * y, lambda lib: ((lib.rand(3), lib.rand(3)), {"v": (lib.ones(3),)})),
    ("hvp", lambda x: x.sum(), lambda lib: (lib.rand(2, 1), {})),
    ("hvp", lambda x: x ** 2, lambda lib: (lib.rand(3), {"v": lib.ones(3)})),
    ("vhp", lambda x: (x, x), lambda lib: (lib.rand(1), {"v": lib.ones(1)})),
    ("hessian", lambda x: (x.sum(),), lambda lib: (lib.rand(3), {})),
    ("hessian", lambda x: x.sum(), lambda lib: (lib.rand(3), {"outer_jacobian_strategy": "sideways"})),
    ("jacobian", lambda x: 3, lambda lib: (lib.rand(3), {})),
    ("jacobian", lambda x: x, lambda lib: ((lib.rand(3), 2.0), {})),
    ("jacobian", lambda x: x, lambda lib: (lib.rand(3), {"strategy": "forward-mode"})),
    ("jacobian", lambda x: x, lambda lib: (lib.rand(3), {"strategy": "forward-mode", "vectorize": True,
                                                         "strict": True})),
    ("jacobian", lambda x: x, lambda lib: (lib.rand(3), {"strategy": "forward-mode", "vectorize": True,
                                                         "create_graph": True})),
    ("jacobian", lambda x: x, lambda lib: (lib.rand(3), {"vectorize": True, "strict": True})),
]


@pytest.mark.parametrize("fn_name, func, make_call", BAD_CALLS)
def test_bad_calls_raise_like_torch(fn_name, func, make_call):
    torch = pytest.importorskip("torch")
    errors = []
    for lib, fn in ((fg, F[fn_name]), (torch, getattr(torch.autograd.functional, fn_name))):
        inputs, kwargs = make_call(lib)
        with pytest.raises(Exception) as info:
            fn(func, inputs, **kwargs)
        errors.append(info.value)
    ours, theirs = errors
    assert type(ours) is type(theirs) and str(ours) == str(theirs)


def test_forward_mode_strategy_gives_reverse_mode_values():
    x = fg.rand(3)
    np.testing.assert_allclose(arr(jacobian(lambda x: x.exp(), x, vectorize=True, strategy="forward-mode")),
                               np.diag(np.exp(arr(x))), rtol=1e-6)
    h = hessian(cube_sum, x, vectorize=True, outer_jacobian_strategy="forward-mode")
    np.testing.assert_allclose(arr(h), np.diag(6 * arr(x)), rtol=1e-5)
