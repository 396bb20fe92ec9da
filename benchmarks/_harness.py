"""Shared timing harness: interleaved repeats, medians and IQRs, aligned tables, machine info, and the
worker processes that time each library family on its own.

A benchmark is a list of `Case`s. Each case has an untimed `setup()` that returns the arguments of the
timed `fn(*args)`. `measure` runs every case `warmup` times, then rounds in which each case runs `block`
times in a row, in turn, until each has run `repeats` times (interleaving spreads a shared machine's load
drifts over all implementations alike rather than over whichever happened to run last; a block measures
the steady state of a loop calling one step, as training does, where single calls between other
libraries' workloads would each start from caches the others emptied). Each call is timed alone with
`time.perf_counter`, with the
garbage collector disabled; whatever `fn` returns is kept alive until the clock has stopped, so
freeing the result (a recorded graph, for instance) is not charged to any implementation. The garbage
collector runs between rounds, every `collect_every` rounds, outside the timed region.

`timed` is how a workload measures: by default it starts a worker process (`benchmarks/_worker.py`) per
library family (`FAMILIES`), which builds that family's cases, and the workers take turns measuring them;
with `--threads N` it measures every family in this process."""
import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np

from benchmarks import _threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Case:
    name: str                    # row label, e.g. "fusegrad (warm)"
    fn: object                   # the timed callable
    setup: object = None         # untimed; returns a tuple of arguments for fn (default: none)
    kind: str = ""               # one of KINDS: which library this row is (ratios: against "torch", "numpy")
    after: object = None         # untimed; called with fn's result after the clock stops (sanity checks)
    note: object = None          # untimed; called after timing, returns a line printed under the table


@dataclass
class Result:
    name: str
    kind: str
    times: np.ndarray = field(repr=False)
    notes: list = field(default_factory=list)

    @property
    def median(self):
        return float(np.median(self.times))

    @property
    def q1(self):
        return float(np.percentile(self.times, 25))

    @property
    def q3(self):
        return float(np.percentile(self.times, 75))

    @property
    def iqr(self):
        return self.q3 - self.q1


def _call(case):
    args = case.setup() if case.setup is not None else ()
    gc.disable()
    try:
        start = time.perf_counter()
        out = case.fn(*args)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if case.after is not None:
        case.after(out)
    del out
    return elapsed


BLOCK = 5   # consecutive calls of one case per round


def measure(cases, repeats, warmup, collect_every=1, block=BLOCK):
    """Times of each case: `warmup` untimed calls each, then `repeats` timed calls each, in
    interleaved rounds of `block` consecutive calls per case (the collector runs every
    `collect_every` rounds)."""
    for case in cases:
        for _ in range(warmup):
            _call(case)
    times = {case.name: [] for case in cases}
    gc.collect()
    for r in range(-(-repeats // block)):
        for case in cases:
            for _ in range(min(block, repeats - r * block)):
                times[case.name].append(_call(case))
        if (r + 1) % collect_every == 0:
            gc.collect()
    return [Result(case.name, case.kind, np.asarray(times[case.name]), [case.note()] if case.note else [])
            for case in cases]


# Library families, each timed in a worker process of its own (by default), with the kinds of rows it
# builds: the rows of one family share its thread pools (fusegrad computes with NumPy's OpenBLAS and
# Numba; the hand-written NumPy floor with OpenBLAS), the families' pools are never in one process.
FAMILIES = {"fusegrad": ("fusegrad", "numpy"), "torch": ("torch", "torch.compile"), "jax": ("jax",)}
KINDS = ("fusegrad", "torch", "torch.compile", "jax", "numpy")   # the order of a table's rows
TURNS = 3   # turns each family's worker takes, each timing a share of the repeats
# seconds between turns: a pool's threads spin for a while after its last call before they sleep
# (OpenBLAS's for ~0.1 s), and the next worker should not share the CPUs with them
SETTLE = 0.3


def timed(build, args, repeats, warmup, quick, out, collect_every=1, quiet=False):
    """Results of the cases `build(*args, kinds=..., quick=..., out=...)` makes, each timed with
    `measure`, rows ordered by KINDS. `build` is a function at the top of a benchmark module; it makes
    only the rows whose kind is in `kinds` and imports no other family's library, and it may check
    what it built before returning. With --threads N (`_threads.pinned`) every available family is
    built and measured in this process. Otherwise each family gets a worker process of its own, which
    builds its rows (the lines `build` prints are shown) and then measures them when asked: the
    families take turns, `TURNS` times, `SETTLE` seconds apart, each turn its warm-up calls again (the
    other process has just emptied the caches) and a share of the repeats, and each row's times are
    merged.
    `quiet`: float overflow neither warns nor raises (the eager_overhead loop's overflow is its
    workload)."""
    families = [family for family in FAMILIES if family == "fusegrad" or have(family)]
    if _threads.pinned is not None:
        _threads.apply(_threads.pinned)
        with overflow_ignored() if quiet else contextlib.nullcontext():
            cases = build(*args, kinds={kind for family in families for kind in FAMILIES[family]}, quick=quick,
                          out=out)
            results = measure(cases, repeats, warmup, collect_every)
        return sorted(results, key=lambda r: KINDS.index(r.kind))
    module = build.__module__
    if module == "__main__":   # python benchmarks/<module>.py: the worker imports it as benchmarks.<module>
        module = "benchmarks." + os.path.splitext(os.path.basename(sys.modules["__main__"].__file__))[0]
    spec = {"module": module, "build": build.__name__, "args": list(args), "quick": quick, "warmup": warmup,
            "collect_every": collect_every, "quiet": quiet}
    turns = min(TURNS, repeats)
    times, notes = {}, {}   # of each (name, kind)
    with contextlib.ExitStack() as stack:
        workers = []
        for family in families:   # one at a time: the lines they print time compilations
            workers.append(stack.enter_context(Worker(dict(spec, kinds=FAMILIES[family]))))
            for line in workers[-1].receive()["lines"]:
                out(line)
        for i in range(turns):
            for worker in workers:
                time.sleep(SETTLE)
                for row in worker.ask({"repeats": repeats // turns + (i < repeats % turns)})["rows"]:
                    key = row["name"], row["kind"]
                    times.setdefault(key, []).extend(row["times"])
                    notes[key] = row["notes"]   # a note covers the worker's life so far: the latest says it all
    results = [Result(name, kind, np.asarray(each), notes[name, kind]) for (name, kind), each in times.items()]
    return sorted(results, key=lambda r: KINDS.index(r.kind))


class Worker:
    """A worker process (`worker_main`) on `spec`, spoken to with a JSON line each way. A reply that
    does not come (the worker failed) raises RuntimeError with what the worker wrote to stderr (its
    traceback); on closing, what it wrote there (warnings) is passed on to stderr."""

    def __init__(self, spec):
        self.what = f"{spec['module']}.{spec['build']}{tuple(spec['args'])} for {', '.join(spec['kinds'])}"
        self.stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks._worker", json.dumps(spec)], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def ask(self, request):
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass   # the worker has died: receive() says why
        return self.receive()

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            raise RuntimeError(f"benchmark worker ({self.what}) failed with exit status {status}:\n"
                               f"{self.written().rstrip()}")
        return json.loads(line)

    def written(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(BrokenPipeError):   # the worker has died
            self.process.stdin.close()
        if self.process.wait() == 0:
            sys.stderr.write(self.written())
        self.stderr.close()


def worker_main(spec_text):
    """A worker process: build the cases of `spec`'s kinds and reply with the lines the build printed;
    then, for each request on stdin, measure them and reply with the rows (names, kinds, times, notes).
    Replies are JSON lines on stdout; anything else printed to stdout (by a library, say) goes to
    stderr instead, so that it cannot garble them."""
    import importlib
    spec = json.loads(spec_text)
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    lines = []
    build = getattr(importlib.import_module(spec["module"]), spec["build"])
    with overflow_ignored() if spec["quiet"] else contextlib.nullcontext():
        cases = build(*spec["args"], kinds=set(spec["kinds"]), quick=spec["quick"], out=lines.append)
        alone(spec["kinds"])
        reply({"lines": lines})
        for request in sys.stdin:
            results = measure(cases, json.loads(request)["repeats"], spec["warmup"], spec["collect_every"])
            alone(spec["kinds"])
            reply({"rows": [{"name": r.name, "kind": r.kind, "times": r.times.tolist(), "notes": r.notes}
                            for r in results]})


def alone(kinds):
    """Raise if this process imported a library of a family other than those of `kinds`."""
    foreign = [family for family, its_kinds in FAMILIES.items()
               if family in sys.modules and not set(its_kinds) & set(kinds)]
    if foreign:
        raise RuntimeError(f"the worker timing {', '.join(kinds)} imported {', '.join(foreign)}, "
                           f"whose thread pools it must not share")


@contextlib.contextmanager
def overflow_ignored():
    """NumPy's float overflow and invalid results neither warn nor raise inside the block."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        yield


def cache_checked(backward_graphs, cold):
    """(setup hook, after) pair asserting a call was a cache miss (cold) or a hit (warm).

    A cold call runs on an empty cache, and without the node VJPs that a first backward reuses
    across structures (see `emptied`), so the warm rows of the same round keep measuring the
    steady state of a training loop (a graph that has run before), not the first reuse of a
    graph the cold call just derived."""
    from fusegrad.runtime import node_vjps
    before = {}

    def setup_hook():
        before["hits"], before["misses"] = backward_graphs.hits, backward_graphs.misses

    def after(_):
        hits = backward_graphs.hits - before["hits"]
        misses = backward_graphs.misses - before["misses"]
        expected = (0, 1) if cold else (1, 0)
        assert (hits, misses) == expected, f"{'cold' if cold else 'warm'} call: {hits} hits, {misses} misses"

    if cold:
        return chained(emptied(backward_graphs), emptied(node_vjps), (setup_hook, after))
    return setup_hook, after


def emptied(cache):
    """(setup hook, after) pair running a call on an empty GraphCache and putting its entries back
    afterwards."""
    saved = {}

    def setup_hook():
        saved["entries"] = dict(cache.entries)
        cache.entries.clear()

    def after(_):
        cache.entries.clear()
        cache.entries.update(saved.pop("entries"))

    return setup_hook, after


def leaves(lib, arrays):
    """Leaf tensors of `lib` (fusegrad or torch) requiring grad, one per array."""
    return tuple(lib.tensor(a, requires_grad=True) for a in arrays)


def fresh_leaves(lib, arrays, hook=None):
    """Setup making new leaves from the arrays before each call (after running `hook`, if any)."""
    def setup():
        if hook is not None:
            hook()
        return leaves(lib, arrays)
    return setup


def interpreted():
    """(setup hook, after) pair running a call with eager backward compilation off: the backward
    graph runs through the interpreter, as it did before fusegrad compiled anything. (Eager
    backward otherwise compiles a structure once it has run plan.COMPILE_AFTER times, and then
    runs it as a plan whatever COMPILE_AFTER says, so the plans are set aside for the call.)"""
    from fusegrad.runtime import plan
    saved = {}

    def setup_hook():
        saved["plans"], saved["after"] = plan._eager_plans, plan.COMPILE_AFTER
        plan._eager_plans, plan.COMPILE_AFTER = weakref.WeakKeyDictionary(), 0

    def after(_):
        plan._eager_plans, plan.COMPILE_AFTER = saved.pop("plans"), saved.pop("after")

    return setup_hook, after


@contextlib.contextmanager
def eager_compilation_off():
    """The block runs eager mode on NumPy alone, as `interpreted` calls do (the checks that compare
    eager steps exactly, or against compiled ones, with no switch to kernels in between)."""
    setup_hook, after = interpreted()
    setup_hook()
    try:
        yield
    finally:
        after(None)


def auto_compiled(backward_graphs):
    """(setup hook, after) pair asserting that a warm call's backward ran as a compiled plan: the
    graph it fetched from the structure cache (the most recently used entry) has one."""
    from fusegrad.runtime import plan

    def after(_):
        graph = next(reversed(backward_graphs.entries.values())).graph
        assert isinstance(plan._eager_plans.get(graph), plan.Plan), "eager backward did not run compiled"

    return None, after


def chained(*pairs):
    """One (setup hook, after) pair running the given ones in order (None: nothing to run)."""
    hooks = [h for h, _ in pairs if h is not None]
    afters = [a for _, a in pairs if a is not None]

    def setup_hook():
        for hook in hooks:
            hook()

    def after(out):
        for each in afters:
            each(out)

    return setup_hook, after


def prime_eager_compilation(fn, setup):
    """Run fn(*setup()) until eager backward has compiled its structure: its first backward runs
    without a graph, then the graph runs plan.COMPILE_AFTER times."""
    from fusegrad.runtime import plan
    for _ in range(max(plan.COMPILE_AFTER, 1) + 1):
        fn(*setup())


def replayed(compiled):
    """(setup hook, after) pair asserting that a call of a fusegrad.compile'd function replayed its
    compiled plan (rather than capturing again or running eagerly)."""
    before = {}

    def setup_hook():
        before["replays"] = compiled.replays

    def after(_):
        why = compiled.eager_reason or getattr(compiled, "last_reason", None)
        assert compiled.replays == before["replays"] + 1, \
            f"{compiled.name}: the call did not replay a compiled plan ({why})"

    return setup_hook, after


def prime_compiled(compiled, setup, out, calls=4):
    """Call a fusegrad.compile'd function until it replays; print what the first calls cost (capture
    and compilation happen there). Returns the seconds of each priming call. Raises with fusegrad's
    explanation when it does not replay within `calls` calls: a compiled row must measure replays."""
    seconds = []
    while compiled.replays == 0 and len(seconds) < calls:
        args = setup()
        start = time.perf_counter()
        compiled(*args)
        seconds.append(time.perf_counter() - start)
    if compiled.replays == 0:
        import fusegrad
        raise AssertionError(f"{compiled.name} did not replay after {calls} calls: "
                             f"{compiled.eager_reason or getattr(compiled, 'last_reason', None)}\n"
                             f"{fusegrad.explain(compiled, *setup())}")
    kernels = [len(s.plan.kernels) for s in compiled.specialisations]
    out(f"fusegrad.compile {compiled.name}: capturing call(s) {', '.join(fmt_time(t) for t in seconds[:-1])} "
        f"(trace, guards, plan); first replay {fmt_time(seconds[-1])} (Numba compiles, or loads from its disk cache, "
        f"each kernel at its first call); {len(kernels)} specialisation(s), kernels per plan {kernels}")
    return seconds


def compiled_step_case(step, args, out):
    """Case "fusegrad compiled": fusegrad.compile(step) called on the same arguments (a model of its
    own, its optimizer, a batch), primed until it replays; each timed call is asserted to replay."""
    import fusegrad
    compiled = fusegrad.compile(step)
    prime_compiled(compiled, lambda: args, out)
    hook, after = replayed(compiled)

    def setup():
        hook()
        return args

    return Case("fusegrad compiled", compiled, setup, "fusegrad", after)


@contextlib.contextmanager
def empty_kernel_cache():
    """FUSEGRAD_CACHE_DIR set to a new, empty directory for the block: the kernels generated there are
    compiled by Numba, not loaded from its disk cache, as on a first run."""
    before = os.environ.get("FUSEGRAD_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="fusegrad-bench-cache-") as directory:
        os.environ["FUSEGRAD_CACHE_DIR"] = directory
        try:
            yield directory
        finally:
            if before is None:
                del os.environ["FUSEGRAD_CACHE_DIR"]
            else:
                os.environ["FUSEGRAD_CACHE_DIR"] = before


def torch_compiled(fn, args, quick, out):
    """torch.compile(fn), compiled by a first call fn(*args()) that is timed and printed; None (and
    the reason printed) when skipped (--quick: Inductor takes tens of seconds here) or when
    torch.compile fails on this machine (no C++ compiler, for instance)."""
    if quick:
        out("torch.compile: skipped under --quick (compiling takes tens of seconds on this machine)")
        return None
    import torch
    try:
        compiled = torch.compile(fn)
        start = time.perf_counter()
        compiled(*args())
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        compiled(*args())
        second = time.perf_counter() - start
    except Exception as error:   # Inductor's failures are many; any of them means no row
        text = str(error).strip().splitlines()
        out(f"torch.compile: skipped, it failed here: {type(error).__name__}: {text[0] if text else ''}")
        return None
    out(f"torch.compile: first call (compilation) {fmt_time(seconds)}, second call {fmt_time(second)}")
    return compiled


def training_step_cases(step, setup, kinds, out, auto=False, compiled=False):
    """Cases timing `step(*setup(lib))`, a training step, for the `kinds` asked for: with `compiled`
    fusegrad.compile(step) (`compiled_step_case`), fusegrad warm (the backward graph from the structure
    cache, each call asserted to be a hit, run by the interpreter), fusegrad cold (cache cleared before
    each call, asserted to be a miss), with `auto` fusegrad warm once eager backward has compiled the
    graph (asserted to run as a plan), and PyTorch eager."""
    def fixed(args, hook=None):
        def run_setup():
            if hook is not None:
                hook()
            return args
        return run_setup

    rows = []
    if "fusegrad" in kinds:
        import fusegrad
        from fusegrad.runtime import backward_graphs
        warm_hook, warm_after = chained(cache_checked(backward_graphs, cold=False), interpreted())
        cold_hook, cold_after = chained(cache_checked(backward_graphs, cold=True), interpreted())
        if compiled:
            rows.append(compiled_step_case(step, setup(fusegrad), out))
        rows += [Case("fusegrad (warm)", step, fixed(setup(fusegrad), warm_hook), "fusegrad", warm_after),
                 Case("fusegrad (cold)", step, fixed(setup(fusegrad), cold_hook), "fusegrad", cold_after)]
        if auto:
            args = setup(fusegrad)
            prime_eager_compilation(step, lambda: args)
            auto_hook, auto_after = chained(cache_checked(backward_graphs, cold=False),
                                            auto_compiled(backward_graphs))
            rows.append(Case("fusegrad (auto-compiled backward)", step, fixed(args, auto_hook), "fusegrad",
                             auto_after))
    if "torch" in kinds:
        import torch
        rows.append(Case("torch eager", step, fixed(setup(torch)), "torch"))
    return rows


def fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _baseline(results, kind):
    for r in results:
        if r.kind == kind:
            return r
    return None


def table(title, results):
    """An aligned table: median, IQR (q1..q3), ratios of medians against torch eager and NumPy."""
    torch_ref = _baseline(results, "torch")
    numpy_ref = _baseline(results, "numpy")
    head = ["implementation", "median", "IQR", "q1 .. q3", "vs torch", "vs numpy", "n"]
    rows = []
    for r in results:
        rows.append([
            r.name,
            fmt_time(r.median),
            fmt_time(r.iqr),
            f"{fmt_time(r.q1)} .. {fmt_time(r.q3)}",
            f"{r.median / torch_ref.median:.2f}x" if torch_ref else "-",
            f"{r.median / numpy_ref.median:.2f}x" if numpy_ref else "-",
            str(len(r.times)),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    align = ["<"] + [">"] * (len(head) - 1)

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    notes = [note for r in results for note in r.notes]
    return "\n".join([title, rule, line(head), rule, *(line(r) for r in rows), rule, *notes])


def target_line(results, name, limit=1.5):
    """'fusegrad (warm) / torch eager = 1.23x (target <= 1.5x: met)'."""
    torch_ref = _baseline(results, "torch")
    mine = next((r for r in results if r.name == name), None)
    if torch_ref is None or mine is None:
        return f"target: {name} within {limit}x of PyTorch eager: not measured (PyTorch not importable)"
    ratio = mine.median / torch_ref.median
    verdict = "met" if ratio <= limit else "NOT met"
    return f"target: {name} / torch eager = {ratio:.2f}x (target <= {limit}x: {verdict})"


def time_target_line(results, name, limit):
    """'fusegrad compiled = 34.1 µs (target <= 20.0 µs: NOT met)': an absolute target."""
    mine = next((r for r in results if r.name == name), None)
    if mine is None:
        return f"target: {name} <= {fmt_time(limit)}: not measured"
    verdict = "met" if mine.median <= limit else "NOT met"
    return f"target: {name} = {fmt_time(mine.median)} (target <= {fmt_time(limit)}: {verdict})"


def speedup_target_line(results, name, reference, factor):
    """'fusegrad (auto-compiled backward) is 1.62x faster than fusegrad (warm) (target >= 1.5x: met)'."""
    mine = next((r for r in results if r.name == name), None)
    ref = next((r for r in results if r.name == reference), None)
    if mine is None or ref is None:
        return f"target: {name} {factor}x faster than {reference}: not measured"
    speedup = ref.median / mine.median
    verdict = "met" if speedup >= factor else "NOT met"
    return f"target: {name} is {speedup:.2f}x faster than {reference} (target >= {factor}x: {verdict})"


def step_report(title, results, compiled_target, out):
    """Print a training step's table and its targets (fusegrad (warm) within 1.5x of torch eager, the
    compiled step within `compiled_target` seconds); return [(title, results, target)]."""
    out("")
    out(table(title, results))
    target = "\n".join([target_line(results, "fusegrad (warm)"),
                        time_target_line(results, "fusegrad compiled", compiled_target)])
    out(target)
    return [(title, results, target)]


def machine_info():
    lines = []
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    cpu = platform.processor() or platform.machine()
    try:   # the model name, and what tells one "AMD EPYC" from another: family, model, vector width
        fields = {}
        with open("/proc/cpuinfo") as f:
            for text in f:
                key, _, value = text.partition(":")
                if not text.strip():
                    break
                fields.setdefault(key.strip(), value.strip())
        cpu = fields.get("model name", cpu)
        if "cpu family" in fields:
            flags = fields.get("flags", "").split()
            cpu += (f" (family {fields['cpu family']} model {fields.get('model', '?')}, "
                    f"{'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'})")
    except OSError:
        pass
    lines.append(f"machine: {cpu}; os.cpu_count()={os.cpu_count()}, usable CPUs={affinity}; "
                 f"{platform.system()} {platform.release()}")
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import fusegrad
        versions.append(f"fusegrad {fusegrad.__version__}")
    except ImportError:
        pass
    try:
        import torch
        versions.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        versions.append("torch not importable")
    try:
        import jax
        versions.append(f"jax {jax.__version__}")
    except ImportError:
        versions.append("jax not importable")
    lines.append("versions: " + ", ".join(versions))
    lines.append("timing: " + _threads.described()
                 + ("" if _threads.pinned is not None else f", taking {TURNS} turns each"))
    lines.append(f"load average at start: {load()}")
    return "\n".join(lines)


def load():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def print_flush(*args):
    print(*args)
    sys.stdout.flush()


def standalone_main(doc, run, default_repeats, unit, argv=None):
    """The command line of one benchmark run on its own: --repeats, --threads, --quick."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help=f"timed {unit} (default {default_repeats})")
    add_threads_option(parser)
    parser.add_argument("--quick", action="store_true", help=f"a few {unit} only (smoke test)")
    args = parser.parse_args(argv)
    _threads.limit(argv)
    print_flush(machine_info())
    run(args.repeats, args.quick)


def add_threads_option(parser):
    def count(text):
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be a number of threads, at least 1, not {text!r}")
        return int(text)

    parser.add_argument("--threads", type=count, default=None, metavar="N",
                        help="time every library in this one process with N threads per compute pool (OpenMP, "
                             "MKL, OpenBLAS, Numba); default: each library in worker processes of its own at "
                             "its default thread counts")
