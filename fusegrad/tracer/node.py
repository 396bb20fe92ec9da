"""Recorded nodes: the IR nodes that eager ops hang off their outputs, seen by users as grad_fn.

A RecordedNode is an ir.Node plus what backward needs from the forward pass: the values its op
saved (with the version of each tensor they came from) and the hooks and retain_grad requests of
its output tensor. An AccumulateGrad node stands for a leaf tensor that requires grad."""
import weakref

from ..ir import OPS, Node
from ..runtime.devices import CPU

FREED = object()   # `saved` after a backward pass without retain_graph


class RemovableHandle:
    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)


class NextFunctions(tuple):
    """`grad_fn.next_functions`: ((node or None, 0), ...), as in PyTorch.

    The reference tutorial text writes `d.grad_fn.next_functions.next_functions` for
    `d.grad_fn.next_functions[0][0].next_functions`; the attribute follows the first entry."""

    @property
    def next_functions(self):
        first = self[0][0] if self else None
        return first.next_functions if first is not None else NextFunctions()


class RecordedNode(Node):
    __slots__ = ("saved", "versions", "label", "device", "_hooks", "retain", "pre_hooks", "metadata_")

    def __init__(self, op, inputs, attrs, shape, dtype, saved, versions, label, device=CPU):
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.shape = shape
        self.dtype = dtype
        self.saved = saved
        self.versions = versions
        self.label = label
        self.device = device   # of its output, and so of the values it saved and of its cotangent
        self._hooks = None     # tensor hooks of the output: fn(grad) -> grad or None
        self.retain = None     # weakref to the output tensor when it retains its grad
        self.pre_hooks = None  # grad_fn.register_prehook: fn((grad,)) -> (grad,) or None

    def name(self):
        return self.label or self.op.grad_fn

    @property
    def next_functions(self):
        return NextFunctions((v if isinstance(v, Node) else None, 0) for v in self.inputs)

    @property
    def metadata(self):
        try:
            return self.metadata_
        except AttributeError:
            self.metadata_ = {}
            return self.metadata_

    def register_hook(self, fn):
        """A hook fn(grad_inputs, grad_outputs) on the node, as torch's Node.register_hook. Only
        observation is supported: the hook sees the cotangent of this node's output."""
        if self.pre_hooks is None:
            self.pre_hooks = []
        wrapped = _NodeHook(fn)
        self.pre_hooks.append(wrapped)
        return RemovableHandle(self.pre_hooks, wrapped)

    def register_prehook(self, fn):
        if self.pre_hooks is None:
            self.pre_hooks = []
        self.pre_hooks.append(fn)
        return RemovableHandle(self.pre_hooks, fn)

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"


class _NodeHook:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, grad_outputs):
        self.fn(None, grad_outputs)
        return None


class AccumulateGrad(RecordedNode):
    """The node for a leaf tensor that requires grad; gradients arriving here go to `.grad`."""
    __slots__ = ("variable",)

    def __init__(self, tensor):
        super().__init__(OPS["leaf"], (), None, tensor._data.shape, tensor.dtype, None, None, None, tensor._device)
        self.variable = tensor

    @property
    def next_functions(self):
        return NextFunctions()


def accumulate_node(tensor):
    """The leaf's AccumulateGrad node, created once and shared while any graph holds it."""
    ref = tensor._accum
    node = ref() if ref is not None else None
    if node is None:
        node = AccumulateGrad(tensor)
        tensor._accum = weakref.ref(node)
    return node
