"""The benchmarks' worker processes (benchmarks/_harness.py, `timed`): by default each library family
is timed in processes of its own, in passes, and its rows merged; a failing worker stops the
benchmark with the worker's error. (Speed itself is measured by benchmarks/, never here.)"""
import pytest

from benchmarks import _harness, _threads, tiny_step


def test_workers_time_each_family_apart_and_the_passes_merge(monkeypatch):
    monkeypatch.setattr(_threads, "pinned", None)   # the default: worker processes, default threads
    monkeypatch.setattr(_harness, "QUICK_PASSES", 2)
    lines = []
    results = _harness.timed(tiny_step.cases, (), repeats=3, warmup=1, quick=True, out=lines.append)
    torch_rows = ["torch eager"] if _harness.have("torch") else []
    assert [r.name for r in results] == ["fusegrad compiled", "fusegrad (warm)", "fusegrad (cold)",
                                         "fusegrad (auto-compiled backward)", *torch_rows, "numpy (hand-written)"]
    for r in results:   # 2 timed calls in the first pass, 1 in the second
        assert len(r.times) == 3 and (r.times > 0).all(), (r.name, r.times)
    # each worker primed its own compiled step; the line comes from the first pass only
    assert sum(line.startswith("fusegrad.compile lib_step: capturing call(s)") for line in lines) == 1, lines


def test_a_failing_worker_stops_the_benchmark_with_its_error():
    spec = {"module": "benchmarks.tiny_step", "build": "no_such_cases", "args": [], "kinds": ["fusegrad", "numpy"],
            "quick": True, "repeats": 1, "warmup": 0, "collect_every": 1, "quiet": False}
    with pytest.raises(RuntimeError, match=r"(?s)^benchmark worker \(benchmarks\.tiny_step\.no_such_cases\(\) for "
                                           r"fusegrad, numpy\) failed with exit status 1:\n.*AttributeError: .*"
                                           r"no_such_cases"):
        _harness.run_worker(spec)


def test_notes_of_the_passes():
    assert _harness.passes_noted([(0, "7 of 7 replayed"), (1, "7 of 7 replayed")], 2) == \
        ["7 of 7 replayed (in each of the 2 worker processes)"]
    assert _harness.passes_noted([(0, "7 of 7 replayed"), (1, "6 of 7 replayed")], 2) == \
        ["7 of 7 replayed (worker process 1 of 2)", "6 of 7 replayed (worker process 2 of 2)"]
    assert _harness.passes_noted([(0, "7 of 7 replayed")], 1) == ["7 of 7 replayed"]
