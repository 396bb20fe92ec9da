"""fusegrad.save / fusegrad.load: PyTorch's zip checkpoint format, read without PyTorch, written so
that PyTorch reads it, and never running code from the file."""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import fusegrad
from fusegrad import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tensors():
    return OrderedDict([
        ("f32", fusegrad.tensor([[1.5, -2.0, 3.25]])),
        ("f64", fusegrad.tensor([1e-300, 2.0], dtype=fusegrad.float64)),
        ("f16", fusegrad.tensor([0.5, 65504.0], dtype=fusegrad.float16)),
        ("i64", fusegrad.tensor([-(2 ** 62), 7])),
        ("i32", fusegrad.tensor([1, -2, 3], dtype=fusegrad.int32)),
        ("bool", fusegrad.tensor([True, False, True])),
        ("scalar", fusegrad.tensor(2.5)),
        ("empty", fusegrad.zeros(0, 3)),
        ("view", fusegrad.arange(12.0).reshape(3, 4)[:, 1::2]),   # not contiguous
    ])


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, fusegrad.Tensor):
        assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and a.requires_grad == b.requires_grad
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_round_trip_of_tensors_and_containers(tmp_path):
    obj = {"tensors": _tensors(), "param": nn.Parameter(fusegrad.ones(2)), "frozen": nn.Parameter(fusegrad.ones(1),
                                                                                                 requires_grad=False),
           "plain": [1, 2.5, "three", None, True, (4, 5), b"bytes"], "nested": {"a": [fusegrad.tensor([1.0])]}}
    path = tmp_path / "objects.pt"
    fusegrad.save(obj, path)
    back = fusegrad.load(path)
    _assert_same(obj, back)
    assert isinstance(back["param"], nn.Parameter) and back["param"].requires_grad
    assert not back["frozen"].requires_grad
    # loaded tensors own writable memory
    back["tensors"]["f32"].add_(1)
    buffer = io.BytesIO()   # file objects work too
    fusegrad.save(obj["tensors"], buffer)
    buffer.seek(0)
    _assert_same(obj["tensors"], fusegrad.load(buffer))


def test_round_trip_of_module_and_optimizer_state(tmp_path):
    fusegrad.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    optimizer = fusegrad.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = fusegrad.rand(4, 1, 4, 4)

    def step(model, optimizer):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()

    step(model, optimizer)
    fusegrad.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "ckpt.pth")
    checkpoint = fusegrad.load(tmp_path / "ckpt.pth")

    fusegrad.manual_seed(1)   # different initial weights, then the checkpoint's
    restored = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    restored.load_state_dict(checkpoint["model"])
    restored_optimizer = fusegrad.optim.SGD(restored.parameters(), lr=0.5)
    restored_optimizer.load_state_dict(checkpoint["optimizer"])
    assert restored_optimizer.param_groups[0]["momentum"] == 0.9
    step(model, optimizer)
    step(restored, restored_optimizer)   # the momentum buffers came along: the same next step
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_torch_reads_what_fusegrad_writes(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = _tensors()
    fusegrad.save(tensors, tmp_path / "for_torch.pt")
    theirs = torch.load(tmp_path / "for_torch.pt", weights_only=True)
    assert list(theirs) == list(tensors)
    for key, ours in tensors.items():
        assert str(theirs[key].dtype) == f"torch.{ours.dtype.name}"
        np.testing.assert_array_equal(theirs[key].numpy(), ours.numpy(), err_msg=key)


_READ_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None          # `import torch` now raises ImportError
import fusegrad
state = fusegrad.load(sys.argv[1])
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print(json.dumps({k: [v.dtype.name, list(v.shape), v.numpy().ravel().tolist()] for k, v in state.items()}))
"""


def test_load_reads_a_torch_checkpoint_without_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    model(torch.rand(2, 2, 5, 5))   # running statistics move, num_batches_tracked counts
    state = model.state_dict()
    state["half"] = torch.tensor([1.5], dtype=torch.float16)
    state["strided"] = torch.arange(20.0).reshape(4, 5)[1:, ::2]    # a view with an offset into its storage
    path = tmp_path / "from_torch.pth"
    torch.save(state, path)
    result = subprocess.run([sys.executable, "-c", _READ_WITHOUT_TORCH, str(path)], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert list(loaded) == list(state)
    for key, value in state.items():
        dtype, shape, values = loaded[key]
        assert dtype == str(value.dtype).removeprefix("torch.") and shape == list(value.shape), key
        np.testing.assert_array_equal(np.array(values, dtype=value.numpy().dtype), value.numpy().ravel(), err_msg=key)


def _archive(pickled, records=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        for name, data in records:
            archive.writestr(f"archive/{name}", data)
    buffer.seek(0)
    return buffer


class _RunsCode:
    """What a malicious checkpoint pickles: loading it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "was_run"
    payload = pickle.dumps({"weight": [1.0], "evil": _RunsCode(marker)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"fusegrad.load refuses the global '(posix|os|nt)\.system': "
                                                     r"a checkpoint may hold only tensors"):
        fusegrad.load(_archive(payload))
    assert not marker.exists()


def test_a_tensor_reaching_past_its_storage_is_refused():
    # a crafted size/stride that would read memory beyond the 2-element storage
    storage = ("storage", fusegrad.serialization._TorchName("torch", "FloatStorage"), "0", "cpu", 2)

    class Crafted:
        def __reduce__(self):
            return fusegrad.serialization._REBUILD_TENSOR, (_Pid(storage), 0, (1000,), (1,), False, OrderedDict())

    class _Pid:
        def __init__(self, pid):
            self.pid = pid

    class Pickler(fusegrad.serialization._CheckpointPickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, _Pid) else None

    buffer = io.BytesIO()
    Pickler(buffer).dump(Crafted())
    with pytest.raises(pickle.UnpicklingError, match=r"a tensor of size \(1000,\) and stride \(1,\) at offset 0 "
                                                     r"reaches past its storage of 2 elements"):
        fusegrad.load(_archive(buffer.getvalue(), [("data/0", np.zeros(2, np.float32).tobytes())]))


def test_legacy_and_non_checkpoint_files_are_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(RuntimeError, match="^fusegrad.load: not a zip checkpoint"):
        fusegrad.load(legacy)
    with pytest.raises(ValueError, match="never unpickles arbitrary objects"):
        fusegrad.load(legacy, weights_only=False)


def test_training_resumes_from_a_torch_checkpoint():
    # model and Adam state saved by PyTorch; fusegrad continues and takes the step PyTorch takes
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Linear(3, 2)
    their_optimizer = torch.optim.Adam(theirs.parameters(), lr=0.01)
    theirs(torch.rand(4, 3)).sum().backward()
    their_optimizer.step()
    buffer = io.BytesIO()
    torch.save({"model": theirs.state_dict(), "optimizer": their_optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = fusegrad.load(buffer)

    ours = nn.Linear(3, 2)
    ours.load_state_dict(checkpoint["model"])
    our_optimizer = fusegrad.optim.Adam(ours.parameters(), lr=0.01)
    our_optimizer.load_state_dict(checkpoint["optimizer"])
    x = np.random.default_rng(3).random((4, 3), dtype=np.float32)
    ours(fusegrad.tensor(x)).pow(2).sum().backward()
    our_optimizer.step()
    their_optimizer.zero_grad()
    theirs(torch.tensor(x)).pow(2).sum().backward()
    their_optimizer.step()
    np.testing.assert_allclose(ours.weight.detach().numpy(), theirs.weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.bias.detach().numpy(), theirs.bias.detach().numpy(), rtol=1e-6, atol=1e-7)
