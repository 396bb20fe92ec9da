"""The benchmarks' worker processes (benchmarks/_harness.py, `timed`): by default each library family
is timed in a process of its own, the processes take turns, and the rows merge; a failing worker stops the
benchmark with the worker's error. (Speed itself is measured by benchmarks/, never here.)"""
import pytest

from benchmarks import _harness, _threads, tiny_step


def test_workers_time_each_family_apart_and_their_turns_merge(monkeypatch):
    monkeypatch.setattr(_threads, "pinned", None)   # the default: worker processes, default threads
    lines = []
    results = _harness.timed(tiny_step.cases, (), repeats=4, warmup=1, quick=True, out=lines.append)
    torch_rows = ["torch eager"] if _harness.have("torch") else []
    assert [r.name for r in results] == ["fusegrad compiled", "fusegrad (warm)", "fusegrad (cold)",
                                         "fusegrad (auto-compiled backward)", *torch_rows, "numpy (hand-written)"]
    for r in results:   # 3 turns: 2 timed calls, then 1, then 1
        assert len(r.times) == 4 and (r.times > 0).all(), (r.name, r.times)
    # the worker primed its compiled step once (its line is shown), and every turn replayed it
    assert sum(line.startswith("fusegrad.compile lib_step: capturing call(s)") for line in lines) == 1, lines


def test_a_failing_worker_stops_the_benchmark_with_its_error():
    spec = {"module": "benchmarks.tiny_step", "build": "no_such_cases", "args": [], "kinds": ["fusegrad", "numpy"],
            "quick": True, "repeats": 1, "warmup": 0, "collect_every": 1, "quiet": False}
    with _harness.Worker(spec) as worker, pytest.raises(
            RuntimeError, match=r"(?s)^benchmark worker \(benchmarks\.tiny_step\.no_such_cases\(\) for fusegrad, "
                                r"numpy\) failed with exit status 1:\n.*AttributeError: .*no_such_cases"):
        worker.ask({"repeats": 1})
