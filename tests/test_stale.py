"""The stale-TLB detector on a kernel that forgets `MapperFlush::flush()` after remapping a page, and on one
that does not forget it."""

from __future__ import annotations

import pytest

from cosim.analysis.stale import find_stale
from cosim.cli import main
from cosim.runner import run_program
from cosim.workloads import WORKLOADS, Workload
from firmware import memory
from firmware.boot import boot
from firmware.cpu import Cpu
from firmware.x86_64.addr import VirtAddr
from firmware.x86_64.paging import Page, PageTableFlags
from hdl.protocol import MmuConfig, Op, pte_addr_mask

PAGE = 0x5555_0000_0000
FLAGS = PageTableFlags.PRESENT | PageTableFlags.WRITABLE


def remap_page(cpu: Cpu, *, flush: bool = False) -> dict[str, int]:
    """Map a page, write 0x1111 to it, remap it to a fresh frame (`flush()` or `ignore()` both promises), and
    read it again: a correct kernel reads the new, zeroed frame."""
    info = boot(cpu)
    mapper = memory.init(cpu, info.physical_memory_offset)
    frames = memory.BootInfoFrameAllocator.init(info.memory_map)
    page = Page.containing_address(VirtAddr(PAGE))
    old_frame, new_frame = frames.allocate_frame(), frames.allocate_frame()
    with cpu.context("map"):
        mapper.map_to(page, old_frame, FLAGS, frames).flush()
    with cpu.context("use"):
        cpu.store_u64(PAGE, 0x1111)
    with cpu.context("remap"):
        promises = [mapper.unmap(page)[1], mapper.map_to(page, new_frame, FLAGS, frames)]
        for promise in promises:
            promise.flush() if flush else promise.ignore()
    with cpu.context("use again"):
        value = cpu.load_u64(PAGE)
    frame_addresses = (old_frame.start_address().as_u64(), new_frame.start_address().as_u64())
    return {"value": value, "old": frame_addresses[0], "new": frame_addresses[1]}


def _traced(flush: bool, config: MmuConfig | None = None):
    return run_program("test_stale:remap_page", "reference", config, args={"flush": flush}, trace=True)


@pytest.fixture(scope="module")
def broken():
    return _traced(flush=False)


def test_forgotten_flush_is_caught_with_the_page_table_write_that_caused_it(broken):
    assert broken.value["value"] == 0x1111  # the TLB still maps the old frame: the bug is real
    stale = find_stale(broken.events, broken.contexts, broken.config)
    assert len(stale) == 1
    found = stale[0]
    assert found.event.op == Op.LOAD and found.event.vaddr == PAGE and found.path == "use again"
    assert found.source == "TLB hit"
    assert (found.used.paddr, found.expected.paddr) == (broken.value["old"], broken.value["new"])
    culprit = found.culprit
    assert culprit is not None and culprit.path.startswith("remap")
    assert culprit.value & pte_addr_mask() == broken.value["new"]  # the new leaf entry...
    store = next(e for e in broken.events if e.seq == culprit.seq)
    assert store.op == Op.STORE and store.paddr == culprit.paddr  # ...written by this store, to this entry
    report = found.report()
    assert f"#{culprit.seq}" in report and f"{culprit.paddr:#x}" in report and "use again" in report


@pytest.mark.parametrize("tlb_entries", [16, 4])  # 4: the boot's mappings evict each other
def test_correct_kernel_has_no_stale_access(tlb_entries):
    run = _traced(flush=True, config=MmuConfig(tlb_entries=tlb_entries))
    assert run.value["value"] == 0
    assert find_stale(run.events, run.contexts, run.config) == []


def test_check_stale_option_reports_the_bug_and_fails_the_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(WORKLOADS, "forgetful", Workload("forgetful", "test_stale:remap_page", "no flush"))
    code = main(["run", "forgetful", "--check-stale", "--no-plots", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 access used a stale translation" in out and "made stale by the store" in out
    assert (tmp_path / "stale.txt").read_text().startswith("stale translation at #")
