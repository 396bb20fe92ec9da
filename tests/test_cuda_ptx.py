"""Every CUDA kernel that codegen emits for the op rows and the benchmark workloads compiles to PTX
for compute capability 9.0, without a GPU (numba.cuda's compiler with the CUDA toolkit's libNVVM),
and float32 kernels compute in float32.

The graphs are captured on the CPU (the fusion groups are the same on every device: both backends
fuse the same ops) and each group's CUDA kernel is compiled once. A float32 kernel must type no
value as float64, its own LLVM IR must hold no `double`, and its PTX no `.f64` instruction, except
where it calls sin, cos or tan: libdevice's sinf/cosf/tanf reduce arguments beyond |x| = 105615
with a few float64 instructions of their own (CUDA C's sinf does the same), which the check of the
kernel's own IR covers."""
import re

import pytest
from numba import cuda, types

import fusegrad
from fusegrad.codegen import cuda as cuda_codegen
from fusegrad.ir.fusion import REDUCTIONS, FusionGroup
from fusegrad.ir.graph import Node
from gpu_workloads import WORKLOADS
from op_rows import ROWS
from test_ops import EAGER_ONLY, _step, input_arrays, make_inputs


def _compiler():
    """numba.cuda's kernel compiler, or a skip that says what is missing."""
    try:
        from numba.cuda.compiler import compile_cuda
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()   # finds libNVVM: the CUDA toolkit (/usr/local/cuda or CUDA_HOME) or NVIDIA's nvcc wheels
    except Exception as error:
        pytest.skip(f"no CUDA compiler toolchain: {type(error).__name__}: {error}")
    return compile_cuda


def _kernels_of(specialisation):
    """(the kernel's source without its first line, which numbers the group; the kernel)"""
    kernels = [cuda_codegen.build(step) for step in specialisation.plan.steps if isinstance(step, FusionGroup)]
    return [(k.source.split("\n", 1)[1], k) for k in kernels]


def _features(kernel):
    """What decides a kernel's typing and lowering, statement by statement: each member's op with
    its result and operand types (a reduction also with whether it is full), and the rank."""
    group = kernel.group
    features = {("rank", len(group.shape))}
    for node in group.nodes:
        operands = tuple(v.dtype.name if isinstance(v, Node) else type(v).__name__ for v in node.inputs)
        full = len(node.attrs["axes"]) == len(group.shape) if node.op.name in REDUCTIONS else None
        features.add((node.op.name, node.dtype.name, operands, full))
    return features


def _row_kernels():
    """CUDA kernels of the fusable op rows' compiled training steps (forward and backward, float32
    where a row takes either float): every kernel that brings a feature no earlier one had, so
    each op is compiled with every combination of operand types the rows give it. (All 300-odd
    distinct kernels take ~45 s to compile; these ~60 cover the same statements in ~8 s.)"""
    kernels, seen = [], set()
    for row in ROWS:
        if row.name in EAGER_ONLY:
            continue
        dtype = "float32" if row.dtypes is None else None
        compiled = fusegrad.compile(_step(row))
        compiled(*make_inputs(fusegrad, input_arrays(row, row.samples[0], dtype), row))
        for spec in compiled.specialisations:
            for _, kernel in _kernels_of(spec):
                features = _features(kernel)
                if not features <= seen:
                    seen |= features
                    kernels.append((row.name, kernel))
    return kernels


def _workload_kernels(name):
    """Every distinct CUDA kernel of the workload's compiled step."""
    workload = WORKLOADS[name]("cpu")
    compiled = fusegrad.compile(workload.step)
    for _ in range(2):   # the first call creates optimizer state, the second is captured
        compiled(*workload.inputs())
    assert compiled.specialisations, getattr(compiled, "last_reason", None)
    return list(dict(_kernels_of(compiled.specialisations[0])).values())


_TRIG = re.compile(r"math\.(sin|cos|tan)\(")


def _check(compile_cuda, where, kernel):
    types = cuda_codegen.argument_types(kernel)
    result = compile_cuda(kernel.cuda_fn.py_func, None, types, cc=(9, 0))
    ptx = result.library.get_asm_str(cc=(9, 0))
    assert re.search(r"\.visible \.func", ptx), f"{where}: no function in the PTX\n{kernel.source}"
    if any("float64" in str(t) for t in types):
        return
    float64_values = sorted({name for name, t in result.fndesc.typemap.items() if "float64" in str(t)})
    assert not float64_values, f"{where}: float64 values {float64_values} in a float32 kernel\n{kernel.source}"
    own_ir = result.library.get_llvm_str()   # before libdevice is linked in
    assert "double" not in own_ir, f"{where}: float64 arithmetic in a float32 kernel\n{kernel.source}"
    if not _TRIG.search(kernel.source):
        f64 = [line.strip() for line in ptx.splitlines() if re.search(r"\.f64\b", line)]
        assert not f64, f"{where}: .f64 instructions {f64[:5]} in a float32 kernel\n{kernel.source}"


def test_op_row_kernels_compile_to_ptx():
    compile_cuda = _compiler()
    kernels = _row_kernels()
    ops = {feature[0] for _, kernel in kernels for feature in _features(kernel)}
    assert {"exp", "sigmoid", "where", "cast", "sum", "amax", "pow", "binary_cross_entropy"} <= ops
    for where, kernel in kernels:
        _check(compile_cuda, where, kernel)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_benchmark_workload_kernels_compile_to_ptx(name):
    compile_cuda = _compiler()
    kernels = _workload_kernels(name)
    assert kernels
    for kernel in kernels:
        _check(compile_cuda, name, kernel)
    if name == "elementwise":   # forward and backward of W2 in one kernel, its sum a block reduction
        assert len(kernels) == 1 and kernels[0].passes[0] == ("full", None), kernels[0].source


def _widened(n0, x0, y0):
    for i0 in range(cuda.grid(1), n0, cuda.gridsize(1)):
        y0[i0] = x0[i0] * 0.7978845608   # an untyped literal: float64 arithmetic on float32 data


def test_float64_leak_is_caught():
    """The checks see what an untyped literal does to a float32 kernel."""
    compile_cuda = _compiler()
    array = types.Array(types.float32, 1, "C")
    result = compile_cuda(_widened, None, (types.int64, array, array), cc=(9, 0))
    assert re.search(r"\.f64\b", result.library.get_asm_str(cc=(9, 0)))
    assert "double" in result.library.get_llvm_str()
    assert "float64" in {str(t) for t in result.fndesc.typemap.values()}
