"""Tensor manipulation beyond the op table (op_rows.py): Tensor.new_* factories, which tensors
share memory (diagonal is a view, repeat and roll copy), integer and bool inputs, one_hot's checks
in compiled replays, meshgrid's default indexing."""
import warnings

import numpy as np
import pytest

import fusegrad as fg

torch = pytest.importorskip("torch")


def test_new_factories_take_self_dtype_and_device_unless_told():
    x = fg.ones(2, 3, dtype=fg.float64)
    for made in (x.new_zeros(2, 3), x.new_zeros((2, 3)), x.new_ones([2, 3]), x.new_empty(2, 3),
                 x.new_full((2, 3), 7)):
        assert made.dtype is fg.float64 and made.shape == (2, 3) and made.device == x.device
        assert not made.requires_grad and made.is_leaf
    assert x.new_zeros(2).tolist() == [0.0, 0.0] and x.new_ones(()).shape == ()
    assert x.new_ones(2, dtype=fg.int64).tolist() == [1, 1]
    assert x.new_zeros(3, requires_grad=True).requires_grad
    # the fill value takes self's dtype (truncated for integers), as in PyTorch
    assert fg.tensor([1, 2]).new_full((2,), 3.7).tolist() == [3, 3]
    assert x.new_full((1,), 2, dtype=fg.float32).dtype is fg.float32


def test_new_tensor_copies_data_in_self_dtype():
    x = fg.ones(2, dtype=fg.float64)
    made = x.new_tensor([1, 2])
    assert made.dtype is fg.float64 and made.tolist() == [1.0, 2.0]
    assert x.new_tensor([1.5], dtype=fg.int64).tolist() == [1]
    source = fg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.warns(UserWarning, match="To copy construct from a tensor"):
        copied = x.new_tensor(source)
    assert copied.is_leaf and not copied.requires_grad and copied.dtype is fg.float64
    copied.add_(1)   # a copy: the source is untouched
    assert source.tolist() == [1.0, 2.0]
    assert x.new_tensor([1.0], requires_grad=True).requires_grad


@pytest.mark.parametrize("call", [lambda T, x: x.new_zeros(-1), lambda T, x: x.new_ones(2.5),
                                  lambda T, x: x.new_full(2, 3.0), lambda T, x: x.new_zeros()])
def test_new_factories_refuse_bad_sizes_like_torch(call):
    with pytest.raises(Exception) as theirs:
        call(torch, torch.ones(1))
    with pytest.raises(type(theirs.value)):
        call(fg, fg.ones(1))


def _aliasing(T, make, take):
    """take(T, x) for x = make(T); then x changes in place and the taken tensor too: the values of
    both afterwards."""
    x = make(T)
    part = take(T, x)
    x.add_(100)
    part.mul_(-1)
    return x.tolist(), part.tolist()


@pytest.mark.parametrize("make, take", [
    (lambda T: T.arange(12.0).reshape(3, 4), lambda T, x: x.diagonal(1)),                  # a view through reshape
    (lambda T: T.arange(12.0).reshape(4, 3).t(), lambda T, x: x.diagonal(-1)),             # the transpose's layout
    (lambda T: T.arange(24.0).reshape(2, 3, 4), lambda T, x: x.diagonal(0, 0, 2)),         # the diagonal op's view
    (lambda T: T.arange(15.0).reshape(3, 5)[:, 1:4], lambda T, x: x.diagonal()),
    (lambda T: T.arange(6.0).reshape(2, 3), lambda T, x: x.repeat(1, 1)),                  # copies, never views
    (lambda T: T.arange(3.0), lambda T, x: x.repeat_interleave(1)),
    (lambda T: T.arange(6.0).reshape(2, 3), lambda T, x: x.roll(0, 1)),
    (lambda T: T.arange(6.0).reshape(2, 3), lambda T, x: x.tile((1,))),
    (lambda T: T.arange(6.0).reshape(2, 3), lambda T, x: x.flip(())),
    (lambda T: T.arange(4.0).reshape(2, 2), lambda T, x: x.rot90(4)),
    (lambda T: T.arange(6.0).reshape(2, 3), lambda T, x: T.nn.functional.pad(x, (0, 0))),
])
def test_which_results_share_memory_with_the_input_as_in_torch(make, take):
    assert _aliasing(fg, make, take) == _aliasing(torch, make, take)


def test_writes_through_a_diagonal_view_reach_the_gradient():
    def run(T):
        w = T.arange(12.0, dtype=T.float64, requires_grad=True)
        y = w.reshape(3, 4) * 1
        y.diagonal(1).mul_(y.diagonal() + 2)
        y.square().sum().backward()
        return y.tolist(), w.grad.tolist()
    assert run(fg) == run(torch)


def test_a_write_with_history_through_the_diagonal_op_view():
    """A diagonal no reshape reaches (dims 0 and 2 of a contiguous 3-D tensor) is the diagonal op's
    view: a write through it gives the viewed tensor the values put on its diagonal (diagonal_put)."""
    def run(T):
        w = T.arange(24.0, dtype=T.float64, requires_grad=True)
        y = w.reshape(2, 3, 4) * 1
        y.diagonal(0, 0, 2).mul_(y.diagonal(1, 0, 2) + 1)
        (y * T.arange(24.0, dtype=T.float64).reshape(2, 3, 4)).square().sum().backward()
        return y.tolist(), w.grad.tolist()
    assert run(fg) == run(torch)
    def double_diagonal(x):
        x.diagonal(0, 0, 2).mul_(2)
        return x
    compiled = fg.compile(double_diagonal)
    for k in range(3):
        x, expected = fg.arange(24.0).reshape(2, 3, 4) + k, fg.arange(24.0).reshape(2, 3, 4) + k
        expected.diagonal(0, 0, 2).mul_(2)
        np.testing.assert_array_equal(compiled(x).numpy(), expected.numpy())
        np.testing.assert_array_equal(x.numpy(), expected.numpy())
    assert compiled.replays == 2


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
@pytest.mark.parametrize("fn", [
    lambda T, x: x.flip(0), lambda T, x: x.roll(1, 1), lambda T, x: x.rot90(), lambda T, x: x.repeat(2, 1),
    lambda T, x: x.tile((1, 2)), lambda T, x: x.repeat_interleave(2, 0), lambda T, x: x.diagonal(),
    lambda T, x: T.diag(x), lambda T, x: T.diag(x[0], 1), lambda T, x: T.diag_embed(x),
    lambda T, x: T.take_along_dim(x, T.tensor([[1], [0]]), 1), lambda T, x: T.meshgrid(x[0], x[1], indexing="xy"),
    lambda T, x: T.nn.functional.pad(x, (1, 1), value=1), lambda T, x: T.nn.functional.pad(x, (1, 2), "circular"),
    lambda T, x: T.nn.functional.pad(x, (1, 1), "reflect"), lambda T, x: T.nn.functional.pad(x, (2, 0), "replicate"),
    lambda T, x: x.trace(),
])
def test_integer_and_bool_inputs_match_torch(fn, dtype):
    data = np.array([[1, 0, 3], [4, 5, 0]]).astype(dtype)
    try:
        want = fn(torch, torch.tensor(data))
    except Exception as e:   # e.g. reflection padding and trace of bool
        with pytest.raises(type(e)):
            fn(fg, fg.tensor(data))
        return
    got = fn(fg, fg.tensor(data))
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert str(g.dtype) == str(w.dtype)
        np.testing.assert_array_equal(g.numpy(), w.numpy())


def test_repeat_interleave_with_a_tensor_of_repeats():
    assert fg.repeat_interleave(fg.tensor([1, 0, 2])).tolist() == [0, 2, 2]
    x = fg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = x.repeat_interleave(fg.tensor([2]), dim=0)   # one count for every row
    assert out.tolist() == [[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [3.0, 4.0]]
    out.sum().backward()
    assert x.grad.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    with pytest.raises(RuntimeError, match="repeats can not be negative"):
        x.repeat_interleave(fg.tensor([1, -1]), dim=1)
    with pytest.raises(NotImplementedError):
        x.repeat_interleave(fg.tensor([1.0, 2.0]), dim=1)
    with pytest.raises(RuntimeError, match="output_size=3 does not match"):
        x.repeat_interleave(2, dim=0, output_size=3)


def test_one_hot_checks_classes_in_compiled_replays_too():
    one_hot = fg.compile(lambda labels: fg.nn.functional.one_hot(labels, 3))
    for labels in ([0, 2, 1], [2, 2, 0]):
        assert one_hot(fg.tensor(labels)).tolist() == np.eye(3, dtype=np.int64)[labels].tolist()
    assert one_hot.replays == 1
    with pytest.raises(RuntimeError, match=r"^Class values must be smaller than num_classes\.$"):
        one_hot(fg.tensor([0, 3, 1]))
    with pytest.raises(RuntimeError, match=r"^Class values must be non-negative\.$"):
        one_hot(fg.tensor([0, -1, 1]))


def test_meshgrid_without_indexing_warns_and_uses_ij():
    x, y = fg.tensor([1.0, 2.0, 3.0]), fg.tensor([4.0, 5.0])
    with pytest.warns(UserWarning, match="it will be required to pass the indexing argument"):
        a, b = fg.meshgrid(x, y)
    assert a.shape == b.shape == (3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fg.meshgrid(x, indexing="xy")[0].tolist() == [1.0, 2.0, 3.0]


def test_flip_and_roll_take_dims_as_torch_does():
    x = fg.arange(6).reshape(2, 3)
    assert x.flip(0, 1).tolist() == x.flip((0, 1)).tolist() == fg.flip(x, [0, 1]).tolist() == [[5, 4, 3], [2, 1, 0]]
    assert x.roll((1,), 0).tolist() == [[3, 4, 5], [0, 1, 2]]
    assert fg.roll(x, shifts=-4).tolist() == [[4, 5, 0], [1, 2, 3]]
    assert fg.tensor(2.0).flip(0).item() == 2.0
