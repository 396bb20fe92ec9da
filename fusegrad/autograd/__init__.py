"""fusegrad.autograd: grad, backward, custom Functions, functional (jacobian, hessian, vjp, jvp, vhp,
hvp), gradcheck/gradgradcheck, the profiler and the deprecated Variable."""
from ..tracer import backward, enable_grad, grad, no_grad, set_grad_enabled
from . import function, functional, graph, profiler
from .function import Function, once_differentiable
from .gradcheck import gradcheck, gradgradcheck
from .variable import Variable
from ..unimplemented import module_getattr as _module_getattr

__all__ = ["backward", "grad", "Function", "once_differentiable", "function", "functional", "graph", "profiler",
           "gradcheck", "gradgradcheck", "no_grad", "enable_grad", "set_grad_enabled", "Variable"]
__getattr__ = _module_getattr(__name__, "torch.autograd")
