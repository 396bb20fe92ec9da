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
        "Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding='same', bias=False)"
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
