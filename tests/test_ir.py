"""The IR layer on its own: builder peepholes, dead-code elimination, structure keys, and the
interpreter's two ways of running a graph."""
import re

import numpy as np

import fusegrad as torch
from fusegrad.ir import OPS, Builder, dead_code_elimination, dtypes, structure_key, topological_order
from fusegrad.runtime.interpreter import run_graph
from fusegrad.tracer.dispatch import edge


def test_builder_folds_permutes_and_no_op_reshapes():
    b = Builder()
    x = b.placeholder(None, (2, 3, 4), dtypes.float32)
    assert b.permute(b.permute(x, axes=(0, 2, 1)), axes=(0, 2, 1)) is x
    once = b.permute(b.permute(x, axes=(1, 0, 2)), axes=(0, 2, 1))
    assert once.op is OPS["permute"] and once.inputs == (x,) and once.attrs["axes"] == (1, 2, 0)
    assert once.shape == (3, 4, 2)
    assert b.reshape(x, shape=(2, 3, 4)) is x
    assert b.sum_to(b.expand(x, shape=(5, 2, 3, 4)), (2, 3, 4)).op is OPS["sum"]


def test_dead_code_elimination_drops_nodes_and_placeholders_and_plans_frees():
    b = Builder()
    x = b.placeholder(None, (3,), dtypes.float32)
    unused = b.placeholder(None, (3,), dtypes.float32)
    y = b.exp(x)
    b.sin(unused)                        # dead
    z = b.mul(y, y)
    out = b.add(z, x)
    graph = dead_code_elimination(b.graph([out]))
    assert graph.inputs == [x] and [n.op.name for n in graph.nodes] == ["exp", "mul", "add"]
    assert graph.release[z] == [y]           # mul reads y twice; it is freed once
    assert set(graph.release[out]) == {z, x}


def test_interpreter_gives_the_same_values_walking_and_from_its_schedule():
    b = Builder()
    x = b.placeholder(None, (4,), dtypes.float64)
    out = b.sum(b.mul(b.tanh(x), x), axes=(0,), keepdim=False)
    graph = dead_code_elimination(b.graph([out, x]))
    value = np.array([0.5, -1.0, 2.0, 0.0])
    first = run_graph(graph, [value])       # walks the nodes
    second = run_graph(graph, [value])      # runs the lowered schedule
    expected = np.sum(np.tanh(value) * value)
    assert first[0] == second[0] == expected and first[1] is value


def _recorded(scale, shape=(2, 3)):
    x = torch.ones(*shape, requires_grad=True)
    return (x * scale).sin().sum()


def test_structure_key_matches_equal_recordings_and_separates_different_ones():
    def key(t):
        roots = [edge(t)]
        return structure_key(topological_order(roots), roots, lambda n: not n.inputs, lambda n: False)

    assert key(_recorded(2.0)) == key(_recorded(2.0))
    assert key(_recorded(2.0)) != key(_recorded(3.0))          # mul's VJP reads the scalar
    assert key(_recorded(2.0)) != key(_recorded(2.0, (3, 2)))
    assert key(_recorded(0.0)) != key(_recorded(-0.0))
    x = torch.ones(2, requires_grad=True)
    y = x * 2
    roots = [edge(y.sum())]
    assert structure_key(topological_order(roots), roots, lambda n: False, lambda n: True) is None


def test_every_op_definition_is_complete():
    for name, op in OPS.items():
        if op.kind == "source":
            continue
        assert callable(op.impl) and callable(op.infer), name
        if op.kind == "elementwise":
            assert op.expr, name                               # codegen pastes it into fused loops
        # PyTorch's names: <Op>Backward0/1, CopySlices, and CompiledFunctionBackward (torch.compile's)
        assert op.grad_fn.endswith(("Backward0", "Backward1", "CopySlices")) or \
            op.grad_fn == "CompiledFunctionBackward", name


_SPECIAL_VALUES = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.3, 1.5, -2.5])


def test_scalar_expressions_compute_what_the_impls_do():
    """Codegen pastes each elementwise op's `expr` into fused loops: run as Python on NumPy scalars,
    it must give the impl's values (to rounding) on every pair of special values, NaN, inf and zeros
    included."""
    checked = []
    for op in OPS.values():
        if op.kind != "elementwise" or op.expr is None or op.name == "cast":
            continue
        arity = len({int(k) for k in re.findall(r"{(\d)}", op.expr)})
        grids = list(np.meshgrid(*[_SPECIAL_VALUES] * arity, indexing="ij"))
        if op.name == "where":
            grids[0] = grids[0] > 0   # a boolean condition
        if op.name.startswith("logical_"):   # codegen fuses these for bool operands only
            grids = [g > 0 for g in grids]
        with np.errstate(all="ignore"):
            want = np.asarray(op.impl(*grids))
            got = [eval(op.expr.format(*(f"v[{k}]" for k in range(arity))), {"np": np}, {"v": v})
                   for v in zip(*(g.reshape(-1) for g in grids))]
        # logical expressions give an operand (`x and y`); its truth is what a bool output stores
        got = np.array(got, dtype=want.dtype if want.dtype == np.bool_ else np.float64).reshape(want.shape)
        np.testing.assert_allclose(got, want.astype(np.float64), rtol=1e-12, atol=0, err_msg=op.name)
        checked.append(op.name)
    assert {"sign", "maximum", "minimum", "binary_cross_entropy", "where", "sigmoid"} <= set(checked)
