"""The benchmark workloads (benchmarks/: W2, the TinyModel step, the MLP Adam step, the CNN step)
at test sizes, on any device. The PTX test captures them on the CPU and compiles the CUDA kernels
of their fusion groups; tests/cuda_cases.py runs them compiled on the "cuda" device against eager
runs on the CPU. The graphs' structure does not depend on the sizes, only their extents do."""
import numpy as np

import fusegrad as fg


def w2(x, y):
    return 0.5 * x * (1 + fg.tanh(0.7978845608 * (x + 0.044715 * x ** 3))) * fg.sigmoid(y) + fg.sin(x) * fg.cos(y)


class Workload:
    """step(*inputs) runs one call; inputs() makes this call's inputs on the device; state() lists
    what a step changes (parameters, their gradients), as host arrays."""

    def __init__(self, step, inputs, state):
        self.step, self.inputs, self.state = step, inputs, state


def _arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def elementwise(device, n=48):
    xa, ya = _arrays(0, n, n)
    leaves = []

    def inputs():
        leaves[:] = [fg.tensor(a, device=device, requires_grad=True) for a in (xa, ya)]
        return leaves

    def step(x, y):
        out = w2(x, y).sum()
        out.backward()
        return out
    return Workload(step, inputs, lambda: [t.grad.cpu().numpy() for t in leaves])


def _training(device, model, optimizer_of, loss_fn, xa, target):
    model = model.to(device)
    optimizer = optimizer_of(model.parameters())

    def step(x, t):
        optimizer.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        optimizer.step()
        return loss

    def inputs():
        return fg.tensor(xa, device=device), fg.tensor(target, device=device)

    def state():
        return [p.detach().cpu().numpy() for p in model.parameters()]
    return Workload(step, inputs, state)


def tiny_step(device):
    fg.manual_seed(0)
    model = fg.nn.Sequential(fg.nn.Linear(20, 8), fg.nn.ReLU(), fg.nn.Linear(8, 4))
    x, target = _arrays(1, (4, 20), (4, 4))
    return _training(device, model, lambda p: fg.optim.SGD(p, lr=0.01), fg.nn.MSELoss(), x, target)


def mlp_step(device):
    fg.manual_seed(0)
    model = fg.nn.Sequential(fg.nn.Linear(16, 8), fg.nn.ReLU(), fg.nn.Linear(8, 8), fg.nn.ReLU(),
                             fg.nn.Linear(8, 4))
    x, = _arrays(2, (8, 16))
    labels = np.random.default_rng(3).integers(0, 4, 8)
    return _training(device, model, lambda p: fg.optim.Adam(p, lr=1e-3), fg.nn.CrossEntropyLoss(), x, labels)


def cnn_step(device):
    fg.manual_seed(0)
    model = fg.nn.Sequential(fg.nn.Conv2d(1, 2, 3, padding=1), fg.nn.ReLU(), fg.nn.MaxPool2d(2),
                             fg.nn.Flatten(), fg.nn.Linear(8, 3))
    x, = _arrays(4, (2, 1, 4, 4))
    labels = np.array([0, 2])
    return _training(device, model, lambda p: fg.optim.SGD(p, lr=0.1, momentum=0.9), fg.nn.CrossEntropyLoss(),
                     x, labels)


WORKLOADS = {"elementwise": elementwise, "tiny_step": tiny_step, "mlp_step": mlp_step, "cnn_step": cnn_step}
