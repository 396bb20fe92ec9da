"""Train the autograd tutorial's TinyModel (Linear(1000, 100) -> ReLU -> Linear(100, 10)) on a real task.

The tutorial feeds TinyModel random inputs and random targets, which shows how gradients flow but gives
the model nothing to learn. Here it classifies synthetic data that has structure: ten classes, each a
Gaussian cloud around its own centre in 1000 dimensions. The centres are close compared with the noise
(any one coordinate says almost nothing about the class; only the whole 1000-dimensional direction
does), so the classes overlap a little and held-out accuracy lands below 100%. Everything is generated
from `fusegrad.manual_seed`, so a run is reproducible.

Training is plain mini-batch SGD with momentum and cross-entropy loss, written the way the PyTorch
tutorials write it: zero_grad, forward, loss, backward, step. The loss gets its targets as class
probabilities (one-hot rows, which nn.CrossEntropyLoss accepts just as PyTorch's does).

The step is decorated with `@fusegrad.compile`: its first calls run eagerly while fusegrad records
forward, backward and the SGD update as one graph; later calls run that graph as a few fused
Numba kernels and BLAS calls. `--eager` trains without compiling. At the end the example times
the step both ways on copies of the trained model and prints both.

    python examples/train_tiny.py               # 300 compiled steps, a few seconds on two cores
    python examples/train_tiny.py --eager       # the same training, eagerly
    python examples/train_tiny.py --steps 50    # a quick run

`main()` returns the numbers it prints, so tests can run it in-process.
"""
import argparse
import copy
import os
import statistics
import time

# The matrices here are small: OpenBLAS's thread pool costs more than it gives, and on a busy
# two-core machine its spinning threads slow every matmul down many times over.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import fusegrad as torch  # noqa: E402

DIM_IN = 1000
HIDDEN_SIZE = 100
DIM_OUT = 10


class TinyModel(torch.nn.Module):
    """The model from the autograd tutorial, unchanged."""

    def __init__(self):
        super(TinyModel, self).__init__()

        self.layer1 = torch.nn.Linear(DIM_IN, HIDDEN_SIZE)
        self.relu = torch.nn.ReLU()
        self.layer2 = torch.nn.Linear(HIDDEN_SIZE, DIM_OUT)

    def forward(self, x):
        x = self.layer1(x)
        x = self.relu(x)
        x = self.layer2(x)
        return x


def make_clusters(n_train, n_test, separation):
    """Ten Gaussian clouds in DIM_IN dimensions: x = centre[label] + N(0, I).

    Each centre is N(0, separation^2 I), so two centres lie about separation * sqrt(2 * DIM_IN) apart,
    while the noise has standard deviation 1 along every direction. Train and test points come from the
    same clouds."""
    centres = torch.randn(DIM_OUT, DIM_IN) * separation
    n = n_train + n_test
    labels = torch.randint(0, DIM_OUT, (n,))
    inputs = centres[labels] + torch.randn(n, DIM_IN)
    return (inputs[:n_train], labels[:n_train]), (inputs[n_train:], labels[n_train:])


def one_hot(labels):
    return torch.eye(DIM_OUT)[labels]


def train_step(model, optimizer, loss_fn, inputs, targets):
    """One optimizer step, exactly as the PyTorch tutorials write it."""
    optimizer.zero_grad()
    prediction = model(inputs)
    loss = loss_fn(prediction, targets)
    loss.backward()
    optimizer.step()
    return loss


def step_time(step, model, loss_fn, inputs, targets, lr, momentum, repeats=50):
    """Median seconds per step of `step` on a copy of `model` (the trained one is left as it is)."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    times = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        step(model, optimizer, loss_fn, inputs, targets)
        if i >= 5:   # the first calls capture and compile
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate(model, inputs, labels, loss_fn):
    with torch.no_grad():
        logits = model(inputs)
        loss = loss_fn(logits, one_hot(labels)).item()
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--log-every", type=int, default=None,
                        help="print the mean training loss every N steps (default: about ten lines)")
    parser.add_argument("--n-train", type=int, default=4096)
    parser.add_argument("--n-test", type=int, default=1024)
    parser.add_argument("--separation", type=float, default=0.12,
                        help="spread of the class centres relative to the noise (default 0.12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eager", action="store_true", help="train without fusegrad.compile")
    args = parser.parse_args(argv)
    step_fn = train_step if args.eager else torch.compile(train_step)
    log_every = args.log_every or max(1, args.steps // 10)

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    (train_x, train_y), (test_x, test_y) = make_clusters(args.n_train, args.n_test, args.separation)

    model = TinyModel()
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    initial_train_loss, _ = evaluate(model, train_x, train_y, loss_fn)
    initial_test_loss, initial_test_acc = evaluate(model, test_x, test_y, loss_fn)
    print(f"before training: train loss {initial_train_loss:.4f}, held-out loss {initial_test_loss:.4f}, "
          f"held-out accuracy {initial_test_acc:.1%}")

    order = torch.randperm(args.n_train)
    position = 0
    running, running_count = 0.0, 0
    history = []
    for step in range(1, args.steps + 1):
        if position + args.batch_size > args.n_train:   # new epoch: reshuffle
            order = torch.randperm(args.n_train)
            position = 0
        batch = order[position:position + args.batch_size]
        position += args.batch_size

        loss = step_fn(model, optimizer, loss_fn, train_x[batch], one_hot(train_y[batch]))

        running += loss.item()
        running_count += 1
        if step % log_every == 0 or step == args.steps:
            history.append((step, running / running_count))
            print(f"step {step:4d}  train loss {running / running_count:.4f}")
            running, running_count = 0.0, 0

    final_train_loss, final_train_acc = evaluate(model, train_x, train_y, loss_fn)
    final_test_loss, final_test_acc = evaluate(model, test_x, test_y, loss_fn)
    elapsed = time.perf_counter() - start
    batch_x, batch_y = train_x[:args.batch_size], one_hot(train_y[:args.batch_size])
    times = {mode: step_time(fn, model, loss_fn, batch_x, batch_y, args.lr, args.momentum)
             for mode, fn in (("compiled", torch.compile(train_step)), ("eager", train_step))}
    print(f"time per step (batch {args.batch_size}, median of 50): compiled {times['compiled'] * 1e6:.0f} us, "
          f"eager {times['eager'] * 1e6:.0f} us ({times['eager'] / times['compiled']:.1f}x)")
    print(f"after {args.steps} steps: train loss {final_train_loss:.4f} (accuracy {final_train_acc:.1%}), "
          f"held-out loss {final_test_loss:.4f}, held-out accuracy {final_test_acc:.1%}  "
          f"[{elapsed:.1f} s, {'eager' if args.eager else 'compiled'}]")
    return {
        "initial_train_loss": initial_train_loss,
        "initial_test_loss": initial_test_loss,
        "initial_test_accuracy": initial_test_acc,
        "final_train_loss": final_train_loss,
        "final_train_accuracy": final_train_acc,
        "final_test_loss": final_test_loss,
        "final_test_accuracy": final_test_acc,
        "history": history,
        "seconds": elapsed,
        "step_seconds": times,
    }


if __name__ == "__main__":
    main()
