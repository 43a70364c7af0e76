"""Lockstep comparison: the first divergence between backends, reported with its firmware context."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cosim.analysis.lockstep import compared_fields, first_divergence
from cosim.program import RunResult
from cosim.runner import run_program
from cosim.workloads import resolve

PROGRAM = "test_trace:paged_touches"  # boot, work/touch(i) x 3, other: 17 operations


@pytest.fixture(scope="module")
def baseline() -> RunResult:
    return run_program(PROGRAM, "reference", trace=True)


def _as(run: RunResult, backend: str, **changes) -> RunResult:
    return replace(run, backend=backend, **changes)


def _perturbed(run: RunResult, seq: int, backend: str = "verilator", **fields) -> RunResult:
    events = list(run.events)
    events[seq] = events[seq]._replace(**fields)
    return _as(run, backend, events=events)


def test_identical_runs_agree(baseline):
    assert first_divergence([baseline, _as(baseline, "verilator")]) is None


def test_first_divergence_is_reported_with_context_and_history(baseline):
    # operation 12 is the store of touch(1): a TLB hit on every correct MMU; 14 is perturbed too, later
    bad = _perturbed(_perturbed(baseline, 14, tlb_hit=False), 12, tlb_hit=False, tlb_miss=True, walk_levels=4)
    divergence = first_divergence([baseline, bad])
    assert divergence is not None
    assert divergence.seq == 12 and divergence.backends == ("reference", "verilator")
    assert divergence.fields == ("tlb_hit", "tlb_miss", "walk_levels")
    assert divergence.path == "work/touch(1)"
    assert [event.seq for event, _ in divergence.preceding] == [7, 8, 9, 10, 11]
    assert [path for _, path in divergence.preceding][-2:] == ["work/touch(0)", "work/touch(0)"]
    report = divergence.report()
    assert "diverge at operation 12" in report and "work/touch(1)" in report
    assert "walk_levels" in report and "≠" in report


def test_a_wrong_response_is_a_divergence(baseline):
    last = len(baseline.events) - 1  # the load of page 1
    divergence = first_divergence([baseline, _perturbed(baseline, last, data=0xDEAD)])
    assert divergence.seq == last and divergence.fields == ("data",) and divergence.path == "other"


def test_timing_is_skipped_only_when_the_reference_takes_part(baseline):
    slow = _perturbed(baseline, 10, cycle=10_000, walk_cycles=99)
    assert "cycle" not in compared_fields(["reference", "verilator"])
    assert first_divergence([baseline, slow]) is None
    divergence = first_divergence([_as(baseline, "myhdl"), slow])
    assert divergence.seq == 10 and divergence.fields == ("cycle", "walk_cycles")


def test_a_backend_that_stops_early_diverges_where_it_stopped(baseline):
    short = _as(baseline, "verilator", events=baseline.events[:-3])
    divergence = first_divergence([baseline, short])
    assert divergence.seq == len(baseline.events) - 3
    assert divergence.records[1] is None
    assert "verilator has no operation" in divergence.report()


def test_rtl_backends_are_compared_with_each_other_on_timing_too(baseline):
    rtl = _as(baseline, "verilator")
    slower = _perturbed(baseline, 13, "myhdl", cycle=baseline.events[13].cycle + 1)
    divergence = first_divergence([baseline, rtl, slower])
    assert (divergence.seq, divergence.backends, divergence.fields) == (13, ("verilator", "myhdl"), ("cycle",))


def test_the_earliest_divergence_among_several_backends_wins(baseline):
    late = _perturbed(baseline, 15, "myhdl", paddr=0)
    early = _perturbed(baseline, 11, "cocotb-icarus", errcode=2)
    divergence = first_divergence([baseline, late, early])
    assert (divergence.seq, divergence.backends) == (11, ("reference", "cocotb-icarus"))


def test_equal_events_but_different_results_are_reported(baseline):
    divergence = first_divergence([baseline, _as(baseline, "verilator", value=42)])
    assert divergence.seq is None and divergence.values == (0, 42)
    assert "returned different values" in divergence.report()


@pytest.mark.rtl
@pytest.mark.parametrize("workload", ["demo", "random"])
def test_verilator_runs_in_lockstep_with_the_reference(workload):
    job = resolve(workload, seed=7, ops=300) if workload == "random" else resolve(workload)
    runs = [run_program(job.program, backend, args=dict(job.args), trace=True)
            for backend in ("reference", "verilator")]
    divergence = first_divergence(runs)
    assert divergence is None, divergence.report()
    assert len(runs[0].events) > 100
