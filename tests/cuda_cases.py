"""The "cuda" device, wherever it exists: under Numba's CUDA simulator on a CPU machine
(tests/test_devices.py runs this file in a subprocess with NUMBA_ENABLE_CUDASIM=1, which must be
set before numba is imported, so it cannot share the main test process) and on a real GPU
(`pytest -m cuda`). Results on "cuda" must equal the CPU's to float tolerance. Sizes stay tiny:
the simulator runs one Python thread per CUDA thread."""
import contextlib
import io
import re

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.codegen import cuda as cuda_codegen
from fusegrad.runtime import plan as plans
from gpu_workloads import WORKLOADS, w2
from op_rows import ROWS
from test_custom_function import Cube
from test_ops import _GRAD_TOLERANCE, EAGER_ONLY, _step, _tolerance, flat, input_arrays

if not fg.cuda.is_available():
    pytest.skip("no CUDA device: run through tests/test_devices.py (simulator) or on a GPU", allow_module_level=True)

# Under the simulator kernels run as Python in threads of their own, which NumPy's error state
# (quiet for inf and nan, as eager ops are) does not reach
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:fusegrad_cuda_.*")
MIXED = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"


@contextlib.contextmanager
def default_device(device):
    """Tensors a row makes inside its function (a mask, an index) go where its inputs are, as
    with PyTorch's set_default_device."""
    fg.set_default_device(device)
    try:
        yield
    finally:
        fg.set_default_device("cpu")


def leaves(arrays, device, row=None):
    return [fg.tensor(a, device=device, requires_grad=(row is None or row.differentiable) and a.dtype.kind == "f")
            for a in arrays]


# ---------------------------------------------------------------- device tensors


def test_devices_factories_and_moves():
    assert fg.cuda.is_available() and fg.cuda.device_count() >= 1 and fg.cuda.current_device() == 0
    fg.cuda.synchronize()
    x = fg.tensor([1.0, 2.0], device="cuda")
    assert x.device == fg.device("cuda:0") and repr(x.device) == "device(type='cuda', index=0)"
    assert x.is_cuda and str(x.device) == "cuda:0"
    assert fg.tensor([1.0], device=fg.device("cuda", 0)).device is x.device
    for made in (fg.zeros(2, device="cuda"), fg.ones(2, 3, device="cuda:0"), fg.randn(3, device="cuda"),
                 fg.arange(4, device="cuda"), fg.full((2,), 7.0, device="cuda"), fg.eye(2, device="cuda"),
                 fg.zeros_like(x), fg.randn_like(x), fg.empty_like(x), fg.full_like(x, 3.0), x * 2, x.sum()):
        assert made.device == fg.device("cuda:0"), made
    assert fg.zeros_like(x, device="cpu").device == fg.device("cpu")
    back = x.cpu()
    assert back.device == fg.device("cpu") and not back.is_cuda and back.tolist() == [1.0, 2.0]
    assert x.to("cuda") is x and x.cuda() is x and back.cpu() is back
    assert x.to("cpu", fg.float64).dtype is fg.float64
    moved = fg.tensor([1, 2]).to(device="cuda:0", dtype=fg.float32)
    assert moved.device == x.device and moved.dtype is fg.float32
    like = fg.tensor([1, 2]).to(fg.zeros(1, dtype=fg.float64, device="cuda"))   # dtype and device of another
    assert like.device == x.device and like.dtype is fg.float64
    embedding = fg.nn.Embedding(5, 3, padding_idx=0).cuda()
    looked_up = embedding(fg.tensor([[0, 2], [4, 0]], device="cuda"))
    assert looked_up.device == x.device and looked_up[0, 0].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match=r"^CUDA error: invalid device ordinal \(cuda:7 asked for"):
        fg.ones(1, device="cuda:7")


def test_mixed_devices_raise_pytorch_error():
    x, c = fg.ones(3, device="cuda"), fg.ones(3)
    for mixed in (lambda: x + c, lambda: c + x, lambda: x @ c, lambda: fg.where(c > 0, x, x),
                  lambda: fg.cat([x, c]), lambda: x.add_(c), lambda: fg.ones(1, 3, device="cuda") + fg.ones(1, 3)):
        with pytest.raises(RuntimeError) as info:
            mixed()
        assert str(info.value) == MIXED
    # a 0-d CPU tensor joins a cuda op, as PyTorch's CPU scalars do
    assert (x * fg.tensor(2.0)).device == x.device and (x * fg.tensor(2.0)).tolist() == [2.0, 2.0, 2.0]


def test_host_copies_and_numpy_refused():
    x = fg.tensor([[1.5, -2.0]], device="cuda")
    message = ("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host "
               "memory first.")
    for to_numpy in (x.numpy, lambda: np.asarray(x), lambda: np.array(x)):
        with pytest.raises(TypeError) as info:
            to_numpy()
        assert str(info.value) == message
    assert x.tolist() == [[1.5, -2.0]] and x[0, 1].item() == -2.0 and float(x[0, 0]) == 1.5
    assert bool(x[0, 0] > 0) and int(x[0, 0]) == 1
    np.testing.assert_array_equal(x.cpu().numpy(), [[1.5, -2.0]])


def test_printing_shows_the_device():
    assert repr(fg.tensor([1.0, 2.0], device="cuda")) == "tensor([1., 2.], device='cuda:0')"
    assert repr(fg.tensor([1, 2], device="cuda")) == "tensor([1, 2], device='cuda:0')"
    assert repr(fg.zeros(2, dtype=fg.float64, device="cuda", requires_grad=True)) == \
        "tensor([0., 0.], device='cuda:0', dtype=torch.float64, requires_grad=True)"
    y = fg.ones(2, requires_grad=True).cuda() * 2
    assert repr(y) == "tensor([2., 2.], device='cuda:0', grad_fn=<MulBackward0>)"
    assert repr(fg.zeros(0, 3, device="cuda")) == "tensor([], device='cuda:0', size=(0, 3))"
    assert str(fg.tensor(3.5, device="cuda")) == "tensor(3.5000, device='cuda:0')"
    a = fg.linspace(0., 6.2832, steps=25, requires_grad=True, device="cuda")   # the README's example
    out = (2 * fg.sin(a) + 1).sum()
    assert str(out) == "tensor(25.0000, device='cuda:0', grad_fn=<SumBackward0>)"
    out.backward()
    np.testing.assert_allclose(a.grad.cpu().numpy(), 2 * np.cos(a.detach().cpu().numpy()), rtol=1e-5, atol=1e-6)


def test_gradients_live_where_their_tensors_do():
    a = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = fg.tensor([0.5, 0.5, 0.5], device="cuda", requires_grad=True)
    moved = a.cuda()
    assert moved.grad_fn.name() == "ToCopyBackward0" and not moved.is_leaf
    (moved * b).sum().backward()
    assert a.grad.device == fg.device("cpu") and a.grad.tolist() == [0.5, 0.5, 0.5]
    assert b.grad.device == fg.device("cuda:0") and b.grad.tolist() == [1.0, 2.0, 3.0]
    g, = fg.autograd.grad((b ** 3).sum(), b, create_graph=True)
    assert g.device == b.device
    gg, = fg.autograd.grad(g.sum(), b)   # second order: saved values come back on the device
    assert gg.device == b.device and gg.tolist() == pytest.approx([3.0, 3.0, 3.0])
    seen = []
    h = fg.ones(2, device="cuda", requires_grad=True)
    h.register_hook(lambda grad: seen.append(grad.device))
    (h * 3).sum().backward()
    assert seen == [h.device]


def test_custom_functions_and_gradcheck_on_cuda():
    x = fg.tensor([0.5, -1.0, 2.0], dtype=fg.float64, device="cuda", requires_grad=True)
    y = Cube.apply(x)
    assert y.device == x.device
    (y * fg.tensor([1.0, 2.0, 3.0], dtype=fg.float64, device="cuda")).sum().backward()
    assert x.grad.device == x.device and x.grad.tolist() == pytest.approx([0.75, 6.0, 36.0])
    weights = fg.tensor([1.0, -2.0, 0.5], dtype=fg.float64, device="cuda")
    assert fg.autograd.gradcheck(lambda t: (fg.sin(t) * t * weights).sum(), (x,))
    assert fg.autograd.gradgradcheck(lambda t: (Cube.apply(t) * weights).sum(), (x,))


def test_module_to_cuda_and_optimizers_train_as_on_the_cpu():
    losses = {}
    for device in ("cpu", "cuda"):
        fg.manual_seed(0)
        model = fg.nn.Sequential(fg.nn.Linear(4, 3), fg.nn.ReLU(), fg.nn.Linear(3, 2), fg.nn.BatchNorm1d(2))
        model = model.cuda() if device == "cuda" else model.cpu()
        assert all(p.device == fg.device(device if device == "cpu" else "cuda:0") for p in model.parameters())
        assert model[3].running_mean.device == model[0].weight.device
        optimizers = [fg.optim.Adam(model[0].parameters(), lr=0.01), fg.optim.SGD(model[2].parameters(), lr=0.1,
                                                                                   momentum=0.9)]
        x = fg.tensor(np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4), device=device)
        losses[device] = []
        for _ in range(3):
            for opt in optimizers:
                opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            assert model[0].weight.grad.device == model[0].weight.device
            for opt in optimizers:
                opt.step()
            losses[device].append(loss.item())
        losses[device] += [p.detach().cpu().numpy() for p in model.parameters()]
    for got, want in zip(losses["cuda"], losses["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    buffer = io.BytesIO()   # a cuda model's state is saved from the host and loads on the CPU
    fg.save(model.state_dict(), buffer)
    buffer.seek(0)
    for key, value in fg.load(buffer).items():
        assert value.device == fg.device("cpu")
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key].cpu().numpy())
    model = fg.nn.Linear(2, 2)
    model(fg.ones(1, 2)).sum().backward()
    model.to("cuda")
    assert model.weight.grad.device == model.weight.device == fg.device("cuda:0")
    assert model.cpu().weight.device == fg.device("cpu") and model.weight.grad.device == fg.device("cpu")


# ---------------------------------------------------------------- every op row, eager and compiled

def _compare(got, want, tolerance):
    for g, w in zip(flat(got), flat(want)):
        if isinstance(w, fg.Tensor):
            assert g.device == fg.device("cuda:0"), g
            np.testing.assert_allclose(g.detach().cpu().numpy(), w.detach().numpy(), **tolerance, equal_nan=True)
        else:
            assert g == w


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_op_row_on_cuda_matches_cpu(row):
    arrays = input_arrays(row, row.samples[0], "float32")
    results = {}
    for device in ("cpu", "cuda"):
        with default_device(device):
            inputs = leaves(arrays, device, row)
            outputs = row.fn(fg, *inputs)
            grads = []
            if any(isinstance(o, fg.Tensor) and o.requires_grad for o in flat(outputs)):
                sum((o * (k + 1.5)).sum() for k, o in enumerate(flat(outputs)) if o.requires_grad).backward()
                grads = [x.grad for x in inputs if x.requires_grad]
        results[device] = outputs, grads
    _compare(results["cuda"][0], results["cpu"][0], _tolerance("float32", row))
    _compare(results["cuda"][1], results["cpu"][1], _GRAD_TOLERANCE["float32"])


@pytest.mark.parametrize("row", [r for r in ROWS if r.name not in EAGER_ONLY], ids=lambda r: r.name)
def test_compiled_op_row_on_cuda_matches_eager(row):
    arrays = input_arrays(row, row.samples[0], "float32")
    step = _step(row)
    compiled = fg.compile(step)
    for call in range(3):   # capture, then replays of the cuda plan
        with default_device("cuda"):
            compiled_inputs = leaves(arrays, "cuda", row)
            got = compiled(*compiled_inputs)
        eager_inputs = leaves(arrays, "cpu", row)
        want = step(*eager_inputs)
        _compare(got + [x.grad for x in compiled_inputs if x.requires_grad],
                 want + [x.grad for x in eager_inputs if x.requires_grad], _tolerance("float32", row))
    assert compiled.replays == 2, getattr(compiled, "last_reason", None)
    plan = compiled.specialisations[0].plan
    assert all(isinstance(k, cuda_codegen.Kernel) for k in plan.kernels)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_benchmark_workloads_compiled_on_cuda_match_cpu_eager(name):
    eager, on_cuda = WORKLOADS[name]("cpu"), WORKLOADS[name]("cuda")
    compiled = fg.compile(on_cuda.step)
    for call in range(4):
        want, got = eager.step(*eager.inputs()), compiled(*on_cuda.inputs())
        assert got.device == fg.device("cuda:0")
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
        for g, w in zip(on_cuda.state(), eager.state()):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    assert compiled.replays >= 2, getattr(compiled, "last_reason", None)
    assert compiled.specialisations[0].plan.kernels


def test_compiled_functions_moving_tensors_between_devices_run_eagerly():
    """One plan runs on one device: a call that returns a tensor of another device than those it
    reads, or reads tensors of two devices, runs eagerly (correctly) and says why."""
    compiled = fg.compile(lambda x: (x.cuda() * 2).sum())
    for _ in range(2):
        out = compiled(fg.ones(3))
        assert out.device == fg.device("cuda:0") and out.item() == 6.0
    assert compiled.replays == 0
    assert compiled.last_reason == "it returns a tensor on cuda:0, made inside the call, while the tensors it reads " \
                                   "are on cpu"
    both = fg.compile(lambda x, y: x.sum() + y.cpu().sum())
    for _ in range(2):
        assert both(fg.ones(2), fg.ones(2, device="cuda")).item() == 4.0
    assert both.replays == 0 and both.last_reason == "it uses tensors on cpu and cuda:0; one plan runs on one device"


# ---------------------------------------------------------------- kernels: reductions, launches, eager backward


def test_reductions_keep_nan_and_match_eager():
    def f(x):
        return x.amax(1), x.amin(0), x.sum(), (x * 2).prod(1), x.exp().amax()
    data = np.arange(24, dtype=np.float32).reshape(4, 6) / 7 - 1
    data[1, 2] = np.nan
    compiled = fg.compile(f)
    want = f(fg.tensor(data))
    for _ in range(2):
        got = compiled(fg.tensor(data, device="cuda"))
        _compare(got, want, dict(rtol=1e-6, atol=1e-6))
    assert compiled.replays == 1
    assert np.isnan(got[0].cpu().numpy()[1]) and np.isnan(got[2].item())
    from numba import cuda
    from numba.core import config
    plan = compiled.specialisations[0].plan   # its cache key names the GPU's compute capability
    assert plan.target == "cuda" and plan.components["target"][0] == (
        "cuda (Numba's simulator)" if config.ENABLE_CUDASIM
        else "cuda (compute capability %d.%d)" % cuda.get_current_device().compute_capability)


def test_multi_block_launch_and_grid_stride(monkeypatch):
    """More elements than threads: several blocks, each thread looping over several elements,
    and a full reduction combining one partial per block."""
    monkeypatch.setattr(cuda_codegen, "THREADS", 16)
    monkeypatch.setattr(cuda_codegen, "MAX_BLOCKS", 2)
    x = np.linspace(-3, 3, 90, dtype=np.float32)

    def f(x):
        return fg.sigmoid(x) * x, (x * x).sum()
    compiled = fg.compile(f)
    want = f(fg.tensor(x))
    for _ in range(2):
        got = compiled(fg.tensor(x, device="cuda"))
    _compare(got, want, dict(rtol=1e-6, atol=1e-6))
    kernel, = compiled.specialisations[0].plan.kernels
    assert "cuda.shared.array(16, np.float32)" in kernel.source
    assert re.search(r"for flat in range\(cuda.grid\(1\), n0, cuda.gridsize\(1\)\)", kernel.source)


def test_eager_backward_compiles_a_cuda_plan(monkeypatch):
    monkeypatch.setattr(plans, "COMPILE_AFTER", 2)
    arrays = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.linspace(0, 1, 4, dtype=np.float32)]
    want = leaves(arrays, "cpu")
    w2(*want).sum().backward()
    for _ in range(3):   # interpreted, then compiled at the second run, then run compiled
        x, y = leaves(arrays, "cuda")
        w2(x, y).sum().backward()
        for got, ref in zip((x.grad, y.grad), want):
            assert got.device == x.device
            np.testing.assert_allclose(got.cpu().numpy(), ref.grad.numpy(), rtol=1e-5, atol=1e-6)
    compiled = [p for p in list(plans._eager_plans.values()) if isinstance(p, plans.Plan)
                and p.kernels and isinstance(p.kernels[0], cuda_codegen.Kernel)]
    assert compiled, "the cuda backward graph was not compiled for the cuda target"
