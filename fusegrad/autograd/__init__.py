"""fusegrad.autograd: grad, backward, functional (jacobian, hessian, vjp, jvp, vhp, hvp),
gradcheck/gradgradcheck, the profiler and the deprecated Variable."""
from ..tracer import backward, enable_grad, grad, no_grad, set_grad_enabled
from ..tracer.node import RecordedNode as Function  # noqa: F401  (grad_fn objects)
from . import functional, graph, profiler
from .gradcheck import gradcheck, gradgradcheck
from .variable import Variable
from ..unimplemented import module_getattr as _module_getattr

__all__ = ["backward", "grad", "functional", "graph", "profiler", "gradcheck", "gradgradcheck", "no_grad",
           "enable_grad", "set_grad_enabled", "Variable"]
__getattr__ = _module_getattr(__name__, "torch.autograd")
