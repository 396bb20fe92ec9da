"""The Op: one definition per IR operation, holding every rule about it.

An Op carries its NumPy implementation (what eager mode and the interpreter run), its shape and
dtype rule (abstract evaluation, also the source of clear error messages), for elementwise ops a
scalar expression that codegen pastes into fused loops, and its VJP rule written with IR ops so
that backward graphs are IR too. Ops are registered by name in `OPS`.
"""

OPS = {}


class ShapeError(RuntimeError):
    """A shape or dtype rule rejected an op's operands; the message names the op and the shapes."""


class Op:
    __slots__ = ("name", "impl", "infer", "vjp", "saves", "grad_fn", "expr", "kind", "is_view",
                 "differentiable", "blas", "eager")

    def __init__(self, name, impl, infer, vjp=None, saves=(), grad_fn=None, expr=None,
                 kind="other", is_view=False, blas=False):
        self.name = name
        self.impl = impl          # impl(*values, **attrs) -> np.ndarray
        self.infer = infer        # infer(shapes, dtypes, attrs) -> (shape, dtype); raises ShapeError
        self.vjp = vjp            # vjp(b, g, node, saved) -> cotangent (or None) per input
        self.saves = saves        # input indices and -1 (output) backward needs, or fn(n_inputs)
        self.grad_fn = grad_fn or "".join(p.capitalize() for p in name.split("_")) + "Backward0"
        self.expr = expr          # scalar expression template for elementwise ops, e.g. "({0} * {1})"
        self.kind = kind          # "elementwise", "reduction", "view", "source", "opaque", "other"
        self.is_view = is_view    # the NumPy result may share memory with input 0
        self.differentiable = vjp is not None
        self.blas = blas          # the impl computes through BLAS, on BLAS's own thread pool
        self.eager = None         # what eager mode runs in place of impl, when set (runtime/plan.py)

    def saved_slots(self, n_inputs):
        """What backward needs, for a node with n_inputs: input indices, -1 for the output."""
        saves = self.saves
        return saves if saves.__class__ is tuple else saves(n_inputs)

    def __repr__(self):
        return f"<op {self.name}>"


def defop(name, impl, infer, **rules):
    op = Op(name, impl, infer, **rules)
    if name in OPS:
        raise ValueError(f"op {name!r} is defined twice")
    OPS[name] = op
    return op
