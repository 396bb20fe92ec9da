"""Past failures of the differential fuzz (test_differential.py), replayed before it draws new
examples: CORPUS holds programs as the fuzz printed them (the lines from `loss = ` on are ignored:
the replay computes the loss itself), each checked at first and second order; PROMOTION_CORPUS
holds test_dtype_promotion's examples. A failure is added here when it is fixed. A program with a
line `# first order only: <why>` is not replayed at second order."""

CORPUS = [
    # copy_ over a value computed from x0: PyTorch gives x0 a zero gradient, fusegrad gave None
    """
import numpy as np
import torch            # or: import fusegrad as torch

x0 = torch.tensor(0.1257, dtype=torch.float64, requires_grad=True)
x1 = torch.tensor(-0.1321, dtype=torch.float64, requires_grad=True)
v0 = -x1
v1 = x0 + v0
v1.copy_(v0)
loss = v0.sum() * 1.25 + v1.sum() * 1.375
loss.backward()
""",
    # an in-place write through an expand() that broadcasts nothing: PyTorch allows it
    """
x0 = torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64, requires_grad=True)
v0 = x0 * 2
v1 = v0.expand((1, 1, 3)); v1.mul_(x0)
v2 = v0[0].expand(1, -1); v2.sin_()
""",
    # the Frobenius norm over three dims: PyTorch raises, fusegrad computed it
    """
x0 = torch.tensor([[[0.5, -1.0], [2.0, 0.25]]], dtype=torch.float64, requires_grad=True)
v0 = x0.norm(dim=(0, 1, 2), keepdim=False)
""",
    # a write through a view taken before its base changed used the view's stale history
    """
x0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
v0 = x0 * 1
v1 = v0[:]
v0.mul_(2)
v1.mul_(x0)
""",
    # norm and std of zeros: their gradient is 0 there, not 0 * inf = nan
    """
# first order only: where they are 0, PyTorch's second derivative is nan
x0 = torch.tensor([0.5, -1.5], dtype=torch.float64, requires_grad=True)
v0 = x0 * 0
v1 = v0.norm()
v2 = torch.norm(v0, dim=0)
v3 = (v0 + 1).std(correction=0)
""",
    # softmax, log_softmax and max(dim) of 0-d tensors
    """
x0 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
v0 = torch.softmax(x0 * 2, 0)
v1 = x0.log_softmax(-1)
v2 = x0.max(dim=0, keepdim=False).values
""",
    # integers mixed with an index array place the dimensions as PyTorch does, not as NumPy
    """
x0 = torch.tensor([[[0.5, -1.0], [2.0, 0.25], [1.5, -0.75]], [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]], dtype=torch.float64, requires_grad=True)
v0 = x0[0, :, [1, 0]]
v1 = x0 * 1
v1[0, :, [1, 0]] = torch.tanh(v0) * 2
""",
    # indexing with an array returned NumPy's non-contiguous copy, which .view() refused
    """
x0 = torch.tensor([[[0.1257], [-0.1321]]], dtype=torch.float64, requires_grad=True)
v0 = x0[:, :, torch.tensor([0, 0])]
v1 = v0.view((4,))
""",
]

_BOOL, _INT = ("tensor", "bool", ()), ("tensor", "int64", (3,))
PROMOTION_CORPUS = [
    (_BOOL, ("scalar", -3), "**", "operator"),        # bool tensor ** negative int: PyTorch refuses
    (_INT, ("scalar", -3), "**", "function"),         # int tensor ** negative int: PyTorch refuses
    (("tensor", "bool", (3,)), ("tensor", "bool", (3,)), "**", "operator"),   # bool ** bool tensor: refused
    (("tensor", "float32", (3,)), ("scalar", True), "-", "operator"),         # subtracting a bool: refused
    (("tensor", "bool", (2, 3)), ("tensor", "bool", ()), "//", "function"),   # bool // bool: refused
    (("tensor", "bool", (3,)), ("scalar", False), "**", "operator"),          # bool ** False is all True
]
