"""The IR behind autograd, as printable graphs: what eager ops recorded, and the backward graph
derived from it.

    >>> y = (x * 2).sin().sum()
    >>> print(fusegrad.autograd.graph.forward_graph(y))
    def graph(%0: f32[3]):
        %1 = mul(%0, 2)  # f32[3]
        ...
"""
from ..ir import Graph, backward_graph as derive_backward, topological_order
from ..tracer.dispatch import edge
from ..tracer.engine import _root_gradients, _saved_arrays
from ..tracer.node import AccumulateGrad, RecordedNode as Node  # noqa: F401  (torch.autograd.graph.Node)


def forward_graph(*tensors):
    """The recorded nodes leading to `tensors`; leaves that require grad are the inputs."""
    roots = [edge(t) for t in tensors]
    order = topological_order(roots)
    leaves = [n for n in order if isinstance(n, AccumulateGrad)]
    return Graph([n for n in order if not isinstance(n, AccumulateGrad)], leaves, roots)


def backward_graph(*tensors, grad_tensors=None):
    """The backward graph `backward()` would run for `tensors` (derived, not executed). Its
    inputs are the output cotangents and the forward values the VJP rules read."""
    roots, cotangents = _root_gradients(tensors, grad_tensors, False)
    return derive_backward(roots, cotangents, lambda n: isinstance(n, AccumulateGrad), _saved_arrays).graph
