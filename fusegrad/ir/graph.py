"""Nodes, graphs and the builder that emits IR.

A Node is one op applied to inputs. An input is another Node, or (in graphs recorded by eager
execution) a constant: a NumPy array that needs no gradient or a Python scalar. Every node has a
single output with a static shape and dtype. A Graph is a topologically ordered list of nodes with
placeholders as inputs; it prints as readable Python-like text.
"""
import numpy as np

from .dtypes import DType, from_numpy_dtype, result_type
from .op import OPS


class Node:
    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "__weakref__")

    def __init__(self, op, inputs, attrs, shape, dtype):
        self.op = op
        self.inputs = inputs
        self.attrs = attrs      # dict of op attributes, or None
        self.shape = shape
        self.dtype = dtype

    def __repr__(self):
        return f"<{self.op.name} {format_type(self.dtype, self.shape)}>"


def shape_of(value):
    return value.shape if hasattr(value, "shape") else ()


def format_type(dtype, shape):
    short = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64", "int32": "i32",
             "bool": "bool"}[dtype.name]
    return f"{short}[{','.join(map(str, shape))}]"


def format_attr(value):
    if isinstance(value, DType):
        return value.name
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    return repr(value)


class Graph:
    """A list of nodes in execution order; `inputs` are placeholder nodes, `outputs` any nodes."""

    def __init__(self, nodes, inputs, outputs):
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.release = None   # {node: values read for the last time by it}, set by passes

    def __str__(self):
        return format_nodes(self.nodes, self.inputs, self.outputs)


def format_nodes(nodes, inputs=(), outputs=(), name="graph"):
    """Render nodes as Python-like text: `%3 = mul(%1, %2)  # f32[2,3]`."""
    names, statements = name_values(nodes, inputs)
    lines = [f"def {name}({', '.join(f'{names[id(n)]}: {format_type(n.dtype, n.shape)}' for n in inputs)}):"]
    for node in statements:
        lines.append(f"    {names[id(node)]} = {format_call(node, names)}  # {format_type(node.dtype, node.shape)}")
    lines.append(f"    return {', '.join(format_value(o, names) for o in outputs)}")
    return "\n".join(lines)


def name_values(nodes, inputs):
    """The names of the text form, {id(node): "%i"}: the inputs first, then the nodes in order,
    and the nodes that are statements (neither inputs nor constants, which print inline)."""
    names = {id(node): f"%{i}" for i, node in enumerate(inputs)}
    statements = []
    for node in nodes:
        if id(node) not in names and node.op.name != "const":
            names[id(node)] = f"%{len(names)}"
            statements.append(node)
    return names, statements


def format_value(v, names):
    """How a node's input prints: its name, or a constant inline."""
    if isinstance(v, Node):
        if v.op.name == "const":
            return repr(v.attrs["value"])
        return names.get(id(v), "%?")
    if isinstance(v, np.ndarray):
        return f"const({format_type(from_numpy_dtype(v.dtype), v.shape)})"
    return repr(v)


def format_call(node, names):
    """`mul(%1, 2)`: the op applied to its inputs and attributes."""
    args = [format_value(v, names) for v in node.inputs]
    if node.attrs:
        args += [f"{k}={format_attr(v)}" for k, v in node.attrs.items()]
    return f"{node.op.name}({', '.join(args)})"


class Builder:
    """Emits nodes into a new graph. Each registered op is a method: `b.mul(x, y)`.

    Python scalars given as inputs become `const` nodes of the other operands' dtype, the way a
    PyTorch scalar operand takes the tensor's type. Placeholders bind graph inputs to values."""

    def __init__(self):
        self.nodes = []
        self.inputs = []
        self.bindings = []

    def placeholder(self, value, shape, dtype):
        node = Node(OPS["placeholder"], (), None, shape, dtype)
        self.inputs.append(node)
        self.bindings.append(value)
        return node

    def emit(self, op, inputs, attrs=None):
        try:
            shapes = [v.shape for v in inputs]
        except AttributeError:   # Python scalars among the inputs take the type of the tensor operands
            like = next((v.dtype for v in reversed(inputs) if isinstance(v, Node)), None)
            if like is None:   # only scalars: PyTorch's promotion among them
                like = result_type(inputs)
            inputs = tuple(v if isinstance(v, Node) else self.const(v, like) for v in inputs)
            shapes = [v.shape for v in inputs]
        shape, dtype = op.infer(shapes, [v.dtype for v in inputs], attrs)
        node = Node(op, inputs, attrs, shape, dtype)
        self.nodes.append(node)
        return node

    def const(self, value, dtype=None):
        dtype = dtype or (from_numpy_dtype(np.asarray(value).dtype))
        node = Node(OPS["const"], (), {"value": value, "dtype": dtype}, (), dtype)
        self.nodes.append(node)
        return node

    def graph(self, outputs):
        return Graph(self.nodes, self.inputs, outputs)

    # Composites used by VJP rules.
    def sum_to(self, x, shape):
        """Sum a broadcast cotangent back down to `shape` (the reverse of broadcasting)."""
        if x.shape == shape:
            return x
        lead = len(x.shape) - len(shape)
        stretched = tuple(i + lead for i, n in enumerate(shape) if n == 1 and x.shape[i + lead] != 1)
        if stretched:
            x = self.sum(x, axes=stretched, keepdim=True)
        if lead:   # without keepdim, so the result has `shape` itself, not a reshaped view of it
            x = self.sum(x, axes=tuple(range(lead)), keepdim=False)
        return x

    # Peepholes: VJP rules compose views freely; these keep no-op views out of the graph (an
    # output that is a view of an intermediate would have to be copied into a gradient).
    def reshape(self, x, shape):
        shape = tuple(shape)
        if x.shape == shape:
            return x
        return self.emit(OPS["reshape"], (x,), {"shape": shape})

    def permute(self, x, axes):
        axes = tuple(axes)
        if x.op is OPS["permute"]:   # a permute of a permute is one permute, or none
            inner = x.attrs["axes"]
            x, axes = x.inputs[0], tuple(inner[a] for a in axes)
        if axes == tuple(range(len(axes))):
            return x
        return self.emit(OPS["permute"], (x,), {"axes": axes})

    def zeros(self, shape, dtype):
        return self.full(shape=shape, value=0, dtype=dtype)

    def expand_reduced(self, g, in_shape, axes, keepdim):
        """Broadcast a reduction's cotangent back over the reduced axes."""
        if not keepdim:
            g = self.reshape(g, shape=tuple(1 if i in axes else n for i, n in enumerate(in_shape)))
        return self.expand(g, shape=in_shape)


def _add_op_methods():
    def method(op):
        def emit_op(self, *inputs, **attrs):
            return self.emit(op, inputs, attrs or None)
        emit_op.__name__ = op.name
        return emit_op
    for name, op in OPS.items():
        if not hasattr(Builder, name):
            setattr(Builder, name, method(op))
