"""fusegrad: PyTorch-style autograd on a recorded IR, compiled to fused kernels.

`import fusegrad as torch` runs the PyTorch autograd tutorials. This module only re-exports the
public API: tensor factories, Tensor, dtypes, grad modes, op functions, nn, optim and autograd."""
from .ir.dtypes import DType as dtype
from .ir.dtypes import bool_ as bool  # noqa: A001  (torch.bool)
from .ir.dtypes import float16, float32, float64, int32, int64
from .tracer import Size, Tensor, device, enable_grad, inference_mode, is_grad_enabled, no_grad
from .tracer import set_grad_enabled
from .tracer.factories import (arange, as_tensor, asarray, empty, empty_like, eye, from_numpy, full,
                               full_like, get_default_device, get_default_dtype, get_rng_state, initial_seed,
                               linspace, logspace, manual_seed, normal, ones, ones_like, rand, rand_like,
                               randint, randint_like, randn, randn_like, randperm, seed, set_default_device,
                               set_default_dtype, set_rng_state, tensor, zeros, zeros_like)
from .tracer.functions import *  # noqa: F401,F403  (the op functions: sin, matmul, cat, ...)
from .tracer.manipulation import *  # noqa: F401,F403  (flip, roll, diagonal, meshgrid, ...)
from .tracer.printing import set_printoptions
from .tracer.spatial import conv2d, max_pool2d, max_pool2d_with_indices
from . import autograd, cuda, nn, optim  # noqa: E402
from . import models  # noqa: E402  (after nn, which it builds on)
from .compiler import CompileError, compile, explain  # noqa: E402,A004
from .serialization import load, save  # noqa: E402
from .unimplemented import module_getattr as _module_getattr
from .runtime.memory import tune_malloc as _tune_malloc

_tune_malloc()   # eager ops reuse freed memory instead of faulting in new pages: see runtime/memory.py

float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001

__version__ = "0.1.0"


def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()


def is_floating_point(input):
    return input.is_floating_point()


__getattr__ = _module_getattr(__name__, "torch")
