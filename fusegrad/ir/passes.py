"""Graph-to-graph passes."""
from .graph import Graph


def dead_code_elimination(graph):
    """Drop nodes no output depends on. Placeholders stay, so input bindings keep their order."""
    live = {id(o) for o in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if id(node) in live:
            kept.append(node)
            live.update(id(v) for v in node.inputs)
    kept.reverse()
    return Graph(kept, graph.inputs, graph.outputs)
