"""fusegrad.autograd.profiler: PyTorch's autograd profiler, fed by the op events of runtime/events.

A `profile` block registers one observer that appends a raw tuple per op (and `record_function`
adds one per labelled block); events, their nesting and the averaged table are built only when
asked for, so the cost while profiling is one append per op. Ops are named `fusegrad::<ir op>`,
the analogue of `aten::<op>`. Times are in microseconds, as in PyTorch. There are no GPU tensors
yet, so `use_cuda=True` profiles the CPU only and the CUDA metrics (and sort keys) are 0."""
import json
import os
import sys
import threading
from functools import wraps

from ..runtime import events as _events
from ..runtime.events import now

__all__ = ["profile", "record_function", "EventList", "FunctionEvent", "FunctionEventAvg"]

OP_PREFIX = "fusegrad::"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

# profiles between __enter__ and __exit__; record_function is a no-op while this is empty
_active_profiles = []

# metrics PyTorch sorts and prints that fusegrad never measures (no devices, no memory, no flops)
_UNMEASURED = ("device_time", "device_time_total", "self_device_time_total", "cuda_time",
               "cuda_time_total", "self_cuda_time_total", "cpu_memory_usage",
               "self_cpu_memory_usage", "device_memory_usage", "self_device_memory_usage",
               "cuda_memory_usage", "self_cuda_memory_usage", "flops")
SORT_KEYS = ("cpu_time", "cpu_time_total", "self_cpu_time_total", "count") + _UNMEASURED


def _format_time(time_us):
    if time_us >= 1e6:
        return f"{time_us / 1e6:.3f}s"
    if time_us >= 1e3:
        return f"{time_us / 1e3:.3f}ms"
    return f"{time_us:.3f}us"


def _format_time_share(time_us, total_us):
    if total_us == 0:
        return "NaN"
    return f"{time_us * 100.0 / total_us:.2f}%"


class _Metrics:
    """What FunctionEvent and FunctionEventAvg share: the average, the formatted strings, and 0
    for every metric that has nothing to measure on a CPU-only build."""
    node_id = -1
    device_type = "CPU"
    is_legacy = False
    is_async = False
    is_remote = False
    overload_name = ""
    use_device = None

    @property
    def cpu_time(self):
        return self.cpu_time_total / self.count if self.count else 0.0

    @property
    def cpu_time_str(self):
        return _format_time(self.cpu_time)

    @property
    def cpu_time_total_str(self):
        return _format_time(self.cpu_time_total)

    @property
    def self_cpu_time_total_str(self):
        return _format_time(self.self_cpu_time_total)


for _metric in _UNMEASURED:
    setattr(_Metrics, _metric, 0)
del _metric


class Interval:
    def __init__(self, start, end):
        self.start, self.end = start, end

    def elapsed_us(self):
        return self.end - self.start


class FunctionEvent(_Metrics):
    """One op or labelled block: times in µs since the profile started, and its place in the
    per-thread nesting (a record_function block is the parent of the ops run inside it)."""
    count = 1

    def __init__(self, id, name, thread, start_us, end_us, input_shapes, stack, is_user_annotation):
        self.id = id
        self.name = name
        self.thread = thread
        self.time_range = Interval(start_us, end_us)
        self.input_shapes = input_shapes
        self.stack = stack
        self.is_user_annotation = is_user_annotation
        self.cpu_parent = None
        self.cpu_children = []

    @property
    def key(self):
        return self.name

    trace_name = key

    @property
    def cpu_time_total(self):
        return self.time_range.elapsed_us()

    @property
    def self_cpu_time_total(self):
        return self.cpu_time_total - sum(child.cpu_time_total for child in self.cpu_children)

    def __repr__(self):
        return (f"<FunctionEvent id={self.id} name={self.name} cpu_time={self.cpu_time_str} "
                f"start_us={self.time_range.start:.3f} end_us={self.time_range.end:.3f} "
                f"cpu_children={[c.id for c in self.cpu_children]} thread={self.thread} "
                f"input_shapes={self.input_shapes}>")


class FunctionEventAvg(_Metrics):
    """The sum of the events that share a key (name, and input shapes / stack when grouped)."""

    def __init__(self):
        self.key = None
        self.count = 0
        self.cpu_time_total = 0.0
        self.self_cpu_time_total = 0.0
        self.input_shapes = None
        self.stack = None
        self.is_user_annotation = False
        self.cpu_parent = None
        self.cpu_children = None

    def add(self, other):
        if self.key is None:   # the first event names the group
            self.key = other.key
            self.input_shapes = other.input_shapes
            self.stack = other.stack
            self.is_user_annotation = other.is_user_annotation
            self.cpu_parent = other.cpu_parent
            self.cpu_children = other.cpu_children
        if other.key != self.key:
            raise ValueError(f"FunctionEventAvg.add: can't add event {other.key!r} to the "
                             f"average of {self.key!r}")
        self.count += other.count
        self.cpu_time_total += other.cpu_time_total
        self.self_cpu_time_total += other.self_cpu_time_total
        return self

    __iadd__ = add

    def __repr__(self):
        return (f"<FunctionEventAvg key={self.key} self_cpu_time={self.self_cpu_time_total_str} "
                f"cpu_time={self.cpu_time_str} count={self.count} "
                f"input_shapes={self.input_shapes}>")


class EventList(list):
    """A list of FunctionEvent or FunctionEventAvg that prints as PyTorch's profiler table."""

    @property
    def self_cpu_time_total(self):
        return sum(evt.self_cpu_time_total for evt in self)

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0,
                     group_by_overload_name=False):
        """One FunctionEventAvg per name (and per input shapes / top `group_by_stack_n` frames)."""
        groups = {}
        for evt in self:
            key = (evt.key, evt.is_user_annotation)
            if group_by_input_shape:
                key += (str(evt.input_shapes),)
            if group_by_stack_n > 0:
                key += tuple(evt.stack[:group_by_stack_n])
            groups.setdefault(key, FunctionEventAvg()).add(evt)
        averages = EventList(groups.values())
        for avg in averages:
            avg.stack = avg.stack[:group_by_stack_n]
            if not group_by_input_shape:
                avg.input_shapes = ""
        return averages

    def total_average(self):
        total = FunctionEventAvg()
        for evt in self:
            total.count += evt.count
            total.cpu_time_total += evt.cpu_time_total
            total.self_cpu_time_total += evt.self_cpu_time_total
        total.key = "Total"
        return total

    def table(self, sort_by=None, row_limit=100, max_src_column_width=75,
              max_name_column_width=55, max_shapes_column_width=80, header=None,
              top_level_events_only=False, time_unit=None):
        return _build_table(self, sort_by=sort_by, row_limit=row_limit, header=header,
                            max_src_column_width=max_src_column_width,
                            max_name_column_width=max_name_column_width,
                            max_shapes_column_width=max_shapes_column_width,
                            top_level_events_only=top_level_events_only, time_unit=time_unit)

    def __str__(self):
        return self.table()

    def export_chrome_trace(self, path):
        """Write Chrome trace-event JSON (chrome://tracing, https://ui.perfetto.dev)."""
        pid = os.getpid()
        trace = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                  "args": {"name": "python (fusegrad)"}}]
        trace += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                   "args": {"name": f"thread {tid}"}}
                  for tid in dict.fromkeys(evt.thread for evt in self)]
        for evt in self:
            if not isinstance(evt, FunctionEvent):
                raise TypeError("export_chrome_trace needs the profiled events, not their averages "
                                "from key_averages(); call it on the profile or prof.events()")
            record = {"name": evt.name, "ph": "X", "ts": round(evt.time_range.start, 3),
                      "dur": round(evt.cpu_time_total, 3), "pid": pid, "tid": evt.thread,
                      "cat": "user_annotation" if evt.is_user_annotation else "cpu_op", "args": {}}
            if evt.input_shapes:
                record["args"]["Input Shapes"] = evt.input_shapes
            if evt.stack:
                record["args"]["Call stack"] = ";".join(evt.stack)
            trace.append(record)
        with open(path, "w") as f:
            json.dump({"traceEvents": trace, "displayTimeUnit": "ms"}, f)


def _sort_value(sort_by):
    metric = sort_by.replace("cuda", "device").replace("xpu", "device").replace("privateuse1",
                                                                                 "device")
    if sort_by not in SORT_KEYS and metric not in SORT_KEYS:
        raise AttributeError(f"table: unknown sort_by={sort_by!r}; use one of "
                             f"{', '.join(SORT_KEYS)}")
    return lambda evt: getattr(evt, metric)


def _build_table(events, sort_by, row_limit, header, max_src_column_width, max_name_column_width,
                 max_shapes_column_width, top_level_events_only, time_unit):
    """PyTorch's profiler table, column for column (CPU only: no device or memory columns)."""
    if not events:
        return ""
    if sort_by is not None:
        events = sorted(events, key=_sort_value(sort_by), reverse=True)   # stable, as PyTorch
    has_shapes = any(evt.input_shapes for evt in events)
    stacks = [evt.stack for evt in events if evt.stack]

    name_width = max(len(evt.key) for evt in events) + 4
    if max_name_column_width is not None:
        name_width = min(name_width, max_name_column_width)
    headers = ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg",
               "# of Calls"]
    widths = [name_width] + [12] * 6
    aligns = [">"] * 7
    if has_shapes:
        shapes_width = max(len(str(evt.input_shapes)) for evt in events) + 4
        if max_shapes_column_width is not None:
            shapes_width = min(shapes_width, max_shapes_column_width)
        headers.append("Input Shapes")
        widths.append(shapes_width)
        aligns.append(">")
    if stacks:
        src_width = max(len(entry) for stack in stacks for entry in stack) + 4
        if max_src_column_width is not None:
            src_width = min(src_width, max_src_column_width)
        headers.append("Source Location")
        widths.append(src_width)
        aligns.append("<")
    row_format = "".join("{: " + a + str(w) + "}  " for a, w in zip(aligns, widths))
    separator = "".join("-" * w + "  " for w in widths)
    line_length = sum(widths) + 2 * (len(widths) - 1)

    def fmt(time_us):
        scale = {"s": 1e6, "ms": 1e3, "us": 1.0}.get(time_unit)
        return _format_time(time_us) if scale is None else f"{time_us / scale:.3f}{time_unit}"

    def trim_path(path):
        if len(path) > src_width:
            path = path[len(path) - src_width:]
            if len(path) > 3:
                path = "..." + path[3:]
        return path

    total = sum(evt.self_cpu_time_total for evt in events)
    lines = []
    if header is not None:
        lines += ["=" * line_length, header]
    if top_level_events_only:
        lines += ["=" * line_length, "This report only display top-level ops statistics"]
    lines += [separator, row_format.format(*headers), separator]
    shown = 0
    for evt in events:
        if shown == row_limit:
            break
        if top_level_events_only and evt.cpu_parent is not None:
            continue
        shown += 1
        name = evt.key
        if max_name_column_width is not None and len(name) >= max_name_column_width - 3:
            name = name[:max_name_column_width - 3] + "..."
        row = [name, _format_time_share(evt.self_cpu_time_total, total),
               fmt(evt.self_cpu_time_total), _format_time_share(evt.cpu_time_total, total),
               fmt(evt.cpu_time_total), fmt(evt.cpu_time), evt.count]
        if has_shapes:
            row.append(str(evt.input_shapes)[:shapes_width])
        if stacks:
            row.append(trim_path(evt.stack[0]) if evt.stack else "")
        lines.append(row_format.format(*row))
        if stacks and evt.stack:
            blanks = [""] * (len(headers) - 1)
            lines += [row_format.format(*blanks, trim_path(entry)) for entry in evt.stack[1:]]
            lines.append(row_format.format(*blanks, ""))
    lines += [separator, f"Self CPU time total: {fmt(total)}"]
    return "\n".join(lines) + "\n"


def _user_stack():
    """The caller's Python frames outside fusegrad, innermost first, as 'file(line): function'."""
    frame = sys._getframe(2)
    stack = []
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(_PACKAGE_DIR):
            stack.append(f"{code.co_filename}({frame.f_lineno}): {code.co_name}")
        frame = frame.f_back
    return stack


def _build_events(raw, record_shapes, start_ns):
    """Raw tuples -> FunctionEvents sorted by start, each linked to the innermost enclosing event
    of its thread (PyTorch's cpu_parent / cpu_children)."""
    raw = sorted(raw, key=lambda r: (r[1], -r[2]))   # outer blocks before the ops they contain
    result = EventList()
    open_by_thread = {}
    for i, (name, start, end, shapes, tid, stack, is_label) in enumerate(raw):
        evt = FunctionEvent(i + 1, name if is_label else OP_PREFIX + name, tid,
                            (start - start_ns) / 1e3, (end - start_ns) / 1e3,
                            shapes if record_shapes and not is_label else [], stack or [],
                            is_label)
        open_events = open_by_thread.setdefault(tid, [])
        while open_events and open_events[-1].time_range.end < evt.time_range.end:
            open_events.pop()
        if open_events:
            evt.cpu_parent = open_events[-1]
            open_events[-1].cpu_children.append(evt)
        open_events.append(evt)
        result.append(evt)
    return result


class profile:
    """Profile the ops run inside the block, as torch.autograd.profiler.profile.

        with torch.autograd.profiler.profile(record_shapes=True) as prof:
            ...
        print(prof.key_averages().table(sort_by="self_cpu_time_total"))

    use_cuda / use_device, profile_memory, with_flops, use_kineto and experimental_config are
    accepted for compatibility; there is no device, memory or flop data to collect yet."""

    def __init__(self, enabled=True, *, use_cuda=False, use_device=None, record_shapes=False,
                 with_flops=False, profile_memory=False, with_stack=False, with_modules=False,
                 use_kineto=False, use_cpu=True, experimental_config=None, acc_events=False,
                 custom_trace_id_callback=None):
        if not use_cpu:
            raise ValueError("profile(use_cpu=False): fusegrad runs every op on the CPU, so there "
                             "would be nothing to profile; leave use_cpu=True")
        self.enabled = enabled
        self.use_cuda = use_cuda
        self.use_device = None   # CPU-only build: no device columns even with use_cuda=True
        self.record_shapes = record_shapes
        self.with_flops = with_flops
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        self.with_modules = with_modules
        self.use_cpu = use_cpu
        self.entered = False
        self._raw = []
        self._observer = None
        self._start_ns = None
        self._function_events = None

    def __enter__(self):
        if not self.enabled:
            return self
        if self.entered:
            raise RuntimeError("Profiler context manager is not reentrant; use a new profile() "
                               "for each block")
        self.entered = True
        raw = self._raw
        thread_id = threading.get_native_id
        if self.with_stack:
            def observe(name, start, end, shapes):
                raw.append((name, start, end, shapes, thread_id(), _user_stack(), False))
        else:
            def observe(name, start, end, shapes):
                raw.append((name, start, end, shapes, thread_id(), None, False))
        self._observer = observe
        self._start_ns = now()
        _active_profiles.append(self)
        _events.observers.append(observe)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if self._observer is None:
            return False
        _remove(_events.observers, self._observer)
        _remove(_active_profiles, self)
        self._observer = None
        self._function_events = None   # rebuilt with everything recorded
        return False

    def _record_label(self, name, start, end):
        stack = _user_stack() if self.with_stack else None
        self._raw.append((name, start, end, None, threading.get_native_id(), stack, True))

    @property
    def function_events(self):
        if self._start_ns is None:
            return EventList()
        if self._function_events is None or self._observer is not None:   # still recording
            self._function_events = _build_events(self._raw, self.record_shapes, self._start_ns)
        return self._function_events

    def events(self):
        """Every profiled op and record_function block, in start order."""
        return self.function_events

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0,
                     group_by_overload_name=False):
        return self.function_events.key_averages(group_by_input_shape, group_by_stack_n,
                                                 group_by_overload_name)

    def table(self, sort_by=None, row_limit=100, max_src_column_width=75,
              max_name_column_width=55, max_shapes_column_width=80, header=None,
              top_level_events_only=False):
        """The table of individual events (prof.key_averages().table(...) sums them per op)."""
        return self.function_events.table(sort_by=sort_by, row_limit=row_limit,
                                          max_src_column_width=max_src_column_width,
                                          max_name_column_width=max_name_column_width,
                                          max_shapes_column_width=max_shapes_column_width,
                                          header=header,
                                          top_level_events_only=top_level_events_only)

    def total_average(self):
        return self.function_events.total_average()

    @property
    def self_cpu_time_total(self):
        return self.function_events.self_cpu_time_total

    def export_chrome_trace(self, path):
        self.function_events.export_chrome_trace(path)

    def __str__(self):
        return str(self.function_events)


def _remove(items, item):
    """Remove `item` by identity (observers are plain functions; profiles must not compare)."""
    for i, x in enumerate(items):
        if x is item:
            del items[i]
            return


class record_function:
    """Label a block (or, as a decorator, every call of a function) in the profile: it becomes a
    row whose CPU total includes the ops run inside it. Costs one list check with no profiler on."""

    def __init__(self, name, args=None):
        self.name = name
        self.args = args
        self._start = None
        self._profiles = ()

    def __enter__(self):
        if _active_profiles:
            self._profiles = tuple(_active_profiles)
            self._start = now()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if self._start is not None:
            end = now()
            for prof in self._profiles:
                if prof._observer is not None:   # still profiling
                    prof._record_label(self.name, self._start, end)
            self._start, self._profiles = None, ()
        return False

    def __call__(self, fn):
        @wraps(fn)
        def labelled(*args, **kwargs):
            with record_function(self.name, self.args):   # a fresh one per call: recursion nests
                return fn(*args, **kwargs)
        return labelled
