"""Graph-to-graph passes."""
from .graph import Graph


def dead_code_elimination(graph):
    """Drop nodes, placeholders included, that no output depends on.

    Walking backwards also finds each value's last reader: `graph.release[node]` lists the values
    no node after `node` reads, which an executor can free once `node` has run."""
    live = set(graph.outputs)
    kept = []
    release = {}
    for node in reversed(graph.nodes):
        if node in live:
            kept.append(node)
            dead = [v for v in node.inputs if v not in live]
            if dead:
                live.update(dead)
                release[node] = list(dict.fromkeys(dead)) if len(dead) > 1 else dead
    kept.reverse()
    result = Graph(kept, [p for p in graph.inputs if p in live], graph.outputs)
    result.release = release
    return result
