"""Tests for fusegrad.tracer.printing: exact strings, plus PyTorch itself as an oracle."""
import math

import numpy as np
import pytest

from fusegrad.tracer.printing import format_tensor, get_printoptions, printoptions, set_printoptions

_TORCH_NAMES = {"float32": "torch.float32", "float64": "torch.float64", "float16": "torch.float16",
                "int64": "torch.int64", "int32": "torch.int32", "int16": "torch.int16",
                "int8": "torch.int8", "uint8": "torch.uint8", "bool": "torch.bool"}


def fmt(a, *suffixes):
    a = np.asarray(a)
    return format_tensor(a, dtype_name=_TORCH_NAMES[a.dtype.name],
                         is_default_dtype=a.dtype.name in ("float32", "int64", "bool"),
                         suffixes=list(suffixes))


@pytest.fixture(autouse=True)
def _default_options():
    set_printoptions(profile="default")
    yield
    set_printoptions(profile="default")


# ---------------------------------------------------------------- torch-free, exact strings

def test_tutorial_scalar_and_matrices():
    assert fmt(np.float32(25.0).reshape(()), "grad_fn=<SumBackward0>") == "tensor(25., grad_fn=<SumBackward0>)"
    ones = np.ones((2, 3), np.float32)
    assert fmt(ones, "requires_grad=True") == (
        "tensor([[1., 1., 1.],\n        [1., 1., 1.]], requires_grad=True)")
    assert fmt(2 * ones, "grad_fn=<MulBackward0>") == (
        "tensor([[2., 2., 2.],\n        [2., 2., 2.]], grad_fn=<MulBackward0>)")


def test_tutorial_linspace_and_sin():
    a = np.linspace(0.0, 2.0 * math.pi, 25, dtype=np.float32)
    assert fmt(a, "requires_grad=True") == (
        "tensor([0.0000, 0.2618, 0.5236, 0.7854, 1.0472, 1.3090, 1.5708, 1.8326, 2.0944,\n"
        "        2.3562, 2.6180, 2.8798, 3.1416, 3.4034, 3.6652, 3.9270, 4.1888, 4.4506,\n"
        "        4.7124, 4.9742, 5.2360, 5.4978, 5.7596, 6.0214, 6.2832],\n"
        "       requires_grad=True)")
    assert fmt(np.sin(a), "grad_fn=<SinBackward0>") == (
        "tensor([ 0.0000e+00,  2.5882e-01,  5.0000e-01,  7.0711e-01,  8.6603e-01,\n"
        "         9.6593e-01,  1.0000e+00,  9.6593e-01,  8.6603e-01,  7.0711e-01,\n"
        "         5.0000e-01,  2.5882e-01, -8.7423e-08, -2.5882e-01, -5.0000e-01,\n"
        "        -7.0711e-01, -8.6603e-01, -9.6593e-01, -1.0000e+00, -9.6593e-01,\n"
        "        -8.6603e-01, -7.0711e-01, -5.0000e-01, -2.5882e-01,  1.7485e-07],\n"
        "       grad_fn=<SinBackward0>)")


def test_special_values_dtypes_and_empty():
    assert fmt(np.array([True, False])) == "tensor([ True, False])"
    assert fmt(np.array([1, -20, 3])) == "tensor([  1, -20,   3])"
    assert fmt(np.array([1, 2], np.int32)) == "tensor([1, 2], dtype=torch.int32)"
    assert fmt(np.array([1.0, 2.0, 3.0]), "requires_grad=True") == (
        "tensor([1., 2., 3.], dtype=torch.float64, requires_grad=True)")
    assert fmt(np.array([-0.0, 1.0], np.float32)) == "tensor([-0., 1.])"
    assert fmt(np.array([np.nan, np.inf, 1.5], np.float32)) == "tensor([   nan,    inf, 1.5000])"
    assert fmt(np.array([1e-5, 1.0], np.float32)) == "tensor([1.0000e-05, 1.0000e+00])"
    assert fmt(np.zeros(0, np.float32)) == "tensor([])"
    assert fmt(np.zeros((0, 3), np.float32)) == "tensor([], size=(0, 3))"
    assert fmt(np.zeros(0, np.int64)) == "tensor([], dtype=torch.int64)"  # empty: dtype always shown


def test_summarisation():
    assert fmt(np.arange(2000, dtype=np.float32)) == (
        "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n"
        "        1.9990e+03])")
    assert fmt(np.arange(1000)).count("...") == 0
    assert fmt(np.arange(1001)) == "tensor([   0,    1,    2,  ...,  998,  999, 1000])"


def test_printoptions():
    with printoptions(precision=2):
        assert fmt(np.array([1.12345], np.float32)) == "tensor([1.12])"
    assert fmt(np.array([1.12345], np.float32)) == "tensor([1.1235])"
    set_printoptions(threshold=5)
    assert fmt(np.arange(10)) == "tensor([0, 1, 2,  ..., 7, 8, 9])"
    set_printoptions(profile="short")
    assert get_printoptions() == dict(precision=2, threshold=1000, edgeitems=2, linewidth=80, sci_mode=None)
    set_printoptions(sci_mode=True)
    assert fmt(np.array([1.5], np.float32)) == "tensor([1.50e+00])"
    set_printoptions(profile="full")
    assert "..." not in fmt(np.arange(5000))


# ---------------------------------------------------------------- PyTorch as the oracle

def _oracle_arrays():
    rng = np.random.default_rng(1234)
    out = []
    for shape in [(), (1,), (7,), (30,), (4, 5), (2, 3, 4), (1100,), (40, 30), (12, 11, 10), (0,), (0, 3), (2, 0)]:
        for scale in [1e-5, 1e-2, 1.0, 3e3, 1e9]:
            out.append((rng.standard_normal(shape) * scale).astype(np.float32))
        out.append(np.round(rng.standard_normal(shape) * 50).astype(np.float32))
        out.append((rng.standard_normal(shape) * 10).astype(np.float64))
        out.append(rng.standard_normal(shape).astype(np.float16))
        out.append(rng.integers(-1000, 1000, shape).astype(np.int64))
        out.append(rng.integers(-100, 100, shape).astype(np.int32))
        out.append(rng.integers(0, 255, shape).astype(np.uint8))
        out.append(rng.integers(0, 2, shape).astype(bool))
    out += [np.array([np.nan, 1.0, -np.inf, -0.0], np.float32), np.array([np.nan, 2.5]),
            np.array([0.0, -0.0], np.float32), np.array([1e8, 1.0], np.float32), np.array(np.inf, np.float32)]
    return [np.asarray(a) for a in out]


_ARRAYS = _oracle_arrays()
_IDS = [f"{a.dtype}{list(a.shape)}#{i}" for i, a in enumerate(_ARRAYS)]


@pytest.mark.parametrize("a", _ARRAYS, ids=_IDS)
def test_matches_torch(a):
    torch = pytest.importorskip("torch")
    assert fmt(a) == repr(torch.from_numpy(a))
    if a.dtype.kind == "f":
        assert fmt(a, "requires_grad=True") == repr(torch.tensor(a, requires_grad=True))


@pytest.mark.parametrize("shape", [(), (25,), (3, 4), (1200,), (2, 700)])
def test_grad_fn_suffix_matches_torch(shape):
    torch = pytest.importorskip("torch")
    a = np.asarray(np.random.default_rng(7).standard_normal(shape) * 3).astype(np.float32)
    expected = repr(torch.from_numpy(a).requires_grad_().sin())
    assert fmt(np.sin(a), "grad_fn=<SinBackward0>") == expected


@pytest.mark.parametrize("opts", [dict(precision=2), dict(profile="short"), dict(sci_mode=True),
                                  dict(sci_mode=False), dict(edgeitems=0), dict(threshold=10, edgeitems=1),
                                  dict(linewidth=40), dict(precision=6, linewidth=120)])
def test_printoptions_match_torch(opts):
    torch = pytest.importorskip("torch")
    try:
        torch.set_printoptions(**opts)
        set_printoptions(**opts)
        for a in _ARRAYS[::7]:
            assert fmt(a) == repr(torch.from_numpy(a)), (opts, a.dtype, a.shape)
            if a.dtype.kind == "f":
                assert fmt(a, "requires_grad=True") == repr(torch.tensor(a, requires_grad=True))
    finally:
        torch.set_printoptions(profile="default")
