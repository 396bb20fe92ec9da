"""Tests for the small APIs ordinary training scripts call: default dtype and device, the deprecated
autograd.Variable, nn.utils gradient clipping, post-accumulate-grad hooks, and the error a missing
torch name gives. Values and messages are compared with PyTorch 2.13."""
import traceback
import warnings

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.autograd import Variable


def torch_or_skip():
    return pytest.importorskip("torch")


@pytest.fixture
def default_float64():
    fg.set_default_dtype(fg.float64)
    try:
        yield
    finally:
        fg.set_default_dtype(fg.float32)


# ---------------------------------------------------------------- default dtype and device

DTYPE_EXPRESSIONS = {
    "tensor of floats": lambda ns: ns.tensor([1.0, 2.0]),
    "tensor of ints": lambda ns: ns.tensor([1, 2]),
    "zeros": lambda ns: ns.zeros(2),
    "randn": lambda ns: ns.randn(2),
    "arange with float step": lambda ns: ns.arange(0, 1, 0.5),
    "linspace": lambda ns: ns.linspace(0, 1, 3),
    "int tensor times float scalar": lambda ns: ns.tensor([1, 2]) * 0.5,
    "int tensor true division": lambda ns: ns.tensor([1, 2]) / 2,
    "float32 tensor times float scalar": lambda ns: ns.ones(2, dtype=ns.float32) * 0.5,
    "legacy Tensor constructor": lambda ns: ns.Tensor([1, 2]),
    "normal with size": lambda ns: ns.normal(0.0, 1.0, size=(2,)),
    "Linear weight": lambda ns: ns.nn.Linear(2, 3).weight,
}


@pytest.mark.parametrize("what", list(DTYPE_EXPRESSIONS))
def test_set_default_dtype_matches_torch(what, default_float64):
    torch = torch_or_skip()
    torch.set_default_dtype(torch.float64)
    try:
        expected = DTYPE_EXPRESSIONS[what](torch).dtype
    finally:
        torch.set_default_dtype(torch.float32)
    assert fg.get_default_dtype() is fg.float64
    assert repr(DTYPE_EXPRESSIONS[what](fg).dtype) == repr(expected)


def test_default_dtype_round_trip_and_printing(default_float64):
    assert repr(fg.tensor([1.5, 2.0])) == "tensor([1.5000, 2.0000])"   # the default type prints no dtype
    assert repr(fg.tensor([1.5], dtype=fg.float32)) == "tensor([1.5000], dtype=torch.float32)"
    fg.set_default_dtype(fg.float32)
    assert fg.get_default_dtype() is fg.float32 and fg.zeros(1).dtype is fg.float32


def test_set_default_dtype_errors_match_torch():
    torch = torch_or_skip()
    for bad in ("int64", float, "float64"):
        errors = []
        for ns in (torch, fg):
            with pytest.raises(TypeError) as info:
                ns.set_default_dtype(getattr(ns, bad) if bad == "int64" else bad)
            errors.append(str(info.value))
        assert errors[1] == errors[0]
    assert fg.get_default_dtype() is fg.float32


def test_default_device():
    torch = torch_or_skip()
    fg.set_default_device("cpu")
    fg.set_default_device(fg.device("cpu"))
    fg.set_default_device(None)
    assert repr(fg.get_default_device()) == repr(torch.get_default_device()) == "device(type='cpu')"
    with pytest.raises(RuntimeError, match="^set_default_device: device 'cuda' is not supported yet"):
        fg.set_default_device("cuda")
    assert fg.zeros(1).device == fg.get_default_device()


# ---------------------------------------------------------------- autograd.Variable

def test_variable_matches_torch():
    torch = torch_or_skip()
    for ns, Var in ((torch, torch.autograd.Variable), (fg, Variable)):
        base = ns.ones(2, requires_grad=True)
        computed = base * 2
        v = Var(computed, requires_grad=True)
        assert isinstance(base, Var) and isinstance(computed, Var)
        assert v is not computed and v.is_leaf and v.requires_grad and v.grad_fn is None
        (v * 3).sum().backward()
        assert v.grad.tolist() == [3.0, 3.0] and base.grad is None
        with ns.no_grad():
            v.add_(1)
        assert computed.tolist() == [3.0, 3.0]   # shares the data
        plain = Var(base)
        assert not plain.requires_grad and plain.grad_fn is None
    errors = []
    for ns, Var in ((torch, torch.autograd.Variable), (fg, Variable)):
        with pytest.raises(TypeError) as info:
            Var(3)
        errors.append(str(info.value))
        with pytest.warns(UserWarning, match="volatile was removed and now has no effect"):
            with pytest.raises(ValueError) as info:
                Var(ns.ones(1), True, True)
        errors.append(str(info.value))
    assert errors[2:] == errors[:2]


# ---------------------------------------------------------------- nn.utils gradient clipping

RNG = np.random.default_rng(7)
GRADS = [RNG.standard_normal((3, 4)) * 2, RNG.standard_normal(4), RNG.standard_normal((2, 2)) * 0.1]


def params_with_grads(ns, grads=GRADS, skip=()):
    params = []
    for i, g in enumerate(grads):
        p = ns.zeros(g.shape, dtype=ns.float64, requires_grad=True)
        if i not in skip:
            p.grad = ns.tensor(g)
        params.append(p)
    return params


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (100.0, 2.0), (0.5, 1), (0.3, float("inf")),
                                                (2.0, 3.5), (1.0, "inf")])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    torch = torch_or_skip()
    results = []
    for ns in (torch, fg):
        params = params_with_grads(ns, skip=(1,))
        total = ns.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        results.append((total.item(), repr(total.dtype), [None if p.grad is None else p.grad.numpy() for p in params]))
    (t_total, t_dtype, t_grads), (f_total, f_dtype, f_grads) = results
    assert f_dtype == t_dtype
    np.testing.assert_allclose(f_total, t_total, rtol=1e-12)
    for mine, theirs in zip(f_grads, t_grads):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            np.testing.assert_allclose(mine, theirs, rtol=1e-12)


def test_clip_grad_norm_edge_cases_match_torch():
    torch = torch_or_skip()
    for ns in (torch, fg):
        single = params_with_grads(ns)[0]
        total = ns.nn.utils.clip_grad_norm_(single, 1.0)   # a tensor, not a list
        np.testing.assert_allclose(total.item(), np.linalg.norm(GRADS[0]), rtol=1e-12)
        none = ns.nn.utils.clip_grad_norm_(params_with_grads(ns, skip=(0, 1, 2)), 1.0)
        assert none.item() == 0.0 and repr(none.dtype) == repr(ns.float32)
        with pytest.warns(UserWarning, match=r"^`parameters` is an empty generator, no gradient clipping will occur\.$"):
            ns.nn.utils.clip_grad_norm_((p for p in []), 1.0)
    errors = []
    for ns in (torch, fg):
        params = params_with_grads(ns)
        params[0].grad[0, 0] = float("inf")
        with pytest.raises(RuntimeError) as info:
            ns.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
        errors.append(str(info.value))
    assert errors[1] == errors[0]


def test_clip_grad_value_matches_torch():
    torch = torch_or_skip()
    results = []
    for ns in (torch, fg):
        params = params_with_grads(ns, skip=(2,))
        assert ns.nn.utils.clip_grad_value_(params, 0.7) is None
        results.append([None if p.grad is None else p.grad.numpy() for p in params])
    for mine, theirs in zip(*reversed(results)):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            np.testing.assert_array_equal(mine, theirs)
    assert np.abs(results[1][0]).max() == 0.7


def test_clip_grad_norm_in_a_training_step():
    model = nn.Linear(3, 2)
    model(fg.randn(4, 3) * 100).pow(2).sum().backward()
    total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
    assert total.item() > 0.5
    clipped = fg.norm(fg.stack([fg.norm(p.grad) for p in model.parameters()]))
    np.testing.assert_allclose(clipped.item(), 0.5, rtol=1e-5)


# ---------------------------------------------------------------- post-accumulate-grad hooks

def test_post_accumulate_grad_hook_matches_torch():
    torch = torch_or_skip()
    histories = []
    for ns in (torch, fg):
        t = ns.ones(2, dtype=ns.float64, requires_grad=True)
        seen = []
        handle = t.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.tolist()))
        (t * 3).sum().backward()                      # runs, and sees the accumulated .grad
        ns.autograd.grad((t * 3).sum(), t)            # nothing accumulates: no call
        (t * t).sum().backward(inputs=[t])            # accumulates into 3 + 2 = 5
        w = ns.ones(2, dtype=ns.float64, requires_grad=True)
        (w * t).sum().backward(inputs=[w])            # t is not an input: no call
        handle.remove()
        (t * 3).sum().backward()
        histories.append((seen, t.grad.tolist()))
    assert histories[1] == histories[0] == ([[3.0, 3.0], [5.0, 5.0]], [8.0, 8.0])


def test_post_accumulate_grad_hook_can_step_in_place():
    """The documented use: update the parameter as soon as its gradient is ready (optimizer in backward)."""
    p = fg.tensor([1.0, 2.0], requires_grad=True)

    def sgd_step(param):
        with fg.no_grad():
            param.add_(param.grad, alpha=-0.1)
        param.grad = None

    p.register_post_accumulate_grad_hook(sgd_step)
    (p * p).sum().backward()
    assert p.grad is None
    np.testing.assert_allclose(p.detach().numpy(), [0.8, 1.6], rtol=1e-6)


def test_post_accumulate_grad_hook_errors_match_torch():
    torch = torch_or_skip()
    errors = []
    for ns in (torch, fg):
        leaf = ns.ones(2, requires_grad=True)
        for t in (leaf * 2, ns.ones(2)):
            with pytest.raises(RuntimeError) as info:
                t.register_post_accumulate_grad_hook(lambda p: None)
            errors.append(str(info.value))
    assert errors[2:] == errors[:2]


# ---------------------------------------------------------------- names fusegrad lacks

@pytest.mark.parametrize("module,name,torch_name", [(fg, "get_default_dtypes", "torch"),
                                                    (fg.nn, "Conv3d", "torch.nn"),
                                                    (fg.optim, "LBFGS", "torch.optim"),
                                                    (fg.autograd, "forward_ad", "torch.autograd")])
def test_missing_names_say_fusegrad_lacks_them(module, name, torch_name):
    with pytest.raises(AttributeError) as info:
        getattr(module, name)
    assert str(info.value) == (f"module '{module.__name__}' has no attribute '{name}': fusegrad does not implement "
                               f"{torch_name}.{name} yet")
    printed = "".join(traceback.format_exception(info.value))
    assert "Did you mean" not in printed
    assert not hasattr(module, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(fg, "__wrapped__", None) is None   # protocol probes still get a plain AttributeError
