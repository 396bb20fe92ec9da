"""The IR: dtypes, op definitions (one place per op), graphs, symbolic autodiff and passes.

Imports nothing else from fusegrad; every other layer builds on it."""
from . import dtypes, ops  # noqa: F401  (ops registers every op definition)
from .autodiff import Derivation, NodeVJP, backward_graph, evaluate_backward, structure_key, topological_order
from .graph import Builder, Graph, Node, _add_op_methods, format_nodes, shape_of
from .op import OPS, Op, ShapeError
from .passes import dead_code_elimination

_add_op_methods()
from . import loops  # noqa: E402,F401  (the ops of re-rolled loops, which no Builder emits)

__all__ = ["OPS", "Op", "ShapeError", "Node", "Graph", "Builder", "backward_graph", "evaluate_backward", "NodeVJP",
           "Derivation", "structure_key",
           "topological_order", "dead_code_elimination", "format_nodes", "shape_of", "dtypes"]
