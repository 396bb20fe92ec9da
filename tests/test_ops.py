"""Every check, driven by every row of the op table in `op_rows.py`.

1. forward against the NumPy reference, in float32 and float64, with the result's dtype and shape;
2. gradcheck in float64 for differentiable rows, 3. gradgradcheck for second-order rows;
4. PyTorch as an oracle (when importable): values, dtypes, requires_grad and first-order
   gradients on the same inputs, and 5. grad_fn names, with the accepted differences listed below;
6. error rows: exact exception type and message;
7. compiled against eager: each row's first sample as a training step under fusegrad.compile;
8. special inputs against PyTorch: NaN, inf, float16 and empty tensors for every row where they
   apply. PyTorch decides what "apply" means: where it refuses an input, fusegrad must raise the
   same exception type; otherwise values and gradients must match, NaN for NaN.
"""
import re
import warnings
import zlib

import numpy as np
import pytest

import fusegrad
from fusegrad.autograd import gradcheck, gradgradcheck

from op_rows import ERROR_ROWS, ROWS

FLOATS = ("float32", "float64")

# grad_fn names that differ from PyTorch's on purpose: row name -> (fusegrad's name, why).
_MATMUL = ("MatmulBackward0", "fusegrad records one matmul node; PyTorch's matmul is a composite for these "
           "ranks and reports its last reshape/squeeze/clone (SqueezeBackward4, UnsafeViewBackward0, ...)")
_EINSUM_PATH = "einsum is a composite in both libraries, whose last op depends on the contraction path each takes"
GRAD_FN_DIFFERENCES = {
    "einsum_ellipsis_broadcast": ("PermuteBackward0", _EINSUM_PATH),
    "einsum_diagonal": ("DiagonalBackward0", _EINSUM_PATH),
    "einsum_outer": ("ViewBackward0", _EINSUM_PATH),
    "einsum_permute_sum": ("PermuteBackward0", _EINSUM_PATH),
    "matmul_1d_2d": _MATMUL,
    "matmul_3d_1d": _MATMUL,
    "matmul_3d_broadcast": _MATMUL,
    "inner": ("DotBackward0", "PyTorch's inner of two vectors is a composite reporting ViewBackward0; fusegrad "
              "records the dot product it is"),
    "rdiv_scalar": ("DivBackward0", "PyTorch computes 4 / x as x.reciprocal() * 4 (MulBackward0); fusegrad "
                    "records one div with the same gradient"),
    "scaled_dot_product_attention_gqa": (
        "UnsafeViewBackward0", "PyTorch sends 4-D inputs to its fused CPU flash-attention kernel "
        "(ScaledDotProductFlashAttentionForCpuBackward0); fusegrad's composite is PyTorch's math path, the one "
        "it takes for other ranks and with dropout, and is named as that path's result"),
}

# Rows whose PyTorch backward rounds a constant to float32 even in float64: their float64 gradients
# agree with PyTorch's only to float32's precision (gradcheck holds fusegrad's to float64's). Row name
# -> why.
TORCH_FLOAT32_CONSTANT = dict(rtol=1e-7, atol=1e-11)
_ONE_SIXTH = "PyTorch's hardsigmoid backward multiplies by 1.0f / 6.0f, a float32 constant, in float64 too"
TORCH_FLOAT32_GRADIENTS = {
    "hardsigmoid": _ONE_SIXTH,
    "hardsigmoid_": _ONE_SIXTH,
    "celu": "PyTorch's CeluBackward0 scales by 1.0 / alpha.toFloat(): alpha rounded to float32 (0.7 is not one)",
}

# Rows whose check fails on a known fusegrad bug: (check, row name) -> reason. Strict xfails.
KNOWN_BUGS = {}


def _shape_id(shapes):
    return "&".join("(" + ",".join(map(str, s)) + ")" for s in shapes)


def _double(row):   # finite differences need every floating input in float64
    return row.dtypes is None or all(d == "float64" for d in row.dtypes if d.startswith("float"))


def cases(check, keep=lambda row: True, both_floats=False):
    """One case per (row, sample) -- and per float dtype for rows without fixed dtypes when
    `both_floats` -- marked as a strict xfail where KNOWN_BUGS lists (check, row)."""
    out = []
    for row in ROWS:
        if not keep(row):
            continue
        reason = KNOWN_BUGS.get((check, row.name))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        for shapes in row.samples:
            for dt in (FLOATS if both_floats and row.dtypes is None else (None,)):
                ident = f"{row.name}-{_shape_id(shapes)}" + (f"-{dt}" if dt else "")
                out.append(pytest.param(row, shapes, dt, id=ident, marks=marks))
    return out


# ----------------------------------------------------------------------------- inputs and outputs


def input_arrays(row, shapes, dtype, draw=0):
    """The sample's inputs as NumPy arrays: the same values for every check and both libraries
    (another `draw` gives other values from the same domains)."""
    rng = np.random.default_rng(zlib.crc32(f"{row.name}{shapes}{draw or ''}".encode()))
    arrays = []
    for i, shape in enumerate(shapes):
        values = np.asarray(row.domain_of(i)(rng, shape), np.float64)
        arrays.append(values.astype(row.dtypes[i] if row.dtypes else dtype))
    return arrays


def make_inputs(lib, arrays, row):
    return [lib.tensor(a, requires_grad=row.differentiable and a.dtype.kind == "f") for a in arrays]


def flat(outputs):
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in flat(o)]
    return [outputs]


def expected_dtypes(row, dtype, count):
    want = row.out_dtype if isinstance(row.out_dtype, tuple) else (row.out_dtype,) * count
    return [w or dtype for w in want]


def float_outputs(row):
    return lambda *xs: tuple(o for o in flat(row.fn(fusegrad, *xs)) if o.is_floating_point())


def _tolerance(dtype_name, row):
    if dtype_name == "float16":   # both round each op to float16: a few units in its last place
        return dict(rtol=4e-3, atol=4e-3)
    return dict(rtol=row.rtol32, atol=row.atol32) if dtype_name == "float32" else dict(rtol=1e-10, atol=1e-12)


# gradients pass through the narrowest float type among inputs and seeds (float32 + float64 0-dim
# is float32); their tolerance follows it
_GRAD_TOLERANCE = {"float16": dict(rtol=1e-2, atol=1e-2), "float32": dict(rtol=1e-4, atol=1e-5),
                   "float64": dict(rtol=1e-9, atol=1e-11)}


# ----------------------------------------------------------------------------- 1. forward


@pytest.mark.parametrize("row, shapes, dtype", cases("forward", both_floats=True))
def test_forward_matches_numpy(row, shapes, dtype):
    arrays = input_arrays(row, shapes, dtype)
    with warnings.catch_warnings():   # PyTorch computes inf/nan silently; NumPy warnings must not leak
        warnings.simplefilter("error", RuntimeWarning)
        outs = flat(row.fn(fusegrad, *make_inputs(fusegrad, arrays, row)))
    with np.errstate(all="ignore"):
        refs = flat(row.ref(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]))
    assert len(outs) == len(refs)
    for out, ref, want in zip(outs, refs, expected_dtypes(row, dtype, len(outs))):
        assert isinstance(out, fusegrad.Tensor)
        assert out.dtype.name == want
        assert tuple(out.shape) == np.shape(ref)
        got = out.detach().numpy()
        assert got.dtype == np.dtype(want)
        if want in FLOATS:
            np.testing.assert_allclose(got, ref, **_tolerance(want, row))
            if row.differentiable:
                assert out.requires_grad
        else:
            np.testing.assert_array_equal(got, ref)
            assert not out.requires_grad


# ----------------------------------------------------------------------------- 2, 3. finite differences


@pytest.mark.parametrize("row, shapes, dtype", cases("gradcheck", lambda r: r.differentiable and _double(r)))
def test_gradcheck(row, shapes, dtype):
    inputs = make_inputs(fusegrad, input_arrays(row, shapes, "float64"), row)
    assert gradcheck(float_outputs(row), inputs)


@pytest.mark.parametrize("row, shapes, dtype",
                         cases("gradgradcheck", lambda r: r.differentiable and r.second_order and _double(r)))
def test_gradgradcheck(row, shapes, dtype):
    inputs = make_inputs(fusegrad, input_arrays(row, shapes, "float64"), row)
    assert gradgradcheck(float_outputs(row), inputs)


# ----------------------------------------------------------------------------- 4. PyTorch oracle


def _torch_dtype_name(t):
    return str(t.dtype).removeprefix("torch.")


def assert_matches_torch(torch, row, arrays):
    """fusegrad and PyTorch give the same outputs (dtype, shape, requires_grad, values) and the same
    first-order gradients for `row` on `arrays`."""
    ours_in, theirs_in = make_inputs(fusegrad, arrays, row), make_inputs(torch, arrays, row)
    ours, theirs = flat(row.fn(fusegrad, *ours_in)), flat(row.fn(torch, *theirs_in))
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        assert o.dtype.name == _torch_dtype_name(t)
        assert tuple(o.shape) == tuple(t.shape)
        assert o.requires_grad == t.requires_grad
        want = t.detach().numpy()
        if want.dtype.kind == "f":
            np.testing.assert_allclose(o.detach().numpy(), want, equal_nan=True, **_tolerance(want.dtype.name, row))
        else:
            np.testing.assert_array_equal(o.detach().numpy(), want)
    if not row.differentiable:
        return
    rng = np.random.default_rng(1)
    pairs = [(o, t) for o, t in zip(ours, theirs) if t.requires_grad]
    seeds = [rng.standard_normal(tuple(t.shape)).astype(t.detach().numpy().dtype) for _, t in pairs]
    wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    ours_g = fusegrad.autograd.grad([o for o, _ in pairs], [ours_in[i] for i in wrt],
                                    grad_outputs=[fusegrad.tensor(s) for s in seeds], allow_unused=True)
    theirs_g = torch.autograd.grad([t for _, t in pairs], [theirs_in[i] for i in wrt],
                                   grad_outputs=[torch.tensor(s) for s in seeds], allow_unused=True)
    narrowest = min((a.dtype for a in arrays + seeds if a.dtype.kind == "f"), key=lambda d: d.itemsize)
    tolerance = _GRAD_TOLERANCE[narrowest.name]
    if narrowest.name == "float64" and row.name in TORCH_FLOAT32_GRADIENTS:
        tolerance = TORCH_FLOAT32_CONSTANT
    for i, go, gt in zip(wrt, ours_g, theirs_g):
        zeros = np.zeros(arrays[i].shape, arrays[i].dtype)
        go = zeros if go is None else go.numpy()
        gt = zeros if gt is None else gt.numpy()
        assert go.dtype == gt.dtype and go.shape == gt.shape
        np.testing.assert_allclose(go, gt, equal_nan=True, **tolerance, err_msg=f"gradient of input {i}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the forward check owns that
@pytest.mark.parametrize("row, shapes, dtype", cases("torch", both_floats=True))
def test_matches_torch(row, shapes, dtype):
    torch = pytest.importorskip("torch")
    assert_matches_torch(torch, row, input_arrays(row, shapes, dtype))


# ----------------------------------------------------------------------------- 5. grad_fn names


@pytest.mark.parametrize("row, shapes, dtype", cases("grad_fn", lambda r: r.differentiable))
def test_grad_fn_names_match_torch(row, shapes, dtype):
    torch = pytest.importorskip("torch")
    arrays = input_arrays(row, shapes, "float64")
    ours = flat(row.fn(fusegrad, *make_inputs(fusegrad, arrays, row)))
    theirs = flat(row.fn(torch, *make_inputs(torch, arrays, row)))
    accepted = GRAD_FN_DIFFERENCES.get(row.name)
    for o, t in zip(ours, theirs):
        if t.grad_fn is None:
            assert o.grad_fn is None
            continue
        want, got = type(t.grad_fn).__name__, o.grad_fn.name()
        if accepted is not None:
            assert want != got, f"{row.name}: matches torch now, remove it from GRAD_FN_DIFFERENCES"
            assert got == accepted[0]
        else:
            assert got == want


# ----------------------------------------------------------------------------- 6. errors


@pytest.mark.parametrize("row", ERROR_ROWS, ids=lambda r: r.name)
def test_error_messages(row):
    with pytest.raises(Exception) as info:
        row.fn(fusegrad)
    assert type(info.value) is row.exc, f"{type(info.value).__name__}: {info.value}"
    assert re.search(row.match, str(info.value)), str(info.value)


@pytest.mark.parametrize("row", ERROR_ROWS, ids=lambda r: r.name)
def test_error_types_match_torch(row):
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception) as info:
        row.fn(torch)
    # ShapeError is a RuntimeError: code catching torch's exception catches ours.
    assert issubclass(row.exc, type(info.value)), f"torch raised {type(info.value).__name__}"


# ----------------------------------------------------------------------------- 7. compiled against eager

# Rows whose step cannot be one replayable graph: the compiled function runs them eagerly (and
# says why); the check below still compares its results with eager mode's.
_DATA_DEPENDENT = "its result's shape depends on the data (nonzero): a trace cannot fix it"
_PYTHON_VALUE = "it returns a Python value computed from the data outside the recorded ops"
EAGER_ONLY = {"nonzero": _DATA_DEPENDENT, "nonzero_as_tuple": _DATA_DEPENDENT, "where_condition_only": _DATA_DEPENDENT,
              "getitem_mask_computed": _DATA_DEPENDENT,
              "isclose": _PYTHON_VALUE, "equal": _PYTHON_VALUE, "allclose": _PYTHON_VALUE,
              "repeat_interleave_tensor": _DATA_DEPENDENT, "one_hot_inferred": _DATA_DEPENDENT}


def _step(row):
    """forward, a weighted sum of the floating outputs, backward: what a training step does."""
    def step(*xs):
        outs = [o for o in flat(row.fn(fusegrad, *xs)) if o.is_floating_point()]
        if any(o.requires_grad for o in outs):
            total = sum((o * (k + 1.5)).sum() for k, o in enumerate(outs) if o.requires_grad)
            total.backward()
        return [o.detach() for o in outs]
    return step


@pytest.mark.parametrize("row, shapes, dtype",
                         [c for c in cases("compiled", both_floats=True) if c.values[1] == c.values[0].samples[0]])
def test_compiled_matches_eager(row, shapes, dtype):
    # other values at each call: a replay must not keep anything the capture took from the data
    assert_compiled_matches_eager(row, [input_arrays(row, shapes, dtype, draw) for draw in range(3)])


def assert_compiled_matches_eager(row, calls):
    """The row's step compiled gives eager's outputs and gradients on the arrays of each of three
    calls, its capture and two replays (NaN where eager has NaN)."""
    step = _step(row)
    compiled = fusegrad.compile(step)
    for arrays in calls:   # capture, then replays
        eager_inputs, compiled_inputs = make_inputs(fusegrad, arrays, row), make_inputs(fusegrad, arrays, row)
        want, got = step(*eager_inputs), compiled(*compiled_inputs)
        for w, g in zip(want + [x.grad for x in eager_inputs],
                        got + [x.grad for x in compiled_inputs]):
            assert (w is None) == (g is None)
            if w is not None:
                np.testing.assert_allclose(g.numpy(), w.numpy(), **_tolerance(w.dtype.name, row), equal_nan=True)
    if row.name in EAGER_ONLY:
        assert compiled.replays == 0
    else:
        assert compiled.replays == 2, getattr(compiled, "last_reason", None)


# ----------------------------------------------------------------------------- 7b. first backward against the derived graph


@pytest.mark.parametrize("row, shapes, dtype", cases("first_backward", lambda r: r.differentiable, both_floats=True))
def test_first_backward_matches_the_derived_graph_bit_for_bit(row, shapes, dtype):
    """A structure's first backward runs each node's rule at once, without deriving its graph (as a
    schedule of the rule's ops the first time a rule runs, as a generated function after); the
    second derives the graph and later ones fetch it. All give the same bits (NaN for NaN)."""
    from fusegrad.ir import Derivation
    from fusegrad.runtime import backward_graphs, node_vjps
    arrays = input_arrays(row, shapes, dtype)
    step = _step(row)
    node_vjps.clear()
    grads, kinds = [], []
    for call in range(4):
        if call < 2:   # a new structure, twice
            backward_graphs.clear()
        inputs = make_inputs(fusegrad, arrays, row)
        step(*inputs)
        grads.append([None if x.grad is None else x.grad.numpy() for x in inputs])
        kinds.append({type(entry) for entry in backward_graphs.entries.values()})
    assert Derivation not in kinds[0] | kinds[1]
    assert kinds[2] == kinds[3] == ({Derivation} if kinds[0] else set())
    for later in grads[1:]:
        for first, other in zip(grads[0], later):
            assert (first is None) == (other is None)
            if first is not None:
                assert first.dtype == other.dtype
                np.testing.assert_array_equal(other, first)


# ----------------------------------------------------------------------------- 8. special inputs


def _with_specials(values, rng, kind):
    """A copy of `values` with about a third of its elements (at least one) NaN or +-inf."""
    out = values.copy()
    if out.size:
        flat_out = out.reshape(-1)
        picked = rng.choice(out.size, max(1, out.size // 3), replace=False)
        flat_out[picked] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf], picked.size)
    return out


def _emptied(shapes):
    """The sample's shapes with the first axis of the first non-scalar input, and of every input of
    the same shape, of size 0; None when no input has an axis to empty."""
    first = next((s for s in shapes if s and s[0]), None)
    if first is None:
        return None
    return tuple((0,) + s[1:] if s == first else s for s in shapes)


def special_inputs(row, kind):
    """The arrays of the row's first sample, made special: NaN or inf in the floating inputs
    (float64 for rows of either float type), float16 inputs, or empty inputs; None where `kind`
    does not apply to the row."""
    shapes = row.samples[0]
    floats = [i for i in range(len(shapes)) if row.dtypes is None or row.dtypes[i].startswith("float")]
    if kind == "float16":
        return input_arrays(row, shapes, "float16") if row.dtypes is None else None
    if kind == "empty":
        emptied = _emptied(shapes)
        if emptied is None:
            return None
        # an empty input holds nothing to draw; the others come from the row's domain
        drawn = input_arrays(row, shapes, "float64")
        return [np.zeros(e, a.dtype) if e != s else a for a, e, s in zip(drawn, emptied, shapes)]
    if not floats:
        return None
    arrays = input_arrays(row, shapes, "float64")
    rng = np.random.default_rng(zlib.crc32(f"{row.name}{kind}".encode()))
    return [_with_specials(a, rng, kind) if i in floats else a for i, a in enumerate(arrays)]


SPECIAL_KINDS = ("nan", "inf", "float16", "empty")

# Rows whose special-input check differs from PyTorch, accepted: (kind, row name) -> why.
_VAR_INF = ("var and std are composites, mean((x - mean(x))**2): with an inf input the gradient through "
            "mean(x) is inf - inf = NaN at every element, where PyTorch's fused VarBackward gives +-inf at the "
            "finite ones; both are non-finite, and a hand-written VJP would break second derivatives")
SPECIAL_DIFFERENCES = {
    ("inf", "var"): _VAR_INF,
    ("inf", "var_correction0"): _VAR_INF,
    ("inf", "var_unbiased_false"): _VAR_INF,
    ("inf", "var_dim"): _VAR_INF,
    ("inf", "var_mean"): _VAR_INF,
    ("inf", "prod_three_zeros"): (
        "a product with two zeros and an inf: the gradient at each zero is the other zero times inf; "
        "PyTorch returns 0 once it counts two zeros, fusegrad's rule keeps the other zero as a factor "
        "(for second derivatives) and gives NaN"),
    ("inf", "prod_dim_one_zero"): (
        "PyTorch picks prod's gradient formula by whether the whole input holds a zero: with one, a "
        "product of one element gets gradient 1 even at -inf; without, grad * prod / x gives inf / inf = NaN. "
        "fusegrad decides per slice, so an inf in a slice without zeros gives NaN, whatever other slices hold"),
    ("empty", "index_add"): (
        "indices out of range of an empty dimension: PyTorch skips its index check when self is empty and "
        "returns an empty tensor; fusegrad raises the RuntimeError PyTorch raises for a non-empty self"),
    ("float16", "log_softplus_tiny"): (
        "softplus of -30 to -60 is below float16's least subnormal: 0 in both, but PyTorch computes the "
        "kernel's slope exp(x) / (1 + exp(x)) in float32, nonzero, where fusegrad's float16 exp(x) is 0, so "
        "log's infinite gradient times that slope is inf in PyTorch and NaN in fusegrad"),
    ("inf", "bce_with_logits_pos_weight"): (
        "an infinite target, meaningless for a probability: PyTorch's fused gradient computes inf - inf = NaN "
        "where the composite's gives -inf"),
    ("empty", "instance_norm"): (
        "an empty batch: PyTorch's instance_norm fails inside its kernel with an IndexError (select(): index 0 out "
        "of range for tensor of size [0]); fusegrad returns the empty result and gradients"),
    ("inf", "scaled_dot_product_attention_bool_mask"): (
        "a row whose every key is masked has constant zero weights: fusegrad's gradient through them is 0, "
        "PyTorch's _safe_softmax backward multiplies the zero weights by the incoming gradient, inf where the "
        "values hold inf, and gives 0 * inf = NaN at the query of that row"),
    ("empty", "scaled_dot_product_attention_float_mask_scale"): (
        "an empty query (0, 4) with a (3, 5) mask: PyTorch returns an empty result without checking that the mask "
        "broadcasts to the (0, 5) scores; fusegrad raises the broadcasting error"),
    ("nan", "scaled_dot_product_attention_gqa"): (
        "4-D inputs go to PyTorch's fused CPU flash-attention kernel, which gives 0 at some outputs of rows whose "
        "scores are NaN; the math path (PyTorch's for other ranks, and fusegrad's) gives NaN there"),
    ("empty", "pixel_shuffle"): (
        "PyTorch's pixel_shuffle returns an empty input unchanged, (0, 8, 2, 3) instead of (0, 2, 4, 6), and its "
        "backward then fails on the shapes; fusegrad returns the shuffled shape"),
    ("empty", "pixel_unshuffle"): (
        "PyTorch's pixel_unshuffle returns an empty input unchanged, (0, 4, 6) instead of (0, 2, 3); fusegrad "
        "returns the unshuffled shape"),
}


def special_cases():
    out = []
    for row in ROWS:
        for kind in SPECIAL_KINDS:
            arrays = special_inputs(row, kind)
            if arrays is None:
                continue
            reason = SPECIAL_DIFFERENCES.get((kind, row.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(row, kind, id=f"{row.name}-{kind}", marks=marks))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")   # e.g. var's degrees-of-freedom warning, in both
@pytest.mark.parametrize("row, kind", [pytest.param(*c.values, id=c.id) for c in special_cases()
                                       if c.values[1] in ("nan", "inf", "empty") and c.values[0].name not in EAGER_ONLY])
def test_compiled_special_inputs_match_eager(row, kind):
    """NaN and inf go through the generated kernels as through eager mode's NumPy (no fast-math
    assumption drops them), and empty inputs give eager's empty results and gradients: in float32,
    the kernels' own type, where the row allows it."""
    arrays = special_inputs(row, kind)
    if row.dtypes is None:
        arrays = [a.astype(np.float32) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # eager's NumPy warns of inf and NaN; the kernels do not
        try:
            _step(row)(*make_inputs(fusegrad, arrays, row))
        except Exception as refused:   # out of the op's domain (binary_cross_entropy of NaN): refused alike
            with pytest.raises(type(refused)) as info:
                fusegrad.compile(_step(row))(*make_inputs(fusegrad, arrays, row))
            assert type(info.value) is type(refused) and str(info.value) == str(refused)
            return
        assert_compiled_matches_eager(row, [arrays] * 3)


@pytest.mark.filterwarnings("ignore::UserWarning")   # e.g. var's degrees-of-freedom warning, in both
@pytest.mark.parametrize("row, kind", special_cases())
def test_special_inputs_match_torch(row, kind):
    torch = pytest.importorskip("torch")
    arrays = special_inputs(row, kind)
    try:
        row.fn(torch, *make_inputs(torch, arrays, row))
    except Exception as refused:
        with pytest.raises(Exception) as info:
            row.fn(fusegrad, *make_inputs(fusegrad, arrays, row))
        # ShapeError is a RuntimeError: code catching torch's exception catches ours.
        assert isinstance(info.value, type(refused)), f"torch raised {type(refused).__name__}: {refused}"
        return
    with warnings.catch_warnings():   # PyTorch computes inf/nan silently; NumPy warnings must not leak
        warnings.simplefilter("error", RuntimeWarning)
        assert_matches_torch(torch, row, arrays)
