"""The IR behind autograd, as printable graphs: what eager ops recorded, and the backward graph
derived from it.

    >>> y = (x * 2).sin().sum()
    >>> print(fusegrad.autograd.graph.forward_graph(y))
    def graph(%0: f32[3]):
        %1 = mul(%0, 2)  # f32[3]
        ...
    >>> fusegrad.autograd.graph.draw(y, "forward.svg")        # a picture, through Graphviz
"""
from ..ir import Graph, backward_graph as derive_backward, topological_order
from ..runtime.dot import graph_dot, render
from ..runtime.plan import Plan
from ..tracer.dispatch import edge
from ..tracer.engine import _root_gradients, _saved_arrays
from ..tracer.node import AccumulateGrad, RecordedNode as Node  # noqa: F401  (torch.autograd.graph.Node)


def forward_graph(*tensors):
    """The recorded nodes leading to `tensors`; leaves that require grad are the inputs."""
    roots = [edge(t) for t in tensors]
    for i, root in enumerate(roots):
        if not isinstance(root, Node):
            raise RuntimeError(f"forward_graph: tensor {i} does not require grad and has no grad_fn, so no graph "
                               "was recorded for it; create its inputs with requires_grad=True")
    order = topological_order(roots)
    leaves = [n for n in order if isinstance(n, AccumulateGrad)]
    return Graph([n for n in order if not isinstance(n, AccumulateGrad)], leaves, roots)


def backward_graph(*tensors, grad_tensors=None):
    """The backward graph `backward()` would run for `tensors` (derived, not executed). Its
    inputs are the output cotangents and the forward values the VJP rules read."""
    roots, cotangents = _root_gradients(tensors, grad_tensors, False)
    return derive_backward(roots, cotangents, lambda n: isinstance(n, AccumulateGrad), _saved_arrays).graph


def draw(tensor_or_graph, path, backward=False):
    """Draw a tensor's forward graph (its backward graph with backward=True), an IR graph or a
    compiled plan to `path`, in the format its extension names: .svg, .png or .pdf through the
    Graphviz `dot` program, .dot (or .gv) as DOT text, which needs no Graphviz."""
    if isinstance(tensor_or_graph, Plan):
        text = tensor_or_graph.to_dot()
    elif isinstance(tensor_or_graph, Graph):
        text = graph_dot(tensor_or_graph)
    else:
        text = graph_dot((backward_graph if backward else forward_graph)(tensor_or_graph))
    render(text, path)
