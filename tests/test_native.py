"""Native kernel libraries (codegen.native): built from real plans' kernels, they compute exactly what
the Numba kernels compute, load and run in a process without Numba, and refuse what they were not
built for."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from fusegrad.codegen import cpu, native
from fusegrad.ir import Builder, dtypes as D
from fusegrad.runtime import log as fusegrad_log
from fusegrad.runtime.plan import Plan

F32 = ((4, 5), D.float32)


def _elementwise_transcendentals(b, x, y):
    e = b.add(b.mul(b.exp(x), b.tanh(y)), b.sigmoid(b.sub(x, y)))
    return [e, b.mul(e, 0.5)]


def _trig(b, x, y):
    return [b.add(b.mul(b.sin(x), b.cos(y)), b.cos(x))]


def _full_sum(b, x, y):
    return [b.sum(b.mul(x, y), axes=(0, 1), keepdim=False)]


def _partial_reductions(b, x, y):
    return [b.sum(b.exp(x), axes=(0,), keepdim=False), b.amax(b.mul(x, y), axes=(1,), keepdim=False)]


def _int64(b, i, j):
    return [b.sub(b.mul(b.add(i, j), i), b.maximum(i, b.neg(j)))]


def _bool(b, x, m):
    return [b.logical_xor(b.logical_and(b.gt(x, 0.0), m), b.logical_not(m)), b.where(m, x, b.abs(x))]


def _scalars(b, x, s, k):
    return [b.add(b.mul(x, s), b.cast(k, dtype=D.float32))]


def _float64_libm(b, x, y):
    return [b.add(b.mul(b.sin(x), b.log(b.abs(y))), b.tanh(b.exp(x)))]


# name -> (graph outputs from placeholders, placeholders (shape, dtype))
CASES = {
    "transcendentals_f32": (_elementwise_transcendentals, [F32, ((5,), D.float32)]),
    "trig_flagged_f32": (_trig, [F32, ((4, 1), D.float32)]),
    "full_sum_f32": (_full_sum, [F32, ((1, 5), D.float32)]),
    "partial_reductions_f32": (_partial_reductions, [F32, ((5,), D.float32)]),
    "int64": (_int64, [((3, 4), D.int64), ((4,), D.int64)]),
    "bool": (_bool, [F32, ((4, 5), D.bool_)]),
    "scalars_0d": (_scalars, [F32, ((), D.float32), ((), D.int64)]),
    "libm_f64": (_float64_libm, [((6,), D.float64), ((6,), D.float64)]),
    "zero_dim_group": (lambda b, s, t: [b.mul(b.exp(s), b.sub(t, 1.0))], [((), D.float32), ((), D.float32)]),
    # long rows: vectorised loops with remainders, sums reassociated by fastmath
    "long_rows_f32": (lambda b, x, y: _partial_reductions(b, x, y) + _full_sum(b, x, y),
                      [((7, 1001), D.float32), ((1001,), D.float32)]),
}


def _kernels(name):
    emit, placeholders = CASES[name]
    b = Builder()
    plan = Plan(b.graph(emit(b, *[b.placeholder(None, shape, dtype) for shape, dtype in placeholders])))
    return plan.kernels


def _value(node, shape, rng):
    """A random input for a kernel argument of `shape`, with nan/inf among floats; 0-d ones as
    NumPy scalars."""
    dtype = np.dtype(node.dtype.np)
    if dtype.kind == "f":
        v = (rng.standard_normal(shape) * 4).astype(dtype)
        if v.size >= 4:
            flat = v.reshape(-1)
            flat[:3] = np.nan, np.inf, -np.inf
    elif dtype.kind == "b":
        v = rng.random(shape) < 0.5
    else:
        v = rng.integers(-1000, 1000, shape, dtype=dtype)
    return v[()] if not shape else v


def _apart(a):
    """A copy of array `a` at the start of a 4 KiB buffer of its own. A vectorised loop falls back
    to its scalar loop when two of its arrays lie within its vector block (16 lanes x 4 unrolled x
    4 bytes = 256 bytes: LLVM's run-time overlap check), and under fastmath's 'reassoc' the two
    loops round differently (1 ulp): the same kernel's bits then depend on where small arrays
    happen to be allocated. Arrays kept apart compare the same loop's code."""
    if not isinstance(a, np.ndarray) or not a.ndim:
        return a
    buffer = np.empty(max(a.nbytes, 1) + 4096, np.uint8)
    start = -buffer.ctypes.data % 4096
    out = buffer[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _call_args(kernel, seed=0):
    """(arguments for kernel.fn, indices of the arrays it writes: outputs and trig flags)."""
    rng = np.random.default_rng(seed)
    args = list(kernel.space) + [_apart(_value(a, kernel.arg_shape(a), rng)) for a in kernel.args]
    first_out = len(args)
    for shape, dtype, init in kernel.buffers:
        args.append(_apart(np.full(shape, 0 if init is None else init, dtype.np)))
    if kernel.flagged:
        args.append(_apart(np.zeros(1, np.int64)))
    return args, range(first_out, len(args))


def _fresh_outputs(args, outs):
    return [_apart(a) if k in outs else a for k, a in enumerate(args)]


def _bits(a):
    a = np.asarray(a)
    return a.view(np.uint8) if a.dtype == np.bool_ else a.view(f"u{a.dtype.itemsize}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_native_results_equal_numba_bit_for_bit(name, tmp_path, monkeypatch):
    """Every kernel of the plan: the library's outputs (and trig flags) have the same bits as the
    Numba kernel's, NaN payloads included: the library runs the kernel's own optimised code."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    kernels = _kernels(name)
    assert kernels
    for kernel in kernels:
        path = native.build(kernel)
        assert path == native.library_path(kernel.fn.py_func.__code__.co_filename, kernel) and os.path.exists(path)
        run = native.load(path)
        for seed in range(3):
            args, outs = _call_args(kernel, seed)
            if kernel.flagged and seed == 2:
                args[len(kernel.space)].reshape(-1)[3] = 1e6   # beyond TRIG_LIMIT: the flag is set
            want, got = _fresh_outputs(args, outs), _fresh_outputs(args, outs)
            kernel.fn(*want)
            assert run(*got) is None
            for k in outs:
                np.testing.assert_array_equal(_bits(got[k]), _bits(want[k]), err_msg=f"{kernel.name} output {k}")
            assert not kernel.flagged or seed != 2 or got[-1][0] > 0


def test_cases_cover_the_kernel_kinds(tmp_path, monkeypatch):
    """The cases above include the fast-math prelude, trig flags, full and partial reductions,
    0-d scalar arguments and non-float dtypes (so the bit-for-bit test means what it says)."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    kernels = {name: _kernels(name) for name in CASES}
    sources = {name: "\n".join(k.source for k in ks) for name, ks in kernels.items()}
    assert all(f"{f}32(" in sources["transcendentals_f32"] for f in ("exp", "tanh", "sigmoid"))
    assert any(k.flagged for k in kernels["trig_flagged_f32"])
    assert "acc0 +=" in sources["full_sum_f32"]
    assert "y0[0, i1] = y0[0, i1] +" in sources["partial_reductions_f32"]
    assert any(not a.shape for k in kernels["scalars_0d"] for a in k.args)
    assert {a.dtype for k in kernels["int64"] for a in k.args} == {D.int64}
    assert D.bool_ in {a.dtype for k in kernels["bool"] for a in k.args + k.outs}


# _apart, for the scripts that run in a process of their own
_APART = "import numpy as np\n" + inspect.getsource(_apart).replace("def _apart(", "def apart(")
_FRESH_PROCESS = _APART + """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("native_standalone", sys.argv[1])
native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native)
data = np.load(sys.argv[2], allow_pickle=True)
for path, args, outs, want in data["runs"]:
    run = native.load(path)
    args = [np.asarray(apart(a)) if isinstance(a, np.ndarray) else a for a in args]   # see _apart
    run(*args)
    for k, w in zip(outs, want):
        assert np.array_equal(np.asarray(args[k]), w, equal_nan=True), (path, k)
assert "numba" not in sys.modules, sorted(m for m in sys.modules if m.startswith("numba"))
assert "llvmlite" not in sys.modules
print("ran", len(data["runs"]))
"""


def test_libraries_load_and_run_in_a_process_without_numba(tmp_path, monkeypatch):
    """A fresh process loads every case's libraries with native.py alone (`import fusegrad` still
    imports Numba through the compiler) and gets the Numba kernels' results, Numba never imported."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    runs = []
    for name in sorted(CASES):
        for kernel in _kernels(name):
            args, outs = _call_args(kernel)
            want = _fresh_outputs(args, outs)
            kernel.fn(*want)
            runs.append((native.build(kernel), args, list(outs), [want[k] for k in outs]))
    data = tmp_path / "runs.npz"
    holder = np.empty(len(runs), object)
    holder[:] = runs
    np.savez(data, runs=holder)
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, native.__file__, str(data)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran", str(len(runs))]


def _one_library(tmp_path, monkeypatch, name="transcendentals_f32"):
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    kernel = _kernels(name)[0]
    return kernel, native.build(kernel)


def test_mismatched_arguments_raise_or_go_to_the_fallback(tmp_path, monkeypatch):
    """Whatever the library was not built for is refused before anything is written: TypeError
    naming the argument, or the fallback called with the original arguments."""
    kernel, path = _one_library(tmp_path, monkeypatch)
    run = native.load(path)
    good, outs = _call_args(kernel)
    out = outs[0]
    x = len(kernel.space)   # the first array argument
    bad = {
        "float64 input": (x, good[x].astype(np.float64)),
        "non-contiguous input": (x, np.stack([good[x], good[x]], -1)[..., 0]),
        "wrong shape": (x, good[x][:2]),
        "wrong ndim": (x, good[x][None]),
        "list instead of array": (x, good[x].tolist()),
        "read-only output": (out, np.zeros_like(good[out])),
        "wrong size": (0, good[0] + 1),
        "size as a float": (0, float(good[0])),
        "missing argument": (None, None),
        "big-endian input": (x, good[x].astype(good[x].dtype.newbyteorder(">"))),
    }
    bad["read-only output"][1].flags.writeable = False
    for what, (k, value) in bad.items():
        args = list(good)
        if what == "missing argument":
            args.pop(0)
        else:
            args[k] = value
        output = args[out - (what == "missing argument")]
        before = output.copy()
        message = (rf"takes {len(good)} arguments, got {len(good) - 1}" if what == "missing argument"
                   else rf"argument {k} must be .*, got ")
        with pytest.raises(TypeError, match=message):
            run(*args)
        np.testing.assert_array_equal(_bits(output), _bits(before), err_msg=what)
    args = _fresh_outputs(good, outs)   # read-only inputs are fine: the kernel only reads them
    args[x] = good[x].copy()
    args[x].flags.writeable = False
    want = _fresh_outputs(good, outs)
    kernel.fn(*want)
    assert run(*args) is None
    np.testing.assert_array_equal(_bits(args[out]), _bits(want[out]))
    calls = []
    run = native.load(path, fallback=lambda *a: calls.append(a) or "fallback result")
    args = list(good)
    args[x] = np.stack([good[x], good[x]], -1)[..., 0]   # not contiguous
    assert run(*args) == "fallback result"
    assert len(calls) == 1 and all(a is b for a, b in zip(calls[0], args))


def test_no_c_compiler_gives_none_and_one_log_line(tmp_path, monkeypatch):
    kernel = _one_library(tmp_path, monkeypatch)[0]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    lines = []
    assert native.build(kernel, log=lines.append) is None
    assert lines == [f"native: {kernel.name} not built: no C compiler (cc or gcc) on PATH"]
    reported = []   # by default the line goes to the `cache` log category
    monkeypatch.setattr(fusegrad_log, "_listeners", [lambda category, text: reported.append((category, text))])
    assert native.build(kernel) is None
    assert reported == [("cache", lines[0])]


def test_symbols_only_numba_provides_give_none(tmp_path, monkeypatch):
    """Kernel code that needs Numba's runtime (here a function calling numba_gil_ensure linked into
    the kernel's module) gets no library: None, the symbol named, no file written."""
    import llvmlite.binding as llvm
    kernel = _one_library(tmp_path, monkeypatch)[0]
    path = native.library_path(kernel.fn.py_func.__code__.co_filename, kernel)
    os.remove(path)
    kernel_module = native._kernel_module

    def with_a_numba_call(kernel, args):
        module, machine = kernel_module(kernel, args)
        module.link_in(llvm.parse_assembly(f'target triple = "{module.triple}"\n'
                                           "declare void @numba_gil_ensure(ptr)\n"
                                           "define void @probe() {\n  call void @numba_gil_ensure(ptr null)\n"
                                           "  ret void\n}\n"))
        return module, machine

    monkeypatch.setattr(native, "_kernel_module", with_a_numba_call)
    lines = []
    assert native.build(kernel, log=lines.append) is None
    assert lines == [f"native: {kernel.name} not built: its code needs symbols only Numba's runtime provides: "
                     "numba_gil_ensure"]
    assert not os.path.exists(path) and not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]


def test_libm_functions_are_not_foreign(tmp_path, monkeypatch):
    """The exact (libm) sin/cos, tanh and log of float64 kernels link: only Numba's symbols are refused."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    for kernel in _kernels("libm_f64"):
        module, _ = native._kernel_module(kernel, native._arguments(kernel))
        calls = {f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm.")}
        assert calls and calls <= {"sin", "cos", "log", "tanh", "exp"}, calls
        assert native._foreign_symbols(module) == []


def test_kernels_run_as_python_are_not_built(tmp_path, monkeypatch):
    """Under NUMBA_DISABLE_JIT=1 a kernel's fn is its Python function: nothing to build from."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    kernel = _kernels("int64")[0]
    as_python = cpu.Kernel(kernel.name, kernel.source, kernel.fn.py_func, kernel.args, kernel.outs, kernel.buffers,
                           kernel.group, kernel.flagged)
    lines = []
    assert native.build(as_python, log=lines.append) is None
    assert lines == [f"native: {kernel.name} not built: it is not compiled (NUMBA_DISABLE_JIT)"]


def test_parallel_kernels_are_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    b = Builder()
    x = b.placeholder(None, (cpu.PARALLEL_MIN_ELEMENTS,), D.float32)
    (kernel,) = Plan(b.graph([b.exp(x)])).kernels
    lines = []
    assert native.build(kernel, log=lines.append) is None
    assert lines == [f"native: {kernel.name} not built: parallel kernels need Numba's threading layer"]


def test_unusable_libraries_are_unavailable_not_fatal(tmp_path, monkeypatch):
    """Another CPU's, a missing, a truncated or a garbage library: NativeUnavailable, and the
    caller runs the Numba kernel."""
    kernel, path = _one_library(tmp_path, monkeypatch)
    monkeypatch.setattr(native, "host_cpu_key", lambda: "another-cpu")
    with pytest.raises(native.NativeUnavailable, match=f"for CPU .*; this is format {native.FORMAT} on CPU another-cpu"):
        native.load(path)
    with pytest.raises(native.NativeUnavailable, match="No such file or directory"):
        native.load(str(tmp_path / "missing.so"))
    monkeypatch.undo()
    truncated = tmp_path / "truncated.so"
    with open(path, "rb") as f:
        truncated.write_bytes(f.read(1000))
    with pytest.raises(native.NativeUnavailable, match="truncated.so: 1000 bytes where its header says"):
        native.load(str(truncated))   # (loading it would kill the process with SIGBUS)
    garbage = tmp_path / "garbage.so"
    garbage.write_bytes(b"not a library")
    with pytest.raises(native.NativeUnavailable, match="garbage.so: not a 64-bit ELF shared library"):
        native.load(str(garbage))


def test_no_python_headers_gives_none(tmp_path, monkeypatch):
    kernel = _one_library(tmp_path, monkeypatch)[0]
    monkeypatch.setattr(native.sysconfig, "get_paths", lambda: {"include": str(tmp_path / "include")})
    lines = []
    assert native.build(kernel, log=lines.append) is None
    assert lines == [f"native: {kernel.name} not built: no Python.h in {tmp_path / 'include'} (install Python's "
                     "development headers)"]


_BUILD_IN_A_FRESH_PROCESS = _APART + """
from fusegrad.codegen import native
from fusegrad.ir import Builder, dtypes as D
from fusegrad.runtime.plan import Plan
b = Builder()
x = b.placeholder(None, (4, 5), D.float32)
(kernel,) = Plan(b.graph([b.mul(b.exp(x), b.sin(x))])).kernels
assert kernel.space == (20,)   # one flat loop
x = apart(np.linspace(-3, 3, 20, dtype=np.float32))
want, got = apart(np.empty(20, np.float32)), apart(np.empty(20, np.float32))
kernel.fn(20, x, want, np.zeros(1, np.int64))
path = native.build(kernel)
native.load(path)(20, x, got, np.zeros(1, np.int64))
assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
print(kernel.fn.stats.cache_hits and "hit" or "miss")
"""


def test_kernels_loaded_from_numbas_cache_build_too(tmp_path):
    """A library missing while Numba's cache is warm (built where there was no compiler, say) is
    built from the cached kernel: Numba keeps its optimised LLVM module in the cache."""
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", _BUILD_IN_A_FRESH_PROCESS], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["miss", "hit"], [r.stderr for r in runs]


def test_builds_in_threads_beside_numba_compiles(tmp_path, monkeypatch):
    """Libraries built from worker threads while the main thread compiles other kernels with Numba
    (how a caller keeps building off the critical path): all built, all right."""
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    kernels = _kernels("transcendentals_f32") + _kernels("partial_reductions_f32")
    for kernel in kernels:
        kernel.fn(*_call_args(kernel)[0])
    with ThreadPoolExecutor(4) as pool:
        first = [pool.submit(native.build, k) for k in kernels * 2]   # twice: one library built twice at once
        more = _kernels("int64") + _kernels("bool")   # Numba compiles these meanwhile
        for kernel in more:
            kernel.fn(*_call_args(kernel)[0])
        second = [pool.submit(native.build, k) for k in more]
        built = [(kernel, future.result()) for kernel, future in zip(kernels * 2 + more, first + second)]
    for kernel, path in built:
        args, outs = _call_args(kernel, seed=1)
        want, got = _fresh_outputs(args, outs), _fresh_outputs(args, outs)
        kernel.fn(*want)
        native.load(path)(*got)
        for k in outs:
            np.testing.assert_array_equal(_bits(got[k]), _bits(want[k]))
