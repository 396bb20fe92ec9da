"""Tests for custom autograd Functions (fusegrad.autograd.Function): the PyTorch documentation's
examples (Exp, LinearFunction, MulConstant) against PyTorch, gradcheck/gradgradcheck in float64,
the ctx API (save_for_backward, needs_input_grad, mark_non_differentiable, mark_dirty,
set_materialize_grads, setup_context, once_differentiable), grad_fn objects, and the errors PyTorch
gives for misuse."""
import math
import warnings

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.autograd import Function, gradcheck, gradgradcheck


def torch_or_skip():
    return pytest.importorskip("torch")


def optional_torch():
    """(torch,) when it is importable: tests check fusegrad against hard-coded values, and torch too."""
    try:
        import torch
    except ImportError:
        return ()
    return (torch,)


def function_classes(ns):
    """The same custom Functions written against fusegrad or torch (`ns`)."""
    base = ns.autograd.Function

    class Exp(base):
        @staticmethod
        def forward(ctx, i):
            result = i.exp()
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, grad_output):
            result, = ctx.saved_tensors
            return grad_output * result

    class LinearFunction(base):   # the docs' example, in the setup_context form
        @staticmethod
        def forward(input, weight, bias=None):
            output = input.mm(weight.t())
            if bias is not None:
                output += bias.unsqueeze(0).expand_as(output)
            return output

        @staticmethod
        def setup_context(ctx, inputs, output):
            input, weight, bias = inputs
            ctx.save_for_backward(input, weight, bias)

        @staticmethod
        def backward(ctx, grad_output):
            input, weight, bias = ctx.saved_tensors
            grad_input = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_input = grad_output.mm(weight)
            if ctx.needs_input_grad[1]:
                grad_weight = grad_output.t().mm(input)
            if bias is not None and ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum(0)
            return grad_input, grad_weight, grad_bias

    class LegacyLinear(base):   # the same, with forward(ctx, ...)
        @staticmethod
        def forward(ctx, input, weight, bias=None):
            ctx.save_for_backward(input, weight, bias)
            output = input.mm(weight.t())
            if bias is not None:
                output += bias.unsqueeze(0).expand_as(output)
            return output

        backward = LinearFunction.backward

    class MulConstant(base):
        @staticmethod
        def forward(ctx, tensor, constant):
            ctx.constant = constant   # ctx holds non-tensors as attributes
            return tensor * constant

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output * ctx.constant, None

    class Cube(base):   # a backward that uses its inputs: differentiable again
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * 3 * x ** 2

    class SplitScale(base):   # two differentiable outputs and a non-differentiable one
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            mask = x > 0
            ctx.mark_non_differentiable(mask)
            return x * y, x.sin(), mask

        @staticmethod
        def backward(ctx, g_prod, g_sin, g_mask):
            x, y = ctx.saved_tensors
            return g_prod * y + g_sin * x.cos(), g_prod * x

    return Exp, LinearFunction, LegacyLinear, MulConstant, Cube, SplitScale


Exp, LinearFunction, LegacyLinear, MulConstant, Cube, SplitScale = function_classes(fg)
RNG = np.random.default_rng(3)
A, W, B = RNG.standard_normal((4, 3)), RNG.standard_normal((2, 3)), RNG.standard_normal(2)


def leaf(ns, value):
    return ns.tensor(value, dtype=ns.float64, requires_grad=True)


# ---------------------------------------------------------------- the documentation's examples

def run_examples(ns):
    exp, linear, legacy, mul_constant, cube, split = function_classes(ns)
    a, w, b = leaf(ns, A), leaf(ns, W), leaf(ns, B)
    results = {}
    y = exp.apply(a)
    results["exp"] = y.detach().numpy()
    results["exp grad"] = ns.autograd.grad(y.sum(), a)[0].numpy()
    for name, fn in (("linear", linear), ("legacy", legacy)):
        out = fn.apply(a, w, b)
        (out * out).sum().backward()
        results[name] = out.detach().numpy()
        results[name + " grads"] = [t.grad.numpy().copy() for t in (a, w, b)]
        for t in (a, w, b):
            t.grad = None
    out = linear.apply(a, w)   # bias left at its default
    results["linear no bias"] = ns.autograd.grad(out.sum(), (a, w))[0].numpy()
    out = mul_constant.apply(a, 2.5)
    results["mul_constant"] = ns.autograd.grad((out ** 2).sum(), a)[0].numpy()
    c = cube.apply(a)
    g, = ns.autograd.grad(c.sum(), a, create_graph=True)
    results["cube second"] = ns.autograd.grad(g.sum(), a)[0].numpy()
    x, y = leaf(ns, A), leaf(ns, A[::-1].copy())
    prod, sin, mask = split.apply(x, y)
    results["split"] = [prod.detach().numpy(), sin.detach().numpy(), mask.numpy()]
    results["split flags"] = [prod.requires_grad, sin.requires_grad, mask.requires_grad, mask.grad_fn is None]
    results["split grads"] = [v.numpy() for v in ns.autograd.grad((prod * 2 + sin).sum(), (x, y),
                                                                  retain_graph=True)]
    results["split only sin"] = ns.autograd.grad(sin.sum(), x)[0].numpy()
    return results


def numpy_examples():
    """run_examples' values, worked out by hand with NumPy."""
    out = A @ W.T + B
    grads = [2 * out @ W, 2 * out.T @ A, 2 * out.sum(0)]
    x, y = A, A[::-1].copy()
    return {
        "exp": np.exp(A), "exp grad": np.exp(A),
        "linear": out, "linear grads": grads, "legacy": out, "legacy grads": grads,
        "linear no bias": np.ones((4, 2)) @ W,
        "mul_constant": 2 * 2.5 ** 2 * A,
        "cube second": 6 * A,
        "split": [x * y, np.sin(x), x > 0], "split flags": [True, True, False, True],
        "split grads": [2 * y + np.cos(x), 2 * x], "split only sin": np.cos(x),
    }


def assert_examples(results, expected):
    assert list(results) == list(expected)
    for key, want in expected.items():
        if key.endswith("flags"):
            assert results[key] == want, key
            continue
        for got, ref in zip(*(v if isinstance(v, list) else [v] for v in (results[key], want))):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14, err_msg=key)


def test_documentation_examples():
    expected = numpy_examples()
    for ns in (fg,) + optional_torch():   # the references are torch's behaviour too
        assert_examples(run_examples(ns), expected)


def test_grad_fn_objects_read_like_torch():
    texts = []
    for ns in (fg,) + optional_torch():
        exp, linear, *_ = function_classes(ns)
        y = exp.apply(leaf(ns, [1.0, 2.0]))
        grad_fn = y.grad_fn
        assert not isinstance(grad_fn, exp) and not isinstance(grad_fn, ns.autograd.Function)
        assert len(grad_fn.next_functions) == 1 and grad_fn.next_functions[0][1] == 0
        texts.append((repr(y), grad_fn.name(), type(grad_fn).__name__, grad_fn.needs_input_grad,
                      linear.apply(ns.ones(2, 3), ns.ones(4, 3)).grad_fn))
    assert texts[0] == ("tensor([2.7183, 7.3891], dtype=torch.float64, grad_fn=<ExpBackward>)", "ExpBackward",
                        "ExpBackward", (True,), None)
    assert texts[-1] == texts[0]


def test_subclassing_function_gives_apply():
    """autograd.Function used to be the grad_fn node class: a subclass had no apply."""
    class Double(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    x = leaf(fg, [1.0, 3.0])
    y = Double.apply(x)
    assert y.tolist() == [2.0, 6.0] and y.grad_fn.name() == "DoubleBackward"
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]
    assert y.grad_fn.apply(fg.ones(2)).tolist() == [2.0, 2.0]   # torch's grad_fn.apply calls backward


# ---------------------------------------------------------------- gradcheck / gradgradcheck

@pytest.mark.parametrize("name", ["exp", "linear", "legacy_linear", "mul_constant", "cube", "split_scale"])
def test_gradcheck_and_gradgradcheck(name):
    a, w, b = leaf(fg, A), leaf(fg, W), leaf(fg, B)
    cases = {
        "exp": (Exp.apply, (a,)),
        "linear": (LinearFunction.apply, (a, w, b)),
        "legacy_linear": (LegacyLinear.apply, (a, w, b)),
        "mul_constant": (lambda t: MulConstant.apply(t, -1.5), (a,)),
        "cube": (Cube.apply, (a,)),
        "split_scale": (lambda x, y: SplitScale.apply(x, y)[:2], (a, leaf(fg, A * 0.5))),
    }
    fn, inputs = cases[name]
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8)
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-8)


def test_create_graph_runs_the_backward_through_fusegrad_ops():
    """The backward of Exp uses the saved output, whose grad_fn is Exp again: differentiating the
    gradient calls Exp's backward a second time, as in torch."""
    calls = []

    class CountingExp(Exp):
        @staticmethod
        def backward(ctx, g):
            calls.append(g.requires_grad)
            return Exp.backward(ctx, g)

    x = leaf(fg, [0.5, -1.0])
    g, = fg.autograd.grad(CountingExp.apply(x).sum(), x, create_graph=True)
    assert calls == [False] and g.requires_grad and g.grad_fn is not None
    g2, = fg.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g2.numpy(), np.exp([0.5, -1.0]), rtol=1e-15)
    assert calls == [False, False]


# ---------------------------------------------------------------- the ctx API

def test_needs_input_grad_in_forward_and_backward():
    seen = []

    class Probe(Function):
        @staticmethod
        def forward(ctx, a, b, k):
            seen.append(("forward", ctx.needs_input_grad, fg.is_grad_enabled()))
            return a * b * k

        @staticmethod
        def backward(ctx, g):
            seen.append(("backward", ctx.needs_input_grad, fg.is_grad_enabled()))
            return g, None, None

    x = leaf(fg, [1.0, 2.0])
    Probe.apply(x, fg.ones(2, dtype=fg.float64), 2).sum().backward()
    assert seen == [("forward", (True, False, False), False), ("backward", (True, False, False), False)]
    with fg.no_grad():
        y = Probe.apply(x, x, 1)
    assert not y.requires_grad and y.grad_fn is None and seen[-1][1] == (False, False, False)
    y = Probe.apply(fg.ones(2), fg.ones(2), 1)
    assert not y.requires_grad and y.grad_fn is None


def test_materialize_grads():
    records = []
    for ns in (fg,) + optional_torch():
        seen = []

        class Two(ns.autograd.Function):
            @staticmethod
            def forward(ctx, x, materialize):
                ctx.set_materialize_grads(materialize)
                return x * 2, x * 3

            @staticmethod
            def backward(ctx, g1, g2):
                seen.append((None if g1 is None else g1.tolist(), None if g2 is None else g2.tolist()))
                return (g1 * 2 if g1 is not None else 0) + (g2 * 3 if g2 is not None else 0), None

        x = leaf(ns, [1.0, 2.0])
        for materialize in (True, False):
            first, _ = Two.apply(x, materialize)
            grad, = ns.autograd.grad(first.sum(), x)
            seen.append(grad.tolist())
        records.append(seen)
    assert records[-1] == records[0] == [([1.0, 1.0], [0.0, 0.0]), [2.0, 2.0], ([1.0, 1.0], None), [2.0, 2.0]]


def test_mark_dirty_matches_torch():
    results = []
    for ns in (fg,) + optional_torch():
        class Double_(ns.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                x.mul_(2)
                ctx.mark_dirty(x)
                return x

            @staticmethod
            def backward(ctx, g):
                return g * 2

        base = leaf(ns, [1.0, 2.0])
        c = base.clone()
        d = Double_.apply(c)
        grad, = ns.autograd.grad((d * d).sum(), base)   # d = 2 * base: d(sum d^2)/d base = 8 * base
        results.append((d is c, c.grad_fn is d.grad_fn, c.tolist(), grad.tolist(), c._version))
        with pytest.raises(RuntimeError, match="^a leaf Variable that requires grad has been used in an in-place "
                                               "operation.$"):
            Double_.apply(leaf(ns, [1.0]))
        # through a view: the viewed tensor's history scatters the result in
        root = leaf(ns, [1.0, 2.0, 3.0])
        whole = root.clone()
        assert Double_.apply(whole[1:]).tolist() == [4.0, 6.0] and whole.tolist() == [1.0, 4.0, 6.0]
        assert ns.autograd.grad((whole * whole).sum(), root)[0].tolist() == [2.0, 16.0, 24.0]
        with pytest.raises(RuntimeError, match="^a view of a leaf Variable that requires grad is being used in an "
                                               "in-place operation.$"):
            Double_.apply(root[1:])

        class DirtyNotReturned(ns.autograd.Function):
            @staticmethod
            def forward(ctx, x, y):
                ctx.mark_dirty(x)
                return y * 2

        with pytest.raises(RuntimeError, match="^Some elements marked as dirty during the forward method were not "
                                               "returned as output. The inputs that are modified inplace must all be "
                                               "outputs of the Function.$"):
            DirtyNotReturned.apply(ns.ones(2), ns.ones(2))
    # the write in forward and marking it dirty each count as a version
    assert results[-1] == results[0] == (True, True, [2.0, 4.0], [8.0, 16.0], 2)


def test_returning_an_input_gives_a_new_tensor():
    class Identity(Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 3

    x = leaf(fg, [1.0, 2.0])
    y = Identity.apply(x)
    assert y is not x and y.grad_fn.name() == "IdentityBackward" and x.is_leaf
    given = fg.tensor([1.0, 1.0], dtype=fg.float64)
    y.backward(given)
    assert x.grad.tolist() == [3.0, 3.0]

    class PassThrough(Function):   # the gradient returned is the grad_output itself
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return g

    z = leaf(fg, [1.0, 2.0])
    PassThrough.apply(z).backward(given)
    z.grad += 1   # in place into .grad: must not write into `given`
    assert given.tolist() == [1.0, 1.0] and z.grad.tolist() == [2.0, 2.0]


def test_broadcast_and_dtype_of_returned_gradients_follow_torch():
    grads = []
    for ns in (fg,) + optional_torch():
        class Wide(ns.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):   # a gradient with an extra broadcast dimension, in float32
                return (g * 2).expand(3, 2).to(ns.float32)

        x = leaf(ns, [1.0, 2.0])
        grad, = ns.autograd.grad(Wide.apply(x).sum(), x)
        grads.append((grad.tolist(), repr(grad.dtype)))
    assert grads[-1] == grads[0] == ([6.0, 6.0], "torch.float64")


def test_once_differentiable():
    outcomes = []
    for ns in (fg,) + optional_torch():
        modes = []

        class Square(ns.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x

            @staticmethod
            @(ns.autograd.function.once_differentiable)
            def backward(ctx, g):
                modes.append(ns.is_grad_enabled())
                x, = ctx.saved_tensors
                return 2 * x * g

        x = leaf(ns, [1.0, 3.0])
        grad, = ns.autograd.grad(Square.apply(x).sum(), x)
        # create_graph with a grad_output that needs no grad: the result does not require grad at all
        plain, = ns.autograd.grad(Square.apply(x).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError) as first:
            plain.sum().backward()
        # a grad_output that requires grad: the result does, and differentiating it fails
        g, = ns.autograd.grad(Square.apply(x), x, grad_outputs=leaf(ns, [1.0, 1.0]), create_graph=True)
        with pytest.raises(RuntimeError) as second:
            g.sum().backward()
        outcomes.append((grad.tolist(), plain.requires_grad, g.tolist(), g.requires_grad, modes, str(first.value),
                         str(second.value)))
    assert outcomes[-1] == outcomes[0] == (
        [2.0, 6.0], False, [2.0, 6.0], True, [False, False, False],
        "element 0 of tensors does not require grad and does not have a grad_fn",
        "trying to differentiate twice a function that was marked with @once_differentiable")


def test_hooks_and_retain_grad_on_outputs_match_torch():
    results = []
    for ns in (fg,) + optional_torch():
        exp, *_ = function_classes(ns)
        x = leaf(ns, [1.0, 2.0])
        y = exp.apply(x)
        y.retain_grad()
        y.register_hook(lambda g: g * 10)
        y.sum().backward()
        results.append((y.grad.tolist(), x.grad.tolist()))
    assert results[-1] == results[0]
    assert results[0][0] == [10.0, 10.0]   # retain_grad keeps the hooked gradient
    np.testing.assert_allclose(results[0][1], 10 * np.exp([1.0, 2.0]), rtol=1e-15)


def test_backward_graph_is_not_cached_across_calls():
    """Two calls with the same structure but different Python state must not share a backward graph."""
    x = leaf(fg, [1.0, 2.0])
    for constant in (2.0, -3.0, 0.5):
        grad, = fg.autograd.grad(MulConstant.apply(x, constant).sum(), x)
        assert grad.tolist() == [constant, constant]


def test_saved_tensors_are_freed_and_version_checked():
    messages = []
    for ns in (fg,) + optional_torch():
        exp, *_ = function_classes(ns)
        y = exp.apply(leaf(ns, [1.0, 2.0]))
        y.sum().backward(retain_graph=True)
        y.sum().backward()
        with pytest.raises(RuntimeError) as second:
            y.sum().backward()
        with pytest.raises(RuntimeError) as direct:
            y.grad_fn.saved_tensors
        messages.append((str(second.value), str(direct.value)))
    freed = ("Trying to backward through the graph a second time (or directly access saved tensors after they have "
             "already been freed). Saved intermediate values of the graph are freed when you call .backward() or "
             "autograd.grad(). Specify retain_graph=True if you need to backward through the graph a second time or "
             "if you need to access saved tensors after calling backward.")
    assert all(m == (freed, freed) for m in messages)

    class SaveInput(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            a, = ctx.saved_tensors
            return 2 * a * g

    y = Exp.apply(leaf(fg, [1.0, 2.0]))
    y.sum().backward()
    assert y.grad_fn._saved == ()   # freed with the graph: the output no longer keeps them alive

    a = leaf(fg, [1.0, 2.0]).clone()
    out = SaveInput.apply(a)
    a.add_(1)
    with pytest.raises(RuntimeError, match=r"^one of the variables needed for gradient computation has been modified "
                                           r"by an inplace operation: \[torch.DoubleTensor \[2\]\], saved by "
                                           r"SaveInputBackward, is at version 1; expected version 0 instead"):
        out.sum().backward()


# ---------------------------------------------------------------- misuse: torch's errors

def misuse_cases(ns):
    base = ns.autograd.Function

    class TooFew(base):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g

    class BadShape(base):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return g.sum()

    class GradForConstant(base):
        @staticmethod
        def forward(ctx, a, k):
            return a * k

        @staticmethod
        def backward(ctx, g):
            return g, g

    class SavesInt(base):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(3)
            return a * 2

    class NoBackward(base):
        @staticmethod
        def forward(ctx, a):
            return a * 2

    class NoForward(base):
        pass

    class ReturnsString(base):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return "gradient"

    class BothBackwardAndVjp(base):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return g

        @staticmethod
        def vjp(ctx, g):
            return g

    x = ns.ones(2, 3, dtype=ns.float64, requires_grad=True)
    return [
        lambda: TooFew.apply(x, x).sum().backward(),
        lambda: BadShape.apply(x).sum().backward(),
        lambda: GradForConstant.apply(x, 2).sum().backward(),
        lambda: SavesInt.apply(x),
        lambda: NoBackward.apply(x).sum().backward(),
        lambda: NoForward.apply(x),
        lambda: ReturnsString.apply(x).sum().backward(),
        lambda: BothBackwardAndVjp.apply(x).sum().backward(),
        lambda: TooFew()(x, x),
        lambda: base.apply(x),
    ]


MISUSE_ERRORS = [   # what torch 2.13 raises for each of misuse_cases
    ("RuntimeError", "function TooFewBackward returned an incorrect number of gradients (expected 2, got 1)"),
    ("RuntimeError", "Function BadShapeBackward returned an invalid gradient at index 0 - got [] but expected shape "
                     "compatible with [2, 3]"),
    ("RuntimeError", "function GradForConstantBackward returned a gradient different than None at position 2, but "
                     "the corresponding forward input was not a Variable"),
    ("TypeError", "save_for_backward can only save variables, but argument 0 is of type int"),
    ("NotImplementedError", "You must implement either the backward or vjp method for your custom autograd.Function "
                            "to use it with backward mode AD."),
    ("NotImplementedError", "You must implement the forward function for custom autograd.Function."),
    ("RuntimeError", "expected Variable or None (got str)"),
    ("RuntimeError", "Implementing both 'backward' and 'vjp' for a custom Function is not allowed. You should only "
                     "implement one of them."),
    ("RuntimeError", "Legacy autograd function with non-static forward method is deprecated. Please use new-style "
                     "autograd function with static forward method. (Example: "
                     "https://pytorch.org/docs/stable/autograd.html#torch.autograd.Function)"),
    ("NotImplementedError", "You must implement the forward function for custom autograd.Function."),
]


@pytest.mark.parametrize("ns", [fg] + list(optional_torch()), ids=lambda ns: ns.__name__)
def test_misuse_errors_match_torch(ns):
    caught = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # instantiating a Function warns first
        for case in misuse_cases(ns):
            with pytest.raises(Exception) as info:
                case()
            caught.append((type(info.value).__name__, str(info.value)))
    assert caught == MISUSE_ERRORS


def test_instantiating_warns_like_torch():
    with pytest.warns(DeprecationWarning, match="should not be instantiated. Methods on autograd functions are all "
                                                "static, so you should invoke them on the class itself"):
        Exp()


def test_tutorial_legendre_polynomial_training_matches_torch():
    """The "Defining new autograd functions" example of PyTorch's tutorials: a custom P3 in a
    hand-written training loop; every parameter follows torch's after each step."""
    torch = torch_or_skip()
    histories = []
    for ns in (torch, fg):
        class LegendrePolynomial3(ns.autograd.Function):
            @staticmethod
            def forward(ctx, input):
                ctx.save_for_backward(input)
                return 0.5 * (5 * input ** 3 - 3 * input)

            @staticmethod
            def backward(ctx, grad_output):
                input, = ctx.saved_tensors
                return grad_output * 1.5 * (5 * input ** 2 - 1)

        x = ns.linspace(-math.pi, math.pi, 200, dtype=ns.float64)
        y = ns.sin(x)
        a, b, c, d = (ns.full((), value, dtype=ns.float64, requires_grad=True) for value in (0.0, -1.0, 0.0, 0.3))
        history = []
        for _ in range(20):
            y_pred = a + b * LegendrePolynomial3.apply(c + d * x)
            loss = (y_pred - y).pow(2).sum()
            loss.backward()
            with ns.no_grad():
                for p in (a, b, c, d):
                    p -= 5e-6 * p.grad
                    p.grad = None
            history.append([loss.item()] + [p.item() for p in (a, b, c, d)])
        histories.append(history)
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-12, atol=1e-15)   # a and c stay near 0
