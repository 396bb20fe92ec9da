"""Higher-level autograd on whole functions: jacobian, hessian, vjp, jvp, vhp and hvp, with PyTorch's
semantics (torch.autograd.functional), built on fusegrad.autograd.grad like user code would be.

Every function runs `func` on detached copies of the inputs that require grad (or, with
create_graph=True, on views of inputs that already require grad, so the result stays connected to
them), asks grad() for the products it needs, fills in zeros for inputs the outputs do not depend on
(or raises in strict mode), and detaches the results unless create_graph=True.

jvp and hvp use the double-backward trick: the backward of a function is linear in its cotangent, so
differentiating grad(outputs, inputs, u) with respect to a dummy u gives the forward product.

`vectorize` is accepted for compatibility and ignored: rows of a Jacobian are always computed with
one grad() call each. `strategy="forward-mode"` keeps PyTorch's argument checks and then computes the
same values in reverse mode, since fusegrad has no forward-mode AD.
"""
from ..tracer import Tensor, enable_grad, grad, is_grad_enabled, set_grad_enabled
from ..tracer.factories import zeros, zeros_like
from ..tracer.functions import stack

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _as_tuple(value, arg_name, fn_name):
    """(was it a tuple, the tensors as a tuple); anything but Tensors is a TypeError."""
    is_tuple = isinstance(value, tuple)
    values = value if is_tuple else (value,)
    for i, el in enumerate(values):
        if not isinstance(el, Tensor):
            where = f"the value at index {i}" if is_tuple else f"the given {arg_name}"
            raise TypeError(f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple of "
                            f"Tensors but {where} has type {type(el)}.")
    return is_tuple, values


def _unpack(res, is_tuple):
    """Undo the tuple wrapping for whatever the user passed as a single Tensor. `is_tuple` is one
    flag, or (outputs were a tuple, inputs were a tuple) for a nested Jacobian."""
    if isinstance(is_tuple, tuple):
        outputs_tuple, inputs_tuple = is_tuple
        if not inputs_tuple:
            res = tuple(row[0] for row in res)
        return res if outputs_tuple else res[0]
    return res if is_tuple else res[0]


def _prepare(tensors, create_graph, need_graph):
    """Fresh leaves for func to run on; with create_graph, views that keep the user's graph."""
    return tuple(t.view_as(t) if create_graph and t.requires_grad else t.detach().requires_grad_(need_graph)
                 for t in tensors)


def _finish(res, create_graph):
    if isinstance(res[0], Tensor):
        return res if create_graph else tuple(t.detach() for t in res)
    return tuple(_finish(row, create_graph) for row in res)


def _validate_v(v, other, other_is_tuple):
    if len(v) != len(other):
        raise RuntimeError(f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}."
                           if other_is_tuple else "The given v should contain a single Tensor.")
    for i, (el_v, el_other) in enumerate(zip(v, other)):
        if el_v.size() != el_other.size():
            prefix = f"Entry {i} in " if other_is_tuple else ""
            raise RuntimeError(f"{prefix}v has invalid size: should be {el_other.size()} but got "
                               f"{el_v.size()}.")


def _prepare_v(v, reference, reference_is_tuple, create_graph, fn_name, missing_message):
    """The vector of a product, checked against the tensors it multiplies (outputs or inputs)."""
    if v is None:
        if len(reference) != 1 or reference[0].numel() != 1:
            raise RuntimeError(missing_message)
        return None
    v = _prepare(_as_tuple(v, "v", fn_name)[1], create_graph, need_graph=False)
    _validate_v(v, reference, reference_is_tuple)
    return v


_NO_V_FOR_OUTPUT = ("The vector v can only be None if the user-provided function returns a single Tensor "
                    "with a single element.")
_NO_V_FOR_INPUT = ("The vector v can only be None if the input to the user-provided function is a single "
                   "Tensor with a single element.")

# _check_requires_grad: what it means, in strict mode, that entry i of a stage does not require grad
_NOT_DIFFERENTIABLE = {
    "outputs": "Output {i} of the user-provided function does not require gradients. The outputs must be "
               "computed in a differentiable manner from the input when running in strict mode.",
    "grad_inputs": "The gradient with respect to input {i} is independent of the inputs of the "
                   "user-provided function. This is not allowed in strict mode.",
    "jacobian": "While computing the hessian, found that the jacobian of the user-provided function with "
                "respect to input {i} is independent of the input. This is not allowed in strict mode. You "
                "should ensure that your function is twice differentiable and that the jacobian depends on "
                "the inputs (this would be violated by a linear function for example).",
    "hessian": "The hessian of the user-provided function with respect to input {i} is independent of the "
               "input. This is not allowed in strict mode. You should ensure that your function is thrice "
               "differentiable and that the hessian depends on the inputs.",
}


def _check_requires_grad(tensors, stage, strict):
    if not strict:
        return
    for i, t in enumerate(tensors):
        if t is None:
            raise RuntimeError(f"The output of the user-provided function is independent of input {i}. "
                               "This is not allowed in strict mode.")
        if not t.requires_grad:
            raise RuntimeError(_NOT_DIFFERENTIABLE[stage].format(i=i))


def _grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None):
    """grad() over the outputs that require grad; None for every input when none does."""
    grad_outputs = (None,) * len(outputs) if grad_outputs is None else grad_outputs
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    kept_outputs, kept_grads = zip(*pairs)
    return grad(kept_outputs, inputs, kept_grads, retain_graph=retain_graph, create_graph=create_graph,
                allow_unused=True)


# _fill_in_zeros: what a missing (None) gradient means at each stage, in strict mode
_INDEPENDENT = {
    "back": "The output of the user-provided function is independent of input {i}. This is not allowed in "
            "strict mode.",
    "back_trick": "The gradient with respect to the input is independent of entry {i} in the grad_outputs "
                  "when using the double backward trick to compute forward mode gradients. This is not "
                  "allowed in strict mode.",
    "double_back": "The jacobian of the user-provided function is independent of input {i}. This is not "
                   "allowed in strict mode.",
    "double_back_trick": "The hessian of the user-provided function is independent of entry {i} in the "
                         "grad_jacobian. This is not allowed in strict mode as it prevents from using the "
                         "double backward trick to replace forward mode AD.",
}


def _fill_in_zeros(grads, refs, strict, create_graph, stage):
    res = []
    for i, (g, ref) in enumerate(zip(grads, refs)):
        if g is None:
            if strict:
                raise RuntimeError(_INDEPENDENT[stage].format(i=i))
            g = zeros_like(ref)
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise RuntimeError(f"The {what} of the user-provided function is independent of input {i}. "
                               "This is not allowed in strict mode when create_graph=True.")
        res.append(g)
    return tuple(res)


def _products(fn_name, func, inputs, v, create_graph, strict, v_against):
    """The set-up vjp, jvp, vhp and hvp share: prepared inputs, checked v, outputs of func."""
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", fn_name)
    inputs = _prepare(inputs, create_graph, need_graph=True)
    if v_against == "inputs":
        v = _prepare_v(v, inputs, is_inputs_tuple, create_graph, fn_name, _NO_V_FOR_INPUT)
    outputs = func(*inputs)
    is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function", fn_name)
    _check_requires_grad(outputs, "outputs", strict)
    if v_against == "outputs":
        v = _prepare_v(v, outputs, is_outputs_tuple, create_graph, fn_name, _NO_V_FOR_OUTPUT)
    return is_inputs_tuple, inputs, v, is_outputs_tuple, outputs


def _single_element(fn_name, is_outputs_tuple, outputs):
    if is_outputs_tuple:
        raise RuntimeError(f"The function given to {fn_name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {fn_name} should contain a "
                           "single element")


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the vector-Jacobian product, one entry per input."""
    with enable_grad():
        is_inputs_tuple, inputs, v, is_outputs_tuple, outputs = _products(
            "vjp", func, inputs, v, create_graph, strict, v_against="outputs")
    with set_grad_enabled(create_graph or is_grad_enabled()):
        products = _fill_in_zeros(_grad(outputs, inputs, v, create_graph), inputs, strict, create_graph,
                                  "back")
    return (_unpack(_finish(outputs, create_graph), is_outputs_tuple),
            _unpack(_finish(products, create_graph), is_inputs_tuple))


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product, one entry per output (double-backward trick)."""
    with enable_grad():
        is_inputs_tuple, inputs, v, is_outputs_tuple, outputs = _products(
            "jvp", func, inputs, v, create_graph, strict, v_against="inputs")
        # grad_inputs is linear in the dummy cotangent u, so its value never matters (zeros, not nan)
        u = tuple(zeros_like(out, requires_grad=True) for out in outputs)
        grad_inputs = _grad(outputs, inputs, u, create_graph=True)
        _check_requires_grad(grad_inputs, "grad_inputs", strict)
    with set_grad_enabled(create_graph or is_grad_enabled()):
        products = _fill_in_zeros(_grad(grad_inputs, u, v, create_graph), outputs, strict, create_graph,
                                  "back_trick")
    return (_unpack(_finish(outputs, create_graph), is_outputs_tuple),
            _unpack(_finish(products, create_graph), is_outputs_tuple))


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H) for a function returning a single element."""
    with enable_grad():
        is_inputs_tuple, inputs, v, is_outputs_tuple, outputs = _products(
            "vhp", func, inputs, v, create_graph, strict, v_against="inputs")
        _single_element("vhp", is_outputs_tuple, outputs)
        jac = _grad(outputs, inputs, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
    with set_grad_enabled(create_graph or is_grad_enabled()):
        products = _fill_in_zeros(_grad(jac, inputs, v, create_graph), inputs, strict, create_graph,
                                  "double_back")
    return (_unpack(_finish(outputs, create_graph), is_outputs_tuple),
            _unpack(_finish(products, create_graph), is_inputs_tuple))


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v) for a function returning a single element (double-backward trick; equals
    vhp for twice continuously differentiable functions, where H is symmetric)."""
    with enable_grad():
        is_inputs_tuple, inputs, v, is_outputs_tuple, outputs = _products(
            "hvp", func, inputs, v, create_graph, strict, v_against="inputs")
        _single_element("hvp", is_outputs_tuple, outputs)
        jac = _grad(outputs, inputs, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
        u = tuple(zeros_like(inp, requires_grad=True) for inp in inputs)
        double_back = _grad(jac, inputs, u, create_graph=True)
        # PyTorch checks jac again here (not double_back); kept so strict mode raises alike
        _check_requires_grad(jac, "hessian", strict)
    with set_grad_enabled(create_graph or is_grad_enabled()):
        products = _fill_in_zeros(_grad(double_back, u, v, create_graph), inputs, strict, create_graph,
                                  "double_back_trick")
    return (_unpack(_finish(outputs, create_graph), is_outputs_tuple),
            _unpack(_finish(products, create_graph), is_inputs_tuple))


def _check_strategy(strategy, vectorize, strict, create_graph):
    if strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode". Hint: If your '
                             'function has more outputs than inputs, "forward-mode" tends to be more '
                             'performant. Otherwise, prefer to use "reverse-mode".')
    if strategy == "forward-mode":
        if create_graph:
            raise NotImplementedError("torch.autograd.functional.jacobian: `create_graph=True` and "
                                      '`strategy="forward-mode"` are not supported together (yet). Please '
                                      'either set `create_graph=False` or `strategy="reverse-mode"`.')
        if strict:
            raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and "
                               '`strategy="forward-mode"` are not supported together (yet). Please either '
                               'set `strict=False` or `strategy="reverse-mode"`.')
        if not vectorize:
            raise NotImplementedError("Computing Jacobian using forward-AD or forward-over-reverse Hessian "
                                      "isonly implemented for `vectorize=True`.")  # (sic), as PyTorch
    elif vectorize and strict:
        raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` are not "
                           "supported together. Please either set `strict=False` or `vectorize=False`.")


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode"):
    """The Jacobian of func at inputs: jac[i][j] has shape outputs[i].shape + inputs[j].shape, nested
    tuples reduced to match whether inputs and outputs were given as tuples."""
    _check_strategy(strategy, vectorize, strict, create_graph)
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
        inputs = _prepare(inputs, create_graph, need_graph=True)
        is_outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function",
                                              "jacobian")
        _check_requires_grad(outputs, "outputs", strict)
        jac = tuple(_jacobian_of_output(i, out, inputs, strict, create_graph)
                    for i, out in enumerate(outputs))
    return _unpack(_finish(jac, create_graph), (is_outputs_tuple, is_inputs_tuple))


def _jacobian_of_output(i, out, inputs, strict, create_graph):
    """One grad() per element of out; per input, the rows stacked to out.shape + input.shape (an
    output with no elements gives an empty block of zeros, where PyTorch fails to stack no rows)."""
    rows = tuple([] for _ in inputs)
    flat = out.reshape(-1)
    for k in range(out.numel()):
        grads = _grad((flat[k],), inputs, create_graph=create_graph, retain_graph=True)
        for j, (g, inp) in enumerate(zip(grads, inputs)):
            if g is None:
                if strict:
                    raise RuntimeError(f"Output {i} of the user-provided function is independent of input "
                                       f"{j}. This is not allowed in strict mode.")
                g = zeros_like(inp)
            elif strict and create_graph and not g.requires_grad:
                # PyTorch names the output's index here, not the input's; kept so messages match
                raise RuntimeError(f"The jacobian of the user-provided function is independent of input "
                                   f"{i}. This is not allowed in strict mode when create_graph=True.")
            rows[j].append(g)
    return tuple(stack(r, 0).view(tuple(out.shape) + tuple(inp.shape)) if r
                 else zeros(tuple(out.shape) + tuple(inp.shape), dtype=inp.dtype)
                 for r, inp in zip(rows, inputs))


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of a function returning a single element: hess[i][j] has shape
    inputs[i].shape + inputs[j].shape; a single Tensor when inputs was a single Tensor."""
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".')

    def single_output(*inp):
        out = func(*inp)
        is_out_tuple, outs = _as_tuple(out, "outputs of the user-provided function", "hessian")
        _check_requires_grad(outs, "outputs", strict)
        _single_element("hessian", is_out_tuple, outs)
        return out.squeeze()

    def gradient(*inp):
        jac = jacobian(single_output, inp, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
        return jac

    res = jacobian(gradient, inputs, create_graph=create_graph, strict=strict, vectorize=vectorize,
                   strategy=outer_jacobian_strategy)
    return _unpack(res, (is_inputs_tuple, is_inputs_tuple))
