"""Traces and summaries of a small paged program on the reference backend.

`paged_touches` builds a 4-level mapping of four pages by hand, turns paging on, and touches the first page
three times and the second once. The expected TLB behaviour follows from docs/architecture.md alone: the
first access to a page misses and walks all four levels from CR3 (setting A in the three upper entries and
A|D in the leaf: four A/D writes); later accesses to that page hit; the second page shares the page directory
entry, so its walk starts from the paging-structure cache and reads only its PT entry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.analysis.context import attribute, kind_of
from cosim.analysis.summary import summarize
from cosim.analysis.trace import read_trace, write_csv, write_jsonl
from cosim.program import Span
from cosim.runner import run_program
from firmware.cpu import Cpu
from hdl.protocol import AccessEvent, Op, Pte, table_index

BASE = 0x40_0000  # virtual address of page 0
FRAMES = 0x1_0000  # physical address of its frame
RW = Pte.PRESENT | Pte.WRITABLE


def paged_touches(cpu: Cpu) -> int:
    """boot (page tables with paging off), work (page 0, three times), other (page 1, once)."""
    with cpu.context("boot"):
        for level, table, next_table in ((4, 0x1000, 0x2000), (3, 0x2000, 0x3000), (2, 0x3000, 0x4000)):
            with cpu.context(f"link({table:#x})"):
                cpu.store_u64(table + 8 * table_index(BASE, level), next_table | RW)
        for i in range(4):
            page = BASE + i * 0x1000
            with cpu.context(f"map({page:#x})"):
                cpu.store_u64(0x4000 + 8 * table_index(page, 1), (FRAMES + i * 0x1000) | RW)
        cpu.write_cr3(0x1000)
        cpu.enable_paging()
    with cpu.context("work"):
        for i in range(3):
            with cpu.context(f"touch({i})"):
                cpu.store_u64(BASE + 8 * i, i)
                cpu.load_u64(BASE + 8 * i)
    with cpu.context("other"):
        return cpu.load_u64(BASE + 0x1000)


@pytest.fixture(scope="module")
def run():
    return run_program("test_trace:paged_touches", "reference", trace=True)


def test_kind_strips_arguments():
    assert kind_of("alloc(8, 8)") == "alloc"
    assert kind_of("Box::new") == "Box::new"
    assert kind_of("map_to(0x444444440000)") == "map_to"


def test_each_event_gets_its_innermost_label_and_full_path(run):
    contexts = attribute(run.events, run.contexts)
    by_seq = {event.seq: context for event, context in zip(run.events, contexts, strict=True)}
    assert by_seq[0].path == "boot/link(0x1000)" and by_seq[0].label == "link(0x1000)"
    assert by_seq[3].path == f"boot/map({BASE:#x})" and by_seq[3].phase == "boot"
    write_cr3 = next(e for e in run.events if e.op == Op.CSR_WRITE)
    assert by_seq[write_cr3.seq].path == "boot"  # issued by boot itself, between its nested contexts
    touches = [by_seq[e.seq].path for e in run.events if by_seq[e.seq].phase == "work"]
    assert touches == ["work/touch(0)"] * 2 + ["work/touch(1)"] * 2 + ["work/touch(2)"] * 2
    assert by_seq[run.events[-1].seq].path == "other"


def test_operations_outside_every_context_have_none():
    spans = [Span("a", 0, 2, 4), Span("b", 1, 3, 3), Span("c", 0, 5, 6)]  # b is empty: it owns nothing
    events = [_event(seq) for seq in range(7)]
    labels = [c.path if c else None for c in attribute(events, spans)]
    assert labels == [None, None, "a", "a", None, "c", None]


def test_phases_add_up_to_the_run_and_match_the_architecture(run):
    summary = summarize(run.events, attribute(run.events, run.contexts), run.contexts)
    assert list(summary.phases) == ["boot", "work", "other"]
    boot, work, other = summary.phases.values()
    assert (boot.memory_ops, boot.tlb_hits, boot.tlb_misses, boot.hit_rate) == (7, 0, 0, None)  # paging off
    assert (work.memory_ops, work.tlb_hits, work.tlb_misses) == (6, 5, 1)
    assert (work.walks, work.pte_reads, work.ad_writes) == (1, 4, 4)
    assert (other.tlb_misses, other.walks, other.pte_reads, other.ad_writes) == (1, 1, 1, 1)
    total = summary.total
    assert total.operations == len(run.events) == run.ops
    for name in ("operations", "memory_ops", "tlb_hits", "tlb_misses", "walks", "pte_reads", "ad_writes"):
        assert getattr(total, name) == sum(getattr(p, name) for p in summary.phases.values())
    assert total.hit_rate == total.tlb_hits / (total.tlb_hits + total.tlb_misses) == 5 / 7


def test_kinds_count_their_own_operations_and_those_of_what_they_call(run):
    summary = summarize(run.events, attribute(run.events, run.contexts), run.contexts)
    kinds = {k.kind: k for k in summary.kinds}
    assert (kinds["touch"].own.calls, kinds["touch"].own.memory_ops, kinds["touch"].inclusive_memory_ops) == (
        3, 6, 6)
    assert (kinds["work"].own.memory_ops, kinds["work"].inclusive_memory_ops) == (0, 6)
    assert (kinds["map"].own.calls, kinds["link"].own.calls) == (4, 3)
    assert kinds["boot"].own.operations == 3  # write_cr3, and the read and write of CR0
    assert sum(k.own.operations for k in summary.kinds) == summary.total.operations


@pytest.mark.parametrize("writer", [write_jsonl, write_csv])
def test_trace_file_round_trip_keeps_every_field_and_context(run, tmp_path: Path, writer):
    contexts = attribute(run.events, run.contexts)
    path = writer(tmp_path / ("trace.jsonl" if writer is write_jsonl else "trace.csv"), run.events, contexts)
    rows = read_trace(path)
    assert [row.event for row in rows] == run.events
    assert [row.path for row in rows] == [c.path if c else "" for c in contexts]
    assert [row.label for row in rows] == [c.label if c else "" for c in contexts]


def test_trace_keeps_64_bit_data_and_the_absence_of_an_eviction(tmp_path: Path):
    event = _event(0)._replace(data=(1 << 64) - 1, evicted_vpn=-1, vaddr=0xFFFF_8000_0000_0000)
    evicting = _event(1)._replace(evicted_vpn=0x4_4444_4444)
    for writer, name in ((write_jsonl, "t.jsonl"), (write_csv, "t.csv")):
        path = writer(tmp_path / name, [event, evicting], [None, None])
        assert [row.event for row in read_trace(path)] == [event, evicting]


def _event(seq: int) -> AccessEvent:
    return AccessEvent(seq, seq, int(Op.LOAD), 0x1000, 0x1000, 8, 0, False, False, -1, 0, 0, 0, 0, 0, 0)
