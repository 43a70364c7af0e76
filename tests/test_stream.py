"""Streamed traces: batches carry the same events and contexts as a run held in lists, the accumulators give the
same results, and a run that fails or fills the disk leaves no output that looks complete."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cosim import program
from cosim.analysis.context import attribute
from cosim.analysis.heap import HEAP_COLUMNS, ShadowMemory, heap_states_of_batches
from cosim.analysis.plots import HitRateSeries
from cosim.analysis.stale import StaleDetector, find_stale
from cosim.analysis.summary import SummaryBuilder, summarize
from cosim.analysis.trace import read_parquet_batches, read_trace, write_parquet
from cosim.cli import main
from cosim.outputs import INCOMPLETE
from cosim.runner import run_program
from cosim.stream import ContextTracker, EventList, batches_of, event_columns
from cosim.workloads import WORKLOADS, Workload
from firmware.cpu import Cpu
from hdl.protocol import AccessEvent, Op

SMALL_BATCH = 1000  # many batches from a small run


class Tee:
    def __init__(self, *sinks):
        self.sinks = sinks

    def write(self, batch):
        for sink in self.sinks:
            sink.write(batch)


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(program, "BATCH_EVENTS", SMALL_BATCH)


def _both(backend: str, workload: str = "many_boxes", **args):
    """The same run held in lists and streamed in batches of SMALL_BATCH."""
    job = WORKLOADS[workload].program
    listed = run_program(job, backend, args=args, trace=True)
    sink, summary = EventList(), SummaryBuilder()
    streamed = run_program(job, backend, args=args, trace=True, sink=Tee(sink, summary))
    return listed, streamed, sink, summary


@pytest.mark.parametrize("backend", ["reference", pytest.param("verilator", marks=pytest.mark.rtl)])
def test_a_streamed_run_has_the_events_contexts_and_summary_of_a_listed_one(small_batches, backend):
    listed, streamed, sink, summary = _both(backend, n=300)
    assert streamed.events == [] and streamed.contexts == []  # they went to the sink
    assert sink.events == listed.events and streamed.ops == len(listed.events) > 10 * SMALL_BATCH
    assert sink.contexts == attribute(listed.events, listed.contexts)
    spans = streamed.spans
    expected = summarize(listed.events, sink.contexts, listed.contexts)
    assert summary.summary(spans.table, spans.phase_calls(), spans.kind_calls()) == expected
    ends = sorted({s.end_seq for s in listed.contexts if s.label.startswith(("alloc(", "dealloc("))})
    assert list(spans.allocator_ends) == ends
    assert [label for _, _, label in spans.phases] == ["boot", "memory::init", "init_heap", "many_boxes"]


@pytest.mark.rtl
def test_a_streamed_cocotb_run_writes_its_batches_in_the_simulator(small_batches):
    listed = run_program("firmware.heap_allocation_tests:many_boxes", "reference", args={"n": 30}, trace=True)
    sink = EventList()
    streamed = run_program("firmware.heap_allocation_tests:many_boxes", "cocotb-verilator", args={"n": 30},
                           trace=True, sink=sink)
    untimed = {"cycle": 0, "walk_cycles": 0}
    assert [e._replace(**untimed) for e in sink.events] == [e._replace(**untimed) for e in listed.events]
    assert [c.path if c else "" for c in sink.contexts] == [
        c.path if c else "" for c in attribute(listed.events, listed.contexts)]
    assert streamed.spans.calls == run_program(  # the simulator's counts came back with the result
        "firmware.heap_allocation_tests:many_boxes", "reference", args={"n": 30}, trace=True,
        sink=EventList()).spans.calls


def test_the_tracker_gives_empty_contexts_no_operation():
    tracker = ContextTracker()
    tracker.enter("a", 2)
    tracker.enter("b", 3)
    tracker.exit(3)  # b opened and closed between two operations: it owns nothing
    tracker.exit(4)
    tags = tracker.tag(np.arange(4))
    tracker.enter("c", 5)
    tracker.exit(6)
    tags = [*tags, *tracker.tag(np.arange(4, 7))]
    names = [tracker.table.contexts[t].path if t >= 0 else None for t in tags]
    assert names == [None, None, "a", "a", None, "c", None]
    assert tracker.counts().phases == [(2, 4, "a"), (5, 6, "c")]
    assert [c.path for c in tracker.table.contexts] == ["a", "a/b", "c"]


def test_parquet_round_trip_keeps_every_field_and_context(tmp_path: Path):
    run = run_program("test_trace:paged_touches", "reference", trace=True)
    contexts = attribute(run.events, run.contexts)
    rows = read_trace(write_parquet(tmp_path / "trace.parquet", run.events, contexts))
    assert [row.event for row in rows] == run.events
    assert [row.path for row in rows] == [c.path if c else "" for c in contexts]
    evicting = _event(0)._replace(evicted_vpn=0x4_4444_4444, data=(1 << 64) - 1, vaddr=0xFFFF_8000_0000_0000)
    rows = read_trace(write_parquet(tmp_path / "t.parquet", [evicting, _event(1)], [None, None]))
    assert [row.event for row in rows] == [evicting, _event(1)]


def test_the_parquet_trace_answers_the_readme_query(tmp_path: Path, capsys):
    """The README's example, run as written there."""
    main(["run", "many_boxes", "--n", "200", "--no-plots", "--out", str(tmp_path)])
    capsys.readouterr()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("<!-- trace query -->")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    run_folder = "build/run/many_boxes-n200-reference-e16w16plru_p8_m1M_l1_pa40"
    exec(compile(example.replace(run_folder, str(tmp_path)), "README", "exec"), namespace)
    top = namespace["top"]
    assert len(top) == 10 and list(top.columns[:2]) == ["path", "tlb_misses"]
    assert top["tlb_misses"].is_monotonic_decreasing and top["tlb_misses"].iloc[0] > 0


def test_columns_from_the_parquet_file_give_the_same_heap_map(tmp_path: Path):
    run = run_program("firmware.heap_allocation_tests:many_boxes", "reference", args={"n": 200}, trace=True)
    contexts = attribute(run.events, run.contexts)
    path = write_parquet(tmp_path / "trace.parquet", run.events, contexts)
    sink = EventList()
    streamed = run_program("firmware.heap_allocation_tests:many_boxes", "reference", args={"n": 200}, trace=True,
                           sink=sink)
    spans = streamed.spans
    from_file = heap_states_of_batches(read_parquet_batches(path, HEAP_COLUMNS), spans.allocator_ends,
                                       spans.heap_ready)
    in_pieces = heap_states_of_batches((event_columns(run.events[i:i + 777]) for i in range(0, len(run.events), 777)),
                                       spans.allocator_ends, spans.heap_ready, max_samples=50)
    assert len(from_file.seqs) == 400 and len(in_pieces.seqs) == 50
    assert from_file.snapshots[-1] == in_pieces.snapshots[-1]  # the same free regions at the end
    assert from_file.final.free_regions() == in_pieces.final.free_regions()


def test_the_shadow_memory_takes_columns_as_it_takes_events():
    rng = np.random.default_rng(5)
    events = []
    for seq in range(3000):  # overlapping stores of every width into a few words, and loads
        size = 1 << int(rng.integers(0, 4))
        addr = 0x1000 + int(rng.integers(0, 8)) * 8 + int(rng.integers(0, 8 // size)) * size
        op = int(Op.STORE) if rng.random() < 0.8 else int(Op.LOAD)
        data = int(rng.integers(0, 1 << 62)) & ((1 << (8 * size)) - 1)
        events.append(AccessEvent(seq, seq, op, addr, addr, size, data, False, False, -1, 0, 0, 0, 0, 0, 0))
    one, many = ShadowMemory(), ShadowMemory()
    for event in events:
        one.observe(event)
    columns = event_columns(events)
    for start in range(0, len(events), 250):
        many.observe_columns(columns, start, min(start + 250, len(events)))
    assert many.ram == one.ram and many.pages == one.pages


def test_the_hit_rate_of_a_long_run_is_kept_in_bounded_memory(monkeypatch):
    monkeypatch.setattr(HitRateSeries, "EXACT_LOOKUPS", 30_000)
    monkeypatch.setattr(HitRateSeries, "ENVELOPE_BUCKETS", 100)
    monkeypatch.setattr(HitRateSeries, "MISS_BUCKETS", 50)
    series = HitRateSeries()
    rng = np.random.default_rng(1)
    hits = rng.random(200_000) < 0.97
    for start in range(0, len(hits), 4096):
        part = slice(start, start + 4096)
        seq = np.arange(len(hits))[part]
        columns = {"seq": seq, "tlb_hit": hits[part], "tlb_miss": ~hits[part]}
        series.write(_Batch(columns))
    assert series.exact() is None and series.lookups == len(hits) and series.hits == hits.sum()
    x, y = series._envelope.points()
    assert len(x) <= 4 * 100 + series._envelope.size and np.all(np.diff(x) >= 0)
    rolling = np.convolve(hits, np.ones(500) / 500, mode="valid")
    assert y.min() == pytest.approx(rolling.min()) and y.max() == pytest.approx(rolling.max())
    assert len(series._misses.values()) <= 50


class _Batch:
    def __init__(self, columns):
        self.columns = columns


def test_find_stale_on_lists_and_on_batches_agree():
    run = run_program("test_stale:remap_page", "reference", args={"flush": False}, trace=True)
    detector = StaleDetector(run.config)
    for batch in batches_of(run.events, attribute(run.events, run.contexts)):
        detector.write(batch)
    assert detector.found == find_stale(run.events, run.contexts, run.config) and detector.count == 1


# -- outputs ---------------------------------------------------------------------------------------------------


def boxes_then_boom(cpu: Cpu, n: int) -> None:
    """Enough operations for several batches, then an exception in the middle of the streamed trace."""
    from firmware.heap_allocation_tests import many_boxes

    many_boxes(cpu, n=n)
    raise KeyboardInterrupt


@pytest.mark.parametrize("trace_format", ["parquet", "csv"])
def test_an_interrupted_run_leaves_no_trace_and_a_marker(monkeypatch, capsys, small_batches, tmp_path, trace_format):
    monkeypatch.setitem(WORKLOADS, "boom", Workload("boom", "test_stream:boxes_then_boom", "interrupted", ("n",)))
    (tmp_path / "summary.json").write_text("{}")  # an earlier run's
    with pytest.raises(SystemExit) as exit_:
        main(["run", "boom", "--n", "200", "--trace-format", trace_format, "--out", str(tmp_path)])
    assert exit_.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [INCOMPLETE]  # no partial file, no older summary
    assert "did not finish: interrupted" in (tmp_path / INCOMPLETE).read_text()


def test_a_finished_run_has_no_marker(capsys, tmp_path):
    (tmp_path / INCOMPLETE).write_text("an earlier run")
    assert main(["run", "simple_allocation", "--no-plots", "--trace-format", "jsonl", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "trace.jsonl"]
    assert json.loads((tmp_path / "summary.json").read_text())["total"]["operations"] > 0


def test_check_writes_each_backends_trace(capsys, tmp_path):
    code = main(["check", "simple_allocation", "--backends", "reference,myhdl", "--trace-format", "parquet",
                 "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().out
    reference, myhdl = (read_trace(tmp_path / f"trace-{b}.parquet") for b in ("reference", "myhdl"))
    assert len(reference) == len(myhdl) > 0 and reference[-1].path == myhdl[-1].path


@pytest.mark.parametrize("trace_format", ["parquet", "jsonl"])
def test_a_full_disk_is_one_line_naming_the_file_and_nothing_looks_complete(tmp_path, trace_format):
    out = tmp_path / "run"
    limit = 100_000  # bytes per file: the trace passes it a few batches in
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from cosim.cli import main
        sys.exit(main(["run", "many_boxes", "--n", "8000", "--trace-format", {trace_format!r}, "--out", {str(out)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert last == f"mmucosim: cannot write {out / ('trace.' + trace_format)}: File too large"
    assert sorted(p.name for p in out.iterdir()) == [INCOMPLETE]  # no partial trace, no summary
    assert "did not finish" in (out / INCOMPLETE).read_text()


def _event(seq: int) -> AccessEvent:
    return AccessEvent(seq, seq, int(Op.LOAD), 0x1000, 0x1000, 8, 0, False, False, -1, 0, 0, 0, 0, 0, 0)
