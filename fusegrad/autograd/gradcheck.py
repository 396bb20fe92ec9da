"""gradcheck / gradgradcheck: analytical Jacobians from autograd against central finite differences."""
import warnings

import numpy as np

from ..tracer import Tensor, grad
from ..tracer.factories import tensor as make_tensor


class GradcheckError(RuntimeError):
    """The analytical and numerical Jacobians disagree."""


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _flat_outputs(outputs):
    return np.concatenate([np.asarray(o._data, np.float64).ravel() for o in outputs]) if outputs else np.zeros(0)


def _numerical_jacobians(fn, inputs, eps):
    """One matrix (outputs x elements) per differentiable input, by central differences."""
    jacobians = []
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        columns = []
        base = x._data
        for j in range(base.size):
            values = []
            for step in (eps, -eps):
                perturbed = base.copy()
                perturbed.flat[j] += step
                args = list(inputs)
                # the perturbed copy keeps requires_grad: fn may differentiate inside (gradgradcheck)
                args[i] = Tensor._make(perturbed, inputs[i]._device).requires_grad_()
                values.append(_flat_outputs(_as_tuple(fn(*args))))
            columns.append((values[0] - values[1]) / (2 * eps))
        jacobians.append(np.stack(columns, axis=1) if columns else np.zeros((0, 0)))
    return jacobians


def _analytical_jacobians(fn, inputs, create_graph=False):
    diff_inputs = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    outputs = [o for o in _as_tuple(fn(*inputs))]
    sizes = [o.numel() for o in outputs]
    jacobians = [np.zeros((sum(sizes), x.numel())) for x in diff_inputs]
    row = 0
    for o in outputs:
        for k in range(o.numel()):
            if o.requires_grad:
                seed = np.zeros(o.shape, o._data.dtype)
                seed.flat[k] = 1
                grads = grad(o, diff_inputs, grad_outputs=Tensor._make(seed, o._device), retain_graph=True,
                             allow_unused=True)
                for jac, g in zip(jacobians, grads):
                    if g is not None:
                        jac[row] = np.asarray(g._data, np.float64).ravel()
            row += 1
    return jacobians


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, nondet_tol=0.0,
              check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
              fast_mode=False, masked=None):
    """True when d func / d inputs from autograd matches finite differences (use float64 inputs)."""
    inputs = _as_tuple(inputs)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype.name != "float64":
            warnings.warn(f"Input #{i} requires gradient and is not a double precision floating "
                          "point. This check will likely fail if all the inputs are not of double precision "
                          "floating point.", UserWarning, stacklevel=2)
    numerical = _numerical_jacobians(func, inputs, eps)
    analytical = _analytical_jacobians(func, inputs)
    for i, (num, ana) in enumerate(zip(numerical, analytical)):
        if num.shape != ana.shape or not np.allclose(ana, num, rtol=rtol, atol=atol):
            if not raise_exception:
                return False
            raise GradcheckError(f"Jacobian mismatch for output 0 with respect to input {i},\n"
                                 f"numerical:{make_tensor(num, dtype=None)}\n"
                                 f"analytical:{make_tensor(ana, dtype=None)}\n")
    return True


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0,
                  check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
                  check_fwd_over_rev=False, check_rev_over_rev=True, fast_mode=False, masked=False):
    """gradcheck of the gradient itself: second derivatives through create_graph=True."""
    inputs = _as_tuple(inputs)
    outputs = _as_tuple(func(*inputs))
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(Tensor._make(rng.standard_normal(o.shape).astype(o._data.dtype), o._device)
                             .requires_grad_() for o in outputs)
    grad_outputs = _as_tuple(grad_outputs)
    n = len(inputs)
    diff_positions = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]

    def first_derivatives(*args):
        xs, gs = args[:n], args[n:]
        outs = [o for o in _as_tuple(func(*xs)) if o.requires_grad]
        diff = [xs[i] for i in diff_positions]
        grads = grad(outs, diff, grad_outputs=gs[:len(outs)], create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivatives, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
