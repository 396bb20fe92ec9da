"""Past failures of the differential fuzz (test_differential.py), each program as the fuzz printed
it. test_differential replays every one, at first and second order, before it draws new programs;
a failure's program is added here when it is fixed. The lines from `loss = ` on are ignored: the
replay computes the loss itself."""

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
]
