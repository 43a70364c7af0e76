"""The benchmark's machinery on the reference backend: what it plans, how it counts and times, what it writes.

No timing is asserted: the machine is shared, and `make bench` is where the figures come from.
"""

from __future__ import annotations

import json
import statistics

import pytest

from cosim import bench
from cosim.backends import BackendError
from cosim.bench import QUICK, REDUCED, RunSpec, latencies, plan
from cosim.cli import main as cli_main
from cosim.program import COUNTER_READS, MEASURED_PROGRAM
from cosim.runner import run_program
from hdl.protocol import AccessEvent, Op


def test_plan_runs_slow_backends_reduced_and_reference_at_both_sizes():
    specs = plan(["reference", "myhdl"], ["demo", "many_boxes"])
    assert specs == [
        RunSpec("reference", "demo", None, reduced=False),
        RunSpec("reference", "many_boxes", 102_400, reduced=False),
        RunSpec("reference", "many_boxes", REDUCED.many_boxes, reduced=True),
        RunSpec("myhdl", "demo", None, reduced=False),
        RunSpec("myhdl", "many_boxes", REDUCED.many_boxes, reduced=True),
    ]
    assert specs[2].size == f"n={REDUCED.many_boxes:,} (reduced)"


def test_plan_without_a_slow_backend_runs_full_sizes_only():
    specs = plan(["verilator", "reference"], ["random"])
    assert specs == [RunSpec("verilator", "random", 10_000, False), RunSpec("reference", "random", 10_000, False)]
    assert len(specs[0].job().args["lines"]) == 10_000  # the generated script's operations


def _event(seq: int, cycle: int, op: Op, *, hit: bool = False, miss: bool = False, walk_levels: int = 0):
    return AccessEvent(seq, cycle, int(op), 0x1000, 0x1000, 8, 0, hit, miss, -1, walk_levels, 2 * walk_levels,
                       0, 0, 0, 0)


def test_latencies_count_each_operation_from_the_previous_response():
    events = [
        _event(0, 2, Op.LOAD, hit=True),  # follows the reset: left out
        _event(1, 4, Op.LOAD, hit=True),  # 2 cycles
        _event(2, 13, Op.STORE, miss=True, walk_levels=4),  # 9 cycles
        _event(3, 15, Op.CSR_READ),  # not a memory operation
        _event(4, 19, Op.STORE, hit=True),  # 4 cycles
        _event(5, 24, Op.STORE, hit=True, walk_levels=1),  # a hit that re-walks to set D: neither
    ]
    timing = latencies(events, "synthetic")
    assert timing.cycles_per_hit == 3.0
    assert timing.cycles_per_miss == 9.0


def test_mem_ops_are_the_loads_and_stores_the_events_show():
    job = RunSpec("reference", "many_boxes", 40, reduced=False).job()
    result = run_program(MEASURED_PROGRAM, "reference", args={"program": job.program, "args": dict(job.args)},
                         trace=True)
    counters = result.value["counters"]
    memory = [e for e in result.events if e.op in (Op.LOAD, Op.STORE) and not e.fault]
    assert counters["loads"] + counters["stores"] == len(memory)
    assert result.value["value"]["boxes"] == 40
    reads = [e for e in result.events[-COUNTER_READS:] if e.op == Op.CSR_READ]
    assert len(reads) == COUNTER_READS  # the counter reads come last, after the workload


def test_bench_on_reference_prints_the_table_and_writes_results(tmp_path, capsys):
    out = tmp_path / "results.json"
    code = cli_main(["bench", "--backends", "reference", "--workloads", "demo,many_boxes", "--quick",
                     "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["backend"], r["workload"], r["n"]) for r in runs] == [
        ("reference", "demo", None), ("reference", "many_boxes", QUICK.many_boxes)]
    for run in runs:
        assert run["mem_ops"] > 0 and run["wall_s"] > 0
        assert run["ops_per_s"] == pytest.approx(run["mem_ops"] / run["wall_s"])
        assert run["ratio_to_reference"] == 1.0
        assert run["status"] in ("PASS", "MISS") and run["target_ops_per_s"] == 500_000
        assert "cycles" not in run  # the reference model has no clock
    assert "[1/3] reference: ready" in printed
    assert f"reference  many_boxes  n={QUICK.many_boxes:,}" in printed


def test_a_short_workload_is_repeated_and_its_median_counts(tmp_path, monkeypatch, capsys):
    # Every run counts as short and the total is never reached, whatever this machine's speed: the cap decides.
    monkeypatch.setattr(bench, "SHORT_RUN_S", 60.0)
    monkeypatch.setattr(bench, "SHORT_RUNS_TOTAL_S", 600.0)
    monkeypatch.setattr(bench, "SHORT_RUNS_MAX", 3)
    out = tmp_path / "results.json"
    assert bench.main(["--backends", "reference", "--workloads", "demo", "--out", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    walls = run["wall_s_runs"]
    assert len(walls) == 3  # one asked for, two more up to SHORT_RUNS_MAX
    assert run["wall_s"] == pytest.approx(statistics.median(walls))
    assert "3 runs in all" in capsys.readouterr().out


def test_a_run_that_fails_is_an_error_row_and_exit_1(tmp_path, monkeypatch, capsys):
    def crash(*args, **kwargs):
        raise BackendError("the simulator crashed")

    monkeypatch.setattr(bench, "run_program", crash)
    out = tmp_path / "results.json"
    assert bench.main(["--backends", "reference", "--workloads", "demo", "--out", str(out)]) == 1
    (run,) = json.loads(out.read_text())["runs"]
    assert run["status"] == "ERROR" and "the simulator crashed" in run["error"]
    assert "ERROR reference demo -: backend error: the simulator crashed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "reference,nope"], "unknown backend 'nope'"),
        (["--workloads", "large_vec"], "unknown workload 'large_vec'"),
        (["--repeat", "0"], "must be at least 1, got 0"),
    ],
)
def test_bad_options_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
