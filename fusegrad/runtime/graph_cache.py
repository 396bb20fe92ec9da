"""In-memory cache of graphs keyed by structure, least recently used evicted first.

Eager backward uses it so that a training loop, whose every step records the same structure,
derives its backward graph once; compiled plans will hang off the same entries."""
from collections import OrderedDict


class GraphCache:
    def __init__(self, maxsize=64):
        self.maxsize = maxsize
        self.entries = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.maxsize:
            self.entries.popitem(last=False)

    def clear(self):
        self.entries.clear()
        self.hits = self.misses = 0

    def __len__(self):
        return len(self.entries)


backward_graphs = GraphCache()
# one node's VJP graph per signature: what a structure seen for the first time runs (ir.NodeVJP)
node_vjps = GraphCache(maxsize=1024)
