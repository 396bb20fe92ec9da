"""Executes graphs: the interpreter now; compiled plans, guards, the cache and devices later."""
from .interpreter import run_graph

__all__ = ["run_graph"]
