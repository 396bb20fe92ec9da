"""Regressions of issue 7, item 1: silent wrong values in eager mode, one test per case found.

Each case was a wrong number (or a silent success) where PyTorch 2.13 gives another value or an
error. The expected values are PyTorch's, written out so that the tests run without it; where
PyTorch is installed, `check` runs the same code on it too, so the written-out values stay its own.
"""
import warnings

import numpy as np
import pytest

import fusegrad

try:
    import torch
except ImportError:   # pragma: no cover - the written-out values still hold
    torch = None

LIBRARIES = [fusegrad] + ([torch] if torch is not None else [])
nan, inf = float("nan"), float("inf")


def flat(values):
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in flat(item)]
    return [values]


def check(fn, expected, **tolerance):
    """fn(T) gives PyTorch's values (numbers in nested lists, NaN equal to NaN), for T = fusegrad
    and, when installed, torch itself."""
    for T in LIBRARIES:
        got = fn(T)
        np.testing.assert_allclose(np.array(flat(got), np.float64), np.array(flat(expected), np.float64),
                                   equal_nan=True, err_msg=T.__name__, **tolerance)


def check_raises(fn, exc, match):
    """fn(T) raises `exc`; fusegrad's message matches `match`, PyTorch raises the same type."""
    with pytest.raises(exc, match=match):
        fn(fusegrad)
    if torch is not None:
        with pytest.raises(exc):
            fn(torch)


def value_and_grad(T, fn, x, dtype=None):
    x = T.tensor(x, dtype=dtype, requires_grad=True)
    y = fn(T, x)
    y.backward(T.ones_like(y))
    return y.detach().double().tolist(), x.grad.double().tolist()


# ----------------------------------------------------------------------------- np.array copies


def test_np_array_copies_and_honours_numpy2_copy_and_dtype():
    model = fusegrad.nn.Linear(3, 1)
    optimizer = fusegrad.optim.SGD(model.parameters(), lr=0.1)
    w_before = np.array(model.weight.detach())   # a copy, as np.array asks for
    model(fusegrad.ones(2, 3)).sum().backward()
    optimizer.step()
    # d(sum of outputs)/dW is 2 (two rows of ones): the step moves W by -0.2, not w_before with it
    np.testing.assert_allclose(model.weight.detach().numpy() - w_before, -0.2, rtol=1e-6)

    t = fusegrad.ones(3)
    copied, shared, viewed = np.array(t), np.asarray(t), np.array(t, copy=False)
    t.add_(1)
    np.testing.assert_array_equal(copied, [1, 1, 1])
    np.testing.assert_array_equal(shared, [2, 2, 2])
    np.testing.assert_array_equal(viewed, [2, 2, 2])
    wide = np.array(t, dtype=np.float64)
    assert wide.dtype == np.float64 and not np.shares_memory(wide, t.numpy())
    with pytest.raises(ValueError, match="Unable to avoid copy"):
        np.array(t, dtype=np.float64, copy=False)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("target, pos_weight, expected_grad", [
    ([1.0, 1.0], None, [-0.25, -0.25]),
    ([0.0, 0.0], None, [0.25, 0.25]),
    ([1.0, 0.0], [3.0, 3.0], [-0.75, 0.25]),
])
def test_bce_with_logits_gradient_at_zero_logits(target, pos_weight, expected_grad):
    def loss(T, x):
        weight = None if pos_weight is None else T.tensor(pos_weight)
        return T.nn.functional.binary_cross_entropy_with_logits(x, T.tensor(target), pos_weight=weight)
    expected_loss = 0.6931471824645996 * (1 if pos_weight is None else 2)
    check(lambda T: value_and_grad(T, loss, [0.0, 0.0])[1], expected_grad)
    check(lambda T: value_and_grad(T, loss, [0.0, 0.0])[0], expected_loss, rtol=1e-6)


def test_bce_with_logits_gradient_is_sigmoid_minus_target():
    x = [1.0, -2.0, 0.0, 30.0, -30.0]
    t = [1.0, 0.0, 0.3, 0.0, 1.0]
    expected = 1 / (1 + np.exp(-np.array(x))) - np.array(t)
    check(lambda T: value_and_grad(T, lambda T, x: T.nn.functional.binary_cross_entropy_with_logits(
        x, T.tensor(t, dtype=T.float64), reduction="sum"), x, T.float64)[1], expected.tolist(), rtol=1e-12)


@pytest.mark.parametrize("target, loss", [(1.0, 0.0), (0.0, 100.0)])
def test_bce_loss_of_saturated_sigmoid_has_zero_gradient(target, loss):
    fn = lambda T, x: T.nn.BCELoss()(T.sigmoid(x), T.tensor([target]))   # noqa: E731
    check(lambda T: value_and_grad(T, fn, [20.0]), [loss, [0.0]])


def test_bce_loss_gradient_at_probabilities_zero_and_one():
    # (x - t) / max(x (1 - x), 1e-12), not the NaN of the chain rule through clamped logs
    fn = lambda T, x: T.nn.functional.binary_cross_entropy(x, T.tensor([0.0, 1.0, 0.0, 1.0, 0.5]))  # noqa: E731
    check(lambda T: value_and_grad(T, fn, [0.0, 1.0, 1.0, 0.0, 0.0]),
          [50.0, [0.0, 0.0, 199999995904.0, -199999995904.0, -99999997952.0]], rtol=1e-6)


@pytest.mark.parametrize("loss", [
    lambda T, x: T.nn.functional.cross_entropy(x, T.tensor([-100, -100])),
    lambda T, x: T.nn.functional.cross_entropy(x, T.tensor([-100, -100]), weight=T.tensor([1.0, 2.0])),
    lambda T, x: T.nn.functional.cross_entropy(x, T.tensor([3, 3]), ignore_index=3, label_smoothing=0.1),
    lambda T, x: T.nn.functional.nll_loss(x, T.tensor([-100, -100])),
], ids=["cross_entropy", "weighted", "label_smoothing", "nll_loss"])
def test_cross_entropy_with_every_target_ignored_has_zero_gradient(loss):
    check(lambda T: value_and_grad(T, loss, [[1.0, 2.0], [3.0, 4.0]]), [nan, [[0.0, 0.0], [0.0, 0.0]]])


# ----------------------------------------------------------------------------- float16


def _half_grad(T, fn, value=0.5, shape=(70000,)):
    x = T.full(shape, value, dtype=T.float16, requires_grad=True)
    y = fn(T, x)
    y.backward(T.ones_like(y))
    assert y.dtype == T.float16 and x.grad.dtype == T.float16
    return y.detach().double().tolist(), x.grad.double().reshape(-1)[:2].tolist()


@pytest.mark.parametrize("fn, expected", [
    (lambda T, x: x.mean(), [0.5, [1.430511474609375e-05] * 2]),
    (lambda T, x: x.sum(), [35008.0, [1.0, 1.0]]),
    (lambda T, x: T.nn.functional.mse_loss(x, T.zeros_like(x)), [0.25, [1.430511474609375e-05] * 2]),
    (lambda T, x: (x * 2).norm(), [264.5, [0.00756072998046875] * 2]),
    (lambda T, x: x.var(), [0.0, [0.0, 0.0]]),
    (lambda T, x: x.std(), [0.0, [0.0, 0.0]]),
    (lambda T, x: (x * 70000 / 70000).mean(), [0.5, [0.0, 0.0]]),   # the scalar is not rounded to inf
    (lambda T, x: T.nn.functional.cross_entropy(T.stack([x, -x], 1), T.full((70000, 2), 0.5, dtype=T.float16)),
     [0.8134765625, [6.556510925292969e-06] * 2]),
], ids=["mean", "sum", "mse_loss", "norm", "var", "std", "scalar_arithmetic", "cross_entropy_probabilities"])
def test_float16_reductions_accumulate_in_float32(fn, expected):
    check(lambda T: _half_grad(T, fn), expected)


def test_float16_sum_over_a_dim_accumulates_in_float32():
    check(lambda T: T.full((70000, 2), 0.5, dtype=T.float16).sum(0).double().tolist(), [35008.0, 35008.0])
    check(lambda T: T.full((3, 70000), 0.5, dtype=T.float16).mean(1).double().tolist(), [0.5, 0.5, 0.5])


# ----------------------------------------------------------------------------- NaN propagates


@pytest.mark.parametrize("fn, x, expected", [
    (lambda T, x: T.relu(x), [nan, 0.0, 1.0, -1.0], [[nan, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]),
    (lambda T, x: x.clone().relu_(), [nan, 0.0, 1.0, -1.0], [[nan, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]),
    (lambda T, x: x.norm(), [nan, 1.0], [nan, [nan, nan]]),
    (lambda T, x: x.norm(), [inf, 1.0], [inf, [nan, 0.0]]),
    (lambda T, x: x.norm(p=1), [nan, 1.0], [nan, [0.0, 1.0]]),
    (lambda T, x: x.norm(p=float("inf")), [nan, 1.0], [nan, [0.0, 0.0]]),
    (lambda T, x: x.std(), [nan, 1.0], [nan, [nan, nan]]),
    (lambda T, x: x.std(), [inf, 1.0], [nan, [nan, nan]]),
    (lambda T, x: x.max(), [nan, 1.0, 3.0], [nan, [1.0, 0.0, 0.0]]),
    (lambda T, x: x.min(), [1.0, nan, nan], [nan, [0.0, 0.5, 0.5]]),
    (lambda T, x: x.max(0)[0], [1.0, nan, 3.0], [nan, [0.0, 1.0, 0.0]]),
    (lambda T, x: x.amax(0), [nan, 1.0, 3.0], [nan, [nan, nan, nan]]),
    (lambda T, x: x.prod(), nan, [nan, 1.0]),
    (lambda T, x: T.div(x, T.tensor([2.0, nan]), rounding_mode="trunc"), [nan, 3.0], [[nan, nan], [0.0, 0.0]]),
    (lambda T, x: T.maximum(x, T.ones(2)), [nan, 2.0], [[nan, 2.0], [1.0, 1.0]]),
    (lambda T, x: T.minimum(T.ones(2), x), [nan, 2.0], [[nan, 1.0], [1.0, 0.0]]),
    (lambda T, x: x.abs(), [nan, 0.0, -1.0], [[nan, 0.0, 1.0], [0.0, 0.0, -1.0]]),
    (lambda T, x: x.sign(), [nan, -2.0], [[0.0, -1.0], [0.0, 0.0]]),
    (lambda T, x: x.clamp(-1, 1), [nan, 0.0, 2.0, -2.0, 1.0], [[nan, 0.0, 1.0, -1.0, 1.0], [0.0, 1.0, 0.0, 0.0, 1.0]]),
    (lambda T, x: x.clamp(min=0), [nan, 0.0, 2.0, -2.0], [[nan, 0.0, 2.0, 0.0], [0.0, 1.0, 1.0, 0.0]]),
    (lambda T, x: x.clamp(max=0), [nan, 0.0, 2.0, -2.0], [[nan, 0.0, 0.0, -2.0], [0.0, 1.0, 0.0, 1.0]]),
    (lambda T, x: x.clamp(min=nan), [1.0, 0.0], [[nan, nan], [0.0, 0.0]]),
], ids=["relu", "relu_", "norm_nan", "norm_inf", "norm_p1", "norm_pinf", "std_nan", "std_inf", "max", "min",
        "max_dim", "amax", "prod_0d", "div_trunc", "maximum", "minimum", "abs", "sign", "clamp", "clamp_min", "clamp_max", "clamp_nan_bound"])
def test_nan_propagates_through_values_and_gradients(fn, x, expected):
    check(lambda T: value_and_grad(T, fn, x), expected)


def test_model_fed_a_nan_reports_a_nan_loss():
    def loss(T):
        T.manual_seed(0)
        model = T.nn.Sequential(T.nn.Linear(2, 3), T.nn.ReLU(), T.nn.Linear(3, 1))
        return T.nn.functional.mse_loss(model(T.tensor([[nan, 1.0]])), T.zeros(1, 1)).item()
    check(loss, nan)


def test_std_with_one_degree_of_freedom_is_nan_and_warns():
    for T in LIBRARIES:
        for fn in (lambda: T.tensor([5.0]).std(), lambda: T.tensor([[5.0, 1.0]]).std(0)):
            with pytest.warns(UserWarning, match=r"std\(\): degrees of freedom is <= 0"):
                assert np.isnan(fn().numpy()).all()
        with pytest.warns(UserWarning, match=r"var\(\): degrees of freedom is <= 0"):
            assert np.isnan(T.tensor([5.0]).var().item())
        with pytest.warns(UserWarning, match=r"std_mean\(\): degrees of freedom is <= 0") as caught:
            assert np.isnan(T.std_mean(T.tensor([5.0]))[0].item())
        assert caught[0].filename == __file__, T.__name__   # reported at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fusegrad.tensor([5.0]).std(correction=0).item() == 0.0


# ----------------------------------------------------------------------------- legacy loss arguments


@pytest.mark.parametrize("size_average, reduce, expected, reduction", [
    (False, None, 30.0, "sum"),
    (True, None, 7.5, "mean"),
    (None, False, [1.0, 4.0, 9.0, 16.0], "none"),
    (False, False, [1.0, 4.0, 9.0, 16.0], "none"),
    (None, True, 7.5, "mean"),
])
def test_legacy_size_average_and_reduce_are_honoured(size_average, reduce, expected, reduction):
    x, y = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]
    message = f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead."
    for T in LIBRARIES:
        with pytest.warns(UserWarning, match=message):
            module = T.nn.MSELoss(size_average=size_average, reduce=reduce)
        assert module.reduction == reduction
        np.testing.assert_allclose(module(T.tensor(x), T.tensor(y)).tolist(), expected)
        with pytest.warns(UserWarning, match=message):
            functional = T.nn.functional.mse_loss(T.tensor(x), T.tensor(y), size_average, reduce)
        np.testing.assert_allclose(functional.tolist(), expected)


@pytest.mark.parametrize("make, args, expected", [
    (lambda T: T.nn.L1Loss(size_average=False), ([1.0, -2.0], [0.0, 0.0]), 3.0),
    (lambda T: T.nn.CrossEntropyLoss(reduce=False), ([[0.0, 0.0], [0.0, 0.0]], [0, 1]), [0.6931471824645996] * 2),
    (lambda T: T.nn.NLLLoss(size_average=False), ([[-1.0, -2.0], [-3.0, -4.0]], [0, 1]), 5.0),
    (lambda T: T.nn.BCELoss(size_average=False), ([0.5, 0.5], [1.0, 0.0]), 1.3862943649291992),
    (lambda T: T.nn.BCEWithLogitsLoss(reduce=False), ([0.0, 0.0], [1.0, 0.0]), [0.6931471824645996] * 2),
], ids=["L1Loss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss"])
def test_legacy_arguments_of_every_loss(make, args, expected):
    def run(T):
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            module = make(T)
        return module(*(T.tensor(a) for a in args)).tolist()
    check(run, expected, rtol=1e-6)


# ----------------------------------------------------------------------------- boolean masks


def _assign(T, shape, mask, grad=False):
    x = T.zeros(*shape, requires_grad=grad).clone() if grad else T.zeros(*shape)
    x[T.tensor(mask)] = 5.0
    return x


@pytest.mark.parametrize("fn, message", [
    (lambda T: T.arange(3.0)[T.tensor([True, False])],
     r"The shape of the mask \[2\] at index 0 does not match the shape of the indexed tensor \[3\] at index 0"),
    (lambda T: T.arange(3.0)[T.tensor([True, False, True, True])],
     r"The shape of the mask \[4\] at index 0 does not match the shape of the indexed tensor \[3\] at index 0"),
    (lambda T: T.ones(2, 3)[T.tensor([[True, False], [True, True]])],
     r"The shape of the mask \[2, 2\] at index 1 does not match the shape of the indexed tensor \[2, 3\] at index 1"),
    (lambda T: T.ones(2, 3)[:, T.tensor([True, False])],
     r"The shape of the mask \[2\] at index 0 does not match the shape of the indexed tensor \[2, 3\] at index 1"),
    (lambda T: _assign(T, (3,), [True, False]),
     r"The shape of the mask \[2\] at index 0 does not match the shape of the indexed tensor \[3\] at index 0"),
    (lambda T: _assign(T, (2, 3), [[True, False], [True, True]]),
     r"The shape of the mask \[2, 2\] at index 1 does not match the shape of the indexed tensor \[2, 3\] at index 1"),
    (lambda T: _assign(T, (2, 3), [True, False, True], grad=True),
     r"The shape of the mask \[3\] at index 0 does not match the shape of the indexed tensor \[2, 3\] at index 0"),
], ids=["short", "long", "2d", "after_slice", "setitem", "setitem_2d", "setitem_recorded"])
def test_boolean_mask_of_the_wrong_shape_raises(fn, message):
    check_raises(fn, IndexError, message)


# ----------------------------------------------------------------------------- accepted silently


@pytest.mark.parametrize("fn, exc, message", [
    (lambda T: T.gather(T.arange(6.0).reshape(2, 3), 1, T.tensor([[-1], [0]])), RuntimeError,
     r"^gather: index -1 is out of bounds for dimension 1 with size 3$"),
    (lambda T: T.index_select(T.arange(6.0).reshape(2, 3), 1, T.tensor([-1])), RuntimeError,
     r"^index_select: index -1 is out of bounds for dimension 1 with size 3$"),
    (lambda T: T.tensor([1, 2]) // T.tensor([0, 1]), RuntimeError, r"^ZeroDivisionError$"),
    (lambda T: T.tensor([1, 2]) // 0, RuntimeError, r"^ZeroDivisionError$"),
    (lambda T: T.tensor([1, 2]) % T.tensor([1, 0]), RuntimeError, r"^ZeroDivisionError$"),
    (lambda T: T.tensor([1, 2]) % 0, RuntimeError, r"^ZeroDivisionError$"),
    (lambda T: T.div(T.tensor([1, 2]), 0, rounding_mode="floor"), RuntimeError, r"^ZeroDivisionError$"),
    (lambda T: T.div(T.tensor([1, 2]), 0, rounding_mode="trunc"), RuntimeError, r"^ZeroDivisionError$"),
    (lambda T: T.tensor(None), RuntimeError, r"^Could not infer dtype of NoneType$"),
    (lambda T: T.tensor([1.0, None]), RuntimeError, r"^Could not infer dtype of NoneType$"),
    (lambda T: T.ones(2.5), TypeError, r"^ones\(\): argument 'size' must be tuple of ints, but found element of "
                                       r"type float at pos 0$"),
    (lambda T: T.zeros((2, 2.5)), TypeError, r"^zeros\(\): argument 'size' must be tuple of ints"),
    (lambda T: T.randperm(-1), RuntimeError, r"^Trying to create tensor with negative dimension -1: \[-1\]$"),
    (lambda T: T.ones(2, 3).sum((0, 0)), RuntimeError, r"^dim 0 appears multiple times in the list of dims$"),
    (lambda T: T.ones(2, 3).mean((1, -1)), RuntimeError, r"^dim 1 appears multiple times in the list of dims$"),
    (lambda T: T.ones(1, 2, dtype=T.float64) @ T.ones(2, 1), RuntimeError,
     r"^matmul: expected both operands to have the same dtype, but got Double and Float"),
], ids=["gather_negative", "index_select_negative", "floor_divide_zero", "floor_divide_zero_scalar",
        "remainder_zero", "remainder_zero_scalar", "div_floor_zero", "div_trunc_zero", "tensor_none",
        "tensor_list_none", "ones_float_size", "zeros_float_size", "randperm_negative", "sum_repeated_dim",
        "mean_repeated_dim", "matmul_dtypes"])
def test_invalid_arguments_raise(fn, exc, message):
    check_raises(fn, exc, message)


@pytest.mark.parametrize("dtype, name", [("int64", "Long"), ("float64", "Double"), ("float16", "Half")])
def test_linear_refuses_an_input_of_another_dtype(dtype, name):
    check_raises(lambda T: T.nn.Linear(2, 1)(T.ones(3, 2, dtype=getattr(T, dtype))), RuntimeError,
                 rf"^mat1 and mat2 must have the same dtype, but got {name} and Float")


def test_masked_fill_keeps_the_input_dtype():
    mask = [True, False]
    for T in LIBRARIES:
        filled = T.tensor([1, 2]).masked_fill(T.tensor(mask), 2.9)
        assert filled.dtype == T.int64 and filled.tolist() == [2, 2]
        assert T.tensor([1, 2]).masked_fill_(T.tensor(mask), -2.9).tolist() == [-2, 2]
        flags = T.tensor([True, True]).masked_fill(T.tensor(mask), 0)
        assert flags.dtype == T.bool and flags.tolist() == [False, True]
        assert T.tensor([1.0, 2.0]).masked_fill(T.tensor(mask), T.tensor(3)).tolist() == [3.0, 2.0]
    check_raises(lambda T: T.tensor([1.0, 2.0]).masked_fill(T.tensor(mask), T.tensor([3.0])), RuntimeError,
                 r"^masked_fill_ only supports a 0-dimensional value tensor, but got tensor with 1 dimension")


def test_masked_fill_value_tensor_gets_its_gradient():
    check(lambda T: value_and_grad(T, lambda T, v: T.zeros(3).masked_fill(T.tensor([True, False, True]), v), 2.0),
          [[2.0, 0.0, 2.0], 2.0])


# ----------------------------------------------------------------------------- grad modes on generators


@pytest.mark.parametrize("make_mode, inside", [
    (lambda T: T.no_grad(), False),
    (lambda T: T.no_grad, False),
    (lambda T: T.enable_grad(), True),
    (lambda T: T.inference_mode(), False),
    (lambda T: T.inference_mode(False), True),
    (lambda T: T.set_grad_enabled(False), False),
], ids=["no_grad", "no_grad_bare", "enable_grad", "inference_mode", "inference_mode_false", "set_grad_enabled"])
def test_grad_mode_decorators_apply_inside_generators(make_mode, inside):
    for T in LIBRARIES:
        seen = []

        def steps():
            seen.append(T.is_grad_enabled())
            sent = yield 1
            seen.append((sent, T.is_grad_enabled()))
            yield 2
        outside = not inside
        with T.set_grad_enabled(outside):
            generator = make_mode(T)(steps)()
            assert next(generator) == 1
            seen.append(T.is_grad_enabled())          # the caller's mode between steps
            assert generator.send("x") == 2
            generator.close()
            assert T.is_grad_enabled() is outside
        assert seen == [inside, outside, ("x", inside)], T.__name__
