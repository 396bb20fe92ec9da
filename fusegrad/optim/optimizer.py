"""The Optimizer base: parameter groups, per-parameter state, zero_grad and state dicts."""
import warnings
from collections import defaultdict
from copy import deepcopy

import numpy as np

from .. import tracer
from ..tracer import Tensor
from ..ir.dtypes import float16
from ..tracer.capture import HyperParameter, plain, traced_scalar
from ..tracer.factories import from_numpy


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


def hyper(group, key):
    """group[key] as an update uses it: the Python number, or, while fusegrad.compile captures a
    step, a 0-d float64 tensor that every replay reads afresh from the group, so that a learning
    rate schedule replays one compiled plan instead of compiling each value. Updates combine it
    with tensors as they would the number (a 0-d float64 tensor takes a float32 tensor's dtype,
    as a Python float does); `like` below does the same where both sides are 0-d."""
    value = group[key]
    if not isinstance(value, HyperParameter):   # eager mode: the number, with no per-call scan
        return value
    if any(p.dtype is float16 for p in group["params"]):
        # float16 updates with a Python float compute in float32 and round once; a 0-d tensor
        # would be rounded to float16 first: keep the number (a guarded constant when captured)
        return plain(value)
    value = traced_scalar(value)
    return from_numpy(value) if isinstance(value, np.ndarray) else value


def like(value, tensor):
    """A hyper-parameter as a Python float would combine with the 0-d `tensor`."""
    return value.to(tensor.dtype) if isinstance(value, Tensor) else value


def _typename(obj):
    return obj.type() if isinstance(obj, Tensor) else type(obj).__name__


def check_flags(optimizer, differentiable=False, **ignored):
    """torch's implementation switches (foreach, fused, capturable) are accepted and kept in the groups so
    that printing matches; they choose kernels, not results. differentiable=True would change results."""
    if differentiable:
        raise NotImplementedError(f"{optimizer}: differentiable=True is not supported: fusegrad optimizers "
                                  "update parameters under no_grad")


class Optimizer:
    """Subclasses give `defaults` (the per-group hyperparameters) and `_update(param, grad, group, state)`,
    which runs under no_grad for every parameter that has a gradient."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got " + _typename(params))
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        params = [params] if isinstance(params, Tensor) else list(params)
        # model.named_parameters() may be passed directly: (name, tensor) pairs
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        group = dict(param_group, params=params)
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            group["param_names"] = names
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is " + _typename(p))
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for key, value in self.defaults.items():
            if value is required and key not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {key}")
            group.setdefault(key, value)
        if len({id(p) for p in params}) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in future, this will "
                          "cause an error; see github.com/pytorch/pytorch/issues/40967 for more information",
                          stacklevel=3)
        seen = set()
        for other in self.param_groups:
            seen.update(id(p) for p in other["params"])
            if ("param_names" in group) != ("param_names" in other):
                raise ValueError("all optimizer param groups should be with/without names. cannot add param group "
                                 f"{'with names' if 'param_names' in group else 'without names'} to the optimizer")
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        tracer.zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with tracer.enable_grad():
                loss = closure()
        with tracer.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:   # frozen or unused parameters get no work
                        state = self.state[p]
                        self._update(p, p.grad, group, state)
                        if not state:   # plain SGD keeps nothing: no empty entries in state_dict()
                            del self.state[p]
        return loss

    def _update(self, param, grad, group, state):
        raise NotImplementedError

    def state_dict(self):
        """{"state": {index: per-parameter state}, "param_groups": [group with "params" as indices]}; the
        tensors are this optimizer's own (as in torch): deep-copy the dict to keep a snapshot."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(mine["params"]) != len(theirs["params"]) for mine, theirs in zip(self.param_groups, groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        by_index = {i: p for theirs, mine in zip(groups, self.param_groups) for i, p in zip(theirs["params"],
                                                                                           mine["params"])}
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            param = by_index.get(i)
            if param is None:
                self.state[i] = deepcopy(s)
                continue
            self.state[param] = {k: self._cast(param, k, v) for k, v in s.items()}
        for mine, theirs in zip(self.param_groups, groups):
            theirs["params"] = mine["params"]
            if "param_names" in mine and "param_names" not in theirs:
                theirs["param_names"] = mine["param_names"]
        self.param_groups = groups

    @staticmethod
    def _cast(param, key, value):
        """A private copy of a loaded state value; floating tensors (but not "step") take the parameter's dtype."""
        if not isinstance(value, Tensor):
            return deepcopy(value)
        if key != "step" and value.is_floating_point():
            return value.detach().to(param.dtype).clone()
        return value.detach().clone()

    def __repr__(self):
        text = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):   # groups are separated by a blank line, as in torch
            text += f"\nParameter Group {i}\n" + "".join(f"    {k}: {group[k]}\n" for k in sorted(group)
                                                          if k != "params")
        return text + ")"
