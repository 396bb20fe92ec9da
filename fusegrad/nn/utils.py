"""nn.utils: gradient clipping (clip_grad_norm_, clip_grad_value_), as torch.nn.utils computes it.
Other names of torch.nn.utils (rnn's packed sequences, parametrizations, ...) are missing: asking for
one says so."""
import types
import warnings

import fusegrad as fg

from ..unimplemented import module_getattr as _module_getattr


def _as_list(parameters):
    return [parameters] if isinstance(parameters, fg.Tensor) else list(parameters)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm of the norms of `tensors`: their joint norm, as if concatenated."""
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return fg.tensor(0.0)
    with fg.no_grad():
        total = fg.norm(fg.stack([fg.norm(t, norm_type) for t in tensors]), norm_type)
    if error_if_nonfinite and not bool(fg.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    return total


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale the gradients in place by max_norm / (total_norm + 1e-6), when that is below 1."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    with fg.no_grad():
        scale = fg.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Clip the joint norm of the parameters' gradients to max_norm; returns the norm before clipping."""
    if not isinstance(parameters, fg.Tensor):
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    total = get_total_norm([p.grad for p in _as_list(parameters) if p.grad is not None], norm_type,
                           error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    with fg.no_grad():
        for p in _as_list(parameters):
            if p.grad is not None:
                p.grad.clamp_(min=-clip_value, max=clip_value)


__getattr__ = _module_getattr(__name__, "torch.nn.utils")
