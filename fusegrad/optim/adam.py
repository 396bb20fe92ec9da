"""Adam and AdamW (decoupled weight decay), with PyTorch's bias-corrected update and amsgrad."""
import fusegrad as fg

from .optimizer import Optimizer, check_flags, hyper, like


class Adam(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        check_flags(type(self).__name__, differentiable)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, param, grad, group, state):
        lr, (beta1, beta2), eps, wd = hyper(group, "lr"), group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if not state:
            state["step"] = fg.tensor(0.0)   # a tensor, as in PyTorch: a compiled step reads it as data
            state["exp_avg"] = fg.zeros_like(param)
            state["exp_avg_sq"] = fg.zeros_like(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = fg.zeros_like(param)
        if wd:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * wd)
            else:
                grad = grad + param * wd
        state["step"].add_(1)
        step = state["step"].to(param.dtype)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).add_(grad * grad, alpha=1 - beta2)
        # bias corrections as tensor ops on the step count, so that a compiled step recomputes them
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        if group["amsgrad"]:
            state["max_exp_avg_sq"].copy_(fg.maximum(state["max_exp_avg_sq"], exp_avg_sq))
            exp_avg_sq = state["max_exp_avg_sq"]
        denom = exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps
        param.add_(exp_avg / denom * (-like(lr, bias_correction1) / bias_correction1))


class AdamW(Adam):
    """Adam with decoupled weight decay: parameters shrink by lr * weight_decay before the Adam step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
