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


def test_train_tiny_compiled_equals_eager(train_tiny, capsys):
    """The example trains compiled by default; --eager gives the same losses, and both step times
    are printed."""
    args = ["--steps", "12", "--n-train", "256", "--n-test", "64", "--log-every", "3"]
    compiled = train_tiny.main(args)
    eager = train_tiny.main(args + ["--eager"])
    out = capsys.readouterr().out
    for (step_c, loss_c), (step_e, loss_e) in zip(compiled["history"], eager["history"]):
        assert step_c == step_e and abs(loss_c - loss_e) < 1e-5 * max(1.0, abs(loss_e))
    assert abs(compiled["final_test_loss"] - eager["final_test_loss"]) < 1e-5
    assert set(compiled["step_seconds"]) == {"compiled", "eager"}
    assert out.count("time per step (batch 64, median of 50): compiled ") == 2


def test_digits_cnn_learns_real_digits(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    digits_cnn = load_example("digits_cnn")
    figure = tmp_path / "digits.png"
    result = digits_cnn.main(["--epochs", "2", "--figure", str(figure)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()

    assert lines[0] == "1438 training and 359 held-out digits, 8 x 8 pixels"
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    # Two epochs already take the network from chance (10%) to most held-out digits right; the full
    # 15-epoch run reaches about 98% (see the example's docstring).
    assert history[-1]["test_accuracy"] > 0.9
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert lines[-1].startswith("after 2 epochs (") and "held-out accuracy" in lines[-1]
    assert "epoch  1/2" in captured.err and "batch" in captured.err      # tqdm's progress bars
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_cnn_train_step_is_one_function():
    # The lead compiles it later with one decorator: everything a step does happens inside it.
    pytest.importorskip("sklearn")
    import inspect
    digits_cnn = load_example("digits_cnn")
    assert list(inspect.signature(digits_cnn.train_step).parameters) == ["model", "optimizer", "x", "y"]
