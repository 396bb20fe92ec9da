"""Executes graphs: the interpreter now; compiled plans, guards, the cache and devices later."""
from .graph_cache import GraphCache, backward_graphs, node_vjps
from .interpreter import run_graph

__all__ = ["run_graph", "GraphCache", "backward_graphs", "node_vjps"]
