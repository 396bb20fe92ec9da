"""Op events for observers such as the profiler: every eager op and every interpreted graph node.

Observers are callables fn(name, start_ns, end_ns, input_shapes); with none registered the cost
is one truth test per op."""
from time import perf_counter_ns as now

observers = []


def notify(name, start, values):
    end = now()
    shapes = [list(v.shape) if hasattr(v, "shape") else [] for v in values]
    for fn in list(observers):
        fn(name, start, end, shapes)
