"""Train a small convolutional network on real handwritten digits and watch it learn.

The data are the 1,797 handwritten digits that scikit-learn ships (8 x 8 grey images of 0-9, scanned
from forms; nothing is downloaded). A fifth of them, stratified by class, is held out. The network is
two 3 x 3 convolutions with batch normalisation, ReLU and 2 x 2 max pooling (8x8 -> 4x4 -> 2x2),
then a linear classifier. It trains with SGD and momentum (the learning rate decaying along a
cosine) on cross-entropy, written the way the PyTorch tutorials write it. A progress bar (tqdm)
runs through each epoch with the running loss; after each epoch the held-out loss and accuracy are
printed; at the end a figure (matplotlib) shows the loss and accuracy curves and a grid of held-out
digits with the predicted labels (wrong ones in red).

    pip install -e ".[examples]"          # scikit-learn, tqdm, matplotlib
    python examples/digits_cnn.py         # 15 epochs: ~98% held-out accuracy in ~10 s on two cores
    python examples/digits_cnn.py --epochs 3 --figure /tmp/digits.png

`main()` returns the numbers it prints, so tests can run it in-process. One training step is the
function `train_step(model, optimizer, x, y)`, compiled with `fusegrad.compile` (`--eager` trains
without it): forward, backward, the SGD update and BatchNorm's running statistics run as one plan
of fused kernels around the convolutions' matmuls. The learning rate steps down twice, at half and
three quarters of the epochs: each value is a specialisation of its own (a plain Python float in
the optimizer is guarded, not traced), and three of them compile once each.
"""
import argparse
import time

import numpy as np

import fusegrad as torch
from fusegrad import nn

CLASSES = 10


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),    # 16 x 4 x 4
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 2 x 2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 2 * 2, CLASSES))

    def forward(self, x):
        return self.classifier(self.features(x))


def load_digits(test_fraction, seed):
    """(train images, train labels), (test images, test labels): float32 (N, 1, 8, 8) in [0, 1] and
    int64 labels, split per class so both parts hold every digit in proportion."""
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for digit in range(CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test[members[:round(test_fraction * len(members))]] = True
    return ((torch.from_numpy(images[~test]), torch.from_numpy(labels[~test])),
            (torch.from_numpy(images[test]), torch.from_numpy(labels[test])))


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def evaluate(model, images, labels):
    """(mean loss, accuracy, predicted labels) in eval mode (running BatchNorm statistics, no dropout)."""
    model.eval()
    with torch.no_grad():
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels).item()
        predicted = logits.argmax(dim=1)
    model.train()
    return loss, (predicted == labels).float().mean().item(), predicted


def save_figure(path, history, images, labels, predicted):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 5.5))
    grid = fig.add_gridspec(4, 10, width_ratios=[1.4] * 4 + [1] * 6, wspace=0.45, hspace=0.5)
    epochs = [h["epoch"] for h in history]
    ax = fig.add_subplot(grid[:2, :4])
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="training (running mean)")
    ax.plot(epochs, [h["test_loss"] for h in history], "s-", label="held out")
    ax.set(ylabel="cross-entropy loss", yscale="log")
    ax.legend()
    ax = fig.add_subplot(grid[2:, :4])
    ax.plot(epochs, [100 * h["test_accuracy"] for h in history], "s-", color="tab:green")
    ax.set(xlabel="epoch", ylabel="held-out accuracy (%)")
    ax.grid(alpha=0.3)
    for k in range(24):
        ax = fig.add_subplot(grid[k // 6, 4 + k % 6])
        ax.imshow(images[k, 0], cmap="gray_r")
        right = predicted[k] == labels[k]
        ax.set_title(f"{predicted[k]}" if right else f"{predicted[k]} (is {labels[k]})", fontsize=9,
                     color="black" if right else "red")
        ax.axis("off")
    fig.suptitle("fusegrad: a small CNN on scikit-learn's handwritten digits (held-out predictions right)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default="digits_cnn.png", help="where to save the figure (default digits_cnn.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    parser.add_argument("--eager", action="store_true", help="train without fusegrad.compile")
    args = parser.parse_args(argv)
    # The matrices here are small: one BLAS thread is fastest, and threads spinning for work starve
    # the computation on a small shared machine (threadpoolctl comes with scikit-learn).
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        return train(args)


def train(args):
    from tqdm import tqdm

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    (train_x, train_y), (test_x, test_y) = load_digits(args.test_fraction, args.seed)
    n_train = len(train_y)
    print(f"{n_train} training and {len(test_y)} held-out digits, 8 x 8 pixels")

    model = DigitsCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[args.epochs // 2, (3 * args.epochs) // 4], gamma=0.2)
    step = train_step if args.eager else torch.compile(train_step)
    history = []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n_train)
        batches = [order[i:i + args.batch_size] for i in range(0, n_train, args.batch_size)]
        total, seen = 0.0, 0
        progress = tqdm(batches, desc=f"epoch {epoch:2d}/{args.epochs}", unit="batch", leave=False,
                        disable=args.no_progress)
        for batch in progress:
            loss = step(model, optimizer, train_x[batch], train_y[batch])
            total += loss.item() * len(batch)
            seen += len(batch)
            progress.set_postfix(loss=f"{total / seen:.4f}")
        test_loss, test_accuracy, _ = evaluate(model, test_x, test_y)
        scheduler.step()
        history.append({"epoch": epoch, "train_loss": total / seen, "test_loss": test_loss,
                        "test_accuracy": test_accuracy})
        print(f"epoch {epoch:2d}: training loss {total / seen:.4f}, held-out loss {test_loss:.4f}, "
              f"held-out accuracy {test_accuracy:.1%}")
    seconds = time.perf_counter() - start

    _, _, predicted = evaluate(model, test_x, test_y)
    save_figure(args.figure, history, test_x.numpy(), test_y.numpy(), predicted.numpy())
    print(f"after {args.epochs} epochs ({seconds:.1f} s): held-out accuracy {history[-1]['test_accuracy']:.1%}; "
          f"figure saved to {args.figure}")
    return {"history": history, "seconds": seconds, "figure": args.figure,
            "final_test_accuracy": history[-1]["test_accuracy"]}


if __name__ == "__main__":
    main()
