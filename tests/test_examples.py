"""The examples in examples/, run in-process with small settings."""
import importlib.util
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    path = os.path.join(EXAMPLES, name + ".py")
    spec = importlib.util.spec_from_file_location("fusegrad_example_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_tiny():
    return load_example("train_tiny")


def test_train_tiny_learns(train_tiny, capsys):
    result = train_tiny.main(["--steps", "120"])
    out = capsys.readouterr().out
    lines = out.splitlines()

    # Ten classes: an untrained model is at chance, about ln(10) = 2.30 and 10% accuracy.
    assert 2.0 < result["initial_train_loss"] < 2.7
    assert result["initial_test_accuracy"] < 0.25
    # The loss falls well below where it started, on the training data and on held-out data, and the
    # held-out accuracy is far above chance.
    assert result["final_train_loss"] < 0.25 * result["initial_train_loss"]
    assert result["final_test_loss"] < 0.5 * result["initial_test_loss"]
    assert result["final_test_accuracy"] > 0.7

    # The progress lines: one every 12 steps, the running loss visibly falling.
    history = result["history"]
    assert [step for step, _ in history] == list(range(12, 121, 12))
    assert history[-1][1] < 0.5 * history[0][1]
    assert lines[0].startswith("before training: train loss ")
    assert sum(line.startswith("step ") for line in lines) == len(history)
    assert lines[-1].startswith("after 120 steps: ") and "held-out accuracy" in lines[-1]


def test_train_tiny_is_deterministic(train_tiny, capsys):
    first = train_tiny.main(["--steps", "5", "--n-train", "256", "--n-test", "64"])
    second = train_tiny.main(["--steps", "5", "--n-train", "256", "--n-test", "64"])
    capsys.readouterr()
    for key in ("initial_train_loss", "final_train_loss", "final_test_loss", "final_test_accuracy", "history"):
        assert first[key] == second[key], key
