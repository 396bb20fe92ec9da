"""Tensor construction, dtypes and promotion, conversions, devices and NumPy interop."""
import pickle
import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fusegrad as torch


def test_dtype_inference_from_python_and_numpy_data():
    assert torch.tensor([1.0, 2.0]).dtype is torch.float32
    assert torch.tensor([1, 2]).dtype is torch.int64
    assert torch.tensor([True, False]).dtype is torch.bool
    assert torch.tensor([1, 2.5]).dtype is torch.float32
    assert torch.tensor(np.arange(3.0)).dtype is torch.float64        # NumPy arrays keep their dtype
    assert torch.tensor(np.arange(3, dtype=np.int32)).dtype is torch.int32
    assert torch.tensor([[1, 2], [3, 4]], dtype=torch.float64).dtype is torch.float64
    assert torch.tensor([torch.tensor(1.5), torch.tensor(2.0)]).tolist() == [1.5, 2.0]
    assert (torch.float, torch.double, torch.long, torch.int) == (torch.float32, torch.float64, torch.int64,
                                                                  torch.int32)
    assert repr(torch.float64) == "torch.float64"


def test_factories():
    assert torch.zeros(2, 3).shape == (2, 3) and torch.zeros((2, 3)).sum().item() == 0
    assert torch.ones(4, dtype=torch.int64).tolist() == [1, 1, 1, 1]
    assert torch.full((2,), 7).dtype is torch.int64 and torch.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert torch.empty(3, 0).shape == (3, 0)
    assert torch.eye(2, 3).tolist() == [[1, 0, 0], [0, 1, 0]]
    assert torch.arange(5).tolist() == [0, 1, 2, 3, 4] and torch.arange(5).dtype is torch.int64
    assert torch.arange(0, 1, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert torch.linspace(0, 1, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.zeros_like(x).dtype is torch.float64 and torch.ones_like(x).shape == (3, 4)
    assert torch.rand_like(x).shape == (3, 4) and torch.randn_like(x).dtype is torch.float64
    r = torch.randint(0, 10, (1000,))
    assert r.dtype is torch.int64 and 0 <= r.min().item() and r.max().item() < 10
    u = torch.rand(1000)
    assert 0.0 <= u.min().item() and u.max().item() < 1.0
    with pytest.raises(RuntimeError, match="Trying to create tensor with negative dimension -1"):
        torch.zeros(2, -1)


def test_manual_seed_makes_random_factories_repeatable():
    torch.manual_seed(123)
    a = torch.randn(5), torch.rand(3), torch.randint(0, 100, (4,))
    torch.manual_seed(123)
    b = torch.randn(5), torch.rand(3), torch.randint(0, 100, (4,))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert torch.initial_seed() == 123


def test_from_numpy_shares_memory_and_as_tensor_avoids_copies():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = torch.from_numpy(data)
    data[0, 0] = 42
    assert t[0, 0].item() == 42
    t.add_(1)
    assert data[1, 2] == 6
    assert torch.as_tensor(data)._data is data
    copied = torch.tensor(data)
    data[0, 0] = -1
    assert copied[0, 0].item() == 43
    with pytest.raises(TypeError, match="can't convert np.ndarray of type complex128"):
        torch.from_numpy(np.zeros(2, np.complex128))


def test_attributes_and_conversions():
    x = torch.ones(2, 3, requires_grad=True)
    assert x.shape == torch.Size([2, 3]) and repr(x.shape) == "torch.Size([2, 3])"
    assert x.size() == (2, 3) and x.size(1) == 3 and x.size(-1) == 3
    assert (x.dim(), x.ndim, x.numel()) == (2, 2, 6)
    assert x.T.shape == (3, 2) and x.is_leaf and x.grad is None and x.grad_fn is None
    assert x.device == torch.device("cpu") and repr(x.device) == "device(type='cpu')"
    y = torch.tensor([[2.5]])
    assert y.item() == 2.5 and float(y) == 2.5 and int(y) == 2 and bool(y) is True
    assert torch.tensor([1, 2]).tolist() == [1, 2]
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        bool(torch.ones(2))
    with pytest.raises(RuntimeError, match="a Tensor with 2 elements cannot be converted to Scalar"):
        torch.ones(2).item()
    with pytest.raises(RuntimeError, match=r"Can't call numpy\(\) on Tensor that requires grad. Use "
                                           r"tensor.detach\(\).numpy\(\) instead."):
        np.asarray(x)
    assert np.asarray(x.detach()).shape == (2, 3)
    assert f"{torch.tensor(3.14159):.2f}" == "3.14"


def test_data_shares_memory_but_not_history():
    x = torch.ones(3, requires_grad=True)
    d = x.data
    assert not d.requires_grad and d.grad_fn is None
    d.mul_(5)
    assert x.detach().tolist() == [5.0, 5.0, 5.0]
    y = torch.randn(3)
    x.data = y
    assert torch.equal(x.detach(), y) and x.requires_grad


def test_dtype_conversions():
    x = torch.tensor([1.7, -2.2])
    assert x.to(torch.float64).dtype is torch.float64 and x.double().dtype is torch.float64
    assert x.long().tolist() == [1, -2] and x.int().dtype is torch.int32
    assert x.to(torch.float32) is x
    assert torch.tensor([0, 3]).bool().tolist() == [False, True]
    z = torch.ones(2, requires_grad=True)
    w = z.double() * 3
    w.sum().backward()
    assert z.grad.dtype is torch.float32 and z.grad.tolist() == [3.0, 3.0]
    assert w.grad_fn.next_functions[0][0].name() == "ToCopyBackward0"


def test_devices_and_cuda_queries():
    assert isinstance(torch.cuda.is_available(), bool)
    assert torch.device("cuda:1").index == 1 and str(torch.device("cuda:1")) == "cuda:1"
    assert torch.ones(2).to("cpu").device.type == "cpu"
    if not torch.cuda.is_available():   # tests/test_devices.py covers the cuda device itself
        assert torch.cuda.device_count() == 0
        with pytest.raises(RuntimeError, match="^No CUDA GPUs are available"):
            torch.ones(2).to("cuda")
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda device type"):
        torch.device("tpu")


def test_pickle_and_deepcopy_of_leaves():
    x = torch.randn(3, requires_grad=True)
    y = pickle.loads(pickle.dumps(x))
    assert torch.equal(x.detach(), y.detach()) and y.requires_grad
    z = copy.deepcopy(x)
    assert z is not x and torch.equal(z.detach(), x.detach())
    with pytest.raises(RuntimeError, match="Only Tensors created explicitly by the user"):
        copy.deepcopy(x * 2)


def test_repr_dtype_suffixes():
    assert repr(torch.tensor([1.0, 2.0], dtype=torch.float64)) == "tensor([1., 2.], dtype=torch.float64)"
    assert repr(torch.tensor([1, 2], dtype=torch.int32)) == "tensor([1, 2], dtype=torch.int32)"
    assert repr(torch.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(torch.tensor(True)) == "tensor(True)"


PROMOTIONS = [
    (lambda: torch.tensor([1, 2]) * 2.5, torch.float32),
    (lambda: torch.tensor([1.0], dtype=torch.float32) + torch.tensor(2.0, dtype=torch.float64), torch.float32),
    (lambda: torch.tensor([1.0], dtype=torch.float32) + torch.tensor([2.0], dtype=torch.float64), torch.float64),
    (lambda: torch.tensor([1], dtype=torch.int32) + torch.tensor([2]), torch.int64),
    (lambda: torch.tensor([1], dtype=torch.int32) + 2, torch.int32),
    (lambda: torch.tensor([True]) + 1, torch.int64),
    (lambda: torch.tensor([3]) / torch.tensor([2]), torch.float32),
    (lambda: 2 ** torch.tensor([1, 2]), torch.int64),
    (lambda: torch.tensor([1, 2]) < 1.5, torch.bool),
    (lambda: torch.tensor([1, 2]).sum(), torch.int64),
    (lambda: torch.tensor([1.0], dtype=torch.float64) * np.float32(2), torch.float64),
]


@pytest.mark.parametrize("make, dtype", PROMOTIONS)
def test_pytorch_type_promotion(make, dtype):
    assert make().dtype is dtype


shape_pairs = st.lists(st.tuples(st.integers(1, 3), st.sampled_from(["both", "left1", "right1", "left_missing"])),
                       min_size=0, max_size=3)


def _broadcast_pair(spec):
    left, right = [], []
    for n, kind in spec:
        left.append(1 if kind == "left1" else n)
        right.append(1 if kind == "right1" else n)
    cut = sum(1 for _, kind in spec[:1] if kind == "left_missing")
    return tuple(left[cut:]), tuple(right)


@settings(max_examples=40, deadline=None)
@given(shape_pairs, st.sampled_from(["add", "mul", "sub", "div", "maximum"]))
def test_gradients_of_broadcast_binary_ops_have_their_input_shapes(spec, name):
    ls, rs = _broadcast_pair(spec)
    rng = np.random.default_rng(len(ls) * 7 + len(rs))
    a_np = rng.uniform(0.5, 2.0, ls)
    b_np = rng.uniform(0.5, 2.0, rs) + 3.0        # no ties for maximum, no zero divisors
    a = torch.tensor(a_np, requires_grad=True)
    b = torch.tensor(b_np, requires_grad=True)
    out = getattr(torch, name)(a, b)
    out.backward(torch.ones_like(out))
    assert a.grad.shape == ls and b.grad.shape == rs
    full = np.broadcast_shapes(ls, rs)
    d_a = {"add": np.ones(full), "sub": np.ones(full), "mul": np.broadcast_to(b_np, full),
           "div": np.broadcast_to(1 / b_np, full), "maximum": np.zeros(full)}[name]
    lead = len(full) - len(ls)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(ls) if n == 1 and full[lead + i] != 1)
    expected = np.sum(d_a, axis=axes, keepdims=True).reshape(ls)
    np.testing.assert_allclose(a.grad.numpy(), expected)


def test_narrow_numpy_integers_widen_on_copy_and_are_refused_without_one():
    small = np.array([200, 100], np.uint8)
    t = torch.tensor(small)
    assert t.dtype is torch.int32 and (t + 100).tolist() == [300, 200]      # no uint8 wrap-around
    assert torch.as_tensor(np.array([1, 2], np.int8)).dtype is torch.int32
    with pytest.raises(TypeError, match="can't convert np.ndarray of type uint8"):
        torch.from_numpy(small)
    with pytest.raises(RuntimeError, match="add: Python integer 1099511627776 out of bounds for int32"):
        torch.tensor([1], dtype=torch.int32) + 2 ** 40


def test_contiguous_copies_non_contiguous_tensors_into_row_major_order():
    a = torch.arange(12.0).view(3, 4)
    t = a.T
    assert not t.is_contiguous() and t.stride() == (1, 4)
    c = t.contiguous()
    assert c.is_contiguous() and c.stride() == (3, 1) and torch.equal(c, t)
    assert a.contiguous() is a


def test_max_with_dim_returns_torch_return_types_and_empty_data_is_float():
    result = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).max(0)
    values, indices = result
    assert result.values is values and indices.tolist() == [1, 1]
    assert repr(result) == ("torch.return_types.max(\nvalues=tensor([3., 4.]),\nindices=tensor([1, 1]))")
    assert repr(torch.tensor([[1.0, 0.0]]).min(1)).startswith("torch.return_types.min(")
    with pytest.raises(IndexError, match=r"max\(\): Expected reduction dim 0 to have non-zero size."):
        torch.zeros(0, 3).max(dim=0)
    assert torch.tensor([]).dtype is torch.float32 and repr(torch.tensor([]).sum()) == "tensor(0.)"


def test_cumsum_of_a_zero_dim_tensor_keeps_its_shape():
    x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y = x.cumsum(0)
    assert y.shape == () and y.item() == 0.5
    y.backward()
    assert x.grad.item() == 1.0


def test_indexing_with_arrays_gives_a_contiguous_copy_that_can_be_viewed():
    # found by the differential fuzz: NumPy's copy kept the indexed dimension innermost-first
    x = torch.tensor([[[0.5], [-1.5]]], dtype=torch.float64, requires_grad=True)
    y = x[:, :, torch.tensor([0, 0])]
    assert y.is_contiguous() and y.stride() == (4, 2, 1)
    y.view(4).mul(torch.arange(4.0, dtype=torch.float64)).sum().backward()
    assert y.view(4).tolist() == [0.5, 0.5, -1.5, -1.5] and x.grad.tolist() == [[[1.0], [5.0]]]


def test_mixed_integer_and_array_indices_place_dimensions_like_pytorch():
    x = torch.zeros(2, 3, 4)
    assert x[0, :, [1, 0]].shape == (3, 2)             # NumPy would give (2, 3)
    assert x[0, None, [1, 0]].shape == (1, 2, 4)
    assert x[0, ..., [1, 0]].shape == (3, 2)
    assert x[None, [1, 0], None, 1].shape == (1, 2, 1, 4)
    assert x[:, [0], ..., [0]].shape == (2, 1)          # an Ellipsis spanning no dims separates nothing
    t = torch.zeros(1, 2, 4)
    t[0, :, [3, 1, 0]] = torch.arange(6.0).reshape(2, 3)
    assert t[0, 1].tolist() == [5.0, 4.0, 0.0, 3.0]
    a = torch.arange(24.0).reshape(2, 3, 4).requires_grad_()
    (a[0, :, [1, 0]] * torch.arange(6.0).reshape(3, 2)).sum().backward()
    assert a.grad[0].tolist() == [[1.0, 0.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0], [5.0, 4.0, 0.0, 0.0]]
