"""Tests for fusegrad.optim: SGD, Adam, AdamW, RMSprop and Adagrad step for step against PyTorch in float64, plus
zero_grad, parameter groups, state dicts, printing and constructor errors."""
import copy
import warnings

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn, optim


def torch_or_skip():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)   # tiny problems: threads only add scheduling noise on a busy machine
    return torch


# ---------------------------------------------------------------- a small problem, in either library

RNG = np.random.default_rng(1234)
INITIAL = {"w1": RNG.standard_normal((4, 3)), "b1": RNG.standard_normal(4), "w2": RNG.standard_normal((2, 4))}
X, Y = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
GIVEN_GRADS = [{k: RNG.standard_normal(v.shape) * RNG.uniform(0.1, 3) for k, v in INITIAL.items()} for _ in range(6)]


def make_params(ns):
    return {k: ns.tensor(v, dtype=ns.float64, requires_grad=True) for k, v in INITIAL.items()}


def mlp_loss(ns, p):
    hidden = ns.tanh(ns.tensor(X) @ p["w1"].t() + p["b1"])
    return (hidden @ p["w2"].t() - ns.tensor(Y)).pow(2).mean()


def run_steps(ns, params, optimizer, steps, gradients):
    """`steps` optimizer steps; gradients from the MLP loss, or given ones set on .grad. Returns the
    parameter values (NumPy) after each step."""
    history = []
    for i in range(steps):
        optimizer.zero_grad()
        if gradients == "loss":
            mlp_loss(ns, params).backward()
        else:
            for k, p in params.items():
                p.grad = ns.tensor(GIVEN_GRADS[i][k], dtype=ns.float64)
        optimizer.step()
        history.append({k: p.detach().numpy().copy() for k, p in params.items()})
    return history


def build(ns, name, kwargs, params, grouped=False):
    if grouped:   # a second group with its own lr (and, for SGD/Adam, its own momentum/betas)
        extra = {"lr": kwargs.get("lr", 1e-3) * 3}
        if name == "SGD" and kwargs.get("momentum") and not kwargs.get("nesterov"):
            extra["momentum"] = 0.5
        if name in ("Adam", "AdamW"):
            extra["betas"] = (0.5, 0.6)
        groups = [{"params": [params["w1"], params["b1"]]}, dict(extra, params=[params["w2"]])]
        return getattr(ns.optim, name)(groups, **kwargs)
    return getattr(ns.optim, name)(list(params.values()), **kwargs)


OPT_CASES = [
    ("sgd", "SGD", {"lr": 0.1}),
    ("sgd_momentum", "SGD", {"lr": 0.1, "momentum": 0.9}),
    ("sgd_dampening", "SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("sgd_nesterov", "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("sgd_weight_decay", "SGD", {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd_maximize", "SGD", {"lr": 0.01, "maximize": True}),
    ("sgd_momentum_dampening_weight_decay", "SGD", {"lr": 0.05, "momentum": 0.5, "dampening": 0.5,
                                                    "weight_decay": 0.1}),
    ("sgd_all", "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1, "maximize": True}),
    ("adam", "Adam", {"lr": 0.05}),
    ("adam_betas_eps", "Adam", {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6}),
    ("adam_weight_decay", "Adam", {"lr": 0.05, "weight_decay": 0.1}),
    # a short beta2 lets exp_avg_sq fall between steps, so amsgrad's running maximum matters
    ("adam_amsgrad", "Adam", {"lr": 0.05, "amsgrad": True, "betas": (0.9, 0.6)}),
    ("adam_amsgrad_weight_decay_maximize", "Adam", {"lr": 0.05, "amsgrad": True, "betas": (0.9, 0.6),
                                                    "weight_decay": 0.1, "maximize": True}),
    ("adam_decoupled", "Adam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adamw", "AdamW", {"lr": 0.05}),
    ("adamw_weight_decay_amsgrad", "AdamW", {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True,
                                             "betas": (0.8, 0.6)}),
    ("rmsprop", "RMSprop", {"lr": 0.01}),
    ("rmsprop_alpha_eps", "RMSprop", {"lr": 0.02, "alpha": 0.7, "eps": 1e-4}),
    ("rmsprop_centered", "RMSprop", {"lr": 0.01, "centered": True, "alpha": 0.8}),
    ("rmsprop_momentum", "RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("rmsprop_all", "RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1,
                                "maximize": True}),
    ("adagrad", "Adagrad", {"lr": 0.1}),
    ("adagrad_lr_decay", "Adagrad", {"lr": 0.1, "lr_decay": 0.3}),
    ("adagrad_all", "Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.2, "initial_accumulator_value": 0.5,
                                "eps": 1e-3, "maximize": True}),
]


@pytest.mark.parametrize("gradients", ["loss", "given"])
@pytest.mark.parametrize("name,kwargs", [c[1:] for c in OPT_CASES], ids=[c[0] for c in OPT_CASES])
def test_steps_match_torch(name, kwargs, gradients):
    torch = torch_or_skip()
    theirs = run_steps(torch, (tp := make_params(torch)), build(torch, name, kwargs, tp), 6, gradients)
    ours = run_steps(fg, (fp := make_params(fg)), build(fg, name, kwargs, fp), 6, gradients)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        for k in INITIAL:
            np.testing.assert_allclose(mine[k], ref[k], rtol=1e-10, atol=1e-13, err_msg=f"{k} after step {step + 1}")
    assert not np.allclose(ours[-1]["w1"], INITIAL["w1"])   # the parameters did move


GROUPED = ("sgd_momentum", "sgd_nesterov", "adam_amsgrad", "adamw", "rmsprop_all", "adagrad_all")


@pytest.mark.parametrize("name,kwargs", [c[1:] for c in OPT_CASES if c[0] in GROUPED], ids=GROUPED)
def test_parameter_groups_match_torch(name, kwargs):
    torch = torch_or_skip()
    tp, fp = make_params(torch), make_params(fg)
    t_opt, f_opt = build(torch, name, kwargs, tp, grouped=True), build(fg, name, kwargs, fp, grouped=True)
    assert [g["lr"] for g in f_opt.param_groups] == [g["lr"] for g in t_opt.param_groups]
    theirs = run_steps(torch, tp, t_opt, 4, "loss")
    ours = run_steps(fg, fp, f_opt, 4, "loss")
    for mine, ref in zip(ours, theirs):
        for k in INITIAL:
            np.testing.assert_allclose(mine[k], ref[k], rtol=1e-10, atol=1e-13)


def test_group_lr_is_per_group():
    p = make_params(fg)
    opt = optim.SGD([{"params": [p["w1"]], "lr": 0.0}, {"params": [p["b1"], p["w2"]]}], lr=0.1)
    run_steps(fg, p, opt, 1, "given")
    np.testing.assert_array_equal(p["w1"].detach().numpy(), INITIAL["w1"])
    np.testing.assert_allclose(p["b1"].detach().numpy(), INITIAL["b1"] - 0.1 * GIVEN_GRADS[0]["b1"], rtol=1e-15)
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0
    opt.param_groups[0]["lr"] = 1.0   # schedulers work by editing the group
    run_steps(fg, p, opt, 1, "given")
    np.testing.assert_allclose(p["w1"].detach().numpy(), INITIAL["w1"] - GIVEN_GRADS[0]["w1"], rtol=1e-15)
    extra = fg.zeros(2, requires_grad=True)
    opt.add_param_group({"params": extra, "lr": 0.5})
    assert opt.param_groups[2]["params"] == [extra] and opt.param_groups[2]["momentum"] == 0


def test_zero_grad():
    p = make_params(fg)
    opt = optim.SGD(p.values(), lr=0.1)
    mlp_loss(fg, p).backward()
    opt.zero_grad(set_to_none=False)
    for t in p.values():
        assert t.grad is not None and not t.grad.requires_grad
        np.testing.assert_array_equal(t.grad.numpy(), 0.0)
    mlp_loss(fg, p).backward()
    opt.zero_grad()   # set_to_none defaults to True
    assert all(t.grad is None for t in p.values())
    opt.step()   # no gradients: nothing moves, no state
    np.testing.assert_array_equal(p["w1"].detach().numpy(), INITIAL["w1"])


def test_parameters_without_grad_are_skipped():
    p = make_params(fg)
    p["b1"].requires_grad_(False)
    opt = optim.Adam(p.values(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        mlp_loss(fg, p).backward()
        opt.step()
    np.testing.assert_array_equal(p["b1"].detach().numpy(), INITIAL["b1"])
    assert p["b1"] not in opt.state and p["w1"] in opt.state
    assert opt.state[p["w1"]]["step"] == 2


def test_step_with_closure_returns_loss():
    p = make_params(fg)
    opt = optim.SGD(p.values(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = mlp_loss(fg, p)
        loss.backward()
        return loss

    with fg.no_grad():   # the closure still records: step() enables grad for it
        first = opt.step(closure).item()
    second = opt.step(closure).item()
    assert second < first


# ---------------------------------------------------------------- state dicts

@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
                                         ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}),
                                         ("AdamW", {"lr": 0.05}),
                                         ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}),
                                         ("Adagrad", {"lr": 0.1, "lr_decay": 0.1})])
def test_state_dict_round_trip_continues_identically(name, kwargs):
    p = make_params(fg)
    opt = build(fg, name, kwargs, p, grouped=True)
    run_steps(fg, p, opt, 3, "loss")
    saved = copy.deepcopy(opt.state_dict())
    saved_params = {k: t.detach().numpy().copy() for k, t in p.items()}

    q = {k: fg.tensor(v, requires_grad=True) for k, v in saved_params.items()}
    fresh = build(fg, name, {**kwargs, "lr": 123.0}, q, grouped=True)   # hyperparameters come from the dict
    fresh.load_state_dict(saved)
    assert [g["lr"] for g in fresh.param_groups] == [g["lr"] for g in opt.param_groups]
    assert fresh.param_groups[1]["params"][0] is q["w2"]

    ours = run_steps(fg, p, opt, 3, "loss")
    resumed = run_steps(fg, q, fresh, 3, "loss")
    for a, b in zip(ours, resumed):
        for k in INITIAL:
            np.testing.assert_array_equal(a[k], b[k])
    # the loaded state is a copy: stepping `fresh` did not touch `saved`
    assert saved["state"][0] is not fresh.state[q["w1"]]


@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("SGD", {"lr": 0.1}),
                                         ("Adam", {"amsgrad": True}), ("AdamW", {}),
                                         ("RMSprop", {"momentum": 0.9, "centered": True}), ("RMSprop", {}),
                                         ("Adagrad", {})])
def test_state_dict_layout_matches_torch(name, kwargs):
    torch = torch_or_skip()
    layouts = []
    for ns in (torch, fg):
        p = make_params(ns)
        opt = build(ns, name, kwargs, p, grouped=True)
        run_steps(ns, p, opt, 1, "given")
        sd = opt.state_dict()
        layouts.append(({i: sorted(s) for i, s in sd["state"].items()},
                        [(sorted(g), g["params"]) for g in sd["param_groups"]]))
    assert layouts[1] == layouts[0]


def test_load_state_dict_errors():
    p = make_params(fg)
    opt = optim.SGD(p.values(), lr=0.1)
    two_groups = optim.SGD([{"params": [p["w1"]]}, {"params": [p["w2"]]}], lr=0.1)
    with pytest.raises(ValueError, match="^loaded state dict has a different number of parameter groups$"):
        opt.load_state_dict(two_groups.state_dict())
    with pytest.raises(ValueError, match="^loaded state dict contains a parameter group that doesn't match the "
                                         "size of optimizer's group$"):
        optim.SGD([p["w1"]], lr=0.1).load_state_dict(opt.state_dict())


# ---------------------------------------------------------------- construction

def test_named_parameters_are_accepted():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    opt = optim.AdamW(model.named_parameters(), lr=0.01)
    assert opt.param_groups[0]["param_names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert opt.param_groups[0]["params"][0] is model[0].weight
    model(fg.randn(4, 3)).sum().backward()
    opt.step()
    assert opt.state_dict()["param_groups"][0]["param_names"][-1] == "2.bias"


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_repr_matches_torch(name):
    torch = torch_or_skip()
    kwargs = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    reprs = [repr(getattr(ns.optim, name)(
        [{"params": [ns.zeros(2, requires_grad=True)]}, {"params": [ns.zeros(1, requires_grad=True)], "lr": 0.5}],
        **kwargs)) for ns in (torch, fg)]
    assert reprs[1] == reprs[0]


BAD_ARGUMENTS = [
    ("SGD", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("SGD", {"lr": 0.1, "momentum": -0.5}, "Invalid momentum value: -0.5"),
    ("SGD", {"lr": 0.1, "weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("SGD", {"lr": 0.1, "nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
     "Nesterov momentum requires a momentum and zero dampening"),
    ("Adam", {"lr": -0.1}, "Invalid learning rate: -0.1"),
    ("Adam", {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ("Adam", {"betas": (1.0, 0.9)}, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
    ("Adam", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ("AdamW", {"lr": -0.1}, "Invalid learning rate: -0.1"),
    ("RMSprop", {"lr": -0.1}, "Invalid learning rate: -0.1"),
    ("RMSprop", {"eps": -1.0}, "Invalid epsilon value: -1.0"),
    ("RMSprop", {"momentum": -1.0}, "Invalid momentum value: -1.0"),
    ("RMSprop", {"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
    ("RMSprop", {"alpha": -1.0}, "Invalid alpha value: -1.0"),
    ("Adagrad", {"lr": -0.1}, "Invalid learning rate: -0.1"),
    ("Adagrad", {"lr_decay": -0.1}, "Invalid lr_decay value: -0.1"),
    ("Adagrad", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ("Adagrad", {"initial_accumulator_value": -0.1}, "Invalid initial_accumulator_value value: -0.1"),
    ("Adagrad", {"eps": -0.1}, "Invalid epsilon value: -0.1"),
]


@pytest.mark.parametrize("name,kwargs,message", BAD_ARGUMENTS)
def test_invalid_hyperparameters(name, kwargs, message):
    with pytest.raises(ValueError) as info:
        getattr(optim, name)([fg.zeros(1, requires_grad=True)], **kwargs)
    assert str(info.value) == message
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(info.value) == str(theirs.value)


def test_invalid_parameter_lists():
    w = fg.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="^optimizer got an empty parameter list$"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="^params argument given to the optimizer should be an iterable of Tensors "
                                        "or dicts, but got torch.FloatTensor$"):
        optim.SGD(w, lr=0.1)
    with pytest.raises(ValueError, match="^can't optimize a non-leaf Tensor$"):
        optim.SGD([w * 2], lr=0.1)
    with pytest.raises(TypeError, match="^optimizer can only optimize Tensors, but one of the params is int$"):
        optim.Adam([w, 3])
    with pytest.raises(ValueError, match="^some parameters appear in more than one parameter group$"):
        optim.SGD([{"params": [w]}, {"params": [w]}], lr=0.1)
    with pytest.raises(TypeError, match="ordering of tensors in sets will change between runs"):
        optim.SGD([{"params": {w}}], lr=0.1)
    with pytest.warns(UserWarning, match="optimizer contains a parameter group with duplicate parameters"):
        optim.SGD([w, w], lr=0.1)
    with pytest.raises(NotImplementedError, match="differentiable=True"):
        optim.SGD([w], lr=0.1, differentiable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.SGD(iter([w]), lr=0.1, foreach=False)   # generators and kernel switches are fine


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop"])
def test_state_dict_with_a_numeric_step_still_steps(name):
    """State dicts saved while these optimizers kept `step` as a number load and step."""
    p = fg.nn.Parameter(fg.ones(4))
    opt = getattr(fg.optim, name)([p], lr=0.1)
    (p * 2).sum().backward()
    opt.step()
    state = opt.state_dict()
    state["state"][0]["step"] = 1   # as older fusegrad saved it
    again = getattr(fg.optim, name)([p], lr=0.1)
    again.load_state_dict(state)
    (p * 2).sum().backward()
    again.step()
    assert again.state[p]["step"].item() == 2.0
