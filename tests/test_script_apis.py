"""Tests for the small APIs ordinary training scripts call: default dtype and device, the deprecated
autograd.Variable, nn.utils gradient clipping, post-accumulate-grad hooks, and the error a missing
torch name gives. Values and messages are compared with PyTorch 2.13."""
import traceback

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.autograd import Variable


def optional_torch():
    """(torch,) when it is importable: tests check fusegrad against hard-coded values, and torch too."""
    try:
        import torch
    except ImportError:
        return ()
    return (torch,)


BOTH = (fg,) + optional_torch()


@pytest.fixture
def default_float64():
    fg.set_default_dtype(fg.float64)
    try:
        yield
    finally:
        fg.set_default_dtype(fg.float32)


# ---------------------------------------------------------------- default dtype and device

DTYPE_EXPRESSIONS = {   # what each makes with the default dtype set to float64 (as in torch 2.13)
    "tensor of floats": (lambda ns: ns.tensor([1.0, 2.0]), "torch.float64"),
    "tensor of ints": (lambda ns: ns.tensor([1, 2]), "torch.int64"),
    "zeros": (lambda ns: ns.zeros(2), "torch.float64"),
    "randn": (lambda ns: ns.randn(2), "torch.float64"),
    "arange with float step": (lambda ns: ns.arange(0, 1, 0.5), "torch.float64"),
    "linspace": (lambda ns: ns.linspace(0, 1, 3), "torch.float64"),
    "int tensor times float scalar": (lambda ns: ns.tensor([1, 2]) * 0.5, "torch.float64"),
    "int tensor true division": (lambda ns: ns.tensor([1, 2]) / 2, "torch.float64"),
    "float32 tensor times float scalar": (lambda ns: ns.ones(2, dtype=ns.float32) * 0.5, "torch.float32"),
    "legacy Tensor constructor": (lambda ns: ns.Tensor([1, 2]), "torch.float64"),
    "normal with size": (lambda ns: ns.normal(0.0, 1.0, size=(2,)), "torch.float64"),
    "Linear weight": (lambda ns: ns.nn.Linear(2, 3).weight, "torch.float64"),
}


@pytest.mark.parametrize("what", list(DTYPE_EXPRESSIONS))
def test_set_default_dtype_matches_torch(what, default_float64):
    make, expected = DTYPE_EXPRESSIONS[what]
    assert fg.get_default_dtype() is fg.float64
    assert repr(make(fg).dtype) == expected
    for torch in optional_torch():
        torch.set_default_dtype(torch.float64)
        try:
            assert repr(make(torch).dtype) == expected
        finally:
            torch.set_default_dtype(torch.float32)


def test_default_dtype_round_trip_and_printing(default_float64):
    assert repr(fg.tensor([1.5, 2.0])) == "tensor([1.5000, 2.0000])"   # the default type prints no dtype
    assert repr(fg.tensor([1.5], dtype=fg.float32)) == "tensor([1.5000], dtype=torch.float32)"
    fg.set_default_dtype(fg.float32)
    assert fg.get_default_dtype() is fg.float32 and fg.zeros(1).dtype is fg.float32


@pytest.mark.parametrize("ns", BOTH, ids=lambda ns: ns.__name__)
def test_set_default_dtype_errors_match_torch(ns):
    for bad, message in ((ns.int64, "only floating-point types are supported as the default type"),
                         (float, "invalid dtype object: only floating-point types are supported as the default type"),
                         ("float64", "invalid dtype object: only floating-point types are supported as the default "
                                     "type")):
        with pytest.raises(TypeError) as info:
            ns.set_default_dtype(bad)
        assert str(info.value) == message
    assert ns.get_default_dtype() is ns.float32


def test_default_device():
    fg.set_default_device("cpu")
    fg.set_default_device(fg.device("cpu"))
    fg.set_default_device(None)
    for ns in BOTH:
        assert repr(ns.get_default_device()) == "device(type='cpu')"
    if not fg.cuda.is_available():
        with pytest.raises(RuntimeError, match="^No CUDA GPUs are available"):
            fg.set_default_device("cuda")
    assert fg.zeros(1).device == fg.get_default_device()


# ---------------------------------------------------------------- autograd.Variable

def test_variable_matches_torch():
    for ns in BOTH:
        Var = ns.autograd.Variable
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
        with pytest.raises(TypeError, match="^Variable data has to be a tensor, but got int$"):
            Var(3)
        with pytest.warns(UserWarning, match="volatile was removed and now has no effect"):
            with pytest.raises(ValueError, match="^Variable can't be volatile and require_grad at the same time!$"):
                Var(ns.ones(1), True, True)
    assert Variable is fg.autograd.Variable


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
    """Against NumPy: the norm of all gradients together, and each scaled by max_norm / (norm + 1e-6)
    when that is below 1; torch, when importable, gives the same."""
    flat = np.concatenate([GRADS[0].ravel(), GRADS[2].ravel()])
    order = float(norm_type)
    expected_total = np.abs(flat).max() if order == np.inf else (np.abs(flat) ** order).sum() ** (1 / order)
    scale = min(1.0, max_norm / (expected_total + 1e-6))
    for ns in BOTH:
        params = params_with_grads(ns, skip=(1,))
        total = ns.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        assert repr(total.dtype) == "torch.float64"
        np.testing.assert_allclose(total.item(), expected_total, rtol=1e-12)
        assert params[1].grad is None
        for p, g in ((params[0], GRADS[0]), (params[2], GRADS[2])):
            np.testing.assert_allclose(p.grad.numpy(), g * scale, rtol=1e-12)


def test_clip_grad_norm_edge_cases_match_torch():
    for ns in BOTH:
        single = params_with_grads(ns)[0]
        total = ns.nn.utils.clip_grad_norm_(single, 1.0)   # a tensor, not a list
        np.testing.assert_allclose(total.item(), np.linalg.norm(GRADS[0]), rtol=1e-12)
        none = ns.nn.utils.clip_grad_norm_(params_with_grads(ns, skip=(0, 1, 2)), 1.0)
        assert none.item() == 0.0 and repr(none.dtype) == repr(ns.float32)
        empty_generator = r"^`parameters` is an empty generator, no gradient clipping will occur\.$"
        with pytest.warns(UserWarning, match=empty_generator):
            ns.nn.utils.clip_grad_norm_((p for p in []), 1.0)
        params = params_with_grads(ns)
        params[0].grad[0, 0] = float("inf")
        with pytest.raises(RuntimeError) as info:
            ns.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
        assert str(info.value) == ("The total norm of order 2.0 for gradients from `parameters` is non-finite, so it "
                                   "cannot be clipped. To disable this error and scale the gradients by the "
                                   "non-finite norm anyway, set `error_if_nonfinite=False`")


def test_clip_grad_value_matches_torch():
    for ns in BOTH:
        params = params_with_grads(ns, skip=(2,))
        assert ns.nn.utils.clip_grad_value_(params, 0.7) is None
        for p, g in zip(params[:2], GRADS):
            np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, -0.7, 0.7))
        assert params[2].grad is None
    assert np.abs(GRADS[0]).max() > 0.7   # clipping did something


def test_clip_grad_norm_in_a_training_step():
    model = nn.Linear(3, 2)
    model(fg.randn(4, 3) * 100).pow(2).sum().backward()
    total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
    assert total.item() > 0.5
    clipped = fg.norm(fg.stack([fg.norm(p.grad) for p in model.parameters()]))
    np.testing.assert_allclose(clipped.item(), 0.5, rtol=1e-5)


# ---------------------------------------------------------------- post-accumulate-grad hooks

def test_post_accumulate_grad_hook_matches_torch():
    histories = []
    for ns in BOTH:
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
    assert histories[-1] == histories[0] == ([[3.0, 3.0], [5.0, 5.0]], [8.0, 8.0])


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
    for ns in BOTH:
        leaf = ns.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="^post accumulate grad hooks cannot be registered on non-leaf tensors$"):
            (leaf * 2).register_post_accumulate_grad_hook(lambda p: None)
        with pytest.raises(RuntimeError, match="^cannot register a hook on a tensor that doesn't require gradient$"):
            ns.ones(2).register_post_accumulate_grad_hook(lambda p: None)


# ---------------------------------------------------------------- names fusegrad lacks

@pytest.mark.parametrize("module,name,torch_name", [(fg, "get_default_dtypes", "torch"),
                                                    (fg.nn, "Conv3d", "torch.nn"),
                                                    (fg.nn.utils, "rnn", "torch.nn.utils"),
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
    with pytest.raises(AttributeError) as info:
        getattr(module, "_" + name)   # private and protocol names: the plain error
    assert str(info.value) == f"module '{module.__name__}' has no attribute '_{name}'"
    assert getattr(fg, "__wrapped__", None) is None


def test_missing_tensor_methods_say_fusegrad_lacks_them():
    t = fg.ones(2)
    with pytest.raises(AttributeError) as info:
        t.cumprod(0)
    assert str(info.value) == ("'Tensor' object has no attribute 'cumprod': fusegrad does not implement "
                               "Tensor.cumprod yet")
    assert "Did you mean" not in "".join(traceback.format_exception(info.value))   # not cumsum
    with pytest.raises(AttributeError, match="^'Tensor' object has no attribute '_private'$"):
        t._private
    assert not hasattr(t, "cumprod") and hasattr(t, "cumsum")
