"""Tests for fusegrad.nn: Module bookkeeping (registration, traversal, modes, state dicts, hooks,
printing), and layers and losses against PyTorch itself as the oracle, in float64."""
import copy
import math
import warnings
import zlib
from collections import OrderedDict

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.nn import functional as F


# ---------------------------------------------------------------- helpers

def torch_or_skip():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)   # tiny problems: threads only add scheduling noise on a busy machine
    return torch


def to_fg(a, requires_grad=False):
    """A fusegrad tensor holding a copy of a NumPy array or a torch tensor's values."""
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    return fg.from_numpy(np.array(a)).requires_grad_(requires_grad)


def to_torch(torch, a, requires_grad=False):
    a = a.detach().numpy() if isinstance(a, fg.Tensor) else np.asarray(a)
    return torch.from_numpy(np.array(a)).requires_grad_(requires_grad)


def copy_weights(src_torch, dst_fg):
    """Give a fusegrad module a torch module's parameter values; names must match one to one."""
    theirs = list(src_torch.named_parameters())
    ours = list(dst_fg.named_parameters())
    assert [n for n, _ in ours] == [n for n, _ in theirs]
    with fg.no_grad():
        for (_, p), (_, q) in zip(ours, theirs):
            p.copy_(to_fg(q))


def assert_matches(ours, theirs, rtol=1e-12, atol=1e-12):
    assert ours is not None and theirs is not None
    assert tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)


def tiny_model_class(torch_ns, dim_in=1000, hidden=100, dim_out=10):
    """The autograd tutorial's TinyModel, written once against either library's namespace."""

    class TinyModel(torch_ns.nn.Module):
        def __init__(self):
            super(TinyModel, self).__init__()
            self.layer1 = torch_ns.nn.Linear(dim_in, hidden)
            self.relu = torch_ns.nn.ReLU()
            self.layer2 = torch_ns.nn.Linear(hidden, dim_out)

        def forward(self, x):
            x = self.layer1(x)
            x = self.relu(x)
            x = self.layer2(x)
            return x

    return TinyModel


class Block(nn.Module):
    """Parameters, a buffer and a submodule, registered by attribute assignment."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(fg.ones(3))
        self.register_buffer("running", fg.zeros(3))
        self.register_buffer("scratch", fg.zeros(1), persistent=False)
        self.inner = nn.Linear(3, 2)
        self.plain = 5

    def forward(self, x):
        return self.inner(x * self.scale + self.running)


# ---------------------------------------------------------------- registration

def test_attribute_assignment_registers_parameters_buffers_and_modules():
    b = Block()
    assert list(b._parameters) == ["scale"]
    assert list(b._buffers) == ["running", "scratch"]
    assert list(b._modules) == ["inner"]
    assert "plain" not in b._parameters and b.plain == 5
    assert b.scale is b._parameters["scale"] and b.inner is b._modules["inner"]
    assert isinstance(b.inner.weight, nn.Parameter)
    # a plain tensor attribute is neither a parameter nor a buffer
    b.extra = fg.ones(2)
    assert "extra" not in b._parameters and "extra" not in b._buffers
    # reassigning a name moves it between stores
    b.plain = nn.Parameter(fg.zeros(1))
    assert "plain" in b._parameters and "plain" not in b.__dict__
    del b.plain
    assert "plain" not in b._parameters
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'plain'"):
        b.plain


def test_assignment_type_errors_match_torch():
    lin = nn.Linear(2, 3)
    with pytest.raises(TypeError, match=r"^cannot assign 'torch\.FloatTensor' as parameter 'weight' "
                                        r"\(torch\.nn\.Parameter or None expected\)$"):
        lin.weight = fg.ones(3, 2)
    with pytest.raises(TypeError, match=r"^cannot assign 'int' as parameter 'weight'"):
        lin.weight = 3
    assert isinstance(lin.weight, nn.Parameter)   # unchanged after the failed assignments
    lin.sub = nn.ReLU()
    with pytest.raises(TypeError, match=r"^cannot assign 'int' as child module 'sub' "
                                        r"\(torch\.nn\.Module or None expected\)$"):
        lin.sub = 3
    lin.register_buffer("buf", fg.ones(1))
    with pytest.raises(TypeError, match=r"^cannot assign 'int' as buffer 'buf' "
                                        r"\(torch\.nn\.Buffer, torch\.Tensor or None expected\)$"):
        lin.buf = 3
    lin.buf = fg.zeros(1)   # a plain tensor may replace a buffer
    assert lin._buffers["buf"].tolist() == [0.0]
    with pytest.raises(TypeError, match=r"^cannot assign 'torch\.FloatTensor' object to parameter 'x' "
                                        r"\(torch\.nn\.Parameter or None required\)$"):
        lin.register_parameter("x", fg.ones(2))
    with pytest.raises(KeyError, match="parameter name can.+t contain"):
        lin.register_parameter("a.b", None)
    with pytest.raises(KeyError, match="attribute 'in_features' already exists"):
        lin.register_buffer("in_features", fg.ones(1))
    lin.bias = None   # None is allowed and keeps the key
    assert "bias" in lin._parameters and lin.bias is None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]


def test_assigning_before_init_raises():
    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(fg.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_named_parameters_order_names_and_sharing():
    b = Block()
    assert [n for n, _ in b.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [n for n, _ in b.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in b.named_parameters(prefix="m")] == ["m.scale", "m.inner.weight", "m.inner.bias"]
    assert [n for n, _ in b.named_buffers()] == ["running", "scratch"]
    assert len(list(b.parameters())) == 3

    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert [n for n, _ in seq.named_parameters(remove_duplicate=False)] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]

    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert [n for n, _ in tied.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_children_modules_named_modules():
    inner = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    outer = nn.Sequential(OrderedDict(body=inner, act=nn.ReLU(), again=inner))
    assert [type(m).__name__ for m in outer.children()] == ["Sequential", "ReLU"]
    assert [n for n, _ in outer.named_children()] == ["body", "act"]
    assert [n for n, _ in outer.named_modules()] == ["", "body", "body.0", "body.1", "act"]
    assert [type(m).__name__ for m in outer.modules()] == ["Sequential", "Sequential", "Linear", "Tanh", "ReLU"]
    assert outer.get_submodule("body.0") is inner[0]
    assert outer.get_parameter("body.0.bias") is inner[0].bias
    visited = []
    outer.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Linear", "Tanh", "Sequential", "ReLU", "Sequential"]


def test_train_eval_propagate():
    b = Block()
    assert b.training and b.inner.training
    assert b.eval() is b
    assert not b.training and not b.inner.training
    b.train()
    assert b.training and b.inner.training
    b.inner.train(False)
    assert b.training and not b.inner.training
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        b.train("no")


def test_dropout_follows_training_mode():
    fg.manual_seed(0)
    drop = nn.Dropout(0.5)
    x = fg.ones(1000)
    y = drop(x)
    kept = y.numpy() != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_array_equal(y.numpy()[kept], 2.0)
    drop.eval()
    assert drop(x) is x
    hidden = fg.ones(1000, requires_grad=True) * 1.0
    out = F.dropout(hidden, 0.25, training=True, inplace=True)
    assert out is hidden and 0.65 < (out.detach().numpy() != 0).mean() < 0.85
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_zero_grad_module():
    b = Block()
    b(fg.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in b.parameters())
    b.zero_grad(set_to_none=False)
    for p in b.parameters():
        assert p.grad is not None and not p.grad.requires_grad
        np.testing.assert_array_equal(p.grad.numpy(), 0.0)
    b.zero_grad()   # set_to_none defaults to True
    assert all(p.grad is None for p in b.parameters())


def test_parameter_is_a_leaf_that_requires_grad_and_prints_like_torch():
    p = nn.Parameter(fg.tensor([1.0, 2.0]))
    assert p.is_leaf and p.requires_grad and p.grad_fn is None
    assert isinstance(p, fg.Tensor)
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    frozen = nn.Parameter(fg.tensor([1.0, 2.0]), requires_grad=False)
    assert not frozen.requires_grad
    assert repr(frozen) == "Parameter containing:\ntensor([1., 2.])"
    assert nn.Parameter().shape == (0,)
    # a Parameter built from a computed tensor is a fresh leaf
    x = fg.ones(2, requires_grad=True)
    q = nn.Parameter(x * 3)
    assert q.is_leaf and q.requires_grad and q.tolist() == [3.0, 3.0]
    # results of ops on parameters are plain tensors with history
    y = p * 2
    assert type(y) is fg.Tensor and not y.is_leaf
    with pytest.raises(RuntimeError, match="Only Tensors of floating point and complex dtype can require gradients"):
        nn.Parameter(fg.tensor([1, 2]))
    assert not nn.Parameter(fg.tensor([1, 2]), requires_grad=False).requires_grad


def test_parameter_repr_matches_torch():
    torch = torch_or_skip()
    values = np.array([[0.5, -1.25], [3.0, 4.0]], np.float32)
    assert repr(nn.Parameter(to_fg(values))) == repr(torch.nn.Parameter(torch.from_numpy(values)))
    values = values.astype(np.float64)
    assert repr(nn.Parameter(to_fg(values))) == repr(torch.nn.Parameter(torch.from_numpy(values)))


def test_parameter_deepcopy_and_module_deepcopy():
    fg.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    clone = copy.deepcopy(model)
    x = fg.randn(5, 3)
    np.testing.assert_array_equal(clone(x).detach().numpy(), model(x).detach().numpy())
    assert all(isinstance(p, nn.Parameter) for p in clone.parameters())
    with fg.no_grad():
        clone[0].weight.fill_(0.0)
    assert not np.all(model[0].weight.detach().numpy() == 0.0)


def test_frozen_parameters_get_no_grad_and_are_not_stepped():
    fg.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    before = model[0].weight.detach().numpy().copy()
    opt = fg.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        model(fg.randn(6, 3)).pow(2).sum().backward()
        opt.step()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), before)
    assert model[0].weight not in opt.state


# ---------------------------------------------------------------- state dicts

def test_state_dict_keys_values_and_round_trip():
    fg.manual_seed(3)
    b = Block()
    sd = b.state_dict()
    assert list(sd) == ["scale", "running", "inner.weight", "inner.bias"]   # non-persistent buffer left out
    assert all(not v.requires_grad for v in sd.values())
    assert list(b.state_dict(prefix="block.")) == ["block.scale", "block.running", "block.inner.weight",
                                                  "block.inner.bias"]
    assert b.state_dict(keep_vars=True)["scale"] is b.scale

    fresh = Block()
    x = fg.randn(4, 3)
    assert not np.allclose(fresh(x).detach().numpy(), b(x).detach().numpy())
    result = fresh.load_state_dict(b.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(fresh(x).detach().numpy(), b(x).detach().numpy())
    # copied, not shared
    assert fresh.inner.weight is not b.inner.weight
    assert isinstance(fresh.inner.weight, nn.Parameter) and fresh.inner.weight.requires_grad


def test_state_dict_keeps_every_name_of_a_shared_module():
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, shared)
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    fresh = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    fresh.load_state_dict(seq.state_dict())
    np.testing.assert_array_equal(fresh[1].weight.detach().numpy(), shared.weight.detach().numpy())


def test_load_state_dict_strict_errors_match_torch():
    torch = torch_or_skip()

    def build(ns, out=10):
        return ns.nn.Sequential(ns.nn.Linear(4, 3), ns.nn.ReLU(), ns.nn.Linear(3, out))

    def message(ns, model, state):
        with pytest.raises(RuntimeError) as info:
            model.load_state_dict(state)
        return str(info.value)

    def mutate(sd, ns):
        sd = OrderedDict(sd)
        del sd["2.bias"]
        sd["extra"] = ns.zeros(1)
        sd["0.extra"] = ns.zeros(1)
        return sd

    theirs = message(torch, build(torch), mutate(build(torch).state_dict(), torch))
    ours = message(fg, build(fg), mutate(build(fg).state_dict(), fg))
    assert ours == theirs
    assert ours.startswith('Error(s) in loading state_dict for Sequential:\n\tMissing key(s) in state_dict: '
                           '"2.bias". \n\tUnexpected key(s) in state_dict: ')

    theirs = message(torch, build(torch), build(torch, out=5).state_dict())
    ours = message(fg, build(fg), build(fg, out=5).state_dict())
    assert ours == theirs
    assert "size mismatch for 2.weight: copying a param with shape torch.Size([5, 3]) from checkpoint, " \
           "the shape in current model is torch.Size([10, 3])." in ours

    # strict=False reports instead of raising (but a size mismatch still raises)
    model = build(fg)
    result = model.load_state_dict(mutate(build(fg).state_dict(), fg), strict=False)
    theirs = build(torch).load_state_dict(mutate(build(torch).state_dict(), torch), strict=False)
    assert result.missing_keys == theirs.missing_keys
    assert result.unexpected_keys == theirs.unexpected_keys
    with pytest.raises(RuntimeError, match="size mismatch"):
        build(fg).load_state_dict(build(fg, out=5).state_dict(), strict=False)


# ---------------------------------------------------------------- calling and hooks

def test_forward_hooks_and_pre_hooks():
    lin = nn.Linear(2, 2)
    calls = []

    def pre(module, args):
        calls.append(("pre", module))
        return args[0] * 0.0

    def post(module, args, output):
        calls.append(("post", len(args)))
        return output + 1.0

    h1 = lin.register_forward_pre_hook(pre)
    h2 = lin.register_forward_hook(post)
    out = lin(fg.ones(3, 2))
    np.testing.assert_allclose(out.detach().numpy(), np.broadcast_to(lin.bias.detach().numpy() + 1.0, (3, 2)))
    assert calls == [("pre", lin), ("post", 1)]
    h1.remove()
    h2.remove()
    calls.clear()
    out = lin(fg.ones(3, 2))
    assert calls == []

    seen = []
    with lin.register_forward_hook(lambda m, a, o: seen.append(o.shape)):
        lin(fg.ones(1, 2))
    lin(fg.ones(1, 2))
    assert seen == [(1, 2)]

    order = []
    lin.register_forward_hook(lambda m, a, o: order.append("first"))
    lin.register_forward_hook(lambda m, a, o: order.append("prepended"), prepend=True)
    lin.register_forward_hook(lambda m, a, kw, o: order.append(sorted(kw)), with_kwargs=True)
    lin(fg.ones(1, 2))
    assert order == ["prepended", "first", []]


def test_missing_forward():
    class NoForward(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match='Module \\[NoForward\\] is missing the required "forward" function'):
        NoForward()(fg.ones(1))


# ---------------------------------------------------------------- printing

def test_tiny_model_repr_matches_torch():
    torch = torch_or_skip()
    ours = repr(tiny_model_class(fg)())
    assert ours == repr(tiny_model_class(torch)())
    assert ours == ("TinyModel(\n"
                    "  (layer1): Linear(in_features=1000, out_features=100, bias=True)\n"
                    "  (relu): ReLU()\n"
                    "  (layer2): Linear(in_features=100, out_features=10, bias=True)\n"
                    ")")


@pytest.mark.parametrize("build", [
    lambda ns: ns.nn.Sequential(ns.nn.Linear(2, 3, bias=False), ns.nn.ReLU(inplace=True),
                                ns.nn.Sequential(ns.nn.Tanh(), ns.nn.Sigmoid()), ns.nn.Softmax(dim=1)),
    lambda ns: ns.nn.ModuleList([ns.nn.Linear(2, 2) for _ in range(3)] + [ns.nn.ReLU(), ns.nn.ReLU()]),
    lambda ns: ns.nn.ModuleList(),
    lambda ns: ns.nn.Sequential(),
    lambda ns: ns.nn.Sequential(OrderedDict(
        gelu=ns.nn.GELU(), gelu_tanh=ns.nn.GELU(approximate="tanh"), silu=ns.nn.SiLU(),
        leaky=ns.nn.LeakyReLU(0.2), drop=ns.nn.Dropout(0.25), flat=ns.nn.Flatten(), ident=ns.nn.Identity(),
        logsm=ns.nn.LogSoftmax(dim=-1), mse=ns.nn.MSELoss(), ce=ns.nn.CrossEntropyLoss(), bce=ns.nn.BCELoss(),
        bcel=ns.nn.BCEWithLogitsLoss(), nll=ns.nn.NLLLoss(), l1=ns.nn.L1Loss())),
    lambda ns: ns.nn.Sequential(OrderedDict(
        elu=ns.nn.ELU(), elu2=ns.nn.ELU(0.5, inplace=True), selu=ns.nn.SELU(), selu2=ns.nn.SELU(True),
        celu=ns.nn.CELU(2.0, True), softplus=ns.nn.Softplus(), softplus2=ns.nn.Softplus(2, 10),
        hardtanh=ns.nn.Hardtanh(), hardtanh2=ns.nn.Hardtanh(-2, 3, True), relu6=ns.nn.ReLU6(),
        relu62=ns.nn.ReLU6(True), logsig=ns.nn.LogSigmoid(), mish=ns.nn.Mish(True), hswish=ns.nn.Hardswish(True),
        hsig=ns.nn.Hardsigmoid(), softsign=ns.nn.Softsign(), tanhshrink=ns.nn.Tanhshrink(), softmin=ns.nn.Softmin(),
        softmin1=ns.nn.Softmin(1), threshold=ns.nn.Threshold(0.1, 20, True), glu=ns.nn.GLU(), glu0=ns.nn.GLU(0),
        prelu=ns.nn.PReLU(), prelu3=ns.nn.PReLU(3, 0.1), sl1=ns.nn.SmoothL1Loss(beta=0.5), huber=ns.nn.HuberLoss(),
        kl=ns.nn.KLDivLoss(reduction="batchmean"), cos=ns.nn.CosineSimilarity(), dist=ns.nn.PairwiseDistance())),
], ids=["nested", "modulelist-repeats", "empty-modulelist", "empty-sequential", "zoo", "zoo-activations"])
def test_container_and_layer_reprs_match_torch(build):
    torch = torch_or_skip()
    assert repr(build(fg)) == repr(build(torch))


# ---------------------------------------------------------------- containers

def test_sequential_indexing_slicing_assignment_and_iteration():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3
    assert seq[0] is a and seq[-1] is c and seq[1] is b
    assert list(seq) == [a, b, c]
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    assert list(head._modules) == ["0", "1"]
    assert list(seq[1:]._modules) == ["1", "2"]   # slicing keeps the names, as in torch
    with pytest.raises(IndexError, match="index 3 is out of range"):
        seq[3]
    with pytest.raises(IndexError, match="index -4 is out of range"):
        seq[-4]
    t = nn.Tanh()
    seq[1] = t
    assert seq[1] is t and list(seq._modules) == ["0", "1", "2"]
    x = fg.randn(4, 2)
    np.testing.assert_allclose(seq(x).detach().numpy(), c(fg.tanh(a(x))).detach().numpy())
    del seq[0]
    assert list(seq._modules) == ["0", "1"] and seq[0] is t
    seq.append(nn.Sigmoid())
    assert len(seq) == 3 and isinstance(seq[2], nn.Sigmoid)

    named = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.ReLU()))
    assert list(named._modules) == ["fc", "act"] and named.fc is named[0]


def test_modulelist():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert layers[-1] is list(layers)[2]
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 2
    layers.append(nn.ReLU()).extend([nn.Tanh()])
    assert len(layers) == 5 and isinstance(layers[4], nn.Tanh)
    layers[-1] = nn.Sigmoid()
    assert isinstance(layers[4], nn.Sigmoid)
    with pytest.raises(IndexError, match="index 7 is out of range"):
        layers[7]
    with pytest.raises(NotImplementedError, match=r"Module \[ModuleList\] is missing the required \"forward\""):
        layers(fg.ones(2))


# ---------------------------------------------------------------- layers against torch

def test_linear_default_init_statistics():
    fg.manual_seed(0)
    lin = nn.Linear(1000, 100)
    bound = 1 / math.sqrt(1000)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert w.shape == (100, 1000) and b.shape == (100,)
    assert w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.99 * bound          # fills the whole interval
    assert abs(w.mean()) < 0.02 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound   # std of U(-a, a) is a / sqrt(3)
    fg.manual_seed(0)
    again = nn.Linear(1000, 100)
    np.testing.assert_array_equal(again.weight.detach().numpy(), w)
    assert nn.Linear(3, 2, dtype=fg.float64).weight.dtype == fg.float64


@pytest.mark.parametrize("in_shape", [(5, 4), (2, 3, 4), (4,)], ids=["2d", "3d", "1d"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(in_shape, bias):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    t_lin = torch.nn.Linear(4, 3, bias=bias).double()
    f_lin = nn.Linear(4, 3, bias=bias, dtype=fg.float64)
    copy_weights(t_lin, f_lin)
    x = rng.standard_normal(in_shape)
    tx, fx = to_torch(torch, x, True), to_fg(x, True)
    t_out, f_out = t_lin(tx), f_lin(fx)
    assert_matches(f_out, t_out)
    upstream = rng.standard_normal(t_out.shape)
    t_out.backward(torch.from_numpy(upstream))
    f_out.backward(to_fg(upstream))
    assert_matches(fx.grad, tx.grad)
    assert_matches(f_lin.weight.grad, t_lin.weight.grad)
    if bias:
        assert_matches(f_lin.bias.grad, t_lin.bias.grad)


ACTIVATIONS = {
    "relu": lambda ns: ns.nn.ReLU(),
    "leaky_relu": lambda ns: ns.nn.LeakyReLU(0.1),
    "sigmoid": lambda ns: ns.nn.Sigmoid(),
    "tanh": lambda ns: ns.nn.Tanh(),
    "gelu_tanh": lambda ns: ns.nn.GELU(approximate="tanh"),
    "gelu": lambda ns: ns.nn.GELU(),
    "silu": lambda ns: ns.nn.SiLU(),
    "softmax": lambda ns: ns.nn.Softmax(dim=1),
    "log_softmax": lambda ns: ns.nn.LogSoftmax(dim=-1),
    "flatten": lambda ns: ns.nn.Flatten(),
    "identity": lambda ns: ns.nn.Identity(),
    "dropout_eval": lambda ns: ns.nn.Dropout(0.3).eval(),
    "elu": lambda ns: ns.nn.ELU(),
    "elu_alpha": lambda ns: ns.nn.ELU(0.5),
    "selu": lambda ns: ns.nn.SELU(),
    "celu": lambda ns: ns.nn.CELU(2.0),
    "softplus": lambda ns: ns.nn.Softplus(),
    "softplus_beta_threshold": lambda ns: ns.nn.Softplus(2.0, 3.0),
    "hardtanh": lambda ns: ns.nn.Hardtanh(),
    "hardtanh_bounds": lambda ns: ns.nn.Hardtanh(-2.5, 0.5),
    "relu6": lambda ns: ns.nn.ReLU6(),
    "logsigmoid": lambda ns: ns.nn.LogSigmoid(),
    "mish": lambda ns: ns.nn.Mish(),
    "hardswish": lambda ns: ns.nn.Hardswish(),
    "hardsigmoid": lambda ns: ns.nn.Hardsigmoid(),
    "softsign": lambda ns: ns.nn.Softsign(),
    "tanhshrink": lambda ns: ns.nn.Tanhshrink(),
    "softmin": lambda ns: ns.nn.Softmin(dim=1),
    "threshold": lambda ns: ns.nn.Threshold(0.5, -3.0),
    "glu": lambda ns: ns.nn.GLU(),
    "glu_dim1": lambda ns: ns.nn.GLU(1),
}


# Activations whose PyTorch backward multiplies by a float32 constant even in float64 (hardsigmoid's
# 1.0f / 6.0f): their gradients agree with PyTorch's to float32's precision, not float64's.
FLOAT32_CONSTANT_IN_TORCH_BACKWARD = {"hardsigmoid"}


def _grad_tolerance(name):
    return dict(rtol=1e-7) if name in FLOAT32_CONSTANT_IN_TORCH_BACKWARD else {}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_layers_match_torch(name):
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 2)) * 3
    x[0, 0, 0] = 0.5   # keep away from relu's kink
    tx, fx = to_torch(torch, x, True), to_fg(x, True)
    t_out, f_out = ACTIVATIONS[name](torch)(tx), ACTIVATIONS[name](fg)(fx)
    assert_matches(f_out, t_out)
    upstream = rng.standard_normal(t_out.shape)
    (t_out * torch.from_numpy(upstream)).sum().backward()
    (f_out * to_fg(upstream)).sum().backward()
    assert_matches(fx.grad, tx.grad, **_grad_tolerance(name))


INPLACE_ACTIVATIONS = {
    "relu": lambda ns: ns.nn.ReLU(inplace=True),
    "leaky_relu": lambda ns: ns.nn.LeakyReLU(0.2, inplace=True),
    "silu": lambda ns: ns.nn.SiLU(inplace=True),
    "dropout_eval": lambda ns: ns.nn.Dropout(0.5, inplace=True).eval(),
    "elu": lambda ns: ns.nn.ELU(0.5, inplace=True),
    "selu": lambda ns: ns.nn.SELU(inplace=True),
    "celu": lambda ns: ns.nn.CELU(2.0, inplace=True),
    "hardtanh": lambda ns: ns.nn.Hardtanh(-0.5, 1.5, inplace=True),
    "relu6": lambda ns: ns.nn.ReLU6(inplace=True),
    "mish": lambda ns: ns.nn.Mish(inplace=True),
    "hardswish": lambda ns: ns.nn.Hardswish(inplace=True),
    "hardsigmoid": lambda ns: ns.nn.Hardsigmoid(inplace=True),
    "threshold": lambda ns: ns.nn.Threshold(0.5, -3.0, inplace=True),
}


@pytest.mark.parametrize("name", list(INPLACE_ACTIVATIONS))
def test_inplace_activations_match_torch(name):
    """inplace=True writes into its (non-leaf) input and returns it; gradients still reach the leaf."""
    torch = torch_or_skip()
    rng = np.random.default_rng(4)
    x, upstream = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    results = []
    for ns, convert in ((torch, lambda a: to_torch(torch, a)), (fg, to_fg)):
        leaf = convert(x).requires_grad_()
        hidden = leaf * 1.5
        out = INPLACE_ACTIVATIONS[name](ns)(hidden)
        assert out is hidden
        (out * convert(upstream)).sum().backward()
        results.append((out, leaf.grad))
    assert_matches(results[1][0], results[0][0])
    assert_matches(results[1][1], results[0][1], **_grad_tolerance(name))


def test_mlp_forward_and_parameter_grads_match_torch():
    torch = torch_or_skip()

    def build(ns):
        return ns.nn.Sequential(ns.nn.Linear(5, 8), ns.nn.Tanh(), ns.nn.Linear(8, 8), ns.nn.ReLU(),
                                ns.nn.Linear(8, 3))

    t_model, f_model = build(torch).double(), build(fg).double()
    copy_weights(t_model, f_model)
    rng = np.random.default_rng(2)
    x, labels = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)
    t_loss = torch.nn.CrossEntropyLoss()(t_model(torch.from_numpy(x)), torch.from_numpy(labels))
    f_loss = nn.CrossEntropyLoss()(f_model(to_fg(x)), to_fg(labels))
    assert_matches(f_loss, t_loss)
    t_loss.backward()
    f_loss.backward()
    for (name, p), (_, q) in zip(f_model.named_parameters(), t_model.named_parameters()):
        assert_matches(p.grad, q.grad)


# ---------------------------------------------------------------- losses against torch

def _inputs(kind, rng):
    """(input, target) NumPy arrays for one kind of loss, and whether the target is a class index."""
    if kind == "regression":
        return rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    if kind == "classes":
        return rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    if kind == "classes_ignored":
        return rng.standard_normal((6, 4)), np.array([0, -100, 3, 1, -100, 2])
    if kind == "classes_ignore_1":
        return rng.standard_normal((6, 4)), np.array([0, 1, 3, 1, 2, 2])
    if kind == "classes_3d":
        return rng.standard_normal((3, 4, 5)), rng.integers(0, 4, (3, 5))
    if kind == "classes_nd":
        return rng.standard_normal((3, 4, 2, 5)), rng.integers(0, 4, (3, 2, 5))
    if kind == "classes_unbatched":
        return rng.standard_normal(4), np.array(2)
    if kind == "log_probs":
        x = rng.standard_normal((6, 4))
        return x - np.log(np.exp(x).sum(1, keepdims=True)), rng.integers(0, 4, 6)
    if kind == "probs":
        p = np.exp(rng.standard_normal((5, 4)))
        return rng.standard_normal((5, 4)), p / p.sum(1, keepdims=True)
    if kind == "probs_nd":
        p = np.exp(rng.standard_normal((2, 4, 3)))
        return rng.standard_normal((2, 4, 3)), p / p.sum(1, keepdims=True)
    if kind == "binary":
        return 1 / (1 + np.exp(-rng.standard_normal((5, 3)))), rng.uniform(size=(5, 3))
    if kind == "binary_hard":
        return 1 / (1 + np.exp(-rng.standard_normal((5, 3)))), rng.integers(0, 2, (5, 3)).astype(np.float64)
    if kind == "logits":
        return rng.standard_normal((5, 3)) * 4, rng.uniform(size=(5, 3))
    if kind in ("kl", "kl_log_target"):   # log-probabilities, and probabilities (or their logs)
        x, t = rng.standard_normal((4, 3)), np.exp(rng.standard_normal((4, 3)))
        t = t / t.sum(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True)), np.log(t) if kind == "kl_log_target" else t
    raise KeyError(kind)


CLASS_WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])
LOSS_CASES = [
    # (id, module name, constructor arguments, input kind)
    ("mse", "MSELoss", {}, "regression"),
    ("mse_sum", "MSELoss", {"reduction": "sum"}, "regression"),
    ("mse_none", "MSELoss", {"reduction": "none"}, "regression"),
    ("l1", "L1Loss", {}, "regression"),
    ("l1_sum", "L1Loss", {"reduction": "sum"}, "regression"),
    ("l1_none", "L1Loss", {"reduction": "none"}, "regression"),
    ("ce", "CrossEntropyLoss", {}, "classes"),
    ("ce_sum", "CrossEntropyLoss", {"reduction": "sum"}, "classes"),
    ("ce_none", "CrossEntropyLoss", {"reduction": "none"}, "classes"),
    ("ce_weight", "CrossEntropyLoss", {"weight": CLASS_WEIGHT}, "classes"),
    ("ce_weight_none", "CrossEntropyLoss", {"weight": CLASS_WEIGHT, "reduction": "none"}, "classes"),
    ("ce_ignore", "CrossEntropyLoss", {}, "classes_ignored"),
    ("ce_ignore_1", "CrossEntropyLoss", {"ignore_index": 1}, "classes_ignore_1"),
    ("ce_ignore_none", "CrossEntropyLoss", {"reduction": "none", "weight": CLASS_WEIGHT}, "classes_ignored"),
    ("ce_ignore_sum", "CrossEntropyLoss", {"reduction": "sum"}, "classes_ignored"),
    ("ce_ignore_weight", "CrossEntropyLoss", {"weight": CLASS_WEIGHT}, "classes_ignored"),
    ("ce_smooth", "CrossEntropyLoss", {"label_smoothing": 0.1}, "classes"),
    ("ce_smooth_sum", "CrossEntropyLoss", {"label_smoothing": 0.2, "reduction": "sum"}, "classes"),
    ("ce_smooth_none", "CrossEntropyLoss", {"label_smoothing": 0.2, "reduction": "none"}, "classes"),
    ("ce_smooth_weight", "CrossEntropyLoss", {"label_smoothing": 0.1, "weight": CLASS_WEIGHT}, "classes"),
    ("ce_smooth_weight_none", "CrossEntropyLoss", {"label_smoothing": 0.1, "weight": CLASS_WEIGHT,
                                                   "reduction": "none"}, "classes"),
    ("ce_smooth_ignore", "CrossEntropyLoss", {"label_smoothing": 0.1}, "classes_ignored"),
    ("ce_smooth_ignore_weight", "CrossEntropyLoss", {"label_smoothing": 0.3, "weight": CLASS_WEIGHT},
     "classes_ignored"),
    ("ce_smooth_ignore_none", "CrossEntropyLoss", {"label_smoothing": 0.1, "reduction": "none"},
     "classes_ignored"),
    ("ce_3d", "CrossEntropyLoss", {}, "classes_3d"),
    ("ce_3d_none", "CrossEntropyLoss", {"reduction": "none"}, "classes_3d"),
    ("ce_3d_sum_weight", "CrossEntropyLoss", {"reduction": "sum", "weight": CLASS_WEIGHT}, "classes_3d"),
    ("ce_nd", "CrossEntropyLoss", {}, "classes_nd"),
    ("ce_nd_none", "CrossEntropyLoss", {"reduction": "none"}, "classes_nd"),
    ("ce_nd_weight_smooth", "CrossEntropyLoss", {"weight": CLASS_WEIGHT, "label_smoothing": 0.1},
     "classes_nd"),
    ("ce_unbatched", "CrossEntropyLoss", {}, "classes_unbatched"),
    ("ce_unbatched_none", "CrossEntropyLoss", {"reduction": "none"}, "classes_unbatched"),
    ("ce_probs", "CrossEntropyLoss", {}, "probs"),
    ("ce_probs_sum", "CrossEntropyLoss", {"reduction": "sum"}, "probs"),
    ("ce_probs_none", "CrossEntropyLoss", {"reduction": "none"}, "probs"),
    ("ce_probs_weight", "CrossEntropyLoss", {"weight": CLASS_WEIGHT}, "probs"),
    ("ce_probs_smooth", "CrossEntropyLoss", {"label_smoothing": 0.2}, "probs"),
    ("ce_probs_smooth_weight_sum", "CrossEntropyLoss", {"label_smoothing": 0.2, "weight": CLASS_WEIGHT,
                                                        "reduction": "sum"}, "probs"),
    ("ce_probs_nd", "CrossEntropyLoss", {"weight": CLASS_WEIGHT}, "probs_nd"),
    ("nll", "NLLLoss", {}, "log_probs"),
    ("nll_sum", "NLLLoss", {"reduction": "sum"}, "log_probs"),
    ("nll_none", "NLLLoss", {"reduction": "none"}, "log_probs"),
    ("nll_weight", "NLLLoss", {"weight": CLASS_WEIGHT}, "log_probs"),
    ("nll_ignore", "NLLLoss", {"ignore_index": 1}, "classes_ignore_1"),
    ("nll_ignore_weight_none", "NLLLoss", {"ignore_index": 1, "weight": CLASS_WEIGHT, "reduction": "none"},
     "classes_ignore_1"),
    ("nll_nd", "NLLLoss", {"weight": CLASS_WEIGHT}, "classes_nd"),
    ("bce", "BCELoss", {}, "binary"),
    ("bce_sum", "BCELoss", {"reduction": "sum"}, "binary"),
    ("bce_none", "BCELoss", {"reduction": "none"}, "binary_hard"),
    ("bce_weight", "BCELoss", {"weight": np.array([1.0, 2.0, 0.5])}, "binary"),
    ("bce_logits", "BCEWithLogitsLoss", {}, "logits"),
    ("bce_logits_none", "BCEWithLogitsLoss", {"reduction": "none"}, "logits"),
    ("bce_logits_sum", "BCEWithLogitsLoss", {"reduction": "sum"}, "logits"),
    ("bce_logits_weight", "BCEWithLogitsLoss", {"weight": np.array([1.0, 2.0, 0.5])}, "logits"),
    ("bce_logits_pos_weight", "BCEWithLogitsLoss", {"pos_weight": np.array([3.0, 0.5, 1.0])}, "logits"),
    ("smooth_l1", "SmoothL1Loss", {}, "regression"),
    ("smooth_l1_sum_beta", "SmoothL1Loss", {"reduction": "sum", "beta": 0.5}, "regression"),
    ("smooth_l1_none", "SmoothL1Loss", {"reduction": "none", "beta": 2.0}, "regression"),
    ("smooth_l1_beta0", "SmoothL1Loss", {"beta": 0.0}, "regression"),
    ("huber", "HuberLoss", {}, "regression"),
    ("huber_sum_delta", "HuberLoss", {"reduction": "sum", "delta": 0.5}, "regression"),
    ("huber_none", "HuberLoss", {"reduction": "none", "delta": 2.0}, "regression"),
    ("kl", "KLDivLoss", {}, "kl"),
    ("kl_batchmean", "KLDivLoss", {"reduction": "batchmean"}, "kl"),
    ("kl_sum", "KLDivLoss", {"reduction": "sum"}, "kl"),
    ("kl_none", "KLDivLoss", {"reduction": "none"}, "kl"),
    ("kl_log_target", "KLDivLoss", {"reduction": "batchmean", "log_target": True}, "kl_log_target"),
    ("kl_log_target_none", "KLDivLoss", {"reduction": "none", "log_target": True}, "kl_log_target"),
]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")   # KLDivLoss's, in both
@pytest.mark.parametrize("module_name,kwargs,kind", [c[1:] for c in LOSS_CASES], ids=[c[0] for c in LOSS_CASES])
def test_loss_matches_torch(module_name, kwargs, kind):
    """Value, grad_fn name and input gradient of each loss, module form and functional form agree."""
    torch = torch_or_skip()
    rng = np.random.default_rng(zlib.crc32((module_name + kind).encode()))
    x, target = _inputs(kind, rng)

    def run(ns, convert):
        args = {k: (convert(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        inp = convert(x).requires_grad_()
        out = getattr(ns.nn, module_name)(**args)(inp, convert(target))
        return inp, out

    tx, t_out = run(torch, lambda a: torch.from_numpy(np.array(a)))
    fx, f_out = run(fg, lambda a: fg.from_numpy(np.array(a)))
    assert_matches(f_out, t_out)
    assert f_out.grad_fn.name() == type(t_out.grad_fn).__name__
    upstream = rng.standard_normal(t_out.shape)
    t_out.backward(torch.from_numpy(upstream))
    f_out.backward(fg.from_numpy(upstream))
    assert_matches(fx.grad, tx.grad)


def test_implicit_softmax_dim_warns_like_torch():
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax has been deprecated"):
        out = nn.Softmax()(fg.randn(2, 3))
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, rtol=1e-6)   # 2-D input: dim 1
    with pytest.warns(UserWarning, match="Implicit dimension choice for log_softmax"):
        F.log_softmax(fg.randn(3))


def test_all_targets_ignored_gives_nan_mean_like_torch():
    torch = torch_or_skip()
    x, t = np.zeros((2, 3)), np.array([-100, -100])
    theirs = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(t))
    ours = F.cross_entropy(to_fg(x), to_fg(t))
    assert math.isnan(theirs.item()) and math.isnan(ours.item())
    assert F.cross_entropy(to_fg(x), to_fg(t), reduction="sum").item() == 0.0


def test_functional_forms_match_modules():
    rng = np.random.default_rng(5)
    x, t = _inputs("classes", rng)
    x, t = to_fg(x), to_fg(t)
    w = to_fg(CLASS_WEIGHT)
    np.testing.assert_allclose(F.cross_entropy(x, t, w, label_smoothing=0.1).numpy(),
                               nn.CrossEntropyLoss(w, label_smoothing=0.1)(x, t).numpy(), rtol=1e-15)
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(x, 1), t).numpy(), F.cross_entropy(x, t).numpy(),
                               rtol=1e-14)


def test_loss_errors():
    logp = F.log_softmax(fg.randn(3, 4), 1)
    with pytest.raises(IndexError, match=r"^Target 5 is out of bounds\.$"):
        F.nll_loss(logp, fg.tensor([0, 5, 1]))
    with pytest.raises(IndexError, match=r"^Target -1 is out of bounds\.$"):
        F.nll_loss(logp, fg.tensor([0, -1, 1]))
    with pytest.raises(IndexError, match=r"^Target 4 is out of bounds\.$"):
        F.cross_entropy(fg.randn(3, 4), fg.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match=r"^Expected input batch_size \(3\) to match target batch_size \(2\)\.$"):
        F.nll_loss(logp, fg.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^Expected input batch_size \(3\) to match target batch_size \(2\)\.$"):
        nn.CrossEntropyLoss()(fg.randn(3, 4), fg.tensor([0, 1]))
    with pytest.raises(ValueError, match="^foo is not a valid value for reduction$"):
        F.mse_loss(fg.randn(3), fg.randn(3), reduction="foo")
    with pytest.warns(UserWarning, match=r"Using a target size \(torch.Size\(\[3, 1\]\)\) that is different "
                                         r"to the input size \(torch.Size\(\[3\]\)\)"):
        F.mse_loss(fg.randn(3), fg.randn(3, 1))
    with pytest.raises(ValueError, match=r"^Using a target size \(torch.Size\(\[4\]\)\) that is different to the "
                                         r"input size \(torch.Size\(\[3\]\)\) is deprecated\. Please ensure they "
                                         r"have the same size\.$"):
        F.binary_cross_entropy(fg.rand(3), fg.rand(4))
    with pytest.raises(RuntimeError, match="^all elements of input should be between 0 and 1$"):
        F.binary_cross_entropy(fg.rand(3) * 3, fg.rand(3))
    with pytest.raises(ValueError, match=r"^Target size \(torch.Size\(\[4\]\)\) must be the same as input size "
                                         r"\(torch.Size\(\[3\]\)\)$"):
        F.binary_cross_entropy_with_logits(fg.rand(3), fg.rand(4))


# ---------------------------------------------------------------- activations, losses and distances of
# the second batch: modules against their functionals, PReLU's parameter, and PyTorch's special cases

ONE_INPUT_MODULES = {   # module (from either library's namespace), and the functional call it stands for
    "elu": (lambda ns: ns.nn.ELU(0.5), lambda F, x: F.elu(x, 0.5)),
    "selu": (lambda ns: ns.nn.SELU(), lambda F, x: F.selu(x)),
    "celu": (lambda ns: ns.nn.CELU(2.0), lambda F, x: F.celu(x, 2.0)),
    "softplus": (lambda ns: ns.nn.Softplus(2.0, 3.0), lambda F, x: F.softplus(x, 2.0, 3.0)),
    "hardtanh": (lambda ns: ns.nn.Hardtanh(-2.0, 0.5), lambda F, x: F.hardtanh(x, -2.0, 0.5)),
    "relu6": (lambda ns: ns.nn.ReLU6(), lambda F, x: F.relu6(x)),
    "logsigmoid": (lambda ns: ns.nn.LogSigmoid(), lambda F, x: F.logsigmoid(x)),
    "mish": (lambda ns: ns.nn.Mish(), lambda F, x: F.mish(x)),
    "hardswish": (lambda ns: ns.nn.Hardswish(), lambda F, x: F.hardswish(x)),
    "hardsigmoid": (lambda ns: ns.nn.Hardsigmoid(), lambda F, x: F.hardsigmoid(x)),
    "softsign": (lambda ns: ns.nn.Softsign(), lambda F, x: F.softsign(x)),
    "tanhshrink": (lambda ns: ns.nn.Tanhshrink(), lambda F, x: F.tanhshrink(x)),
    "softmin": (lambda ns: ns.nn.Softmin(0), lambda F, x: F.softmin(x, 0)),
    "threshold": (lambda ns: ns.nn.Threshold(0.5, -3.0), lambda F, x: F.threshold(x, 0.5, -3.0)),
    "glu": (lambda ns: ns.nn.GLU(1), lambda F, x: F.glu(x, 1)),
    # the module's weight is made in float32, then converted with the module
    "prelu": (lambda ns: ns.nn.PReLU(4, 0.1), lambda F, x: F.prelu(x, fg.full((4,), 0.1).to(x.dtype))),
}
TWO_INPUT_MODULES = {
    "smooth_l1": (lambda ns: ns.nn.SmoothL1Loss(beta=0.5), lambda F, x, y: F.smooth_l1_loss(x, y, beta=0.5)),
    "huber": (lambda ns: ns.nn.HuberLoss("sum", 0.5), lambda F, x, y: F.huber_loss(x, y, "sum", 0.5)),
    "kl": (lambda ns: ns.nn.KLDivLoss(reduction="batchmean", log_target=True),
           lambda F, x, y: F.kl_div(x, y, reduction="batchmean", log_target=True)),
    "cosine": (lambda ns: ns.nn.CosineSimilarity(0, 1e-6), lambda F, x, y: F.cosine_similarity(x, y, 0, 1e-6)),
    "distance": (lambda ns: ns.nn.PairwiseDistance(1.0, 1e-3, True),
                 lambda F, x, y: F.pairwise_distance(x, y, 1.0, 1e-3, True)),
}


@pytest.mark.parametrize("name", list(ONE_INPUT_MODULES) + list(TWO_INPUT_MODULES))
def test_modules_compute_their_functional(name):
    """Each module gives its functional's result, bit for bit, with the same grad_fn, and PyTorch's
    module gives the same values."""
    module, functional = ONE_INPUT_MODULES.get(name) or TWO_INPUT_MODULES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    arrays = [rng.standard_normal((3, 4)) * 2 for _ in range(2 if name in TWO_INPUT_MODULES else 1)]
    ours = module(fg).to(fg.float64)(*[to_fg(a, True) for a in arrays])
    direct = functional(F, *[to_fg(a, True) for a in arrays])
    np.testing.assert_array_equal(ours.detach().numpy(), direct.detach().numpy())
    assert ours.grad_fn.name() == direct.grad_fn.name()
    torch = torch_or_skip()
    assert_matches(ours, module(torch).double()(*[to_torch(torch, a, True) for a in arrays]))


@pytest.mark.parametrize("num_parameters,shape", [(1, (4, 3, 2)), (3, (4, 3, 2)), (3, (5, 3)), (1, (5,)), (1, ())])
def test_prelu_module_matches_torch(num_parameters, shape):
    """PReLU's weight is a Parameter of num_parameters values, one per channel (dim 1); its gradient
    sums over the other dims."""
    torch = torch_or_skip()
    module = nn.PReLU(num_parameters, init=0.1, dtype=fg.float64)
    assert [name for name, _ in module.named_parameters()] == ["weight"]
    assert isinstance(module.weight, nn.Parameter) and module.weight.requires_grad
    np.testing.assert_array_equal(module.weight.detach().numpy(), np.full(num_parameters, 0.1))
    theirs = torch.nn.PReLU(num_parameters, init=0.1).double()
    rng = np.random.default_rng(num_parameters + len(shape))
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, num_parameters)))
    copy_weights(theirs, module)
    x, upstream = rng.standard_normal(shape), rng.standard_normal(shape)
    tx, fx = to_torch(torch, x, True), to_fg(x, True)
    t_out, f_out = theirs(tx), module(fx)
    assert_matches(f_out, t_out)
    assert f_out.grad_fn.name() == type(t_out.grad_fn).__name__
    t_out.backward(torch.from_numpy(upstream))
    f_out.backward(to_fg(upstream))
    assert_matches(fx.grad, tx.grad)
    assert_matches(module.weight.grad, theirs.weight.grad)


def test_prelu_defaults_like_torch():
    torch = torch_or_skip()
    ours, theirs = nn.PReLU(), torch.nn.PReLU()
    assert ours.weight.dtype == fg.float32 and tuple(ours.weight.shape) == (1,)
    assert ours.weight.item() == theirs.weight.item() == 0.25
    assert (ours.num_parameters, ours.init) == (theirs.num_parameters, theirs.init)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    with pytest.raises(RuntimeError, match=r"^Mismatch of parameter numbers and input channel size\. Found "
                                           r"parameter numbers = 3 and channel size = 4\.$"):
        nn.PReLU(3)(fg.randn(2, 4))


def test_cosine_similarity_of_vectors_below_eps_matches_torch():
    """A norm below eps is raised to eps in the value, while the gradient still goes through the norm
    itself: PyTorch clamps the norms in place under no_grad, so its gradient is not the clamped
    function's derivative there. A zero vector gives 0 with a finite gradient."""
    torch = torch_or_skip()
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    x1[0] *= 1e-9
    x1[1] = 0.0
    x2[2] *= 1e-10
    upstream = rng.standard_normal(4)
    results = []
    for ns, convert in ((torch, lambda a, g: to_torch(torch, a, g)), (fg, to_fg)):
        a, b = convert(x1, True), convert(x2, True)
        out = ns.nn.functional.cosine_similarity(a, b)
        out.backward(convert(upstream, False))
        results.append((out, a.grad, b.grad))
    for ours, theirs in zip(results[1], results[0]):
        assert_matches(ours, theirs, rtol=1e-10, atol=1e-14)
    assert np.all(np.isfinite(results[1][1].numpy()))


def test_kl_div_reductions_warn_like_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(8)
    x, t = _inputs("kl", rng)
    with pytest.warns(UserWarning, match=r"^reduction: 'mean' divides the total loss by both the batch size and the "
                                         r"support size\.'batchmean' divides only by the batch size"):
        F.kl_div(to_fg(x), to_fg(t))
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no warning for the other reductions
        for reduction in ("batchmean", "sum", "none"):
            F.kl_div(to_fg(x), to_fg(t), reduction=reduction)
    # the legacy arguments set the reduction; PyTorch still divides by the batch size when
    # reduction="batchmean" was passed as well
    for kwargs in ({"size_average": False}, {"size_average": False, "reduction": "batchmean"}, {"reduce": False}):
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            ours = F.kl_div(to_fg(x), to_fg(t), **kwargs)
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            theirs = torch.nn.functional.kl_div(to_torch(torch, x), to_torch(torch, t), **kwargs)
        assert_matches(ours, theirs)


@pytest.mark.parametrize("name", ["smooth_l1_loss", "huber_loss"])
def test_smooth_l1_and_huber_broadcast_like_torch(name):
    """A target of another shape broadcasts, with PyTorch's warning, and its gradient sums back."""
    torch = torch_or_skip()
    rng = np.random.default_rng(9)
    x, t = rng.standard_normal((3, 4)) * 2, rng.standard_normal(4)
    results = []
    for ns, convert in ((torch, lambda a: to_torch(torch, a, True)), (fg, lambda a: to_fg(a, True))):
        a, b = convert(x), convert(t)
        with pytest.warns(UserWarning, match=r"Using a target size \(torch\.Size\(\[4\]\)\) that is different to "
                                             r"the input size \(torch\.Size\(\[3, 4\]\)\)"):
            out = getattr(ns.nn.functional, name)(a, b)
        out.backward()
        results.append((out, a.grad, b.grad))
    for ours, theirs in zip(results[1], results[0]):
        assert_matches(ours, theirs)


def test_module_argument_checks_like_torch():
    with pytest.raises(AssertionError, match=r"^max_val \(1\.0\) must be greater than min_val \(1\.0\)$"):
        nn.Hardtanh(1.0, 1.0)
    with pytest.warns(UserWarning, match="keyword argument `min_value` is deprecated and renamed to `min_val`"):
        module = nn.Hardtanh(min_value=-2.0)
    assert (module.min_val, module.max_val) == (-2.0, 1.0)
    relu6 = nn.ReLU6()
    assert isinstance(relu6, nn.Hardtanh) and (relu6.min_val, relu6.max_val) == (0.0, 6.0)
    with pytest.raises(TypeError, match=r"^delta must be a float or int, got: <class 'str'>$"):
        nn.HuberLoss(delta="1")
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmin has been deprecated"):
        out = nn.Softmin()(fg.randn(2, 3))
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, rtol=1e-6)


# ---------------------------------------------------------------- end to end

def _tutorial_batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, 1000)).astype(np.float32), rng.standard_normal((16, 10)).astype(np.float32)


def _train(ns, model, x, y, steps=50):
    optimizer = ns.optim.SGD(model.parameters(), lr=0.001)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        prediction = model(x)
        loss = (y - prediction).pow(2).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_tiny_model_trains():
    fg.manual_seed(0)
    x, y = _tutorial_batch()
    losses = _train(fg, tiny_model_class(fg)(), fg.from_numpy(x), fg.from_numpy(y))
    assert losses[-1] < 0.5 * losses[0]
    assert sum(b > a for a, b in zip(losses, losses[1:])) <= 2   # decreasing, allowing a rare uptick


def test_tiny_model_training_matches_torch_step_by_step():
    torch = torch_or_skip()
    torch.manual_seed(0)
    t_model, f_model = tiny_model_class(torch)(), tiny_model_class(fg)()
    copy_weights(t_model, f_model)
    x, y = _tutorial_batch(1)
    t_losses = _train(torch, t_model, torch.from_numpy(x), torch.from_numpy(y))
    f_losses = _train(fg, f_model, fg.from_numpy(x), fg.from_numpy(y))
    # The batch is fitted almost exactly, so late losses are sums of squares of residuals near float32's
    # rounding of the O(1) predictions: compare those to a millionth of the initial loss.
    np.testing.assert_allclose(f_losses, t_losses, rtol=1e-4, atol=1e-6 * t_losses[0])
    for p, q in zip(f_model.parameters(), t_model.parameters()):
        assert p.dtype == fg.float32
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-5)
