"""The autograd engine: `backward` and `grad` over the graph recorded by eager ops.

It asks the IR for the symbolic backward graph of the recorded nodes, has the runtime execute it
(NumPy interpreter, or the tracer's own ops when `create_graph=True` so the result is
differentiable again), then delivers cotangents: accumulated into leaves' `.grad`, stored for
`retain_grad()` tensors, or returned by `grad`."""
import warnings

import numpy as np

from ..ir import OPS, Derivation, backward_graph, evaluate_backward, structure_key, topological_order
from ..ir.dtypes import from_numpy_dtype
from ..runtime import backward_graphs, node_vjps, run_graph
from ..runtime.devices import CPU
from ..runtime.events import notify, now, observers
from ..runtime.interpreter import run_lowered
from ..runtime.plan import eager_plan_run
from . import grad_mode
from .capture import active as capturing
from .dispatch import _compute, apply, cast, edge, write_into
from .factories import ones_like, tensor, zeros_like
from .node import FREED, AccumulateGrad
from .tensor import Tensor

_new = Tensor._make
_COPY, _ADD = OPS["copy"], OPS["add"]


def _freed_error():
    return RuntimeError(
        "Trying to backward through the graph a second time (or directly access saved tensors after they "
        "have already been freed). Saved intermediate values of the graph are freed when you call "
        ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
        "graph a second time or if you need to access saved tensors after calling backward.")


def _check_version(node, j):
    """Raise if the tensor that the node's j-th saved value came from was changed in place."""
    slot = node.op.saved_slots(len(node.inputs))[j]
    for counter, version, index in node.versions:
        if index == slot and counter[0] != version:
            value = node.saved[j]
            which = "its output" if index < 0 else f"its input {index}"
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: [torch.{from_numpy_dtype(value.dtype).scalar_name}Tensor {list(value.shape)}], "
                f"saved by {node.name()} ({which}), is at version {counter[0]}; expected version {version} "
                f"instead. Hint: compute the in-place update on a clone(), or move it after backward().")


def _saved_arrays(node):
    saved = node.saved
    if saved is None:
        return ()
    if saved is FREED:
        raise _freed_error()
    return saved


def _saved_tensors(node):
    """Saved values as tensors that keep their place in the forward graph (for create_graph)."""
    values = _saved_arrays(node)
    out = []
    for i, value in zip(node.op.saved_slots(len(node.inputs)), values):
        if not isinstance(value, np.ndarray):
            out.append(value)
            continue
        source = node if i < 0 else node.inputs[i]
        if isinstance(source, AccumulateGrad):
            out.append(source.variable)
            continue
        t = _new(value, node.device)
        if source is not None and not isinstance(source, np.ndarray):
            t._node, t._rg = source, True
        out.append(t)
    return out


def _hook_runner(hooks, pre_hooks, device):
    """The callback a hooked cotangent passes through: tensor hooks, then grad_fn pre-hooks. It
    gets an array from the NumPy interpreter and a tensor under create_graph."""
    def run(value):
        as_tensor = isinstance(value, Tensor)
        grad = value if as_tensor else _new(value, device)
        for hook in list(hooks or ()):
            grad = _checked(hook, grad, hook(grad))
        for hook in list(pre_hooks or ()):
            result = hook((grad,))
            if result is not None:
                grad = _checked(hook, grad, result[0])
        if as_tensor:
            return grad
        # a hook may return a tensor the user still holds: never let a gradient alias it
        return grad._data if grad._data is value else grad._data.copy()
    return run


def _checked(hook, grad, result):
    if result is None:
        return grad
    name = getattr(hook, "__name__", "hook")
    if not isinstance(result, Tensor):
        raise TypeError(f"hook '{name}' returned {type(result).__name__}; expected a Tensor or None")
    if result.shape != grad.shape:
        raise RuntimeError(f"hook '{name}' has changed the size of value: expected {list(grad.shape)}, "
                           f"got {list(result.shape)}")
    if result.dtype is not grad.dtype:
        raise RuntimeError(f"hook '{name}' has changed the type of value: expected {grad.dtype}, "
                           f"got {result.dtype}")
    return result


def _tensor_hooks(node):
    return node.variable._hooks if isinstance(node, AccumulateGrad) else node._hooks


def _on_cotangent(node):
    """The function a node's cotangent passes through (its tensor hooks and pre-hooks), or None."""
    hooks = _tensor_hooks(node)
    if hooks or node.pre_hooks:
        return _hook_runner(hooks, node.pre_hooks, node.device)
    return None


def _tracer_apply(node, values):
    if node.op.kind == "opaque":   # hooks and custom Functions see (and may return) differentiable tensors
        return node.attrs["fn"](*values)
    return apply(node.op, values, node.attrs)


def _root_gradients(tensors, grad_tensors, create_graph):
    roots, cotangents = [], []
    grad_tensors = grad_tensors if grad_tensors is not None else (None,) * len(tensors)
    if len(grad_tensors) != len(tensors):
        raise RuntimeError(f"got {len(grad_tensors)} gradients for {len(tensors)} outputs")
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        if not t._rg:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        if g is None:
            if t._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            g = ones_like(t)
        else:
            g = g if isinstance(g, Tensor) else tensor(g, dtype=t.dtype, device=t._device)
            if g._data.shape != t._data.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {g.shape} and "
                                   f"output[{i}] has a shape of {t.shape}.")
            if g._data.dtype != t._data.dtype:
                g = cast(g, t.dtype)    # recorded, so create_graph can differentiate through it
        roots.append(edge(t))
        cotangents.append(g if create_graph else g._data)
    return roots, cotangents


def _opaque(node):
    return bool(_tensor_hooks(node) or node.pre_hooks)


def _bind(order, cotangents, sources, saved):
    """The graph's input values for this run: root cotangents and the saved values the derived
    graph reads, each checked against in-place changes since it was saved."""
    bindings, per_node = [], {}
    for where, j in sources:
        if where == "root":
            bindings.append(cotangents[j])
            continue
        values = per_node.get(where)
        node = order[where]
        if values is None:
            values = per_node[where] = saved(node)
        if node.versions:
            _check_version(node, j)
        bindings.append(values[j])
    return bindings


# A structure's entry in backward_graphs after its first backward, which runs each node's rule at
# once (evaluate_backward): a structure seen once may never repeat, so its whole graph is derived
# (and later compiled) only when it does.
_SEEN_ONCE = "seen once"


def _run(roots, cotangents, wanted, retain_graph, create_graph):
    """Execute the backward pass: a structure seen before runs its derived graph (fetched by
    structure, or derived now at its second sighting), a new one runs its nodes' rules at once;
    then free what it consumed. Returns the cotangents of the wanted nodes and the ids of the
    values among them that others hold (the caller copies those)."""
    order = topological_order(roots)
    key = None if create_graph else structure_key(order, roots, wanted, _opaque)
    device = roots[0].device if roots else CPU
    if key is not None and device is not CPU:   # a graph, and so its compiled plan, per device
        key = (key, device)
    try:
        derivation = backward_graphs.get(key) if key is not None else None
    except TypeError:   # an unhashable attribute: derive without caching
        key = derivation = None
    if create_graph or capturing() is not None:
        results, ran, held = _run_traced(order, key, derivation, roots, cotangents, wanted, create_graph)
    elif derivation is None:   # seen for the first time (or never cached): each node's rule at once
        if key is not None:
            backward_graphs.put(key, _SEEN_ONCE)
        hook = _on_cotangent if key is None else None   # a structure with a key has no hooks
        with np.errstate(all="ignore"):   # log(0), 0/0 and overflow give inf/nan, as in PyTorch
            results, ran, held = evaluate_backward(order, roots, cotangents, wanted, _saved_arrays, _check_versions,
                                                   hook, run_lowered, node_vjps, _add if observers else _ADD.impl)
        held.update(id(c) for c in cotangents)   # a root cotangent passed straight through
    else:   # seen before: its graph, derived now at the second sighting, compiled once it repeats
        derivation = _derived(order, key, derivation, roots, cotangents, wanted, _saved_arrays)
        bindings = _bind(order, cotangents, derivation.sources, _saved_arrays)
        values = eager_plan_run(derivation.graph, bindings, device.type)
        if values is None:
            values = run_graph(derivation.graph, bindings)
        results, ran, held = _delivered(order, derivation, bindings, values)
    if not retain_graph:
        for p in ran:
            if order[p].saved is not None:
                order[p].saved = FREED
    return results, held


def _derived(order, key, derivation, roots, cotangents, wanted, saved):
    """The cached Derivation, or one derived now (and cached under key, when there is one)."""
    if derivation.__class__ is Derivation:
        return derivation
    derivation = backward_graph(roots, cotangents, wanted, saved, _on_cotangent, order)
    if key is not None:
        backward_graphs.put(key, derivation)
    return derivation


def _run_traced(order, key, derivation, roots, cotangents, wanted, create_graph):
    """Run the derived graph with the tracer's ops under create_graph, so that the result is
    differentiable again, or recorded node by node into the trace being captured."""
    saved = _saved_tensors if create_graph else _saved_arrays
    derivation = _derived(order, key, derivation, roots, cotangents, wanted, saved)
    bindings = _bind(order, cotangents, derivation.sources, saved)
    if create_graph:
        with grad_mode.enable_grad():
            values = run_graph(derivation.graph, bindings, _tracer_apply)
    else:   # recorded into the trace being captured, node by node
        values = run_graph(derivation.graph, bindings, capturing().backward_apply(derivation.origins, order))
    return _delivered(order, derivation, bindings, values)


def _delivered(order, derivation, bindings, values):
    """A derived graph's results as _run returns them: {node: value}, the nodes that ran, and the
    ids of outputs that are graph inputs (a root cotangent passed straight through is a value the
    caller holds: delivering it must not alias it)."""
    graph = derivation.graph
    held = {id(bindings[graph.inputs.index(o)]) for o in graph.outputs if o.op.name == "placeholder"}
    return dict(zip([order[p] for p in derivation.wanted], values)), derivation.ran, held


def _check_versions(node, reads):
    """Raise if a saved value that a rule reads (the j in reads) was changed in place."""
    versions = node.versions
    if versions:
        for counter, version, _ in versions:
            if counter[0] != version:   # something changed: find which read, if any, it was
                for j in reads:
                    _check_version(node, j)
                return


def _add(a, b):
    """Two cotangents meeting at a node, summed as the `add` node of a derived graph sums them, and
    reported to observers as the interpreter reports graph nodes."""
    start = now()
    out = _ADD.impl(a, b)
    notify("add", start, (a, b))
    return out


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate d(tensors)/d(leaf) into each leaf's .grad (or only into `inputs`)."""
    if isinstance(tensors, Tensor):
        tensors = (tensors,)
    if isinstance(grad_tensors, Tensor):
        grad_tensors = (grad_tensors,)
    retain_graph = create_graph if retain_graph is None else retain_graph
    if create_graph:
        warnings.warn("Using backward() with create_graph=True will create a reference cycle between the "
                      "parameter and its gradient which can cause a memory leak. We recommend using "
                      "autograd.grad when creating the graph to avoid this. If you have to use this function, "
                      "make sure to reset the .grad fields of your parameters to None after use to break the "
                      "cycle and avoid the leak.", UserWarning, stacklevel=3)
    roots, cotangents = _root_gradients(tuple(tensors), grad_tensors, create_graph)
    if inputs is not None:
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        _check_differentiable(inputs)
        targets = {edge(t): t for t in inputs}
        wanted = targets.__contains__
    else:
        wanted = lambda n: isinstance(n, AccumulateGrad) or n.retain is not None  # noqa: E731
    results, given = _run(roots, cotangents, wanted, retain_graph, create_graph)
    for node, value in results.items():
        if isinstance(node, AccumulateGrad):
            target = node.variable
        elif node.retain is not None and node.retain() is not None:
            target = node.retain()
        elif inputs is not None:
            target = targets[node]
        else:
            continue
        _accumulate(target, value, create_graph, given)
        if target._post_accumulate_hooks and isinstance(node, AccumulateGrad):
            for hook in list(target._post_accumulate_hooks):
                hook(target)


def _check_differentiable(inputs):
    for t in inputs:
        if not t._rg:
            raise RuntimeError("One of the differentiated Tensors does not require grad")


def _accumulate(target, value, create_graph, given):
    """Add a cotangent into target.grad. `given` holds the ids of values another tensor (or the
    caller, for root cotangents) already holds: those are copied, never aliased."""
    if create_graph:
        if id(value) in given:
            value = apply(_COPY, (value,))
        given.add(id(value))
        target._grad = value if target._grad is None else target._grad + value
        return
    if type(value) is not np.ndarray:
        value = np.asarray(value)
    trace = capturing()
    if trace is not None:
        trace.note_grad(target)
    # _compute and write_into record into a trace being captured, as every eager op does
    if target._grad is None:
        if id(value) in given or value.base is not None or not value.flags.writeable:
            value = _compute(_COPY, (value,), (value,), None)
        given.add(id(value))
        target._grad = _new(value, target._device)
    elif target._grad._rg:
        target._grad = _new(_compute(_ADD, (target._grad, value), (target._grad._data, value), None),
                            target._device)
    elif trace is not None:   # in place, as below, but through the recorded write
        write_into(target._grad, _compute(_ADD, (target._grad, value), (target._grad._data, value), None))
    else:
        np.add(target._grad._data, value, out=target._grad._data)
        target._grad._vc[0] += 1


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, only_inputs=True,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """The gradients of `outputs` with respect to `inputs`, returned instead of accumulated."""
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,)
    allow_unused = materialize_grads if allow_unused is None else allow_unused
    if is_grads_batched:
        raise NotImplementedError("grad(is_grads_batched=True) is not supported: call grad once per "
                                  "grad_outputs entry")
    _check_differentiable(inputs)
    retain_graph = create_graph if retain_graph is None else retain_graph
    roots, cotangents = _root_gradients(outputs, grad_outputs, create_graph)
    edges = [edge(t) for t in inputs]
    target_ids = set(edges)
    results, _ = _run(roots, cotangents, target_ids.__contains__, retain_graph, create_graph)
    grads = []
    for t, e in zip(inputs, edges):
        value = results.get(e)
        if value is None:
            if not allow_unused:
                raise RuntimeError("One of the differentiated Tensors appears to not have been used in the "
                                   "graph. Set allow_unused=True if this is the desired behavior.")
            grads.append(zeros_like(t) if materialize_grads else None)
        elif isinstance(value, Tensor):
            grads.append(value)
        else:
            grads.append(_new(np.asarray(value), t._device))
    return tuple(grads)


def zero_grads(tensors, set_to_none=True):
    """Module.zero_grad and Optimizer.zero_grad: drop each .grad, or zero it in place."""
    for t in tensors:
        if t.grad is not None:
            if set_to_none:
                t.grad = None
            else:
                t.grad.detach_()
                t.grad.zero_()
