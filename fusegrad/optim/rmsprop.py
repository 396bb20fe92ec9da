"""RMSprop with PyTorch's update rule: a running average of squared gradients scales each step,
optionally centered (minus the squared running mean) and with momentum."""
import fusegrad as fg

from .optimizer import Optimizer, check_flags, hyper


class RMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        for value, what in ((lr, "learning rate"), (eps, "epsilon value"), (momentum, "momentum value"),
                            (weight_decay, "weight_decay value"), (alpha, "alpha value")):
            if not 0.0 <= value:
                raise ValueError(f"Invalid {what}: {value}")
        check_flags("RMSprop", differentiable)
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _update(self, param, grad, group, state):
        alpha, momentum = group["alpha"], group["momentum"]
        if not state:
            state["step"] = fg.tensor(0.0)   # a tensor, as in PyTorch: a compiled step reads it as data
            state["square_avg"] = fg.zeros_like(param)
            if momentum > 0:
                state["momentum_buffer"] = fg.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = fg.zeros_like(param)
        if group["maximize"]:
            grad = -grad
        if not isinstance(state["step"], fg.Tensor):   # a state dict saved when steps were numbers
            state["step"] = fg.tensor(float(state["step"]))
        state["step"].add_(1)
        if group["weight_decay"]:
            grad = grad + param * group["weight_decay"]
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).add_(grad * grad, alpha=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = (square_avg - grad_avg * grad_avg).sqrt()
        else:
            avg = square_avg.sqrt()
        avg = avg + group["eps"]
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(grad / avg)
            param.sub_(buf * hyper(group, "lr"))
        else:
            param.sub_(grad / avg * hyper(group, "lr"))
