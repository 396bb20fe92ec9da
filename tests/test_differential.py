"""Differential fuzzing against PyTorch: random small programs run in both libraries.

Hypothesis draws a few float64 leaves of broadcastable shapes and a chain of ops from OPS below.
Every step is one line of Python source that is run twice, once with `torch` bound to PyTorch and
once with it bound to fusegrad, so a failing example prints as a program that runs as it is under
`import torch` and under `import fusegrad as torch`. Checked:

* forward: every step's result (values with rtol 1e-9, dtype, shape, requires_grad), and at the
  end every variable again (in-place writes through views must be visible through all aliases);
* first order: `.backward()` of a weighted sum of every intermediate, the leaves' `.grad`;
* second order: `autograd.grad(create_graph=True)`, then the gradient of a function of those
  gradients (None and zeros are taken as the same at second order: which backward formulas keep
  a graph is an implementation detail of PyTorch);
* errors: where PyTorch raises at a step or at backward (what a generator can't rule out
  beforehand: `view` of memory it can't view, in-place results that don't fit, ...), fusegrad must
  raise too, and only then. One exception, see SavedTensorModified: a program that PyTorch refuses
  at backward because a tensor it saved was modified in place;
* dtype promotion: tensors of every dtype (0-d or not) and Python scalars under arithmetic and
  comparison operators, out of place and in place: result dtype (or the error) as in PyTorch.

PyTorch is the oracle, so the programs are drawn from what PyTorch accepts: the few combinations
it rejects on purpose are left out of the generators where noted.

Reproducing: the programs are drawn from a fixed seed, so every run draws the same ones;
FUSEGRAD_FUZZ_SEED=<n> draws others. A failure prints its program and the seed it was drawn with.
Past failures are kept, as printed, in differential_corpus.py and run again before the fuzz.
"""
import ast
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, seed, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
import fusegrad as fg  # noqa: E402
from differential_corpus import CORPUS, PROMOTION_CORPUS  # noqa: E402

LIBS = (("torch", torch), ("fusegrad", fg))

FUZZ_SEED = int(os.environ.get("FUSEGRAD_FUZZ_SEED", "0"))
DRAWN = f"drawn with FUSEGRAD_FUZZ_SEED={FUZZ_SEED}"
# A fixed seed: the same examples on every run (reproducible in CI); no database, and no "explain"
# phase (slow, and it writes patch files into .hypothesis/).
FUZZ = settings(max_examples=250, deadline=None, database=None, print_blob=False,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=list(HealthCheck))

RTOL = 1e-9


class ProgramEnded(Exception):
    """Both libraries raised at a step: the comparison stops there."""


# What a program's comparison came to (one Hypothesis event each).
COMPARED = "compared"
BOTH_RAISE = "both libraries raise"
PYTORCH_REFUSES_MODIFIED_SAVED = "PyTorch refuses a modified saved tensor; compared with its gradients " \
                                 "from snapshots"
# The 2-norm is not differentiable at 0. Both libraries give it a zero gradient there, and PyTorch's
# second derivative is nan (0 * inf in its backward formula): such programs are compared at first
# order only.
NORM_OF_ZEROS = "a 2-norm of zeros: first order only"


class SavedTensorModified(Exception):
    """PyTorch refuses the program at backward, because a tensor that it saved for backward was
    modified in place since, and fusegrad runs it. Which tensors an op saves is an implementation
    choice (fusegrad's rsqrt is 1 / sqrt(x) and saves sqrt(x), PyTorch's saves its output), and
    fusegrad's in-place ops compute on a copy, so a write need not corrupt what fusegrad saved: the
    program is outside what PyTorch can be asked about, and fusegrad's gradients are checked against
    PyTorch's with every saved tensor snapshotted when it is saved instead."""


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    finite = np.abs(b[np.isfinite(b)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return np.allclose(a, b, rtol=rtol, atol=1e-10 * scale, equal_nan=True)


# ----------------------------------------------------------------------------- programs


class Program:
    """Leaves, constants and lines of source, run step by step in both libraries."""

    def __init__(self, leaves, origin=DRAWN):
        self.leaves = leaves                    # [(name, ndarray)]
        self.origin = origin                    # where it came from, for the failure message
        self.consts = []                        # [(name, ndarray)]
        self.lines = []
        self.vars = [name for name, _ in leaves]
        self.multi_output_views = []            # variables made by split/chunk/unbind
        self.ended = False                      # both libraries raised at a step
        self.first_order_only = False           # a 2-norm of zeros: see NORM_OF_ZEROS
        self.ns = {}
        for key, lib in LIBS:
            ns = {"torch": lib, "np": np}
            for name, data in leaves:
                ns[name] = lib.tensor(data, dtype=lib.float64, requires_grad=True)
            self.ns[key] = ns

    # -- what the generators look at (always PyTorch's view of the program) --
    def t(self, name):
        return self.ns["torch"][name]

    def shape(self, name):
        return tuple(self.t(name).shape)

    def new_name(self):
        return f"v{len(self.lines)}"

    def const(self, data):
        name = f"c{len(self.consts)}"
        data = np.asarray(data)
        self.consts.append((name, data))
        for key, _ in LIBS:
            self.ns[key][name] = data
        return name

    def source(self, tail=()):
        out = ["import numpy as np", "import torch            # or: import fusegrad as torch", ""]
        for name, data in self.leaves:
            out.append(f"{name} = torch.tensor({data.tolist()!r}, dtype=torch.float64, requires_grad=True)")
        for name, data in self.consts:
            out.append(f"{name} = np.array({data.tolist()!r})")
        return "\n".join(out + self.lines + list(tail))

    # -- running --
    def run(self, code, new=None):
        """Run one step in both libraries; `new` names the variable it defines, if any."""
        compiled = compile(code, "<step>", "exec")
        errors = {}
        for key, _ in LIBS:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exec(compiled, self.ns[key])
            except Exception as e:  # noqa: BLE001 - any error is compared
                errors[key] = e
        self.lines.append(code)
        self.check_errors(errors, "step")
        if new is not None:
            self.vars.append(new)
            if any(m in code for m in MULTI_OUTPUT_VIEWS):
                self.multi_output_views.append(new)
            self.compare(new, self.t(new), self.ns["fusegrad"][new])

    def check_errors(self, errors, where):
        if ("fusegrad" not in errors and "modified by an inplace operation" in str(errors.get("torch", ""))):
            raise SavedTensorModified
        if "torch" in errors and "fusegrad" not in errors:
            self.fail(f"PyTorch raises at this {where} and fusegrad does not: "
                      f"{type(errors['torch']).__name__}: {errors['torch']}")
        if "fusegrad" in errors and "torch" not in errors:
            self.fail(f"fusegrad raises at this {where} and PyTorch does not: "
                      f"{type(errors['fusegrad']).__name__}: {errors['fusegrad']}")
        if errors:
            raise ProgramEnded

    def fail(self, message):
        raise AssertionError(f"{message}\n----- program ({self.origin}) -----\n{self.source()}\n"
                             f"-------------------")

    def compare(self, what, t, f, check_rg=True, none_is_zero=False):
        if none_is_zero:
            if t is None and f is None:
                return
            if t is None:
                t = torch.zeros(tuple(f.shape), dtype=torch.float64)
            if f is None:
                f = fg.zeros(tuple(t.shape), dtype=fg.float64)
        if t is None or f is None:
            if t is not f:
                self.fail(f"{what}: PyTorch gives {t!r}, fusegrad gives {f!r}")
            return
        if not isinstance(f, fg.Tensor):
            self.fail(f"{what}: fusegrad gives a {type(f).__name__}, not a Tensor")
        if tuple(f.shape) != tuple(t.shape):
            self.fail(f"{what}: shape {tuple(f.shape)} in fusegrad, {tuple(t.shape)} in PyTorch")
        if repr(f.dtype) != repr(t.dtype):
            self.fail(f"{what}: dtype {f.dtype} in fusegrad, {t.dtype} in PyTorch")
        if check_rg and f.requires_grad != t.requires_grad:
            self.fail(f"{what}: requires_grad {f.requires_grad} in fusegrad, {t.requires_grad} in PyTorch")
        a, b = f.detach().numpy(), t.detach().numpy()
        if not _close(a, b):
            self.fail(f"{what}: values differ\nfusegrad: {a!r}\nPyTorch:  {b!r}")

    def rerun_torch_with_snapshots(self):
        """Every line again in PyTorch, with each saved tensor copied when it is saved."""
        ns = {"torch": torch, "np": np, **dict(self.consts)}
        for name, data in self.leaves:
            ns[name] = torch.tensor(data, dtype=torch.float64, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach().clone(), lambda t: t):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec("\n".join(self.lines), ns)
        return ns

    def compare_all_vars(self):
        for name in self.vars:
            self.compare(f"{name} at the end", self.t(name), self.ns["fusegrad"][name])

    def loss_source(self):
        """A weighted sum of every intermediate that requires grad (all of them reach the leaves)."""
        terms = [f"{name}.sum() * {1 + i / 8}" for i, name in enumerate(self.vars)
                 if not self.t(name).is_leaf and self.t(name).requires_grad]
        return "loss = " + (" + ".join(terms) if terms else "x0.sum()")


# ----------------------------------------------------------------------------- drawing helpers


def _pick(d, p, pred=lambda name: True):
    """A variable satisfying pred, most recent first (shrinks toward the last one defined)."""
    names = [n for n in reversed(p.vars) if pred(n)]
    if not names:
        return None
    return names[d(st.integers(0, len(names) - 1))]


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _broadcasts_to(src, dst):
    """src can be written into dst (PyTorch drops leading size-1 dims of the value)."""
    while len(src) > len(dst) and src and src[0] == 1:
        src = src[1:]
    try:
        return np.broadcast_shapes(src, dst) == tuple(dst)
    except ValueError:
        return False


def _dim(d, ndim, extra=0):
    """A valid dim (possibly negative) for a tensor of ndim dims (+extra for unsqueeze/stack)."""
    n = max(ndim + extra, 1)
    return d(st.integers(-n, n - 1))


def _dims(d, ndim, allow_none=True, allow_tuple=True):
    kinds = (["none"] if allow_none else []) + ["int"] + (["tuple"] if allow_tuple and ndim else [])
    kind = d(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "int":
        return _dim(d, ndim)
    picked = d(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if d(st.booleans()) else a for a in picked)


def _some_slice_zero(t, dims):
    """Some slice that a reduction over dims reads is all zeros."""
    magnitude = t.detach().abs()
    return bool(((magnitude.max() if dims is None else magnitude.amax(dims)) == 0).any())


def _some_slice_constant(t, dims):
    """Some slice that a reduction over dims reads holds equal values (or only one)."""
    t = t.detach()
    if dims is None:
        return bool(t.max() == t.min())
    return bool((t.amax(dims) == t.amin(dims)).any())


def _reduced_count(shape, dims):
    if dims is None:
        return int(np.prod(shape))
    dims = dims if isinstance(dims, tuple) else (dims,)
    if not shape:
        return 1
    return int(np.prod([shape[a % len(shape)] for a in dims]))


SCALARS = st.sampled_from([2, -3, 1, 0, 0.5, -1.5, 2.0, True, False])
NONZERO_SCALARS = st.sampled_from([2, -3, 1, 0.5, -1.5, 2.0, True])


def _scalar(d, allow_bool=True, nonzero=False):
    s = d(NONZERO_SCALARS if nonzero else SCALARS)
    if not allow_bool and isinstance(s, bool):
        s = int(s) + 2
    return repr(s)


# ----------------------------------------------------------------------------- op builders
# Each builder draws its operands and parameters and returns (source, new variable or None), or
# None when it does not apply to the current program.


def op_binary(d, p):
    x = _pick(d, p)
    y = _pick(d, p, lambda n: _broadcasts(p.shape(x), p.shape(n)))
    form = d(st.sampled_from(["{x} + {y}", "{x} - {y}", "{x} * {y}", "{x} / ({y} * {y} + 1)",
                              "torch.add({x}, {y}, alpha=2)", "torch.sub({x}, {y}, alpha=0.5)",
                              "torch.mul({x}, {y})", "torch.div({x}, {y}.abs() + 0.5)",
                              "torch.lerp({x}, {y}, 0.25)"]))
    return form.format(x=x, y=y)


def op_scalar(d, p):
    x = _pick(d, p)
    form = d(st.sampled_from(["{x} + {s}", "{s} + {x}", "{x} - {s}", "{s} - {x}", "{x} * {s}",
                              "{s} * {x}", "{x} / {n}", "{s} / ({x} * {x} + 1)", "torch.add({x}, {s})",
                              "torch.mul({x}, {s})", "torch.sub({x}, {s})", "torch.div({x}, {n})",
                              "torch.rsub({x}, {s})"]))
    # PyTorch rejects subtraction with a bool operand (even a Python bool: "Subtraction, the `-`
    # operator, with a bool tensor is not supported"); test_dtype_promotion covers that error.
    no_bool = "-" in form or "sub" in form
    return form.format(x=x, s=_scalar(d, allow_bool=not no_bool), n=_scalar(d, nonzero=True))


def op_pow(d, p):
    x = _pick(d, p)
    y = _pick(d, p, lambda n: _broadcasts(p.shape(x), p.shape(n)))
    form = d(st.sampled_from(["{x} ** 2", "{x} ** 3", "{x} ** 1", "{x} ** 0", "({x} * {x} + 1) ** 0.5",
                              "({x} * {x} + 1) ** -1.5", "2.0 ** torch.tanh({x})", "torch.pow({x}, 2)",
                              "({x} * {x} + 1) ** torch.tanh({y})", "{x}.square()", "{x}.pow(2.0)",
                              "torch.square({x})"]))
    return form.format(x=x, y=y)


UNARY = ["-{x}", "torch.exp(torch.tanh({x}))", "torch.log({x} * {x} + 1)", "{x}.sin()", "torch.cos({x})",
         "torch.tanh({x})", "torch.sigmoid({x})", "torch.sqrt({x} * {x} + 1)", "{x}.abs()", "torch.relu({x})",
         "torch.rsqrt({x} * {x} + 1)", "torch.log1p({x} * {x})", "torch.expm1(torch.tanh({x}))",
         "torch.reciprocal({x} * {x} + 1)", "torch.tan(torch.tanh({x}))", "torch.log2({x} * {x} + 1)",
         "torch.log10({x} * {x} + 1)", "torch.floor({x})", "torch.sign({x}) * {x}", "{x}.neg()",
         "torch.nn.functional.gelu({x})", "torch.nn.functional.silu({x})",
         "torch.nn.functional.leaky_relu({x}, 0.1)", "{x}.exp().log()"]


# sin and cos magnify the rounding of a large argument (1e10 is 1e-6 from the next float): they are
# drawn for arguments up to 1e3, where an ulp is 1e-13.
PERIODIC = ("{x}.sin()", "torch.cos({x})", "{t}.sin_()")


def _periodic_ok(p, name):
    t = p.t(name).detach()
    return t.numel() == 0 or float(t.abs().max()) <= 1e3


def op_unary(d, p):
    x = _pick(d, p)
    forms = UNARY if _periodic_ok(p, x) else [f for f in UNARY if f not in PERIODIC]
    return d(st.sampled_from(forms)).format(x=x)


def op_clamp(d, p):
    x = _pick(d, p)
    y = _pick(d, p, lambda n: _broadcasts(p.shape(x), p.shape(n)))
    lo = d(st.sampled_from([-1, -0.5, 0, 0.25]))
    hi = d(st.sampled_from([0.5, 1, 1.5]))
    form = d(st.sampled_from(["{x}.clamp(min={lo})", "{x}.clamp(max={hi})", "torch.clamp({x}, {lo}, {hi})",
                              "{x}.clip({lo}, {hi})", "torch.clamp_min({x}, {lo})",
                              "torch.clamp_max({x}, {hi})",
                              "torch.where({x} > {y}, {x}, {y})", "torch.where({x} > 0, {x}, {lo})",
                              "torch.where({x} < {y}, 0.5, {x})", "torch.maximum({x}, {y})",
                              "torch.minimum({x}, {y})", "torch.max({x}, {y})",
                              "{x}.masked_fill({x} > {hi}, {lo})"]))
    return form.format(x=x, y=y, lo=lo, hi=hi)


def op_reduce(d, p):
    x = _pick(d, p)
    shape = p.shape(x)
    nd = len(shape)
    k = d(st.booleans())
    kind = d(st.sampled_from(["sum", "mean", "prod", "amax", "amin", "maxdim", "mindim", "maxall", "var",
                              "std", "norm", "norm1", "logsumexp", "cumsum", "softmax", "log_softmax",
                              "nsoftmax"]))
    if kind in ("sum", "mean"):
        dims = _dims(d, nd)
        if dims is None:
            return f"{x}.{kind}()" if d(st.booleans()) else f"torch.{kind}({x})"
        return f"{x}.{kind}(dim={dims!r}, keepdim={k})"
    if kind == "prod":   # prod takes one dim only
        dims = _dims(d, nd, allow_tuple=False)
        return f"{x}.prod()" if dims is None else f"{x}.prod({dims}, keepdim={k})"
    if kind in ("amax", "amin"):
        dims = _dims(d, nd, allow_none=False)
        return f"{x}.{kind}(dim={dims!r}, keepdim={k})"
    if kind in ("maxdim", "mindim"):
        fn = kind[:3]
        form = d(st.sampled_from(["{x}.{fn}(dim={dim}, keepdim={k}).values", "torch.{fn}({x}, {dim})[0]"]))
        return form.format(x=x, fn=fn, dim=_dim(d, nd), k=k)
    if kind == "maxall":
        return f"{x}.{d(st.sampled_from(['max', 'min']))}()"
    if kind in ("var", "std"):
        dims = _dims(d, nd)
        c = d(st.sampled_from([0, 1]))
        if _reduced_count(shape, dims) <= c:   # no degrees of freedom: nan (with a warning) in both
            c = 0
        if kind == "std" and _some_slice_constant(p.t(x), dims):   # see test_std_of_equal_values_...
            kind = "var"
        if dims is None:
            return f"{x}.{kind}(correction={c})"
        return f"torch.{kind}({x}, dim={dims!r}, keepdim={k}, correction={c})"
    if kind == "norm":   # the Frobenius norm (p="fro") over 3+ dims is an error, p=2 is not
        dims = _dims(d, nd)
        p.first_order_only |= _some_slice_zero(p.t(x), dims)
        p_arg = d(st.sampled_from(["", "p=2, ", "p='fro', "]))
        return f"{x}.norm()" if dims is None else f"{x}.norm({p_arg}dim={dims!r}, keepdim={k})"
    if kind == "norm1":
        return f"torch.norm({x}, p=1, dim={_dims(d, nd, allow_none=False)!r})"
    if kind == "logsumexp":
        return f"torch.logsumexp({x}, dim={_dims(d, nd, allow_none=False)!r}, keepdim={k})"
    if kind == "cumsum":
        return f"{x}.cumsum({_dim(d, nd)})"
    if kind == "softmax":
        return f"torch.softmax({x}, dim={_dim(d, nd)})"
    if kind == "log_softmax":
        return f"{x}.log_softmax({_dim(d, nd)})"
    return f"torch.nn.functional.softmax({x}, dim={_dim(d, nd)})"


def _factor_shape(d, n):
    """A random shape with n elements, up to 4 dims, maybe with one -1."""
    if n == 0:
        return (0,)
    factors = []
    m = n
    for q in (2, 3, 5, 7):
        while m % q == 0:
            factors.append(q)
            m //= q
    if m > 1:
        factors.append(m)
    factors = d(st.permutations(factors))
    ndim = d(st.integers(0 if n == 1 else 1, 4))
    if ndim == 0:
        return ()
    shape = [1] * ndim
    for f in factors:
        shape[d(st.integers(0, ndim - 1))] *= f
    if d(st.booleans()):
        shape[d(st.integers(0, ndim - 1))] = -1
    return tuple(shape)


def op_shape(d, p):
    x = _pick(d, p)
    shape = p.shape(x)
    nd = len(shape)
    n = int(np.prod(shape))
    kinds = ["reshape", "view", "unsqueeze", "squeeze", "squeeze_dim", "expand", "flatten", "contiguous",
             "clone"]
    if nd >= 1:
        kinds += ["transpose", "permute", "movedim", "narrow", "select", "split", "chunk", "unbind"]
    if nd >= 2:
        kinds += ["mT", "flatten_range"]
    if nd <= 2:
        kinds += ["t"]
    if nd == 2:
        kinds += ["T"]
    kind = d(st.sampled_from(kinds))
    if kind in ("reshape", "view"):
        return f"{x}.{kind}({_factor_shape(d, n)!r})"
    if kind == "unsqueeze":
        return f"{x}.unsqueeze({_dim(d, nd, extra=1)})"
    if kind == "squeeze":
        return f"{x}.squeeze()"
    if kind == "squeeze_dim":
        return f"{x}.squeeze({_dims(d, nd, allow_none=False)!r})"
    if kind == "expand":
        lead = d(st.lists(st.integers(1, 3), max_size=4 - nd if nd < 4 else 0))
        target = [d(st.integers(1, 3)) if s == 1 else (-1 if d(st.booleans()) else s) for s in shape]
        return f"{x}.expand({tuple(lead) + tuple(target)!r})"
    if kind == "flatten":
        return f"{x}.flatten()"
    if kind == "flatten_range":
        a = d(st.integers(0, nd - 1))
        return f"{x}.flatten({a}, {d(st.integers(a, nd - 1))})"
    if kind in ("contiguous", "clone"):
        return f"{x}.{kind}()"
    if kind == "transpose":
        return f"{x}.transpose({_dim(d, nd)}, {_dim(d, nd)})"
    if kind == "permute":
        return f"{x}.permute({tuple(d(st.permutations(range(nd))))!r})"
    if kind == "movedim":
        return f"torch.movedim({x}, {_dim(d, nd)}, {_dim(d, nd)})"
    if kind in ("mT", "T"):
        return f"{x}.{kind}"
    if kind == "t":
        return f"{x}.t()"
    dim = _dim(d, nd)
    size = shape[dim]
    if kind == "narrow":
        start = d(st.integers(0, size - 1))
        return f"{x}.narrow({dim}, {start}, {d(st.integers(1, size - start))})"
    if kind == "select":
        return f"{x}.select({dim}, {d(st.integers(-size, size - 1))})"
    if kind == "split":
        k = d(st.integers(1, size))
        return f"{x}.split({k}, {dim})[{d(st.integers(0, -(-size // k) - 1))}]"
    if kind == "chunk":
        c = d(st.integers(1, 4))
        pieces = -(-size // -(-size // c))   # PyTorch's chunks: ceil(size / c) elements each
        return f"{x}.chunk({c}, {dim})[{d(st.integers(0, pieces - 1))}]"
    return f"{x}.unbind({dim})[{d(st.integers(0, size - 1))}]"


MULTI_OUTPUT_VIEWS = (".split(", ".chunk(", ".unbind(")


def _basic_item(d, size, kind=None):
    kind = kind or d(st.sampled_from(["int", "slice", "full"]))
    if kind == "int":
        return repr(d(st.integers(-size, size - 1)))
    if kind == "full":
        return ":"
    start = d(st.integers(0, size - 1))
    stop = d(st.integers(start + 1, size))
    step = d(st.sampled_from([None, 1, 2, 3]))
    neg = d(st.booleans())
    s = f"{start - size if neg and start else start}:{stop - size if neg and stop < size else stop}"
    return s + (f":{step}" if step else "")


def _key(d, shape, arrays=False, unique=False):
    """An index over some leading (and, after an Ellipsis, trailing) dims, maybe with Nones: ints
    and slices, and with `arrays` integer arrays too (at least one; all of one length, or 1, so
    that they broadcast). `unique`: one array of distinct positions and no Nones (for writes)."""
    nd = len(shape)
    k = d(st.integers(1 if arrays else 0, nd))
    ellipsis = d(st.booleans())
    split = d(st.integers(0, k)) if ellipsis else k
    dims = list(range(split)) + list(range(nd - (k - split), nd))
    kinds = [d(st.sampled_from(["array", "int", "slice", "full"] if arrays and not unique else
                               ["int", "slice", "full"])) for _ in dims]
    if arrays and "array" not in kinds:
        kinds[d(st.integers(0, k - 1))] = "array"
    length = d(st.integers(1, 4))
    items = []
    for kind, i in zip(kinds, dims):
        size = shape[i]
        if kind != "array":
            items.append(_basic_item(d, size, kind))
            continue
        if unique:
            idx = d(st.lists(st.integers(0, size - 1), min_size=1, max_size=size, unique=True))
            idx = [j - size if d(st.booleans()) else j for j in idx]
        else:
            n = 1 if d(st.integers(0, 3)) == 0 else length
            idx = d(st.lists(st.integers(-size, size - 1), min_size=n, max_size=n))
        items.append(repr(idx) if d(st.booleans()) else f"torch.tensor({idx!r})")
    if ellipsis:
        items.insert(split, "...")
    for _ in range(0 if unique else d(st.integers(0, 2))):
        items.insert(d(st.integers(0, len(items))), "None")
    if not items:
        items = ["..."]
    return ", ".join(items)


def _basic_key(d, shape):
    return _key(d, shape)


def _array_key(d, shape, unique=False):
    return _key(d, shape, arrays=True, unique=unique)


def op_index(d, p):
    x = _pick(d, p)
    shape = p.shape(x)
    kinds = ["basic"] + (["array", "array", "mask", "gather", "index_select"] if shape else [])
    kind = d(st.sampled_from(kinds))
    if kind == "basic":
        return f"{x}[{_basic_key(d, shape)}]"
    if kind == "array":
        return f"{x}[{_array_key(d, shape)}]"
    if kind == "mask":   # never empty: zero-size tensors are out of this generator's scope
        form, test = d(st.sampled_from([("{x}[{x} > 0]", lambda t: t > 0),
                                        ("{x}[{x}.detach() < 0.5]", lambda t: t < 0.5)]))
        return form.format(x=x) if bool(test(p.t(x)).any()) else None
    dim = _dim(d, len(shape))
    size = shape[dim]
    if kind == "index_select":
        idx = d(st.lists(st.integers(0, size - 1), min_size=1, max_size=4))
        return f"torch.index_select({x}, {dim}, torch.tensor({idx!r}))"
    idx_shape = [d(st.integers(1, 4)) if i == dim % len(shape) else d(st.integers(1, s))
                 for i, s in enumerate(shape)]
    rng = np.random.default_rng(d(st.integers(0, 1000)))
    c = p.const(rng.integers(0, size, idx_shape))
    return f"torch.gather({x}, {dim}, torch.tensor({c}))"


def op_join(d, p):
    x = _pick(d, p)
    shape = p.shape(x)
    nd = len(shape)
    kind = d(st.sampled_from(["cat", "stack"] if nd else ["stack"]))
    if kind == "stack":
        y = _pick(d, p, lambda n: p.shape(n) == shape)
        y = y if d(st.booleans()) else f"{x} * 2"
        return f"torch.stack([{x}, {y}], dim={_dim(d, nd, extra=1)})"
    dim = _dim(d, nd)
    ok = lambda n: (len(p.shape(n)) == nd and  # noqa: E731
                    all(a == b for i, (a, b) in enumerate(zip(p.shape(n), shape)) if i != dim % nd))
    y = _pick(d, p, ok)
    y = y if d(st.booleans()) else f"{x}.sin()"
    return f"torch.cat([{x}, {y}], {dim})" if d(st.booleans()) else f"torch.cat(({x}, {y}, {x}), dim={dim})"


def _matmul_shape(a, b):
    try:
        return np.matmul(np.zeros(a), np.zeros(b)).shape
    except (ValueError, TypeError):
        return None


def op_matmul(d, p):
    x = _pick(d, p, lambda n: len(p.shape(n)) >= 1)
    if x is None:
        return None
    shape = p.shape(x)
    y = _pick(d, p, lambda n: len(p.shape(n)) >= 1 and _matmul_shape(shape, p.shape(n)) is not None)
    kinds = ["const"] + (["var"] if y else []) + (["gram", "gramT", "tril"] if len(shape) >= 2 else [])
    kind = d(st.sampled_from(kinds))
    if kind == "var":
        return d(st.sampled_from(["{x} @ {y}", "torch.matmul({x}, {y})"])).format(x=x, y=y)
    if kind == "gram":
        return f"{x} @ {x}.mT"
    if kind == "gramT":
        return f"torch.matmul({x}.transpose(-1, -2), {x})"
    if kind == "tril":
        return f"{d(st.sampled_from(['torch.tril', 'torch.triu']))}({x}, {d(st.integers(-1, 1))})"
    k = shape[-1]
    cshape = d(st.sampled_from([(k,), (k, d(st.integers(1, 3))), (d(st.integers(1, 2)), k, 2)]))
    rng = np.random.default_rng(d(st.integers(0, 1000)))
    c = p.const(np.round(rng.standard_normal(cshape), 3))
    fn = "torch.matmul"
    if len(shape) == 2 and len(cshape) == 2:
        fn = d(st.sampled_from(["torch.matmul", "torch.mm"]))
    elif len(shape) == 2 and len(cshape) == 1:
        fn = d(st.sampled_from(["torch.matmul", "torch.mv"]))
    elif len(shape) == 1 and len(cshape) == 1:
        fn = d(st.sampled_from(["torch.matmul", "torch.dot", "torch.outer"]))
    return f"{fn}({x}, torch.tensor({c}))"


def _storage(p, name):
    return p.t(name).untyped_storage().data_ptr()


def _inplace_ok(p, name):
    """PyTorch refuses in-place writes to leaves, views of leaves and overlapping (expanded) memory,
    and to memory that an output of split/chunk/unbind views: those are "multi-output views", which
    it forbids writing through, and after a write to their base it refuses to use them at all."""
    t = p.t(name)
    if t.is_leaf and t.requires_grad:
        return False
    base = t._base
    if base is not None and base.is_leaf and base.requires_grad:
        return False
    if any(_storage(p, m) == _storage(p, name) for m in p.multi_output_views):
        return False
    return not any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape))


def _operand_ok(p, target, name):
    """PyTorch refuses an in-place op whose other operand partly overlaps the written memory
    ("unsupported operation: some elements of the input tensor and the written-to tensor refer to a
    single memory location"); the very same tensor is allowed."""
    if name == target or _storage(p, name) != _storage(p, target):
        return True
    a, b = p.t(name), p.t(target)
    return (a.data_ptr(), a.shape, a.stride()) == (b.data_ptr(), b.shape, b.stride())


INPLACE = ["{t}.mul_({s})", "{t}.add_({y})", "{t}.sub_({y}, alpha=2)", "{t}.div_({y} * {y} + 1)",
           "{t} += {y}", "{t} *= {y}", "{t} -= {n}", "{t} /= {n}", "{t}.mul_({y})", "{t}.sin_()",
           "{t}.tanh_()", "{t}.sigmoid_()", "{t}.relu_()", "{t}.abs_()", "{t}.neg_()",
           "{t}.clamp_(-0.5, 0.5)", "{t}.tanh_().exp_()", "{t}.square_()", "{t}.mul_({t})",
           "{t}.zero_()", "{t}.fill_({s})", "{t}.copy_({y})", "{t}.clamp_(min={y})", "{t}.pow_(2)",
           "{t}.add_({s})", "{t}.lerp_({y}, 0.5)", "{t}.masked_fill_({t} > 0, 0.5)"]


def _inplace_source(d, p, t):
    shape = p.shape(t)
    # the other operand broadcasts to the target's shape (an in-place result can't grow)
    y = _pick(d, p, lambda n: (_broadcasts(p.shape(n), shape)
                               and np.broadcast_shapes(p.shape(n), shape) == shape and _operand_ok(p, t, n)))
    forms = [f for f in INPLACE if (y or "{y}" not in f) and (f not in PERIODIC or _periodic_ok(p, t))]
    form = d(st.sampled_from(forms))
    return form.format(t=t, y=y, s=_scalar(d), n=_scalar(d, allow_bool=False, nonzero=True))


def op_inplace(d, p):
    t = _pick(d, p, lambda n: _inplace_ok(p, n))
    if t is None:
        return None
    return _inplace_source(d, p, t), None


def op_setitem(d, p):
    t = _pick(d, p, lambda n: _inplace_ok(p, n) and len(p.shape(n)) >= 1)
    if t is None:
        return None
    shape = p.shape(t)
    # Integer-array keys only with distinct positions: PyTorch leaves the winner of duplicate
    # writes unspecified.
    key = _basic_key(d, shape) if d(st.booleans()) else _array_key(d, shape, unique=True)
    with torch.no_grad():
        region = tuple(eval(f"{t}[{key}]", dict(p.ns["torch"])).shape)   # noqa: S307
    # A value sharing the target's memory: PyTorch refuses (see _operand_ok), even the same tensor.
    y = _pick(d, p, lambda n: _broadcasts_to(p.shape(n), region) and _storage(p, n) != _storage(p, t))
    kind = d(st.sampled_from(["scalar", "var", "expr", "sum"] if y else ["scalar", "sum"]))
    value = {"scalar": _scalar(d), "var": y, "expr": f"torch.tanh({y}) * 2",
             "sum": f"{_pick(d, p)}.sum()"}[kind]
    return f"{t}[{key}] = {value}", None


VIEWS = ["{t}[{key}]", "{t}.transpose({a}, {b})", "{t}.unsqueeze(0)", "{t}.view(-1)", "{t}.squeeze()",
         "{t}.select({a}, 0)", "{t}.narrow({a}, 0, 1)", "{t}.mT", "{t}.permute({perm})", "{t}.reshape(-1)",
         "{t}[..., None]", "{t}.expand({grown})"]


def op_view_inplace(d, p):
    """v = a view of t; v.op_(...): the write must show through t and every other view of it."""
    t = _pick(d, p, lambda n: _inplace_ok(p, n) and len(p.shape(n)) >= 1)
    if t is None:
        return None
    shape = p.shape(t)
    nd = len(shape)
    forms = [f for f in VIEWS if nd >= 2 or f != "{t}.mT"]
    form = d(st.sampled_from(forms))
    grown = (1,) * d(st.integers(0, 2)) + tuple(-1 if d(st.booleans()) else n for n in shape)
    view = form.format(t=t, key=_basic_key(d, shape), a=_dim(d, nd), b=_dim(d, nd),
                       perm=tuple(d(st.permutations(range(nd)))), grown=grown)
    v = p.new_name()
    try:   # PyTorch's view, for the in-place generator to look at
        p.ns["torch"][v] = eval(view, dict(p.ns["torch"]))   # noqa: S307
    except RuntimeError:   # .view() of memory it can't view: not this time
        return None
    p.vars.append(v)
    try:
        if not _inplace_ok(p, v):
            return None
        write = _inplace_source(d, p, v)
    finally:
        p.vars.pop()
        del p.ns["torch"][v]
    return f"{v} = {view}; {write}", v


OPS = [
    ("binary", op_binary),
    ("scalar", op_scalar),
    ("pow", op_pow),
    ("unary", op_unary),
    ("clamp_where", op_clamp),
    ("reduce", op_reduce),
    ("shape", op_shape),
    ("index", op_index),
    ("join", op_join),
    ("matmul", op_matmul),
    ("inplace", op_inplace),
    ("setitem", op_setitem),
    ("view_inplace", op_view_inplace),
]


@st.composite
def programs(draw):
    nd = draw(st.integers(0, 3))
    base = draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    leaves = []
    for i in range(draw(st.integers(1, 3))):
        if i == 0:
            shape = base
        else:
            k = draw(st.integers(0, nd))
            shape = [1 if draw(st.booleans()) else s for s in base[nd - k:]]
        leaves.append((f"x{i}", np.round(rng.standard_normal(tuple(shape)), 4)))
    p = Program(leaves)
    for _ in range(draw(st.integers(3, 8))):
        _, builder = draw(st.sampled_from(OPS))
        built = builder(draw, p)
        if built is None:
            continue
        code, new = built if isinstance(built, tuple) else (None, None)
        if code is None:
            new = p.new_name()
            code = f"{new} = {built}"
        try:
            p.run(code, new)
        except ProgramEnded:
            p.ended = True
            break
    return p


_LEAF = re.compile(r"(x\d+) = torch\.tensor\((.*), dtype=torch\.float64, requires_grad=True\)$")
_CONST = re.compile(r"(c\d+) = np\.array\((.*)\)$")
_DEFINES = re.compile(r"(v\d+) = ")


def replay(source, origin):
    """The Program that a failure printed, run again step by step (up to its loss)."""
    leaves, consts, steps = [], [], []
    for line in source.strip().splitlines():
        if line.startswith("loss = "):
            break
        if (m := _LEAF.match(line)) is not None:
            leaves.append((m[1], np.array(ast.literal_eval(m[2]), np.float64)))
        elif (m := _CONST.match(line)) is not None:
            consts.append(np.array(ast.literal_eval(m[2])))
        elif line and not line.startswith(("import ", "#")):
            steps.append(line)
    p = Program(leaves, origin)
    for data in consts:
        p.const(data)
    for code in steps:
        defined = _DEFINES.match(code)
        try:
            p.run(code, defined and defined[1])
        except ProgramEnded:
            p.ended = True
            break
    return p


# ----------------------------------------------------------------------------- properties


def _backward(p):
    p.run(p.loss_source(), "loss")
    errors = {}
    for key, lib in LIBS:
        ns = p.ns[key]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ns["loss"].backward()
        except Exception as e:  # noqa: BLE001
            errors[key] = e
    p.lines.append("loss.backward()")
    p.check_errors(errors, "backward")


def check_first_order(p):
    """Forward values and first-order gradients; returns what the comparison came to."""
    if p.ended:
        return BOTH_RAISE
    try:
        _backward(p)
        reference, outcome = p.ns["torch"], COMPARED
    except ProgramEnded:
        return BOTH_RAISE
    except SavedTensorModified:
        reference, outcome = p.rerun_torch_with_snapshots(), PYTORCH_REFUSES_MODIFIED_SAVED
    p.compare_all_vars()
    for name, _ in p.leaves:
        p.compare(f"{name}.grad", reference[name].grad, p.ns["fusegrad"][name].grad)
    return outcome


def check_second_order(p):
    """Gradients with create_graph, and gradients of a function of them."""
    if p.ended:
        return BOTH_RAISE
    if p.first_order_only:
        return NORM_OF_ZEROS
    leaves = ", ".join(name for name, _ in p.leaves)
    try:
        p.run(p.loss_source(), "loss")
        p.run(f"gs = torch.autograd.grad(loss, [{leaves}], create_graph=True, allow_unused=True)")
    except ProgramEnded:
        return BOTH_RAISE
    except SavedTensorModified:   # checked at first order
        return PYTORCH_REFUSES_MODIFIED_SAVED
    gs_t, gs_f = p.ns["torch"]["gs"], p.ns["fusegrad"]["gs"]
    for (name, _), gt, gf in zip(p.leaves, gs_t, gs_f):
        p.compare(f"d loss / d {name}", gt, gf, check_rg=False)
    # A function of the gradients (nonlinear in them, and mixing in the leaves) that requires grad
    # in PyTorch; a gradient that is constant in one library contributes a constant term.
    terms = [f"(gs[{i}] * gs[{i}] * {name}).sum() + gs[{i}].sin().sum()"
             for i, ((name, _), g) in enumerate(zip(p.leaves, gs_t)) if g is not None and g.requires_grad]
    if not terms:
        return COMPARED
    p.run("loss2 = " + " + ".join(terms))
    second = {}
    for key, lib in LIBS:
        loss2 = p.ns[key]["loss2"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            second[key] = (lib.autograd.grad(loss2, [p.ns[key][n] for n, _ in p.leaves], allow_unused=True)
                           if loss2.requires_grad else (None,) * len(p.leaves))
    p.lines.append(f"print(torch.autograd.grad(loss2, [{leaves}], allow_unused=True))")
    for (name, _), gt, gf in zip(p.leaves, second["torch"], second["fusegrad"]):
        p.compare(f"d loss2 / d {name}", gt, gf, check_rg=False, none_is_zero=True)
    return COMPARED


FIRST_ORDER_ONLY = "# first order only"


# Past failures first (pytest runs a file's tests in order), then the fuzz.
@pytest.mark.parametrize("number, check", [
    (number, check) for number, source in enumerate(CORPUS) for check in (check_first_order, check_second_order)
    if check is check_first_order or FIRST_ORDER_ONLY not in source])
def test_corpus_of_past_failures(number, check):
    check(replay(CORPUS[number], f"differential_corpus.CORPUS[{number}]"))


def test_fusegrad_differentiates_where_pytorch_refuses_a_modified_saved_tensor():
    """Deliberately better than PyTorch: sigmoid_ saves its output and mul_ then overwrites it, so
    PyTorch refuses the backward. fusegrad's in-place ops save a copy of what they overwrite and
    compute the right gradient, that of PyTorch with each saved tensor snapshotted when saved."""
    p = replay("""
x0 = torch.tensor([0.5, -1.25], dtype=torch.float64, requires_grad=True)
v0 = x0 * 2
v0.sigmoid_()
v0.mul_(x0)
""", "test_fusegrad_differentiates_where_pytorch_refuses_a_modified_saved_tensor")
    assert check_first_order(p) == PYTORCH_REFUSES_MODIFIED_SAVED
    x = np.array([0.5, -1.25])
    s = 1 / (1 + np.exp(-2 * x))
    np.testing.assert_allclose(p.ns["fusegrad"]["x0"].grad.numpy(), 1.125 * (2 * s * (1 - s) * x + s))


def test_std_of_equal_values_has_zero_second_derivative_where_pytorch_gives_nan():
    """std over equal values is 0, where it is not differentiable across them, and the fuzz draws
    var instead of std there: PyTorch's first derivative then depends on how the mean rounds (std
    1e-17 instead of 0 divides by it) and its second derivative is nan (0 * inf in its backward
    formula). Over one element std is 0 whatever the input: fusegrad's zero second derivative is
    right where PyTorch's nan is not."""
    second = {}
    for key, lib in LIBS:
        x = lib.tensor([0.3, -1.2], dtype=lib.float64, requires_grad=True)
        s = x.reshape(2, 1).std(dim=1, correction=0)
        g, = lib.autograd.grad((s * x).sum(), x, create_graph=True)
        second[key] = lib.autograd.grad((g * g).sum() + s.sum(), x)[0].tolist()
    assert np.isnan(second["torch"]).all() and second["fusegrad"] == [0.0, 0.0], second


@seed(FUZZ_SEED)
@settings(FUZZ, max_examples=500)
@given(programs())
def test_forward_and_first_order_gradients(p):
    note(f"# {DRAWN}\n{p.source()}")
    event(check_first_order(p))


@seed(FUZZ_SEED)
@settings(FUZZ, max_examples=300)
@given(programs())
def test_second_order_gradients(p):
    note(f"# {DRAWN}\n{p.source()}")
    event(check_second_order(p))


# ----------------------------------------------------------------------------- dtype promotion

DTYPES = ("float32", "float64", "int32", "int64", "bool")
_DATA = {"f": [1.5, -2.25, 3.0, 0.5, -4.0, 2.0], "i": [1, -2, 3, 5, -4, 2],
         "b": [True, False, True, True, False, True]}
OPERATORS = ["+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "//", "%", "**"]
FUNCTIONS = {"+": "torch.add", "-": "torch.sub", "*": "torch.mul", "/": "torch.div", "==": "torch.eq",
             "<": "torch.lt", ">=": "torch.ge", "//": "torch.floor_divide", "%": "torch.remainder",
             "**": "torch.pow"}
INPLACE_METHODS = {"+": "add_", "-": "sub_", "*": "mul_", "/": "div_"}

tensor_operands = st.tuples(st.just("tensor"), st.sampled_from(DTYPES), st.sampled_from([(), (3,), (2, 3)]))
scalar_operands = st.tuples(st.just("scalar"), st.sampled_from([2, -3, 1.5, -0.5, True, False]))


def _operand(lib, operand):
    if operand[0] == "scalar":
        return operand[1]
    _, dtype, shape = operand
    data = np.array(_DATA[dtype[0]][:int(np.prod(shape))]).reshape(shape)
    return lib.tensor(data.tolist(), dtype=getattr(lib, dtype))


def _operand_source(operand):
    if operand[0] == "scalar":
        return repr(operand[1])
    _, dtype, shape = operand
    data = np.array(_DATA[dtype[0]][:int(np.prod(shape))]).reshape(shape)
    return f"torch.tensor({data.tolist()!r}, dtype=torch.{dtype})"


@pytest.mark.parametrize("a, b, op, form", PROMOTION_CORPUS)
def test_promotion_corpus_of_past_failures(a, b, op, form):
    check_dtype_promotion(a, b, op, form, "from differential_corpus.PROMOTION_CORPUS")


@seed(FUZZ_SEED)
@settings(FUZZ, max_examples=600)
@given(a=st.one_of(tensor_operands, scalar_operands), b=st.one_of(tensor_operands, scalar_operands),
       op=st.sampled_from(OPERATORS), form=st.sampled_from(["operator", "function", "inplace"]))
def test_dtype_promotion(a, b, op, form):
    check_dtype_promotion(a, b, op, form, DRAWN)


def check_dtype_promotion(a, b, op, form, origin):
    """`a op b` in one form: the result's dtype, shape and values, or the error, as in PyTorch."""
    if a[0] == "scalar" and (b[0] == "scalar" or form != "operator"):
        a, b = b, a                       # the functions and in-place methods take a tensor first
    if a[0] == "scalar" and b[0] == "scalar":
        return
    if form == "function" and op not in FUNCTIONS or form == "inplace" and op not in INPLACE_METHODS:
        form = "operator"
    source = {"operator": "{a} {op} {b}", "function": "{fn}({a}, {b})",
              "inplace": "{a}.{method}({b})"}[form]
    source = source.format(a="a", b="b", op=op, fn=FUNCTIONS.get(op), method=INPLACE_METHODS.get(op))
    results, errors = {}, {}
    for key, lib in LIBS:
        ns = {"torch": lib, "a": _operand(lib, a), "b": _operand(lib, b)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[key] = eval(source, ns)
        except Exception as e:  # noqa: BLE001
            errors[key] = e
    repro = f"a = {_operand_source(a)}; b = {_operand_source(b)}; {source}  # {origin}"
    if "ZeroDivisionError" in str(errors.get("torch", "")):
        return   # integer // or % by zero: PyTorch raises, NumPy (and fusegrad) give 0; left out
    if "fusegrad" in results:
        try:
            fusegrad_result = f"{results['fusegrad'].dtype} {results['fusegrad']!r}"
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{repro}\nfusegrad returns a broken tensor: {type(e).__name__}: {e}\n"
                                 f"PyTorch: {errors.get('torch') or results['torch']!r}") from None
    if "torch" in errors or "fusegrad" in errors:
        # Where PyTorch refuses (bool subtraction, an in-place result it can't cast back or
        # broadcast into the target, integers to negative powers), fusegrad must refuse too.
        assert ("torch" in errors) == ("fusegrad" in errors), (
            f"{repro}\nPyTorch: {errors.get('torch') or results['torch']!r}\n"
            f"fusegrad: {errors.get('fusegrad') or fusegrad_result}")
        return
    t, f = results["torch"], results["fusegrad"]
    assert repr(f.dtype) == repr(t.dtype), f"{repro}\nPyTorch: {t.dtype}, fusegrad: {f.dtype}"
    assert tuple(f.shape) == tuple(t.shape), f"{repro}\nPyTorch: {tuple(t.shape)}, fusegrad: {tuple(f.shape)}"
    assert _close(f.numpy(), t.numpy(), rtol=1e-6), f"{repro}\nPyTorch: {t!r}\nfusegrad: {f!r}"
