"""The layers of convolutional networks as modules: Conv2d, pooling, BatchNorm (running statistics,
momentum, eval), LayerNorm, Dropout, Embedding, ModuleDict, buffers and Module.to. The ops
underneath are checked row by row in test_ops.py; here the modules' state and modes are, against
PyTorch where it is importable and against hand-computed values otherwise."""
import numpy as np
import pytest

import fusegrad
from fusegrad import nn
from fusegrad.ir import ShapeError


def test_conv2d_module_shapes_parameters_and_repr():
    conv = nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2)
    assert tuple(conv.weight.shape) == (6, 2, 3, 2) and tuple(conv.bias.shape) == (6,)
    # kaiming_uniform_(a=sqrt(5)) and the bias both give bounds of 1/sqrt(fan_in), fan_in = 2 * 3 * 2
    bound = 1 / np.sqrt(12)
    assert np.abs(conv.weight.detach().numpy()).max() <= bound and np.abs(conv.bias.detach().numpy()).max() <= bound
    assert tuple(conv(fusegrad.rand(3, 4, 9, 8)).shape) == (3, 6, 5, 5)
    assert repr(conv) == "Conv2d(4, 6, kernel_size=(3, 2), stride=(2, 2), padding=(1, 1), groups=2)"
    assert repr(nn.Conv2d(1, 2, 3, padding="same", bias=False)) == \
        "Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=same, bias=False)"   # as PyTorch prints it
    with pytest.raises(ValueError, match="^in_channels must be divisible by groups$"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="^padding='same' is not supported for strided convolutions$"):
        nn.Conv2d(3, 6, 3, stride=2, padding="same")


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_of_an_empty_batch_eager_and_compiled(stride):
    """A batch of 0 images gives an empty output and zero weight and bias gradients, eagerly (NumPy
    impls, then the window kernels once the call repeats) and compiled, as in PyTorch."""
    def step(x, w, b):
        y = nn.functional.max_pool2d(nn.functional.relu(nn.functional.conv2d(x, w, b, stride=stride, padding=1)), 2)
        y.sum().backward()
        return y

    compiled = fusegrad.compile(step, fullgraph=True)
    want = (0, 4, 2, 2) if stride == 2 else (0, 4, 4, 4)
    for f in [step] * 10 + [compiled] * 2:
        x = fusegrad.zeros(0, 3, 8, 8, requires_grad=True)
        w = fusegrad.ones(4, 3, 3, 3, requires_grad=True)
        b = fusegrad.ones(4, requires_grad=True)
        assert tuple(f(x, w, b).shape) == want
        assert tuple(x.grad.shape) == (0, 3, 8, 8)
        np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 3, 3, 3), np.float32))
        np.testing.assert_array_equal(b.grad.numpy(), np.zeros(4, np.float32))


def test_conv2d_of_an_input_without_channels_is_refused():
    # PyTorch returns a (2, 0, 6, 6) tensor here, which has none of the weight's 4 output channels
    with pytest.raises(ShapeError, match=r"^conv2d: expected an input with at least one channel, got "
                                                  r"input of shape \[2, 0, 8, 8\]"):
        nn.functional.conv2d(fusegrad.ones(2, 0, 8, 8), fusegrad.ones(4, 0, 3, 3))


def test_pooling_modules():
    x = fusegrad.tensor(np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4))
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x).numpy(), [[[[5, 7], [13, 15]], [[21, 23], [29, 31]]]])
    np.testing.assert_array_equal(nn.AvgPool2d(2)(x).numpy(), [[[[2.5, 4.5], [10.5, 12.5]],
                                                                 [[18.5, 20.5], [26.5, 28.5]]]])
    np.testing.assert_array_equal(nn.AdaptiveAvgPool2d((1, 1))(x).numpy(), [[[[7.5]], [[23.5]]]])
    out, indices = nn.MaxPool2d(2, return_indices=True)(x)
    np.testing.assert_array_equal(indices.numpy(), [[[[5, 7], [13, 15]], [[5, 7], [13, 15]]]])
    assert repr(nn.MaxPool2d(3, 2, 1)) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"


def test_max_pool_gradient_goes_to_the_argmax_of_each_window():
    # overlapping windows (kernel 3, stride 1) share maxima: their gradients add up at that cell
    x = fusegrad.tensor([[[[1., 2., 0.], [0., 9., 0.], [3., 0., 4.]]]], requires_grad=True)
    nn.functional.max_pool2d(x, 2, stride=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[0, 0, 0], [0, 4, 0], [0, 0, 0]]]])


@pytest.mark.parametrize("case", ["ties", "nan", "minus_inf_with_padding", "ties_tiling", "nan_tiling"])
def test_max_pool_ties_nan_and_infinities_match_torch(case):
    torch = pytest.importorskip("torch")
    x = np.array([[[[1., 3., 3., 0.], [3., 2., 0., 0.], [5., 5., 1., -1.], [5., 4., -1., -1.]]]])
    if case.startswith("nan"):
        x[0, 0, 1, 0] = x[0, 0, 1, 1] = x[0, 0, 3, 3] = np.nan   # windows of two NaN: the last is the argmax
    if case == "minus_inf_with_padding":
        x[0, 0, :2, :2] = -np.inf
    kw = {"minus_inf_with_padding": dict(kernel_size=3, stride=1, padding=1), "ties_tiling": dict(kernel_size=2),
          "nan_tiling": dict(kernel_size=2)}.get(case, dict(kernel_size=2, stride=1))
    seed = np.random.default_rng(0).standard_normal({"minus_inf_with_padding": (1, 1, 4, 4), "ties_tiling": (1, 1, 2, 2),
                                                     "nan_tiling": (1, 1, 2, 2)}.get(case, (1, 1, 3, 3)))
    results = []
    for lib in (fusegrad, torch):
        t = lib.tensor(x, requires_grad=True)
        out, indices = lib.nn.functional.max_pool2d(t, return_indices=True, **kw)
        (out * lib.tensor(seed)).sum().backward()
        results.append((out.detach().numpy(), indices.numpy(), t.grad.numpy()))
    (out, indices, grad), (their_out, their_indices, their_grad) = results
    np.testing.assert_array_equal(out, their_out)
    np.testing.assert_array_equal(indices, their_indices)
    np.testing.assert_allclose(grad, their_grad, rtol=1e-12, atol=0)   # cells shared by windows: sums


def _batch_norm_run(lib, cls, shape, steps=3, **kw):
    """Train-mode steps then one eval step; outputs, input gradients and the state dict after each."""
    rng = np.random.default_rng(0)
    m = getattr(lib.nn, cls)(3, **kw).double()
    record = []
    for _ in range(steps):
        x = lib.tensor(rng.standard_normal(shape) * 2 + 1, requires_grad=True)
        out = m(x)
        (out * out * out).sum().backward()
        record += [out.detach().numpy(), x.grad.numpy()]
        record += [v.numpy().copy() for v in m.state_dict().values()]
    m.eval()
    x = lib.tensor(rng.standard_normal(shape))
    record.append(m(x).detach().numpy())
    if m.weight is not None:
        record += [m.weight.grad.numpy(), m.bias.grad.numpy()]
    return record, list(m.state_dict())


@pytest.mark.parametrize("cls, shape, kw", [
    ("BatchNorm2d", (4, 3, 3, 2), {}),
    ("BatchNorm2d", (2, 3, 2, 2), {"momentum": None}),
    ("BatchNorm1d", (5, 3), {"affine": False}),
    ("BatchNorm1d", (4, 3, 2), {"track_running_stats": False}),
    ("BatchNorm2d", (2, 3, 2, 2), {"momentum": 0.5, "eps": 1e-3}),
    ("BatchNorm2d", (0, 3, 3, 2), {}),   # an empty batch: statistics untouched, num_batches_tracked counts it
    ("BatchNorm1d", (0, 3), {"momentum": None}),
    # instance norm: per-sample statistics; running ones where tracked (num_batches_tracked stays 0, as in PyTorch)
    ("InstanceNorm1d", (4, 3, 5), {}),
    ("InstanceNorm1d", (2, 3, 4), {"affine": True, "track_running_stats": True}),
    ("InstanceNorm2d", (2, 3, 3, 2), {"track_running_stats": True, "momentum": 0.3}),
    ("InstanceNorm2d", (2, 3, 2, 2), {"affine": True, "momentum": None, "track_running_stats": True}),
])
def test_batch_norm_matches_torch_in_training_and_eval(cls, shape, kw):
    torch = pytest.importorskip("torch")
    ours, our_keys = _batch_norm_run(fusegrad, cls, shape, **kw)
    theirs, their_keys = _batch_norm_run(torch, cls, shape, **kw)
    assert our_keys == their_keys
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_batch_norm_running_statistics_by_hand():
    bn = nn.BatchNorm1d(2, momentum=0.25)
    x = fusegrad.tensor([[1., 10.], [3., 30.], [5., 20.]])
    bn(x)
    # mean [3, 20]; unbiased variance [4, 100]; running = 0.75 * old + 0.25 * batch
    np.testing.assert_allclose(bn.running_mean.numpy(), [0.75, 5.0])
    np.testing.assert_allclose(bn.running_var.numpy(), [0.75 + 1.0, 0.75 + 25.0])
    assert bn.num_batches_tracked.item() == 1 and bn.num_batches_tracked.dtype == fusegrad.int64
    assert not bn.running_mean.requires_grad
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert [name for name, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    bn.eval()
    out = bn(fusegrad.tensor([[0.75, 5.0]]))   # the running mean normalises to zero
    np.testing.assert_allclose(out.detach().numpy(), [[0.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match=r"^expected 2D or 3D input \(got 4D input\)$"):
        bn(fusegrad.ones(2, 2, 1, 1))


def test_layer_norm_module():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    ours, theirs = nn.LayerNorm((3, 4)).double(), torch.nn.LayerNorm((3, 4)).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    np.testing.assert_allclose(ours(fusegrad.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    assert nn.LayerNorm(4, bias=False).bias is None
    assert list(nn.LayerNorm(4, elementwise_affine=False).state_dict()) == []


def test_dropout_train_eval_and_seed():
    drop = nn.Dropout(0.5)
    x = fusegrad.ones(1000)
    fusegrad.manual_seed(7)
    first = drop(x).numpy()
    fusegrad.manual_seed(7)
    np.testing.assert_array_equal(drop(x).numpy(), first)   # the same seed drops the same elements
    assert set(np.unique(first)) == {0.0, 2.0} and 400 < (first == 0).sum() < 600
    drop.eval()
    assert drop(x) is x


def test_embedding_module_and_padding_idx():
    torch = pytest.importorskip("torch")
    tokens = [[0, 2, 1], [2, 2, 3]]
    ours = nn.Embedding(4, 3, padding_idx=2)
    theirs = torch.nn.Embedding(4, 3, padding_idx=2)
    np.testing.assert_array_equal(ours.weight.detach().numpy()[2], np.zeros(3))
    theirs.load_state_dict({"weight": torch.tensor(ours.weight.detach().numpy())})
    out_ours, out_theirs = ours(fusegrad.tensor(tokens)), theirs(torch.tensor(tokens))
    assert out_ours.grad_fn.name() == type(out_theirs.grad_fn).__name__ == "EmbeddingBackward0"
    seed = np.random.default_rng(2).standard_normal((2, 3, 3)).astype(np.float32)
    (out_ours * fusegrad.tensor(seed)).sum().backward()
    (out_theirs * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ours.weight.grad.numpy()[2], np.zeros(3))   # the padding row learns nothing
    assert repr(ours) == "Embedding(4, 3, padding_idx=2)"
    with pytest.raises(RuntimeError, match="'indices' to have one of the following scalar types: Long, Int"):
        ours(fusegrad.tensor([0.0]))


def test_module_dict():
    layers = nn.ModuleDict({"conv": nn.Conv2d(1, 2, 3), "pool": nn.MaxPool2d(2)})
    layers["act"] = nn.ReLU()
    assert list(layers) == ["conv", "pool", "act"] and len(layers) == 3 and "pool" in layers
    assert [name for name, _ in layers.named_parameters()] == ["conv.weight", "conv.bias"]
    assert isinstance(layers.pop("act"), nn.ReLU) and list(layers.keys()) == ["conv", "pool"]
    layers.update([("flat", nn.Flatten())])
    assert [type(m).__name__ for m in layers.values()] == ["Conv2d", "MaxPool2d", "Flatten"]


def test_buffers_follow_module_to_and_state_dict():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2)
            self.register_buffer("scale", fusegrad.ones(2))
            self.register_buffer("scratch", fusegrad.zeros(2), persistent=False)

    net = Net().to(fusegrad.float64)
    assert net.conv.weight.dtype == fusegrad.float64 and net.bn.running_mean.dtype == fusegrad.float64
    assert net.scale.dtype == fusegrad.float64
    assert net.bn.num_batches_tracked.dtype == fusegrad.int64   # integer buffers keep their type
    assert list(net.state_dict()) == ["scale", "conv.weight", "conv.bias", "bn.weight", "bn.bias",
                                      "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert net.to("cpu") is net


# ----------------------------------------------------------------------------- conv1d, pooling 1d, group/instance
# norm, attention, upsampling modules


def _torch_twin(torch, ours, theirs):
    """Give the torch module `theirs` the parameters and buffers of `ours` (the same names)."""
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})


def _outputs_and_gradients(lib, module, arrays, **kw):
    """The module's floating outputs on `arrays`, then the gradients of a weighted sum of them with
    respect to the inputs and the parameters."""
    inputs = [lib.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    outs = module(*inputs, **kw)
    outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o is not None]
    rng = np.random.default_rng(3)
    sum(((o * lib.tensor(rng.standard_normal(tuple(o.shape)))).sum() for o in outs)).backward()
    return ([o.detach().numpy() for o in outs] + [x.grad.numpy() for x in inputs if x.requires_grad]
            + [p.grad.numpy() for p in module.parameters()])


def _assert_matches_torch(torch, ours, theirs, arrays, **kw):
    mine = _outputs_and_gradients(fusegrad, ours, arrays, **{k: fusegrad.tensor(v) if isinstance(v, np.ndarray)
                                                             else v for k, v in kw.items()})
    want = _outputs_and_gradients(torch, theirs, arrays, **{k: torch.tensor(v) if isinstance(v, np.ndarray)
                                                            else v for k, v in kw.items()})
    assert len(mine) == len(want)
    for a, b in zip(mine, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_conv1d_module_matches_torch():
    torch = pytest.importorskip("torch")
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2).double()
    assert tuple(conv.weight.shape) == (6, 2, 3) and tuple(conv.bias.shape) == (6,)
    bound = 1 / np.sqrt(2 * 3)   # kaiming_uniform_(a=sqrt(5)) and the bias: 1/sqrt(fan_in)
    assert np.abs(conv.weight.detach().numpy()).max() <= bound and np.abs(conv.bias.detach().numpy()).max() <= bound
    assert conv.weight.detach().numpy().std() > bound / 4   # spread over the range, not all zero
    theirs = torch.nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2).double()
    assert repr(conv) == repr(theirs) == "Conv1d(4, 6, kernel_size=(3,), stride=(2,), padding=(1,), groups=2)"
    _torch_twin(torch, conv, theirs)
    _assert_matches_torch(torch, conv, theirs, [np.random.default_rng(0).standard_normal((2, 4, 9))])
    same = nn.Conv1d(3, 2, 4, padding="same", dilation=2, bias=False)
    assert repr(same) == repr(torch.nn.Conv1d(3, 2, 4, padding="same", dilation=2, bias=False))
    assert tuple(same(fusegrad.ones(3, 7)).shape) == (2, 7)   # unbatched
    with pytest.raises(ValueError, match="^padding='same' is not supported for strided convolutions$"):
        nn.Conv1d(3, 6, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="^out_channels must be divisible by groups$"):
        nn.Conv1d(4, 3, 3, groups=2)


def test_pooling_1d_modules_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 9))
    for make in (lambda T: T.nn.MaxPool1d(3, 2, 1), lambda T: T.nn.MaxPool1d(2, ceil_mode=True, dilation=2),
                 lambda T: T.nn.AvgPool1d(3, 2, 1, count_include_pad=False),
                 lambda T: T.nn.AvgPool1d(4, ceil_mode=True),
                 lambda T: T.nn.AdaptiveAvgPool1d(4)):
        ours, theirs = make(fusegrad), make(torch)
        assert repr(ours) == repr(theirs)
        _assert_matches_torch(torch, ours, theirs, [x])
    out, indices = nn.MaxPool1d(2, return_indices=True)(fusegrad.tensor([[[1., 3., 2., 0., 5.]]]))
    np.testing.assert_array_equal(out.numpy(), [[[3., 2.]]])
    np.testing.assert_array_equal(indices.numpy(), [[[1, 2]]])
    assert indices.dtype == fusegrad.int64


@pytest.mark.parametrize("kw", [{}, {"affine": False}, {"bias": False, "eps": 1e-3}])
def test_group_norm_module_matches_torch(kw):
    torch = pytest.importorskip("torch")
    ours, theirs = nn.GroupNorm(2, 6, **kw).double(), torch.nn.GroupNorm(2, 6, **kw).double()
    assert repr(ours) == repr(theirs)
    if ours.weight is not None:   # ones and zeros, as PyTorch initialises them
        np.testing.assert_array_equal(ours.weight.detach().numpy(), np.ones(6))
        ours.weight.data.copy_(fusegrad.tensor(np.linspace(0.5, 2.0, 6)))
    _torch_twin(torch, ours, theirs)
    for shape in [(2, 6, 5), (3, 6, 2, 2), (4, 6)]:
        _assert_matches_torch(torch, ours, theirs, [np.random.default_rng(2).standard_normal(shape) * 3 + 1])
    with pytest.raises(ValueError, match=r"^num_channels \(6\) must be divisible by num_groups \(4\)$"):
        nn.GroupNorm(4, 6)


def test_instance_norm_module_inputs_and_repr():
    torch = pytest.importorskip("torch")
    assert repr(nn.InstanceNorm1d(3)) == repr(torch.nn.InstanceNorm1d(3)) == \
        "InstanceNorm1d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=False)"
    assert list(nn.InstanceNorm2d(3).state_dict()) == []
    x = np.random.default_rng(4).standard_normal((3, 5))   # unbatched (C, L)
    np.testing.assert_allclose(nn.InstanceNorm1d(3)(fusegrad.tensor(x)).numpy(),
                               torch.nn.InstanceNorm1d(3)(torch.tensor(x)).numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"^expected 3D or 4D input \(got 2D input\)$"):
        nn.InstanceNorm2d(3)(fusegrad.ones(3, 4))
    with pytest.raises(ValueError, match=r"^expected input's size at dim=1 to match num_features \(4\), but got: 3\.$"):
        nn.InstanceNorm1d(4, affine=True)(fusegrad.ones(2, 3, 5))
    with pytest.warns(UserWarning, match="^input's size at dim=1 does not match num_features"):
        nn.InstanceNorm1d(4)(fusegrad.ones(2, 3, 5))
    with pytest.raises(ValueError, match=r"^Expected more than 1 spatial element when training, got input size "):
        nn.InstanceNorm1d(3)(fusegrad.ones(2, 3, 1))


_MHA_CASES = [
    ({}, {}),
    ({"batch_first": True}, {"average_attn_weights": False}),
    ({}, {"key_padding_mask": np.array([[False, True, False, True], [False, False, False, True]]),
          "attn_mask": np.array([[False, True, False, False], [False, False, True, False],
                                 [True, False, False, False]])}),
    ({"batch_first": True}, {"need_weights": False, "key_padding_mask": np.array([[False, True, False, True],
                                                                                 [True, True, False, False]])}),
    ({}, {"attn_mask": np.linspace(-1, 1, 12).reshape(3, 4)}),
    ({"kdim": 3, "vdim": 5, "bias": False}, {}),
    ({"add_bias_kv": True, "add_zero_attn": True}, {"key_padding_mask": np.array([[False, True, False, True],
                                                                                 [False, False, False, True]])}),
]


@pytest.mark.parametrize("kw, call", _MHA_CASES)
def test_multihead_attention_loads_a_torch_state_dict_and_matches_it(kw, call):
    """The same parameter names and shapes as PyTorch's, so its state_dict loads; then outputs,
    attention weights and all gradients agree (self-attention is not needed: query, key and value
    differ, key and value of another length)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(4, 2, **kw).double()
    ours = nn.MultiheadAttention(4, 2, **kw).double()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    ours.load_state_dict({k: fusegrad.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(5)
    first = kw.get("batch_first", False)
    shape = (lambda length, dim: (2, length, dim)) if first else (lambda length, dim: (length, 2, dim))
    arrays = [rng.standard_normal(shape(3, 4)), rng.standard_normal(shape(4, kw.get("kdim", 4))),
              rng.standard_normal(shape(4, kw.get("vdim", 4)))]
    _assert_matches_torch(torch, ours, theirs, arrays, **call)


def test_multihead_attention_init_repr_and_dropout():
    torch = pytest.importorskip("torch")
    fusegrad.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, dropout=0.5)
    assert repr(mha) == repr(torch.nn.MultiheadAttention(8, 2)) == (
        "MultiheadAttention(\n  (out_proj): NonDynamicallyQuantizableLinear(in_features=8, out_features=8, "
        "bias=True)\n)")
    bound = np.sqrt(6 / (8 + 24))   # xavier_uniform_ of the (24, 8) in_proj_weight
    w = mha.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= bound and w.std() > bound / 4
    np.testing.assert_array_equal(mha.in_proj_bias.detach().numpy(), np.zeros(24))
    np.testing.assert_array_equal(mha.out_proj.bias.detach().numpy(), np.zeros(8))
    assert [name for name, _ in mha.named_parameters()] == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                                                            "out_proj.bias"]
    x = fusegrad.randn(5, 3, 8)
    _, weights = mha(x, x, x, average_attn_weights=False)
    kept = weights.detach().numpy()   # dropped weights are 0, kept ones scaled by 2: rows sum to 2 on average
    assert (kept == 0).mean() > 0.3 and abs(kept.sum(-1).mean() - 1.0) < 0.5
    mha.eval()
    _, weights = mha(x, x, x)
    np.testing.assert_allclose(weights.detach().numpy().sum(-1), np.ones((3, 5)), rtol=1e-6)
    with pytest.raises(AssertionError, match="^embed_dim must be divisible by num_heads$"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(RuntimeError, match="^Need attn_mask if specifying the is_causal hint"):
        mha(x, x, x, is_causal=True)


def test_upsample_and_pixel_shuffle_modules_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(6).standard_normal((1, 4, 3, 5))
    for make in (lambda T: T.nn.Upsample(scale_factor=2), lambda T: T.nn.Upsample(size=(4, 7)),
                 lambda T: T.nn.Upsample(scale_factor=(1.5, 0.6), mode="nearest-exact"),
                 lambda T: T.nn.Upsample(size=2, mode="area"), lambda T: T.nn.PixelShuffle(2)):
        ours, theirs = make(fusegrad), make(torch)
        assert repr(ours) == repr(theirs)
        _assert_matches_torch(torch, ours, theirs, [x])
    assert repr(nn.PixelUnshuffle(3)) == repr(torch.nn.PixelUnshuffle(3))
    with pytest.raises(NotImplementedError, match="mode='bilinear' is not implemented"):
        nn.Upsample(scale_factor=2, mode="bilinear")(fusegrad.tensor(x))
