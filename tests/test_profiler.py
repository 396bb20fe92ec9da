"""Tests for fusegrad.autograd.profiler: the tutorial's profiler cell, PyTorch's table format,
record_function nesting, input-shape grouping, chrome traces and observer hygiene."""
import json
import re

import pytest

import fusegrad as torch
from fusegrad.runtime import events

profiler = torch.autograd.profiler

HEADER = "Self CPU %      Self CPU   CPU total %     CPU total  CPU time avg    # of Calls"
TIME = r"\d+\.\d{3}(?:us|ms|s)"


@pytest.fixture(autouse=True)
def _no_leaked_observers():
    assert events.observers == []
    yield
    assert events.observers == []
    assert profiler._active_profiles == []


def tutorial_profile(steps=1000, **kwargs):
    """The 'Autograd Profiler' cell of the autograd tutorial."""
    x = torch.randn(2, 3, requires_grad=True)
    y = torch.rand(2, 3, requires_grad=True)
    z = torch.ones(2, 3, requires_grad=True)
    with profiler.profile(**kwargs) as prf:
        for _ in range(steps):
            z = (z / x) * y
    return prf, z


def rows(table):
    """The cells of each body row of a table (names are right-aligned, so strip)."""
    lines = table.splitlines()
    separators = [i for i, line in enumerate(lines) if re.fullmatch(r"(-+  )+", line)]
    body = lines[separators[1] + 1:separators[2]]
    return [re.split(r"\s{2,}", line.strip()) for line in body]


def by_key(averages):
    return {evt.key: evt for evt in averages}


# ---------------------------------------------------------------- the tutorial cell

@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # z overflows to inf, as in PyTorch
def test_tutorial_cell_counts_each_op_once_per_iteration():
    prf, _ = tutorial_profile(use_cuda=True)   # no CUDA device: profiles the CPU only
    averages = by_key(prf.key_averages())
    assert set(averages) == {"fusegrad::div", "fusegrad::mul"}
    assert averages["fusegrad::div"].count == 1000
    assert averages["fusegrad::mul"].count == 1000
    for avg in averages.values():
        assert avg.self_cpu_time_total == pytest.approx(avg.cpu_time_total)   # ops have no children
        assert avg.cpu_time == pytest.approx(avg.cpu_time_total / 1000)

    table = prf.key_averages().table(sort_by="self_cpu_time_total")
    lines = table.splitlines()
    assert lines[0] == lines[2] == lines[-2]
    assert re.fullmatch(r"(-+  )+", lines[0])
    assert lines[1].strip() == "Name    " + HEADER
    assert "CUDA" not in table and "Input Shapes" not in table
    assert re.fullmatch(f"Self CPU time total: {TIME}", lines[-1])
    body = rows(table)
    assert sorted(r[0] for r in body) == ["fusegrad::div", "fusegrad::mul"]
    for name, self_pct, self_cpu, total_pct, total, avg, calls in body:
        assert calls == "1000"
        assert re.fullmatch(r"\d+\.\d\d%", self_pct) and self_pct == total_pct
        assert all(re.fullmatch(TIME, t) for t in (self_cpu, total, avg))
    percents = sum(float(r[1][:-1]) for r in body)
    assert percents == pytest.approx(100, abs=0.02)


def test_time_and_share_formats_match_pytorch():
    fmt = profiler._format_time
    assert fmt(6907.0) == "6.907ms"
    assert fmt(58.0) == "58.000us"
    assert fmt(1_234_000.0) == "1.234s"
    assert fmt(999.9994) == "999.999us"
    assert profiler._format_time_share(1.0, 4.0) == "25.00%"
    assert profiler._format_time_share(0.0, 0.0) == "NaN"


def test_columns_line_up():
    prf, _ = tutorial_profile(steps=5, record_shapes=True)
    table = prf.key_averages(group_by_input_shape=True).table()
    lines = table.splitlines()[:-1]
    assert len({len(line) for line in lines}) == 1   # every row as wide as the separator
    assert lines[1].rstrip().endswith("Input Shapes")


# ---------------------------------------------------------------- sorting

def mixed_profile():
    a = torch.ones(4, 4)
    with profiler.profile() as prf:
        for _ in range(3):
            a = a + 1
        for _ in range(2):
            a = a * 2
        a.sum()
    return prf


@pytest.mark.parametrize("sort_by", ["self_cpu_time_total", "cpu_time_total", "cpu_time", "count"])
def test_sort_by_orders_rows_by_that_metric(sort_by):
    averages = mixed_profile().key_averages()
    names = [r[0] for r in rows(averages.table(sort_by=sort_by))]
    values = [getattr(by_key(averages)[name], sort_by) for name in names]
    assert values == sorted(values, reverse=True)
    if sort_by == "count":
        assert names == ["fusegrad::add", "fusegrad::mul", "fusegrad::sum"]


def test_cuda_sort_keys_sort_by_zero_and_unknown_keys_raise():
    averages = mixed_profile().key_averages()
    first_seen = [evt.key for evt in averages]
    for key in ("self_cuda_time_total", "cuda_time_total", "cuda_time", "self_device_time_total"):
        assert [r[0] for r in rows(averages.table(sort_by=key))] == first_seen   # stable
    with pytest.raises(AttributeError, match="self_cpu_time_total"):
        averages.table(sort_by="slowest")


def test_row_limit_and_header():
    averages = mixed_profile().key_averages()
    assert len(rows(averages.table(sort_by="count", row_limit=2))) == 2
    assert len(rows(averages.table(row_limit=-1))) == 3
    titled = averages.table(header="forward pass")
    assert titled.splitlines()[1] == "forward pass"
    assert set(titled.splitlines()[0]) == {"="}


# ---------------------------------------------------------------- record_function

def test_record_function_rows_nest_and_self_times_add_up():
    x = torch.ones(3, requires_grad=True)
    with profiler.profile() as prf:
        with profiler.record_function("outer"):
            y = x * 2
            for _ in range(2):
                with profiler.record_function("inner"):
                    y = y + x
        y = y.exp()
    evts = prf.events()
    outer, = [e for e in evts if e.name == "outer"]
    inners = [e for e in evts if e.name == "inner"]
    assert len(inners) == 2 and all(e.cpu_parent is outer for e in inners)
    assert [c.name for c in outer.cpu_children] == ["fusegrad::mul", "inner", "inner"]
    assert [c.name for c in inners[0].cpu_children] == ["fusegrad::add"]
    assert outer.is_user_annotation and not outer.cpu_children[0].is_user_annotation
    for label in [outer] + inners:
        children = sum(c.cpu_time_total for c in label.cpu_children)
        assert label.cpu_time_total >= children
        assert label.self_cpu_time_total == pytest.approx(label.cpu_time_total - children)
    top_level = [e for e in evts if e.cpu_parent is None]
    assert [e.name for e in top_level] == ["outer", "fusegrad::exp"]
    assert sum(e.self_cpu_time_total for e in evts) == pytest.approx(
        sum(e.cpu_time_total for e in top_level))

    averages = by_key(prf.key_averages())
    assert averages["inner"].count == 2 and averages["outer"].count == 1
    assert averages["fusegrad::add"].count == 2
    table = prf.key_averages().table(sort_by="cpu_time_total")
    assert rows(table)[0][0] == "outer"   # its total includes everything inside it
    top = prf.key_averages().table(top_level_events_only=True)
    assert [r[0] for r in rows(top)] == ["outer", "fusegrad::exp"]


def test_record_function_as_decorator_nests_recursive_calls():
    @profiler.record_function("countdown")
    def countdown(t, n):
        return t if n == 0 else countdown(t - 1, n - 1)

    with profiler.profile() as prf:
        countdown(torch.zeros(2), 3)
    labels = [e for e in prf.events() if e.name == "countdown"]
    assert len(labels) == 4
    assert [e.cpu_parent for e in labels] == [None] + labels[:-1]
    assert by_key(prf.key_averages())["fusegrad::sub"].count == 3


def test_record_function_without_profiler_records_nothing():
    with profiler.record_function("idle") as label:
        torch.ones(2) + 1
    assert label._start is None
    with profiler.profile() as prf:
        pass
    assert len(prf.events()) == 0 and prf.key_averages().table() == ""


# ---------------------------------------------------------------- shapes, backward

def test_group_by_input_shape_splits_rows_per_shape():
    with profiler.profile(record_shapes=True) as prf:
        torch.ones(2, 3) * 2
        torch.ones(2, 3) * torch.ones(2, 3)
        torch.ones(4) * torch.ones(4)
    grouped = prf.key_averages(group_by_input_shape=True)
    muls = {str(e.input_shapes): e.count for e in grouped if e.key == "fusegrad::mul"}
    assert muls == {"[[2, 3], []]": 1, "[[2, 3], [2, 3]]": 1, "[[4], [4]]": 1}
    table = grouped.table()
    assert "Input Shapes" in table.splitlines()[1] and "[[4], [4]]" in table
    assert by_key(prf.key_averages())["fusegrad::mul"].count == 3
    assert "Input Shapes" not in prf.key_averages().table()
    with profiler.profile() as plain:   # shapes are kept only with record_shapes=True
        torch.ones(2) * 2
    assert all(e.input_shapes == [] for e in plain.events())


def test_backward_inside_profiler_reports_backward_nodes():
    x = torch.randn(2, 3, requires_grad=True)
    y = torch.rand(2, 3, requires_grad=True)
    with profiler.profile() as prf:
        z = (torch.ones(2, 3) / x) * y
        z.sum().backward()
    counts = {e.key: e.count for e in prf.key_averages()}
    assert counts["fusegrad::div"] > 1 and counts["fusegrad::mul"] > 1   # forward and backward
    assert counts.get("fusegrad::neg", 0) >= 1   # d(1/x) only appears in backward
    assert x.grad is not None


# ---------------------------------------------------------------- observer hygiene

def test_observer_removed_after_exception():
    with pytest.raises(ZeroDivisionError):
        with profiler.profile() as prf:
            torch.ones(2) + 1
            1 / 0
    assert events.observers == []
    assert by_key(prf.key_averages())["fusegrad::add"].count == 1


def test_nested_profiles_each_see_their_own_block():
    with profiler.profile() as outer:
        torch.ones(2) + 1
        with profiler.profile() as inner:
            torch.ones(2) * 2
            assert len(events.observers) == 2
        assert len(events.observers) == 1
    assert {e.key for e in inner.key_averages()} == {"fusegrad::mul"}
    assert {e.key for e in outer.key_averages()} == {"fusegrad::add", "fusegrad::mul"}


def test_profile_is_not_reentrant_and_disabled_profile_registers_nothing():
    prf = profiler.profile()
    with prf:
        with pytest.raises(RuntimeError, match="not reentrant"):
            prf.__enter__()
        assert len(events.observers) == 1
    with profiler.profile(enabled=False) as off:
        assert events.observers == []
        torch.ones(2) + 1
    assert len(off.events()) == 0


# ---------------------------------------------------------------- outputs

def test_export_chrome_trace_writes_one_complete_event_per_op(tmp_path):
    x = torch.ones(2, 3)
    with profiler.profile(record_shapes=True) as prf:
        with profiler.record_function("block"):
            y = x * 2 + 1
        y.sum()
    path = tmp_path / "trace.json"
    prf.export_chrome_trace(str(path))
    with open(path) as f:
        trace = json.load(f)
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in complete] == [e.name for e in prf.events()] == [
        "block", "fusegrad::mul", "fusegrad::add", "fusegrad::sum"]
    for record in complete:
        assert set(record) >= {"name", "ph", "ts", "dur", "pid", "tid", "cat", "args"}
        assert record["dur"] >= 0 and record["ts"] >= 0
    assert [e["cat"] for e in complete] == ["user_annotation", "cpu_op", "cpu_op", "cpu_op"]
    assert complete[1]["args"]["Input Shapes"] == [[2, 3], []]
    block, ops = complete[0], complete[1:3]
    assert all(block["ts"] <= op["ts"] and op["ts"] + op["dur"] <= block["ts"] + block["dur"] + 1e-3
               for op in ops)


def test_events_str_and_table_shortcuts():
    prf = mixed_profile()
    evts = prf.events()
    assert len(evts) == 6 and all(e.count == 1 for e in evts)
    assert [e.name for e in evts][:3] == ["fusegrad::add"] * 3
    assert all(e.cpu_time_total >= 0 and e.self_cpu_time_total == e.cpu_time_total for e in evts)
    assert str(prf) == prf.table() == str(evts)
    assert len(rows(str(prf))) == 6   # one row per event, not averaged
    assert prf.self_cpu_time_total == pytest.approx(sum(e.cpu_time_total for e in evts))
    assert prf.total_average().count == 6


def test_with_stack_shows_the_calling_line():
    with profiler.profile(with_stack=True) as prf:
        torch.ones(2) + 1
    evt, = prf.events()
    assert evt.stack and "test_profiler.py" in evt.stack[0]
    table = prf.key_averages(group_by_stack_n=1).table()
    assert "Source Location" in table and "test_with_stack_shows_the_calling_line" in table
