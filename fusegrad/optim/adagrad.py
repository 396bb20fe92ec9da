"""Adagrad with PyTorch's update rule: steps scale by the root of the summed squared gradients, the
learning rate decays as lr / (1 + (step - 1) * lr_decay)."""
import fusegrad as fg

from .optimizer import Optimizer, check_flags, hyper


class Adagrad(Optimizer):
    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        for value, what in ((lr, "learning rate"), (lr_decay, "lr_decay value"),
                            (weight_decay, "weight_decay value"),
                            (initial_accumulator_value, "initial_accumulator_value value"), (eps, "epsilon value")):
            if not 0.0 <= value:
                raise ValueError(f"Invalid {what}: {value}")
        check_flags("Adagrad", differentiable)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))
        # as in torch, every parameter has its state from the start (state_dict() shows it before a step)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p])

    def _init_state(self, param, state):
        state["step"] = fg.tensor(0.0)   # a tensor, as in PyTorch: a compiled step reads it as data
        state["sum"] = fg.full_like(param, self.defaults["initial_accumulator_value"])

    def _update(self, param, grad, group, state):
        if not state:
            self._init_state(param, state)
        if not isinstance(state["step"], fg.Tensor):   # a state dict saved when steps were numbers
            state["step"] = fg.tensor(float(state["step"]))
        state["step"].add_(1)
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + param * group["weight_decay"]
        # in float64, as PyTorch computes it from Python numbers
        decayed_lr = hyper(group, "lr") / (1 + (state["step"].to(fg.float64) - 1) * group["lr_decay"])
        state["sum"].add_(grad * grad)
        param.sub_(grad / (state["sum"].sqrt() + group["eps"]) * decayed_lr)
