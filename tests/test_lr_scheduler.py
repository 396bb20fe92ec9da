"""Tests for fusegrad.optim.lr_scheduler: every scheduler step for step against PyTorch (learning rates
and momenta of each parameter group), state dicts that match torch's and resume a schedule exactly,
step(epoch) through the closed forms, and the warnings and errors PyTorch gives."""
import copy
import math
import warnings

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import optim


def torch_or_skip():
    return pytest.importorskip("torch")


class Halving:
    """A callable object: LambdaLR saves its __dict__ in state_dict (plain functions are not saved)."""

    def __init__(self):
        self.every = 3

    def __call__(self, epoch):
        return 0.5 ** (epoch // self.every)


SCHEDULES = [
    ("step", "SGD", {"momentum": 0.9}, "StepLR", {"step_size": 3, "gamma": 0.5}),
    ("multistep", "SGD", {}, "MultiStepLR", {"milestones": [2, 5, 5, 9], "gamma": 0.3}),
    ("exponential", "Adam", {}, "ExponentialLR", {"gamma": 0.8}),
    ("cosine", "SGD", {}, "CosineAnnealingLR", {"T_max": 4, "eta_min": 0.01}),   # past T_max: it rises again
    ("lambda", "SGD", {}, "LambdaLR", {"lr_lambda": lambda epoch: 1.0 / (1 + epoch)}),
    ("lambda_object", "RMSprop", {}, "LambdaLR", {"lr_lambda": Halving()}),
    ("onecycle_sgd", "SGD", {"momentum": 0.9}, "OneCycleLR", {"max_lr": [1.0, 2.0], "total_steps": 12}),
    ("onecycle_adam_linear_three_phase", "Adam", {}, "OneCycleLR",
     {"max_lr": 0.5, "epochs": 3, "steps_per_epoch": 4, "anneal_strategy": "linear", "three_phase": True,
      "pct_start": 0.25}),
    ("onecycle_no_momentum", "Adagrad", {}, "OneCycleLR", {"max_lr": 0.3, "total_steps": 12, "cycle_momentum": False}),
]
STEPS = 11


def make_optimizer(ns, name, kwargs):
    groups = [{"params": [ns.zeros(2, dtype=ns.float64, requires_grad=True)]},
              {"params": [ns.zeros(3, dtype=ns.float64, requires_grad=True)], "lr": 0.05}]
    return getattr(ns.optim, name)(groups, lr=0.1, **kwargs)


def group_values(optimizer):
    """What a schedule changes: lr, and momentum or Adam's beta1 where OneCycleLR cycles them."""
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in optimizer.param_groups]


def run_schedule(ns, opt_name, opt_kwargs, name, kwargs, steps=STEPS):
    optimizer = make_optimizer(ns, opt_name, opt_kwargs)
    scheduler = getattr(ns.optim.lr_scheduler, name)(optimizer, **copy.deepcopy(kwargs))
    history = [group_values(optimizer)]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        history.append(group_values(optimizer))
        assert scheduler.get_last_lr() == [g["lr"] for g in optimizer.param_groups]
    return history, scheduler, optimizer


def assert_close_nested(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        if isinstance(a, (list, tuple)):
            assert isinstance(b, (list, tuple)) and len(a) == len(b)
            assert_close_nested(a, b)
        elif isinstance(a, float) or isinstance(b, float):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (a, b)
        else:
            assert a == b


CASE_IDS = [c[0] for c in SCHEDULES]


@pytest.mark.parametrize("opt_name,opt_kwargs,name,kwargs", [c[1:] for c in SCHEDULES], ids=CASE_IDS)
def test_schedule_matches_torch(opt_name, opt_kwargs, name, kwargs):
    torch = torch_or_skip()
    theirs, t_sched, _ = run_schedule(torch, opt_name, opt_kwargs, name, kwargs)
    ours, f_sched, _ = run_schedule(fg, opt_name, opt_kwargs, name, kwargs)
    assert_close_nested(ours, theirs)
    assert len({h[0][0] for h in ours}) > 2   # the learning rate did change


# The first group's learning rate before and after each step, as torch 2.13 computes it (15 digits).
EXPECTED_LRS = {
    "step": [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125],
    "multistep": [0.1, 0.1, 0.03, 0.03, 0.03, 0.0027, 0.0027, 0.0027, 0.0027, 0.00081, 0.00081, 0.00081],
    "exponential": [0.1 * 0.8 ** k for k in range(12)],
    "cosine": [0.1, 0.086819805153395, 0.055, 0.023180194846605, 0.01, 0.023180194846605, 0.055, 0.086819805153395,
               0.1, 0.086819805153395, 0.055, 0.023180194846605],
    "lambda": [0.1 / (1 + k) for k in range(12)],
    "lambda_object": [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125],
    "onecycle_sgd": [0.04, 0.349789654219583, 0.879285159122129, 0.994415435450912, 0.933012969841412,
                     0.811745653949763, 0.647378997695103, 0.462637102666975, 0.283060998208699, 0.133477530188831,
                     0.034566987425395, 4e-06],
    "onecycle_adam_linear_three_phase": [0.02, 0.26, 0.5, 0.26, 0.02, 0.017143142857143, 0.014286285714286,
                                         0.011429428571429, 0.008572571428571, 0.005715714285714,
                                         0.002858857142857, 2e-06],
    "onecycle_no_momentum": [0.012, 0.104936896265875, 0.263785547736639, 0.298324630635274, 0.279903890952424,
                             0.243523696184929, 0.194213699308531, 0.138791130800093, 0.08491829946261,
                             0.040043259056649, 0.010370096227619, 1.2e-06],
}
EXPECTED_MOMENTA = {   # OneCycleLR's momentum (SGD) and beta1 (Adam) of the first group
    "onecycle_sgd": [0.95, 0.917730244352127, 0.862574462591445, 0.850558458688744, 0.856698729810778,
                     0.868825509907063, 0.885262241279455, 0.903736504679321, 0.921694186955878, 0.936652593591491,
                     0.94654368743221, 0.95],
    "onecycle_adam_linear_three_phase": [0.95, 0.9, 0.85, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95],
}


@pytest.mark.parametrize("case", CASE_IDS)
def test_schedule_matches_recorded_values(case):
    history, _, _ = run_schedule(fg, *{c[0]: c[1:] for c in SCHEDULES}[case])
    np.testing.assert_allclose([h[0][0] for h in history], EXPECTED_LRS[case], rtol=1e-13, atol=1e-15)
    if case in EXPECTED_MOMENTA:
        momenta = [h[0][1] if h[0][2] is None else h[0][2][0] for h in history]
        np.testing.assert_allclose(momenta, EXPECTED_MOMENTA[case], rtol=1e-13)


@pytest.mark.parametrize("opt_name,opt_kwargs,name,kwargs", [c[1:] for c in SCHEDULES], ids=CASE_IDS)
def test_state_dict_matches_torch(opt_name, opt_kwargs, name, kwargs):
    torch = torch_or_skip()
    _, t_sched, _ = run_schedule(torch, opt_name, opt_kwargs, name, kwargs, steps=4)
    _, f_sched, _ = run_schedule(fg, opt_name, opt_kwargs, name, kwargs, steps=4)
    theirs, ours = t_sched.state_dict(), f_sched.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        if key not in ("lr_lambdas",):
            assert_close_nested([ours[key]], [theirs[key]])
    assert ours.get("lr_lambdas") == theirs.get("lr_lambdas")


@pytest.mark.parametrize("opt_name,opt_kwargs,name,kwargs", [c[1:] for c in SCHEDULES], ids=CASE_IDS)
def test_state_dict_round_trip_resumes_the_schedule(opt_name, opt_kwargs, name, kwargs):
    straight, _, _ = run_schedule(fg, opt_name, opt_kwargs, name, kwargs)
    _, scheduler, optimizer = run_schedule(fg, opt_name, opt_kwargs, name, kwargs, steps=5)
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_scheduler = copy.deepcopy(scheduler.state_dict())

    kwargs = copy.deepcopy(kwargs)
    if name == "LambdaLR" and isinstance(kwargs["lr_lambda"], Halving):
        kwargs["lr_lambda"].every = 100   # the loaded state dict restores every=3
    resumed_optimizer = make_optimizer(fg, opt_name, opt_kwargs)
    resumed = getattr(optim.lr_scheduler, name)(resumed_optimizer, **kwargs)
    resumed_optimizer.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved_scheduler)
    history = [group_values(resumed_optimizer)]
    for _ in range(STEPS - 5):
        resumed_optimizer.step()
        resumed.step()
        history.append(group_values(resumed_optimizer))
    assert history == straight[5:]


@pytest.mark.parametrize("name,kwargs", [("StepLR", {"step_size": 3, "gamma": 0.5}),
                                         ("MultiStepLR", {"milestones": [2, 5, 5], "gamma": 0.3}),
                                         ("ExponentialLR", {"gamma": 0.8}),
                                         ("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.01}),
                                         ("LambdaLR", {"lr_lambda": lambda e: 0.9 ** e})])
def test_step_with_epoch_uses_the_closed_form(name, kwargs):
    torch = torch_or_skip()
    values = []
    for ns in (torch, fg):
        optimizer = make_optimizer(ns, "SGD", {})
        scheduler = getattr(ns.optim.lr_scheduler, name)(optimizer, **kwargs)
        lrs = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for epoch in (3, 7, 1, 6):
                optimizer.step()
                scheduler.step(epoch)
                lrs.append(scheduler.get_last_lr())
        assert any("The epoch parameter in `scheduler.step()` was not necessary" in str(w.message) for w in caught)
        values.append(lrs)
    assert_close_nested(values[1], values[0])


@pytest.mark.parametrize("mode,threshold_mode,kwargs", [
    ("min", "rel", {"patience": 2, "factor": 0.5}),
    ("max", "abs", {"patience": 1, "factor": 0.2, "threshold": 0.05, "cooldown": 2}),
    ("min", "abs", {"patience": 0, "factor": 0.5, "min_lr": [0.02, 0.03]}),
])
def test_reduce_lr_on_plateau_matches_torch(mode, threshold_mode, kwargs):
    torch = torch_or_skip()
    metrics = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.5, 0.49, 0.6, 0.7, 0.8, 0.8, 0.9, 0.95, 0.9]
    runs = []
    for ns in (torch, fg):
        optimizer = make_optimizer(ns, "SGD", {})
        scheduler = ns.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, threshold_mode=threshold_mode,
                                                           **kwargs)
        lrs = []
        for metric in metrics:
            optimizer.step()
            scheduler.step(ns.tensor(metric, dtype=ns.float64) if ns is fg else metric)   # a tensor metric
            lrs.append(scheduler.get_last_lr())
        state = scheduler.state_dict()
        runs.append((lrs, sorted(state), {k: state[k] for k in ("best", "num_bad_epochs", "cooldown_counter",
                                                                "last_epoch")}))
    assert_close_nested(runs[1][0], runs[0][0])
    assert runs[1][1:] == runs[0][1:]
    assert len({lr[0] for lr in runs[1][0]}) > 1


def test_reduce_lr_on_plateau_round_trip():
    optimizer = make_optimizer(fg, "SGD", {})
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=1)
    for metric in (1.0, 2.0, 1.5):
        scheduler.step(metric)
    resumed = optim.lr_scheduler.ReduceLROnPlateau(make_optimizer(fg, "SGD", {}))   # mode "min"
    resumed.load_state_dict(copy.deepcopy(scheduler.state_dict()))
    assert resumed.mode == "max" and resumed.best == 2.0 and resumed.num_bad_epochs == 1
    resumed.step(1.0)   # a second bad epoch in a row: lr drops by factor 0.1
    assert resumed.get_last_lr() == [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([0.01, 0.005])
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.05]


def test_warnings_match_torch():
    torch = torch_or_skip()
    messages = []
    for ns in (torch, fg):
        optimizer = make_optimizer(ns, "SGD", {})
        scheduler = ns.optim.lr_scheduler.StepLR(optimizer, step_size=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheduler.step()   # before optimizer.step()
            scheduler.get_lr()   # outside step()
        messages.append([str(w.message) for w in caught])
    assert messages[1] == messages[0] and len(messages[0]) == 2


def test_errors_match_torch():
    torch = torch_or_skip()
    cases = [
        ("StepLR", lambda ns: (object(),), {"step_size": 1}),
        ("StepLR", lambda ns: (make_optimizer(ns, "SGD", {}),), {"step_size": 1, "last_epoch": 3}),
        ("LambdaLR", lambda ns: (make_optimizer(ns, "SGD", {}),), {"lr_lambda": [lambda e: 1.0]}),
        ("OneCycleLR", lambda ns: (make_optimizer(ns, "SGD", {}),), {"max_lr": 1.0}),
        ("OneCycleLR", lambda ns: (make_optimizer(ns, "SGD", {}),), {"max_lr": 1.0, "total_steps": 0}),
        ("OneCycleLR", lambda ns: (make_optimizer(ns, "SGD", {}),), {"max_lr": 1.0, "total_steps": 5,
                                                                     "pct_start": 2.0}),
        ("OneCycleLR", lambda ns: (make_optimizer(ns, "SGD", {}),), {"max_lr": [1.0], "total_steps": 5}),
        ("OneCycleLR", lambda ns: (make_optimizer(ns, "Adagrad", {}),), {"max_lr": 1.0, "total_steps": 5}),
        ("ReduceLROnPlateau", lambda ns: (make_optimizer(ns, "SGD", {}),), {"factor": 1.0}),
        ("ReduceLROnPlateau", lambda ns: (make_optimizer(ns, "SGD", {}),), {"mode": "up"}),
        ("ReduceLROnPlateau", lambda ns: (make_optimizer(ns, "SGD", {}),), {"min_lr": [0.1]}),
    ]
    for name, args, kwargs in cases:
        errors = []
        for ns in (torch, fg):
            with pytest.raises(Exception) as info:
                getattr(ns.optim.lr_scheduler, name)(*args(ns), **kwargs)
            errors.append((type(info.value), str(info.value)))
        assert errors[1] == errors[0], name
    for ns in (torch, fg):   # stepping OneCycleLR past total_steps
        optimizer = make_optimizer(ns, "SGD", {"momentum": 0.9})
        scheduler = ns.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=2)
        optimizer.step()
        scheduler.step()
        scheduler.step()
        with pytest.raises(ValueError, match=r"^Tried to step 3 times\. The specified number of total steps is 2$"):
            scheduler.step()


def test_training_with_a_scheduler_matches_torch():
    """A scheduler driving real optimizer steps: the parameters follow torch's."""
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    start, grads = rng.standard_normal(5), rng.standard_normal((8, 5))
    finals = []
    for ns in (torch, fg):
        w = ns.tensor(start, requires_grad=True)
        optimizer = ns.optim.SGD([w], lr=0.5, momentum=0.9)
        scheduler = ns.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=8)
        for g in grads:
            w.grad = ns.tensor(g)
            optimizer.step()
            scheduler.step()
        finals.append(w.detach().numpy())
    np.testing.assert_allclose(finals[1], finals[0], rtol=1e-12)
