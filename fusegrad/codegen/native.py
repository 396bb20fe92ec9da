"""Kernels as native extension modules, callable without importing Numba.

Loading any cached Numba function costs ~0.5 s per process (`import numba`, then the CPU target's
registries, which import scipy): more than the whole warm-start budget. So at cold compile time
`build` turns a compiled kernel into a shared library next to its module, and a later process
`load`s it, with no Numba in the process.

The library is a CPython extension module (multi-phase init: each load is a fresh module with its
own state), linked from two objects:
- the kernel's: Numba's optimised code of the kernel as the dispatcher runs it (its LLVM module,
  code-generated once more as position-independent code), plus `fusegrad_kernel(pointers)`, which
  rebuilds each array from a data pointer and the shape the kernel was built for (C-contiguous),
  reads each 0-d input through a pointer to its value, calls the kernel and returns whether it
  reported an error; and `fusegrad_table`, what each argument must be (see `_table`).
- the module's (the same for every kernel, compiled once per cache directory and Python): `call`,
  with the Numba kernel's call convention. It checks, by reading the objects' fields, what the
  dispatcher would have dispatched on or the kernel assumes (sizes, type, dtype, ndim, shape,
  C-contiguity, alignment, writability of outputs), then runs the kernel with the GIL released
  (the kernels are nogil). A mismatch computes nothing and calls back into Python: `load`'s
  fallback, or a TypeError naming the argument.
A C extension rather than ctypes: converting a few arrays' pointers for a ctypes call costs 2-3 us,
more than Numba's whole dispatch; this call costs less than Numba's dispatcher.

Reading array fields from C needs the layouts of NumPy's array, dtype and scalar structs; those
are part of NumPy's C ABI, and `load` checks them against NumPy's own answers. A library is for one
CPU model (its instructions are the host's) and one Python ABI: the file name carries both.

Not built (build returns None, with one log line under `cache`): parallel kernels (prange needs
Numba's threading layer), kernels whose code calls into Numba's runtime (any symbol it needs
outside libc and libm), and systems other than Linux or without a C compiler or Python's headers.

Use: `build(kernel)` after the kernel's first call (it may run in another thread: it takes Numba's
compiler lock for its LLVM work only); later, `load(library_path(module_file, kernel), fallback=kernel_fn)`
raises NativeUnavailable or returns the callable. Nothing on the load side imports Numba.
"""
import functools
import hashlib
import os
import platform
import sysconfig
from importlib.machinery import ExtensionFileLoader, ModuleSpec

import numpy as np

FORMAT = 3   # bumped whenever the library's interface changes
MODULE_NAME = "fusegrad_native"
# NumPy's array flags (ndarraytypes.h)
_C_CONTIGUOUS, _ALIGNED, _WRITEABLE = 0x1, 0x100, 0x400
_SIZE, _SCALAR, _ARRAY = 0, 1, 2   # argument kinds in fusegrad_table

_MODULE_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* prefixes of NumPy's PyArrayObject_fields and PyArray_Descr (NumPy's C ABI); a NumPy scalar's
   value follows its PyObject_HEAD. Checked against NumPy by fusegrad.codegen.native.load */
typedef struct { PyObject_HEAD char *data; int nd; int64_t *dims; int64_t *strides; PyObject *base;
                 char *descr; int flags; } array_head;
typedef struct { PyObject_HEAD PyObject *typeobj; char kind, type_char, byteorder, former_flags;
                 int type_num; } descr_head;
typedef struct { PyObject *types; PyObject *on_mismatch; } state;   /* types: (numpy.ndarray, *scalar types) */

/* from the kernel's object: the argument count, then per argument SIZE value | SCALAR type index |
   ARRAY type_num ndim flags shape... */
extern const int64_t fusegrad_table[];
extern const char fusegrad_spec[];
extern int32_t fusegrad_kernel(void *const *pointers);

static int array_ok(PyObject *o, PyObject *ndarray, const int64_t *entry) {
    const array_head *a = (const array_head *)o;
    const descr_head *d;
    int nd = (int)entry[2], flags = (int)entry[3];
    if ((PyObject *)Py_TYPE(o) != ndarray || a->nd != nd || (a->flags & flags) != flags)
        return 0;
    d = (const descr_head *)a->descr;
    if (d->type_num != entry[1] || d->byteorder == '>')
        return 0;
    for (int k = 0; k < nd; k++)
        if (a->dims[k] != entry[4 + k])
            return 0;
    return 1;
}

static int size_ok(PyObject *o, long long n) {
    int overflow;
    return PyLong_Check(o) && PyLong_AsLongLongAndOverflow(o, &overflow) == n && !overflow;
}

static PyObject *mismatch(state *st, Py_ssize_t index, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *tuple, *result;
    tuple = PyTuple_New(nargs);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < nargs; k++) {
        Py_INCREF(args[k]);
        PyTuple_SET_ITEM(tuple, k, args[k]);
    }
    result = PyObject_CallFunction(st->on_mismatch, "nO", index, tuple);
    Py_DECREF(tuple);
    return result;
}

static PyObject *call(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    state *st = (state *)PyModule_GetState(module);
    const int64_t *entry = fusegrad_table + 1;
    void *pointers[fusegrad_table[0] + 1];
    int used = 0;
    Py_ssize_t k = fusegrad_table[0];   /* the first argument that does not match */
    int32_t status;
    if (st->on_mismatch == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "native kernel called before bind()");
        return NULL;
    }
    if (nargs != fusegrad_table[0])
        return mismatch(st, k, args, nargs);
    for (k = 0; k < nargs; k++) {
        PyObject *o = args[k];
        if (entry[0] == %(size)d) {
            if (!size_ok(o, entry[1]))
                return mismatch(st, k, args, nargs);
            entry += 2;
        } else if (entry[0] == %(scalar)d) {
            if ((PyObject *)Py_TYPE(o) != PyTuple_GET_ITEM(st->types, entry[1]))
                return mismatch(st, k, args, nargs);
            pointers[used++] = (char *)o + sizeof(PyObject);
            entry += 2;
        } else {
            if (!array_ok(o, PyTuple_GET_ITEM(st->types, 0), entry))
                return mismatch(st, k, args, nargs);
            pointers[used++] = ((const array_head *)o)->data;
            entry += 4 + entry[2];
        }
    }
    Py_BEGIN_ALLOW_THREADS
    status = fusegrad_kernel(pointers);
    Py_END_ALLOW_THREADS
    if (status) {
        PyErr_SetString(PyExc_RuntimeError, "native kernel: the compiled code reported an error");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *layout(PyObject *module, PyObject *args) {
    /* what this module reads from a 2-d array and from float32, float64, int64 and bool scalars */
    PyObject *o, *f32, *f64, *i64, *b;
    const array_head *a;
    const descr_head *d;
    if (!PyArg_ParseTuple(args, "OOOOO", &o, &f32, &f64, &i64, &b))
        return NULL;
    a = (const array_head *)o;
    d = (const descr_head *)a->descr;
    return Py_BuildValue("(Ki(LL)KiiiddLi)", (unsigned long long)(uintptr_t)a->data, a->nd, (long long)a->dims[0],
                         (long long)a->dims[1], (unsigned long long)(uintptr_t)d, d->type_num, (int)d->byteorder,
                         a->flags & %(flag_mask)d, (double)*(float *)((char *)f32 + sizeof(PyObject)),
                         *(double *)((char *)f64 + sizeof(PyObject)), (long long)*(int64_t *)((char *)i64 + sizeof(PyObject)),
                         (int)*(unsigned char *)((char *)b + sizeof(PyObject)));
}

static PyObject *bind(PyObject *module, PyObject *args) {
    state *st = (state *)PyModule_GetState(module);
    PyObject *types, *on_mismatch, *old_types, *old_on_mismatch;
    if (!PyArg_ParseTuple(args, "O!O", &PyTuple_Type, &types, &on_mismatch))
        return NULL;
    old_types = st->types;
    old_on_mismatch = st->on_mismatch;
    Py_INCREF(types);
    Py_INCREF(on_mismatch);
    st->types = types;
    st->on_mismatch = on_mismatch;
    Py_XDECREF(old_types);
    Py_XDECREF(old_on_mismatch);
    Py_RETURN_NONE;
}

static int traverse(PyObject *module, visitproc visit, void *arg) {
    state *st = (state *)PyModule_GetState(module);
    Py_VISIT(st->types);
    Py_VISIT(st->on_mismatch);
    return 0;
}

static int clear(PyObject *module) {
    state *st = (state *)PyModule_GetState(module);
    Py_CLEAR(st->types);
    Py_CLEAR(st->on_mismatch);
    return 0;
}

static void free_module(void *module) { clear((PyObject *)module); }

static int exec_module(PyObject *module) { return PyModule_AddStringConstant(module, "spec", fusegrad_spec); }

static PyMethodDef methods[] = {
    {"call", (PyCFunction)(void (*)(void))call, METH_FASTCALL, "Run the kernel: the Numba kernel's arguments."},
    {"layout", layout, METH_VARARGS, "layout(2-d array, float32, float64, int64, bool scalars): fields as read"},
    {"bind", bind, METH_VARARGS, "bind((numpy.ndarray, *scalar types), on_mismatch(index, args))"},
    {NULL, NULL, 0, NULL}};
static PyModuleDef_Slot slots[] = {{Py_mod_exec, (void *)exec_module}, {0, NULL}};
static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "%(module)s", NULL, sizeof(state), methods, slots,
                                        traverse, clear, free_module};

PyMODINIT_FUNC PyInit_%(module)s(void) { return PyModuleDef_Init(&definition); }
""" % dict(size=_SIZE, scalar=_SCALAR, flag_mask=_C_CONTIGUOUS | _ALIGNED | _WRITEABLE, module=MODULE_NAME)


@functools.lru_cache(maxsize=None)
def host_cpu_key():
    """A short key of this machine's CPU model and instruction sets: a library is only loaded on
    the CPU it was compiled for (Numba compiles for the host's features)."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                if line.strip() == "":   # the first processor's block is enough
                    break
    except OSError:
        text += platform.processor()
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def library_path(module_path, kernel):
    """Where the library of `kernel` (whose module file is at `module_path`) lives, for this CPU and
    Python. A module serves groups of any size; a library is built for one kernel's shapes, so
    its name carries a hash of them."""
    shapes = hashlib.sha1(repr(_table(_arguments(kernel))).encode()).hexdigest()[:8]
    return f"{os.path.splitext(module_path)[0]}.{shapes}.{host_cpu_key()}{sysconfig.get_config_var('EXT_SUFFIX')}"


class _Arg:
    """One argument of the kernel: kind _SIZE (shape holds its value), _SCALAR or _ARRAY."""
    __slots__ = ("kind", "dtype", "shape", "writable")

    def __init__(self, kind, dtype=None, shape=(), writable=False):
        self.kind, self.dtype, self.shape, self.writable = kind, dtype, tuple(shape), writable

    def describe(self):
        if self.kind == _SIZE:
            return f"the int {self.shape[0]}"
        if self.kind == _SCALAR:
            return f"a numpy.{self.dtype.name} scalar"
        return (f"a {'writable ' if self.writable else ''}C-contiguous aligned {self.dtype.name} array of shape "
                f"{self.shape}")


def _arguments(kernel):
    """The kernel's call convention (see codegen.cpu.Kernel), from its group and nodes."""
    args = [_Arg(_SIZE, shape=(n,)) for n in kernel.space]
    overwritten = set(getattr(kernel, "written", {}).values())   # inputs the kernel stores its outputs into
    for node in kernel.args:
        dtype = np.dtype(node.dtype.np)
        args.append(_Arg(_ARRAY, dtype, kernel.arg_shape(node), writable=node in overwritten) if node.shape
                    else _Arg(_SCALAR, dtype))
    for shape, dtype, _ in kernel.buffers:
        args.append(_Arg(_ARRAY, np.dtype(dtype.np), shape, writable=True))
    if kernel.flagged:
        args.append(_Arg(_ARRAY, np.dtype(np.int64), (1,), writable=True))
    return args


def _table(args):
    """fusegrad_table: the argument count, then per argument SIZE value | SCALAR index of its type
    in the bound types (1..) | ARRAY type_num ndim flags shape..."""
    table = [len(args)]
    scalars = 0
    for a in args:
        if a.kind == _SIZE:
            table += [_SIZE, a.shape[0]]
        elif a.kind == _SCALAR:
            scalars += 1
            table += [_SCALAR, scalars]
        else:
            flags = _C_CONTIGUOUS | _ALIGNED | (_WRITEABLE if a.writable else 0)
            table += [_ARRAY, a.dtype.num, len(a.shape), flags, *a.shape]
    return table


def _encode_spec(name, args):
    """What the loader needs, stored in the library as text: format, CPU key, kernel name, the
    dtype names of the 0-d arguments (their scalar types are bound at load) and what each
    argument must be (`load` splits it)."""
    scalars = [a.dtype.name for a in args if a.kind == _SCALAR]
    return ";".join([str(FORMAT), host_cpu_key(), name, ",".join(scalars), "|".join(a.describe() for a in args)])


# -- load side (no Numba) ----------------------------------------------------------------------------

class NativeUnavailable(Exception):
    """A library that cannot be used in this process (missing, another format or CPU, or an
    object layout it does not read right): use the Numba kernel instead."""


def load(path, fallback=None):
    """The kernel library at `path` as a callable with the Numba kernel's call convention
    (sizes, arrays and 0-d values as NumPy scalars, outputs[, flags]; returns None).

    Arguments that do not match what the library was built for (dtype, shape, layout, count...)
    are never computed on: the call returns `fallback(*args)` when given (the Numba kernel), else
    raises TypeError naming the argument. Raises NativeUnavailable when the library cannot be
    used in this process."""
    loader = ExtensionFileLoader(MODULE_NAME, path)
    try:
        _check_complete(path)
        module = loader.create_module(ModuleSpec(MODULE_NAME, loader, origin=path))
        loader.exec_module(module)
    except (ImportError, OSError) as e:
        raise NativeUnavailable(f"{path}: {e}") from None
    fields = getattr(module, "spec", "").split(";", 4)
    if fields[0] != str(FORMAT) or len(fields) != 5 or fields[1] != host_cpu_key():
        raise NativeUnavailable(f"{path}: built as format {fields[0]} for CPU {fields[1:2]}; this is format "
                                f"{FORMAT} on CPU {host_cpu_key()}")
    _, _, name, scalars, descriptions = fields
    scalars, descriptions = [s for s in scalars.split(",") if s], descriptions.split("|")
    _check_layout(module, path)

    def on_mismatch(index, args):
        if fallback is not None:
            return fallback(*args)
        if index == len(descriptions):
            raise TypeError(f"native kernel {name} takes {len(descriptions)} arguments, got {len(args)}")
        raise TypeError(f"native kernel {name}: argument {index} must be {descriptions[index]}, got "
                        f"{_describe(args[index])}")

    module.bind(tuple([np.ndarray] + [np.dtype(s).type for s in scalars]), on_mismatch)
    return module.call


def _check_complete(path):
    """Loading a truncated library kills the process (SIGBUS on its pages past the end), so its
    length is checked first: the linker writes the ELF section header table last."""
    with open(path, "rb") as f:
        header = f.read(64)
        size = os.fstat(f.fileno()).st_size
    if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:
        raise NativeUnavailable(f"{path}: not a 64-bit ELF shared library")
    order = "little" if header[5] == 1 else "big"
    end = int.from_bytes(header[40:48], order) + int.from_bytes(header[58:60], order) * int.from_bytes(header[60:62], order)
    if end != size:
        raise NativeUnavailable(f"{path}: {size} bytes where its header says {end}: truncated or damaged")


def _check_layout(module, path):
    """The struct fields the C side reads, read through its own structs, against NumPy's answers."""
    probe = np.zeros((2, 3), np.float32)
    strided = probe[:, :2]
    scalars = (np.float32(1.5), np.float64(-2.5), np.int64(-7), np.bool_(True))
    seen = module.layout(probe, *scalars), module.layout(strided, *scalars)
    flags = _C_CONTIGUOUS | _ALIGNED | _WRITEABLE
    want = ((probe.__array_interface__["data"][0], 2, (2, 3), id(probe.dtype), probe.dtype.num, ord("="), flags,
             1.5, -2.5, -7, 1),
            (strided.__array_interface__["data"][0], 2, (2, 2), id(strided.dtype), strided.dtype.num, ord("="),
             flags & ~_C_CONTIGUOUS, 1.5, -2.5, -7, 1))
    if seen != want:
        raise NativeUnavailable(f"{path}: NumPy {np.__version__} on Python {platform.python_version()} lays out "
                                f"arrays or scalars differently from what native kernels read ({seen} != {want})")


def _describe(value):
    if isinstance(value, np.ndarray):
        layout = "C-contiguous" if value.flags.c_contiguous else "non-contiguous"
        return f"a {'' if value.flags.writeable else 'read-only '}{layout} {value.dtype} array of shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


# -- build side (imports Numba) -------------------------------------------------------------------
# (and the modules only building needs: loading is on the warm-start path)

def build(kernel, log=None):
    """Compile `kernel` (a codegen.cpu.Kernel) into a library next to its module file and return
    the library's path, or None when this kernel or machine cannot have one (the reason goes to
    `log(message)`, by default the `cache` log category)."""
    import shutil
    import tempfile

    log = log or _log
    if not hasattr(kernel.fn, "overloads"):   # NUMBA_DISABLE_JIT=1: the kernel is its Python source
        log(f"native: {kernel.name} not built: it is not compiled (NUMBA_DISABLE_JIT)")
        return None
    path = library_path(kernel.fn.py_func.__code__.co_filename, kernel)
    if platform.system() != "Linux":
        log(f"native: {kernel.name} not built: native kernels are built on Linux only (ELF, GNU ld)")
        return None
    if kernel.fn.targetoptions.get("parallel"):
        log(f"native: {kernel.name} not built: parallel kernels need Numba's threading layer")
        return None
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log(f"native: {kernel.name} not built: no C compiler (cc or gcc) on PATH")
        return None
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        log(f"native: {kernel.name} not built: no Python.h in {include} (install Python's development headers)")
        return None
    from numba.core.compiler_lock import global_compiler_lock

    args = _arguments(kernel)
    # Numba's LLVM context and target context are not thread-safe: a build running in another
    # thread than Numba's compiles takes their lock for its LLVM work (the C compiler runs outside)
    with global_compiler_lock:
        module, machine = _kernel_module(kernel, args)
        foreign = _foreign_symbols(module)
        kernel_code = None if foreign else machine.emit_object(module)
    if foreign:
        log(f"native: {kernel.name} not built: its code needs symbols only Numba's runtime provides: "
            f"{', '.join(foreign)}")
        return None
    module_object, failure = _module_object(compiler, include, os.path.dirname(path))
    if failure:
        log(f"native: {kernel.name} not built: {failure}")
        return None
    with tempfile.TemporaryDirectory(prefix="fusegrad-native-") as work:
        kernel_object = os.path.join(work, "kernel.o")
        with open(kernel_object, "wb") as f:
            f.write(kernel_code)
        exports = os.path.join(work, "exports.map")
        with open(exports, "w") as f:
            f.write(f"{{ global: PyInit_{MODULE_NAME}; local: *; }};\n")
        tmp = _temporary_next_to(path)
        # Python's symbols come from the interpreter that loads the module
        failure = _run(compiler, "-shared", "-o", tmp, kernel_object, module_object, f"-Wl,--version-script={exports}",
                       "-lm")
        if failure:
            log(f"native: {kernel.name} not built: {failure}")
            os.remove(tmp)
            return None
        os.replace(tmp, path)   # atomic: another process never loads half a library
    return path


def _temporary_next_to(path):
    """A new empty file's name in path's directory (so that os.replace onto path is atomic)."""
    import tempfile

    fd, name = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    return name


def _log(message):
    from ..runtime.log import log
    log("cache", message)


def _run(compiler, *arguments):
    """None, or why running `compiler` failed."""
    import subprocess

    try:
        done = subprocess.run([compiler, "-fPIC", "-O2", *arguments], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{compiler} failed to run: {e}"
    return None if done.returncode == 0 else f"{compiler} failed: {done.stderr.strip()[-500:]}"


def _foreign_symbols(module):
    """Names the module's code needs from outside that are not in libm or libc (LLVM intrinsics
    become instructions, or calls into libm and the compiler's own runtime library)."""
    import ctypes
    import ctypes.util

    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError:   # not glibc
        libm = ctypes.CDLL(ctypes.util.find_library("m"))
    needed = [f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm.")]
    needed += [g.name for g in module.global_variables if g.is_declaration]
    return sorted(name for name in needed if not hasattr(libm, name))   # a libm handle finds libc's symbols too


def _module_object(compiler, include, directory):
    """(path, None) of the module's object file (the C side, the same for every kernel), compiled
    once per directory, compiler and Python; (None, why) when it does not compile."""
    key = hashlib.sha1("\0".join([_MODULE_SOURCE, compiler, include, sysconfig.get_config_var("EXT_SUFFIX")])
                       .encode()).hexdigest()[:16]
    path = os.path.join(directory, f"{MODULE_NAME}.{key}.o")
    if os.path.exists(path):
        return path, None
    source, tmp = _temporary_next_to(path[:-2] + ".c"), _temporary_next_to(path)
    with open(source, "w") as f:
        f.write(_MODULE_SOURCE)
    try:
        failure = _run(compiler, "-x", "c", "-c", f"-I{include}", "-o", tmp, source)
        if failure:
            os.remove(tmp)
            return None, failure
        os.replace(tmp, path)
    finally:
        os.remove(source)
    return path, None


def _kernel_module(kernel, args):
    """(LLVM module, target machine) of the kernel's object: Numba's optimised LLVM module of the
    kernel with fusegrad_kernel, fusegrad_table and fusegrad_spec (see the module docstring); the
    machine makes position-independent code for the CPU Numba compiles for."""
    import llvmlite.binding as llvm
    from llvmlite import ir
    from numba import from_dtype, types
    from numba.core.registry import cpu_target
    from numba.np.arrayobj import populate_array

    numba_types = [types.int64 if a.kind == _SIZE else
                   types.Array(from_dtype(a.dtype), len(a.shape), "C") if a.kind == _ARRAY else
                   from_dtype(a.dtype) for a in args]
    signature = tuple(numba_types)
    if signature not in kernel.fn.overloads:   # usually there, from the kernel's first call or Numba's cache
        kernel.fn.compile(signature)
    compiled = kernel.fn.overloads[signature]
    context = cpu_target.target_context
    codegen = context.codegen()
    module = codegen._create_empty_module("fusegrad_native")
    int64 = ir.IntType(64)
    table = _table(args)
    ir.GlobalVariable(module, ir.ArrayType(int64, len(table)), "fusegrad_table").initializer = \
        ir.Constant(ir.ArrayType(int64, len(table)), table)
    spec = bytearray(_encode_spec(kernel.name, args).encode() + b"\0")
    ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), len(spec)), "fusegrad_spec").initializer = \
        ir.Constant(ir.ArrayType(ir.IntType(8), len(spec)), spec)
    i8p = ir.IntType(8).as_pointer()
    entry = ir.Function(module, ir.FunctionType(ir.IntType(32), [i8p.as_pointer()]), "fusegrad_kernel")
    builder = ir.IRBuilder(entry.append_basic_block("entry"))
    values = []
    pointers = iter(range(len(args)))
    for arg, numba_type in zip(args, numba_types):
        if arg.kind == _SIZE:
            values.append(context.get_constant(types.int64, arg.shape[0]))
            continue
        pointer = builder.load(builder.gep(entry.args[0], [ir.Constant(int64, next(pointers))]))
        if arg.kind == _SCALAR:
            values.append(context.unpack_value(builder, numba_type,
                                               builder.bitcast(pointer, context.get_data_type(numba_type).as_pointer())))
            continue
        array = context.make_array(numba_type)(context, builder)
        itemsize = arg.dtype.itemsize
        strides = [int(np.prod(arg.shape[k + 1:], dtype=np.int64)) * itemsize for k in range(len(arg.shape))]
        populate_array(array, data=builder.bitcast(pointer, array.data.type),
                       shape=[context.get_constant(types.intp, n) for n in arg.shape],
                       strides=[context.get_constant(types.intp, s) for s in strides],
                       itemsize=context.get_constant(types.intp, itemsize), meminfo=None)
        values.append(array._getvalue())
    callee = context.declare_function(module, compiled.fndesc)
    status, _ = context.call_conv.call_function(builder, callee, compiled.signature.return_type,
                                                compiled.signature.args, values)
    builder.ret(builder.select(status.is_error, ir.Constant(ir.IntType(32), 1), ir.Constant(ir.IntType(32), 0)))

    machine = llvm.Target.from_triple(codegen._tm.triple).create_target_machine(
        cpu=codegen._get_host_cpu_name(), features=codegen._get_host_cpu_features(), opt=3, reloc="pic",
        codemodel="default")
    linked = llvm.parse_assembly(str(module))
    # the kernel's module as Numba optimised it (its exports made linkonce_odr): no optimisation
    # runs again, so the machine code computes what the dispatcher's does, bit for bit
    linked.link_in(compiled.library._get_module_for_linking(), preserve=True)
    # drop what fusegrad_kernel does not reach (the CPython wrapper, NRT helpers)
    passes = llvm.create_new_module_pass_manager()
    passes.add_global_dead_code_eliminate_pass()
    passes.run(linked, llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(0)))
    return linked, machine
