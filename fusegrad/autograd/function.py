"""Custom autograd Functions: `class Exp(Function)` with static forward/backward, used as `Exp.apply(x)`.

`apply` runs forward under no_grad and records one `custom_function` node for the call. That node is
also the `ctx` the user's forward and backward see (save_for_backward, needs_input_grad, ...) and
the outputs' grad_fn: an instance of `ExpBackward`, never of `Exp`. Its VJP rule puts the user's
backward into the backward graph as an opaque `call`, run at backward time through fusegrad's ops:
on arrays under no_grad normally, on the tracer's differentiable tensors under create_graph, so a
backward written with fusegrad ops can be differentiated again. Such a backward graph is derived
afresh for each backward instead of being cached by structure (the user's Python may branch)."""
import functools
import inspect
import operator
import warnings

import numpy as np

from ..ir import OPS
from ..tracer import RecordedNode, Tensor, is_grad_enabled, no_grad
from ..tracer.dispatch import _rebase_viewed as rebase_viewed, edge, view_root
from ..tracer.engine import _freed_error
from ..tracer.node import FREED

__all__ = ["Function", "FunctionCtx", "BackwardCFunction", "once_differentiable"]

_CUSTOM, _OUTPUT = OPS["custom_function"], OPS["custom_output"]
_SAVED_SLOT = RecordedNode.saved   # the slot that BackwardCFunction.saved wraps

_LEGACY_CALL = ("Legacy autograd function with non-static forward method is deprecated. Please use new-style "
                "autograd function with static forward method. (Example: "
                "https://pytorch.org/docs/stable/autograd.html#torch.autograd.Function)")


class FunctionCtx:
    """What forward (or setup_context) tells backward: saved tensors, and how outputs relate to inputs."""

    def save_for_backward(self, *tensors):
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save variables, but argument {i} is of type "
                                f"{type(t).__name__}")
        self.to_save = tensors   # their versions are taken when apply returns, as torch does

    def save_for_forward(self, *tensors):
        raise NotImplementedError("save_for_forward: forward-mode AD (jvp) of custom Functions is not supported "
                                  "by fusegrad yet")

    def mark_dirty(self, *tensors):
        """The inputs that forward modified in place (and returns)."""
        self.dirty_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        """Outputs that get no gradient (indices, masks); backward still receives a grad slot for each."""
        self.non_differentiable = tensors

    def set_materialize_grads(self, value):
        """With False, backward receives None instead of zeros for outputs that got no gradient."""
        self.materialize_grads = value


class BackwardCFunction(RecordedNode, FunctionCtx):
    """The node recorded for one call of a custom Function, and that call's ctx. Each Function
    subclass gets its own subclass of this, named like torch's (`ExpBackward` for `Exp`)."""
    _forward_cls = None
    materialize_grads = True
    dirty_tensors = non_differentiable = to_save = ()

    def __init__(self):
        # inputs, shape and dtype are filled in once forward has run and the call is recorded
        RecordedNode.__init__(self, _CUSTOM, (), None, (), None, (), None, type(self).__name__)
        self._saved = ()   # (tensor, its version when apply returned) per saved tensor, or None
        self.needs_input_grad = ()

    @property
    def saved(self):
        return _SAVED_SLOT.__get__(self)

    @saved.setter
    def saved(self, value):
        """The engine marks saved values FREED after a backward without retain_graph: let the
        saved tensors go then, as torch does."""
        _SAVED_SLOT.__set__(self, value)
        if value is FREED:
            self._saved = ()

    @property
    def saved_tensors(self):
        if self.saved is FREED:
            raise _freed_error()
        out = []
        for entry in self._saved:
            if entry is None:
                out.append(None)
                continue
            t, version = entry
            if t._vc[0] != version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: [torch.{t.dtype.scalar_name}Tensor {list(t.shape)}], saved by {self.name()}, is "
                    f"at version {t._vc[0]}; expected version {version} instead. Hint: compute the in-place "
                    "update on a clone(), or move it after backward().")
            out.append(t)
        return tuple(out)

    saved_variables = saved_tensors

    def apply(self, *grad_outputs):
        """Call the user's backward with this node as ctx, as torch's grad_fn.apply does."""
        return _user_backward(self._forward_cls)(self, *grad_outputs)

    # ------------------------------------------------------------------ backward
    def vjp(self, b, g):
        """The backward graph of this call: one `call` running the user's backward on the cotangents
        of the differentiable outputs, then one `call` per input picking its gradient."""
        grads = g if g.__class__ is tuple else (g,)
        present = [k for k, c in enumerate(grads) if c is not None]
        run = b.call(*[grads[k] for k in present], fn=_BackwardCall(self, present), shape=(),
                     dtype=grads[present[0]].dtype)
        return tuple(b.call(run, fn=operator.itemgetter(i), shape=v.shape, dtype=v.dtype)
                     if isinstance(v, RecordedNode) else None for i, v in enumerate(self.inputs))

    def _run_backward(self, present, *values):
        """Run the user's backward on the cotangents of the outputs in `present` (arrays, or tensors
        under create_graph); returns one gradient per recorded input, in the same form."""
        arrays = not isinstance(values[0], Tensor)
        received = dict(zip(present, values))
        grad_outputs = []
        for k, (shape, dtype) in enumerate(self._output_types):
            value = received.get(self._output_slots.get(k))
            if value is None:
                grad_outputs.append(Tensor._make(np.zeros(shape, dtype.np), self.device) if self.materialize_grads
                                    and shape is not None else None)
            else:
                grad_outputs.append(Tensor._make(value, self.device) if arrays else value)
        backward = _user_backward(self._forward_cls)
        if arrays:
            with no_grad():
                results = backward(self, *grad_outputs)
                grads = self._checked_gradients(results, grad_outputs)
            return tuple(None if t is None else t._data for t in grads)
        return self._checked_gradients(backward(self, *grad_outputs), grad_outputs)

    def _checked_gradients(self, results, grad_outputs):
        """One gradient per recorded input from what backward returned (one per forward argument),
        checked, summed down from a broadcast shape and cast as torch's engine does. A gradient that
        is a tensor someone else holds (a grad_output, a saved tensor) is copied: it may become a
        leaf's .grad, which later backward passes add into in place."""
        held = {id(t) for t in grad_outputs}
        held.update(id(entry[0]) for entry in self._saved if entry is not None)
        results = results if isinstance(results, tuple) else (results,)
        n_args = len(self._arg_slots)
        if len(results) > n_args and all(r is None for r in results[n_args:]):
            results = results[:n_args]
        if len(results) != n_args:
            raise RuntimeError(f"function {self.name()} returned an incorrect number of gradients (expected "
                               f"{n_args}, got {len(results)})")
        grads = [None] * len(self.inputs)
        for position, (slot, grad) in enumerate(zip(self._arg_slots, results)):
            if grad is None:
                continue
            if slot is None:
                raise RuntimeError(f"function {self.name()} returned a gradient different than None at position "
                                   f"{position + 1}, but the corresponding forward input was not a Variable")
            if not isinstance(grad, Tensor):
                raise RuntimeError(f"expected Variable or None (got {type(grad).__name__})")
            node_input = self.inputs[slot]
            if not isinstance(node_input, RecordedNode):
                continue
            if id(grad) in held:
                grad = grad.clone()
            grads[slot] = _fit(grad, node_input.shape, node_input.dtype, self.name(), slot)
        # a None for an input that needs a gradient contributes zeros: the backward graph routes a
        # value to every such input (where torch would leave a leaf reached only here with .grad None)
        for slot, v in enumerate(self.inputs):
            if grads[slot] is None and isinstance(v, RecordedNode):
                grads[slot] = Tensor._make(np.zeros(v.shape, v.dtype.np), v.device)
        return tuple(grads)


class _BackwardCall:
    """The `fn` of a backward graph's call node; prints as `ExpBackward.backward` in graphs."""
    __slots__ = ("node", "present")

    def __init__(self, node, present):
        self.node, self.present = node, present

    def __call__(self, *values):
        return self.node._run_backward(self.present, *values)

    def __repr__(self):
        return f"{self.node.name()}.backward"


def _fit(grad, shape, dtype, name, index):
    if grad._data.shape != shape:
        if not _expandable(shape, grad._data.shape):
            raise RuntimeError(f"Function {name} returned an invalid gradient at index {index} - got "
                               f"{list(grad._data.shape)} but expected shape compatible with {list(shape)}")
        lead = grad.ndim - len(shape)
        stretched = tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad._data.shape[i + lead] != 1)
        if stretched:
            grad = grad.sum(stretched, keepdim=True)
        if lead:
            grad = grad.sum(tuple(range(lead)))
    if grad._data.dtype != dtype.np:
        grad = grad.to(dtype)
    return grad


def _expandable(shape, to):
    if len(shape) > len(to):
        return False
    return all(n == m or n == 1 for n, m in zip(reversed(shape), reversed(to)))


def _user_backward(cls):
    backward, vjp = cls.backward, cls.vjp
    if backward is not Function.backward and vjp is not Function.vjp:
        raise RuntimeError("Implementing both 'backward' and 'vjp' for a custom Function is not allowed. You should "
                           "only implement one of them.")
    return vjp if vjp is not Function.vjp else backward


class Function:
    """Subclass with static `forward(ctx, *args)` (or `forward(*args)` plus `setup_context(ctx, inputs,
    output)`) and `backward(ctx, *grad_outputs)`; call as `MyFunction.apply(*args)`."""
    _backward_cls = BackwardCFunction   # each subclass gets its own, named after it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._backward_cls = type(cls.__name__ + "Backward", (BackwardCFunction,), {"_forward_cls": cls})

    def __init__(self, *args, **kwargs):
        warnings.warn(f"{type(self)} should not be instantiated. Methods on autograd functions are all static, so "
                      "you should invoke them on the class itself. Instantiating an autograd function will raise an "
                      "error in a future version of PyTorch.", DeprecationWarning, stacklevel=2)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(_LEGACY_CALL)

    @staticmethod
    def forward(*args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method for your custom "
                                  "autograd.Function to use it with backward mode AD.")

    vjp = backward

    @staticmethod
    def jvp(ctx, *grad_inputs):
        raise NotImplementedError("You must implement the jvp function for custom autograd.Function to use it "
                                  "with forward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        separate_setup = cls.setup_context is not Function.setup_context
        if separate_setup:   # setup_context sees every argument, defaults included
            bound = inspect.signature(cls.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = tuple(bound.arguments.values()), {}
        ctx = cls._backward_cls()
        recording = is_grad_enabled() and any(isinstance(a, Tensor) and a._rg for a in args)
        ctx.needs_input_grad = tuple(recording and isinstance(a, Tensor) and a._rg for a in args)
        edges = [edge(a) for a in args if isinstance(a, Tensor)]
        with no_grad():
            if separate_setup:
                outputs = cls.forward(*args)
                cls.setup_context(ctx, args, outputs)
            else:
                outputs = cls.forward(ctx, *args, **kwargs)
        return _wrap_outputs(ctx, args, edges, outputs, recording)


def _wrap_outputs(ctx, args, edges, outputs, recording):
    """Give the outputs their place in the graph: the differentiable ones get `ctx` (or, when there
    are several, one custom_output of it each) as grad_fn; inputs returned as they are become new
    tensors sharing their data, unless forward marked them dirty."""
    is_tuple = isinstance(outputs, tuple)
    outputs = list(outputs) if is_tuple else [outputs]
    dirty = {id(t) for t in ctx.dirty_tensors}
    if not dirty <= {id(out) for out in outputs}:
        raise RuntimeError("Some elements marked as dirty during the forward method were not returned as output. "
                           "The inputs that are modified inplace must all be outputs of the Function.")
    non_differentiable = {id(t) for t in ctx.non_differentiable}
    input_ids = {id(a) for a in args if isinstance(a, Tensor)}
    for k, out in enumerate(outputs):
        # an input returned as it is becomes a new tensor for the same data (torch returns a view);
        # a view made in forward keeps its data but not its link to the viewed tensor, so a later
        # write through that tensor cannot replace its history (the custom node) by a plain view's
        if isinstance(out, Tensor) and id(out) not in dirty and (id(out) in input_ids or out._view is not None):
            outputs[k] = out.detach()
    for t in ctx.dirty_tensors:
        if recording and t._node is None and t._rg:
            raise RuntimeError("a leaf Variable that requires grad has been used in an in-place operation.")
        if recording and t._view is not None and view_root(t)._node is None and view_root(t)._rg:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")
        t._vc[0] += 1   # marking dirty counts as a write, as in torch
    differentiable = [k for k, out in enumerate(outputs) if isinstance(out, Tensor) and id(out) not in
                      non_differentiable and out._data.dtype.kind == "f"]
    ctx._arg_slots = _arg_slots(args)
    ctx._output_types = [(out._data.shape, out.dtype) if isinstance(out, Tensor) else (None, None)
                         for out in outputs]
    ctx._output_slots = {k: j for j, k in enumerate(differentiable)}
    if recording and differentiable:
        first = outputs[differentiable[0]]
        ctx.inputs, ctx.shape, ctx.dtype, ctx.device = tuple(edges), first._data.shape, first.dtype, first._device
        for j, k in enumerate(differentiable):
            out = outputs[k]
            if len(differentiable) == 1:
                node = ctx
            else:
                node = RecordedNode(_OUTPUT, (ctx,), {"index": j, "count": len(differentiable)}, out._data.shape,
                                    out.dtype, None, None, type(ctx).__name__, out._device)
            out._node, out._rg = node, True
            if id(out) in dirty and out._view is not None:
                # written through a view: the tensors it views get a history that scatters it in,
                # as an in-place op through a view gives them
                out._view.version = out._vc[0]
                rebase_viewed(out)
    ctx._saved = tuple(None if t is None else (t, t._vc[0]) for t in ctx.to_save)
    return tuple(outputs) if is_tuple else outputs[0]


def _arg_slots(args):
    """Per forward argument, its position among the recorded node's inputs (tensors only)."""
    slots, n = [], 0
    for a in args:
        if isinstance(a, Tensor):
            slots.append(n)
            n += 1
        else:
            slots.append(None)
    return slots


class _DelayedError(Function):
    """Wraps the results of a once_differentiable backward: differentiating them again fails."""

    @staticmethod
    def forward(ctx, *values):
        return values

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("trying to differentiate twice a function that was marked with @once_differentiable")


def once_differentiable(fn):
    """Decorate a backward that is not differentiable itself: it runs under no_grad, and under
    create_graph its results raise if something tries to differentiate them."""
    @functools.wraps(fn)
    def wrapper(ctx, *args):
        with no_grad():
            outputs = fn(ctx, *args)
        if not is_grad_enabled() or not any(isinstance(a, Tensor) and a._rg for a in args):
            return outputs
        single = not isinstance(outputs, tuple)
        # as torch does: aliases that require grad, so that the error node is recorded on them
        fakes = [g.detach().requires_grad_() if isinstance(g, Tensor) and g.is_floating_point() else g
                 for g in ((outputs,) if single else outputs)]
        wrapped = _DelayedError.apply(*fakes)
        return wrapped[0] if single else wrapped
    return wrapper
