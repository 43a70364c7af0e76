"""The MyHDL MMU on MyHDL's simulator: hand-built page tables, every fault, A/D, the PWC and each TLB policy.

Expected values come from the behaviour contract (docs/architecture.md) and the x86 rules, worked out by hand in
each test; nothing is copied from the design's own output. Random page tables and accesses are then checked
against the independent `reference` model, event by event; the last tests convert the design to Verilog and lint
it. Configurations use a 64 KiB RAM so that each simulation builds in a fraction of a second.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cosim.backends.myhdl_sim import MyhdlBackend
from cosim.toolchain.export import config_tag, export_verilog, lint
from hdl.protocol import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    Counter,
    Csr,
    ErrorCode,
    Fault,
    MmuConfig,
    Op,
    Pte,
    TlbPolicy,
    table_index,
)
from hdl.ram import ram

pytestmark = pytest.mark.rtl

SMALL_RAM = 1 << 16
MAX_CYCLES = 200  # per operation; the longest walk with 4 reads and 4 write-backs needs about 15
P, W, U, RSVD, FETCH = ErrorCode.P, ErrorCode.W, ErrorCode.U, ErrorCode.RSVD, ErrorCode.I
TABLE = Pte.PRESENT | Pte.WRITABLE | Pte.USER_ACCESSIBLE  # a non-leaf entry that restricts nothing
RW = Pte.PRESENT | Pte.WRITABLE


@dataclass(frozen=True)
class Response:
    """One operation's response and access event, as the ports showed them in the resp_valid cycle."""

    rdata: int
    fault: int
    errcode: int
    cycle: int
    paddr: int
    tlb_hit: bool
    tlb_miss: bool
    evict: bool
    evict_vpn: int
    walk_levels: int
    pwc_hits: int
    ad_writes: int


class Bench:
    """A blocking `op()` around the MMU, with its synthesizable RAM, on MyHDL's simulator: the myhdl backend, whose
    driver is the one MyHDL driver of the handshake (a TB in the cocotbext style)."""

    def __init__(self, config: MmuConfig) -> None:
        self.config = config
        self.backend = MyhdlBackend(config, trace=True, ram_model=ram)

    def close(self) -> None:
        self.backend.close()

    def op(self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False,
           fetch: bool = False) -> Response:
        """One operation, held until a rising edge samples req_ready, then its response and access event."""
        rdata, fault, errcode = self.backend.transact(op, addr, size, wdata, user, fetch)
        (event,) = self.backend.drain_events()
        return Response(rdata, fault, errcode, event.cycle, event.paddr, event.tlb_hit, event.tlb_miss,
                        event.evicted_vpn >= 0, max(event.evicted_vpn, 0), event.walk_levels, event.pwc_hits,
                        event.ad_writes)

    # -- the CPU's view ---------------------------------------------------------------------------------------
    def load(self, addr: int, size: int = 3, **kind: bool) -> Response:
        return self.op(Op.LOAD, addr, size, **kind)

    def store(self, addr: int, value: int, size: int = 3, **kind: bool) -> Response:
        return self.op(Op.STORE, addr, size, value, **kind)

    def csr(self, csr: int) -> int:
        response = self.op(Op.CSR_READ, csr)
        assert response.fault == Fault.NONE
        return response.rdata

    def write_csr(self, csr: int, value: int) -> Response:
        return self.op(Op.CSR_WRITE, csr, 3, value)

    def paging(self, on: bool) -> None:
        assert self.write_csr(Csr.CR0, CR0_PG if on else 0).fault == Fault.NONE

    def physical(self, addr: int) -> int:
        """The word at physical `addr`, read with paging switched off for the moment (which flushes the TLB)."""
        self.paging(False)
        value = self.load(addr).rdata
        self.paging(True)
        return value


class PageTables:
    """x86_64 4-level tables written into the MMU's RAM with paging off, tables allocated from 0x1000 up."""

    def __init__(self, bench: Bench, first_table: int = 0x1000) -> None:
        self.bench = bench
        self.next_table = first_table
        self.pml4 = self._new_table()
        self.tables: dict[tuple[int, int], int] = {}  # (level, vaddr prefix) -> table address

    def _new_table(self) -> int:
        """A table in a frame nothing has written yet: the simulated RAM starts zeroed, so it is empty."""
        table = self.next_table
        self.next_table += 0x1000
        return table

    def table_for(self, vaddr: int, level: int, flags: int = TABLE) -> int:
        """The table of `level` on the way to `vaddr`, creating the missing ones with non-leaf `flags`."""
        table = self.pml4
        for upper in range(4, level, -1):
            key = (upper - 1, vaddr >> (12 + 9 * (upper - 1)))
            if key not in self.tables:
                self.tables[key] = self._new_table()
                self.set_entry(table, table_index(vaddr, upper), self.tables[key] | flags)
            table = self.tables[key]
        return table

    def set_entry(self, table: int, index: int, value: int) -> int:
        """Write entry `index` of `table`; return its physical address."""
        assert self.bench.store(table + 8 * index, value).fault == Fault.NONE
        return table + 8 * index

    def map(self, vaddr: int, frame: int, flags: int = RW, level: int = 1) -> int:
        """Map the page at `vaddr` (level 1: 4 KiB, 2: 2 MiB, 3: 1 GiB) to `frame`; return the leaf's address."""
        huge = Pte.HUGE_PAGE if level > 1 else 0
        return self.set_entry(self.table_for(vaddr, level), table_index(vaddr, level), frame | flags | huge)

    def enable(self) -> None:
        assert self.bench.write_csr(Csr.CR3, self.pml4).fault == Fault.NONE
        self.bench.paging(True)


@pytest.fixture
def make_bench() -> Iterator:
    """Build a Bench for a configuration; MyHDL allows one simulation per process, so each ends with its test."""
    benches: list[Bench] = []

    def make(**config: object) -> Bench:
        for earlier in benches:
            earlier.close()
        bench = Bench(MmuConfig(**{"mem_bytes": SMALL_RAM, **config}))
        benches.append(bench)
        return bench

    yield make
    for bench in benches:
        bench.close()


@pytest.fixture
def bench(make_bench) -> Bench:
    return make_bench()


@pytest.fixture
def tables(bench: Bench) -> PageTables:
    return PageTables(bench)


# -- paging off -----------------------------------------------------------------------------------------------


def test_paging_off_stores_of_each_size_write_only_their_bytes(bench: Bench) -> None:
    bench.store(0x100, 0x1122334455667788)
    bench.store(0x102, 0xABCD, size=1)
    bench.store(0x107, 0xEE, size=0)
    bench.store(0x108, 0xDEADBEEF_CAFEF00D)
    bench.store(0x10C, 0x01020304, size=2)
    assert bench.load(0x100).rdata == 0xEE223344_ABCD7788
    assert bench.load(0x108).rdata == 0x01020304_CAFEF00D
    assert bench.load(0x102, size=1).rdata == 0xABCD
    assert bench.load(0x104, size=2).rdata == 0xEE223344
    assert bench.load(0x107, size=0).rdata == 0xEE


def test_paging_off_store_ignores_data_above_its_size(bench: Bench) -> None:
    bench.store(0x200, 0)
    bench.store(0x204, 0xFFFF_FFFF_1234_5678, size=2)
    assert bench.load(0x200).rdata == 0x12345678_00000000


def test_paging_off_access_reports_the_address_as_physical_without_tlb(bench: Bench) -> None:
    response = bench.load(0x1238)
    assert (response.fault, response.paddr, response.tlb_hit, response.tlb_miss) == (Fault.NONE, 0x1238, 0, 0)


@pytest.mark.parametrize(("addr", "size"), [(0x101, 1), (0x102, 2), (0x104, 3), (0x10F, 3)])
def test_paging_off_misaligned_access_is_an_align_fault(bench: Bench, addr: int, size: int) -> None:
    assert bench.load(addr, size).fault == Fault.ALIGN
    assert bench.store(addr, 0, size).fault == Fault.ALIGN


def test_paging_off_access_at_or_beyond_ram_is_a_bus_fault(bench: Bench) -> None:
    assert bench.load(SMALL_RAM - 8).fault == Fault.NONE
    assert bench.load(SMALL_RAM).fault == Fault.BUS
    assert bench.store(1 << 63, 0).fault == Fault.BUS  # no canonical check with paging off
    assert bench.load(SMALL_RAM + 1, size=1).fault == Fault.ALIGN  # alignment is checked first


# -- CSRs -----------------------------------------------------------------------------------------------------


def test_cr0_reads_pe_and_wp_as_one_and_keeps_only_pg(bench: Bench) -> None:
    assert bench.csr(Csr.CR0) == CR0_PE | CR0_WP
    bench.write_csr(Csr.CR0, 0xFFFF_FFFF_FFFF_FFFF)
    assert bench.csr(Csr.CR0) == CR0_PE | CR0_WP | CR0_PG
    bench.write_csr(Csr.CR0, CR0_PE | CR0_WP)
    assert bench.csr(Csr.CR0) == CR0_PE | CR0_WP


def test_cr2_and_cr3_read_back_what_was_written(bench: Bench) -> None:
    bench.write_csr(Csr.CR2, 0xFFFF_8000_1234_5678)
    bench.write_csr(Csr.CR3, 0x0000_0000_0012_3018)
    assert (bench.csr(Csr.CR2), bench.csr(Csr.CR3)) == (0xFFFF_8000_1234_5678, 0x0012_3018)


def test_configuration_csrs_describe_the_hardware(make_bench) -> None:
    bench = make_bench(tlb_entries=8, tlb_ways=2, tlb_policy=TlbPolicy.FIFO, pwc_entries=4, mem_latency=2,
                       maxphyaddr=36)
    assert [bench.csr(c) for c in (Csr.CFG_TLB_ENTRIES, Csr.CFG_TLB_WAYS, Csr.CFG_TLB_POLICY, Csr.CFG_PWC_ENTRIES,
                                   Csr.CFG_MEM_BYTES, Csr.CFG_MAXPHYADDR, Csr.CFG_MEM_LATENCY)] == [
        8, 2, TlbPolicy.FIFO, 4, SMALL_RAM, 36, 2]


@pytest.mark.parametrize("csr", [0x001, 0x005, 0x017, Csr.COUNTER_BASE + len(Counter), 0x1000 | Csr.CR0])
def test_reading_an_address_outside_the_csr_map_is_gp(bench: Bench, csr: int) -> None:
    assert bench.op(Op.CSR_READ, csr).fault == Fault.GP


@pytest.mark.parametrize("csr", [Csr.PFEC, Csr.CFG_MEM_BYTES, Csr.COUNTER_BASE + Counter.LOADS, 0x005])
def test_writing_a_read_only_or_unknown_csr_is_gp_and_changes_nothing(bench: Bench, csr: int) -> None:
    before = bench.op(Op.CSR_READ, csr)
    assert bench.write_csr(csr, 0x55).fault == Fault.GP
    assert bench.op(Op.CSR_READ, csr).rdata == before.rdata


def test_undefined_op_is_gp(bench: Bench) -> None:
    assert bench.op(6, 0).fault == Fault.GP


def test_privileged_operations_from_user_mode_are_gp_and_change_nothing(bench: Bench, tables: PageTables) -> None:
    # x86 at CPL 3: INVLPG, MOV to CR3 (FLUSH) and MOV to or from CRn are #GP(0); CR2 and the error code untouched.
    tables.map(0x40_0000, 0x8000, RW | Pte.USER_ACCESSIBLE)
    tables.enable()
    bench.write_csr(Csr.CR2, 0x77)
    assert bench.load(0x40_0000).tlb_miss
    for op, addr, wdata in ((Op.INVLPG, 0x40_0000, 0), (Op.FLUSH, 0, 0), (Op.CSR_WRITE, Csr.CR3, 0),
                            (Op.CSR_WRITE, Csr.CR0, 0), (Op.CSR_READ, Csr.CR3, 0), (Op.CSR_READ, Csr.CR0, 0),
                            (Op.CSR_READ, Csr.COUNTER_BASE + Counter.CYCLES, 0)):
        response = bench.op(op, addr, 3, wdata, user=True)
        assert (response.rdata, response.fault, response.errcode) == (0, Fault.GP, 0), Op(op).name
    hit = bench.load(0x40_0000, user=True)
    assert (hit.fault, hit.tlb_hit) == (Fault.NONE, True)  # neither INVLPG nor FLUSH dropped it
    assert (bench.csr(Csr.CR3), bench.csr(Csr.CR0), bench.csr(Csr.CR2)) == (tables.pml4, CR0_PE | CR0_WP | CR0_PG,
                                                                            0x77)
    assert bench.csr(Csr.COUNTER_BASE + Counter.FAULTS_GP) == 7
    assert bench.csr(Csr.COUNTER_BASE + Counter.INVLPGS) == 0


def test_counters_count_operations_by_outcome(bench: Bench) -> None:
    bench.store(0x100, 1)
    bench.load(0x100)
    bench.load(0x101, 1)  # ALIGN
    bench.load(SMALL_RAM)  # BUS
    bench.op(Op.CSR_READ, 0x7)  # GP
    bench.op(Op.FLUSH, 0)
    bench.write_csr(Csr.CR3, 0x1000)  # counts as a flush
    bench.op(Op.INVLPG, 0x1000)
    counters = {c: bench.csr(Csr.COUNTER_BASE + c) for c in Counter}
    assert counters[Counter.LOADS] == 1 and counters[Counter.STORES] == 1
    assert (counters[Counter.FAULTS_ALIGN], counters[Counter.FAULTS_BUS], counters[Counter.FAULTS_GP]) == (1, 1, 1)
    assert (counters[Counter.FLUSHES], counters[Counter.INVLPGS], counters[Counter.FAULTS_PAGE]) == (2, 1, 0)
    assert counters[Counter.TLB_HITS] == counters[Counter.TLB_MISSES] == counters[Counter.WALKS] == 0
    assert counters[Counter.CYCLES] > 2 * 8  # every operation takes at least two cycles


# -- walks ----------------------------------------------------------------------------------------------------

VA = 0x0000_1234_5670_0000  # PML4 36, PDPT 209, PD 179, PT 256
FRAME = 0x8000


def test_walk_of_a_4k_page_translates_and_sets_accessed_on_every_level(bench: Bench, tables: PageTables) -> None:
    leaf = tables.map(VA, FRAME)
    tables.enable()
    response = bench.load(VA + 0x7F8)
    assert (response.fault, response.paddr, response.tlb_miss, response.walk_levels) == (0, FRAME + 0x7F8, 1, 4)
    assert response.ad_writes == 4  # A in PML4E, PDPTE, PDE (all clear) and in the leaf
    non_leaf = [tables.pml4 + 8 * table_index(VA, 4), tables.tables[(3, VA >> 39)] + 8 * table_index(VA, 3),
                tables.tables[(2, VA >> 30)] + 8 * table_index(VA, 2)]
    assert all(bench.physical(addr) & (Pte.ACCESSED | Pte.DIRTY) == Pte.ACCESSED for addr in non_leaf)
    assert bench.physical(leaf) == FRAME | RW | Pte.ACCESSED  # a load does not set D


def test_store_through_a_new_translation_lands_in_the_frame_and_sets_dirty(bench: Bench,
                                                                          tables: PageTables) -> None:
    leaf = tables.map(VA, FRAME)
    tables.enable()
    assert bench.store(VA + 0x10, 0xC0FFEE, size=2).paddr == FRAME + 0x10
    assert bench.physical(leaf) == FRAME | RW | Pte.ACCESSED | Pte.DIRTY
    assert bench.physical(FRAME + 0x10) == 0xC0FFEE


def test_second_access_to_a_page_hits_the_tlb_without_a_walk(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME)
    tables.enable()
    bench.load(VA)
    response = bench.load(VA + 8)
    assert (response.tlb_hit, response.tlb_miss, response.walk_levels, response.paddr) == (1, 0, 0, FRAME + 8)


def test_entries_already_accessed_are_not_written_back(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, RW | Pte.ACCESSED)
    tables.enable()
    first = bench.load(VA)
    bench.op(Op.FLUSH, 0)
    second = bench.load(VA)
    assert (first.ad_writes, second.ad_writes) == (3, 0)  # the first walk set A in the three tables above


@pytest.mark.parametrize(("level", "vaddr", "frame", "offset"), [
    (2, 0x0000_0000_4020_0000, 0, 0xE348),  # 2 MiB page; offsets above the tables, inside the 64 KiB RAM
    (3, 0x0000_0080_4000_0000, 0, 0xF0D8),  # 1 GiB page
])
def test_huge_page_translates_the_offset_within_it(bench: Bench, tables: PageTables, level: int, vaddr: int,
                                                   frame: int, offset: int) -> None:
    tables.map(vaddr, frame, RW, level=level)
    bench.store(frame + offset, 0x5A5A)  # paging still off: physical
    tables.enable()
    response = bench.load(vaddr + offset)
    assert (response.rdata, response.paddr, response.walk_levels) == (0x5A5A, frame + offset, 5 - level)


def test_pat_bit_of_a_2m_leaf_is_not_part_of_its_frame(bench: Bench, tables: PageTables) -> None:
    tables.map(0x4020_0000, 1 << 12, RW, level=2)  # bit 12 of a PS entry is PAT, not an address bit
    tables.enable()
    assert bench.load(0x4020_0010).paddr == 0x10


# -- faults ---------------------------------------------------------------------------------------------------


def test_not_present_page_faults_with_cr2_and_pfec(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, 0)  # leaf not present
    tables.enable()
    response = bench.store(VA + 0x18, 1, user=True)
    assert (response.fault, response.errcode, response.paddr) == (Fault.PAGE, W | U, 0)
    assert (bench.csr(Csr.CR2), bench.csr(Csr.PFEC)) == (VA + 0x18, W | U)
    assert bench.csr(Csr.COUNTER_BASE + Counter.FAULTS_PAGE) == 1


def test_fetch_from_not_present_table_has_the_i_bit(bench: Bench, tables: PageTables) -> None:
    tables.enable()  # an empty PML4
    response = bench.load(VA, fetch=True)
    assert (response.fault, response.errcode, response.walk_levels) == (Fault.PAGE, FETCH, 1)


def test_supervisor_store_to_read_only_page_faults_because_wp_is_set(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, Pte.PRESENT)
    tables.enable()
    assert bench.load(VA).fault == Fault.NONE
    response = bench.store(VA, 1)
    assert (response.fault, response.errcode, response.tlb_hit) == (Fault.PAGE, P | W, 1)


def test_read_only_upper_level_denies_stores_to_a_writable_leaf(bench: Bench, tables: PageTables) -> None:
    tables.table_for(VA, 1, flags=Pte.PRESENT | Pte.USER_ACCESSIBLE)  # W clear from the PML4E down
    tables.map(VA, FRAME, RW)
    tables.enable()
    response = bench.store(VA, 1)
    assert (response.fault, response.errcode, response.tlb_miss) == (Fault.PAGE, P | W, 1)


def test_user_access_to_supervisor_page_faults(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, RW)
    tables.enable()
    assert bench.load(VA).fault == Fault.NONE
    assert (bench.load(VA, user=True).errcode, bench.load(VA).fault) == (P | U, Fault.NONE)


def test_fetch_from_no_execute_page_faults_and_a_plain_load_does_not(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, RW | Pte.NO_EXECUTE)
    tables.enable()
    assert bench.load(VA).fault == Fault.NONE
    response = bench.load(VA, fetch=True)
    assert (response.fault, response.errcode) == (Fault.PAGE, P | FETCH)


@pytest.mark.parametrize(("level", "bad_bits", "reads"), [
    (1, 1 << 40, 4),  # bit M of a PT entry (M = 40)
    (1, 1 << 51, 4),
    (2, 1 << 13, 3),  # bits 20..13 of a 2 MiB leaf
    (3, 1 << 29, 2),  # bits 29..13 of a 1 GiB leaf
])
def test_reserved_bit_in_an_entry_faults_with_rsvd(bench: Bench, tables: PageTables, level: int, bad_bits: int,
                                                   reads: int) -> None:
    tables.map(VA & ~((1 << (12 + 9 * (level - 1))) - 1), bad_bits, RW, level=level)
    tables.enable()
    response = bench.load(VA)
    assert (response.fault, response.errcode, response.walk_levels) == (Fault.PAGE, P | RSVD, reads)


def test_page_size_bit_in_a_pml4_entry_is_reserved(bench: Bench, tables: PageTables) -> None:
    tables.set_entry(tables.pml4, table_index(VA, 4), 0x2000 | TABLE | Pte.HUGE_PAGE)
    tables.enable()
    response = bench.store(VA, 0)
    assert (response.fault, response.errcode, response.walk_levels) == (Fault.PAGE, P | RSVD | W, 1)


def test_non_canonical_address_is_gp_before_alignment(bench: Bench, tables: PageTables) -> None:
    tables.enable()
    response = bench.load(0x0000_8000_0000_0001, size=1)
    assert (response.fault, response.tlb_miss) == (Fault.GP, 0)
    assert bench.load(0xFFFF_8000_0000_0001, size=1).fault == Fault.ALIGN  # canonical (bits 63..47 all set)


def test_frame_beyond_ram_is_a_bus_fault_and_the_translation_stays_cached(bench: Bench,
                                                                         tables: PageTables) -> None:
    tables.map(VA, SMALL_RAM)
    tables.enable()
    first, second = bench.load(VA), bench.load(VA)
    assert (first.fault, first.tlb_miss, second.fault, second.tlb_hit) == (Fault.BUS, 1, Fault.BUS, 1)
    assert bench.csr(Csr.CR2) == 0  # only page faults set CR2


def test_table_beyond_ram_is_a_bus_fault_counting_the_failed_read(bench: Bench, tables: PageTables) -> None:
    tables.set_entry(tables.table_for(VA, 2), table_index(VA, 2), SMALL_RAM | TABLE)
    tables.enable()
    response = bench.load(VA)
    assert (response.fault, response.walk_levels, bench.load(VA).tlb_miss) == (Fault.BUS, 4, 1)


def test_faulting_access_leaves_no_tlb_entry(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, RW)
    tables.enable()
    assert bench.load(VA).tlb_miss
    assert bench.load(VA, user=True).errcode == P | U  # a violation on a hit removes the entry...
    assert bench.load(VA).tlb_miss  # ...so the next access walks again


def test_failed_translation_drops_the_address_in_every_set(make_bench) -> None:
    bench = make_bench(tlb_entries=4, tlb_ways=1)  # 4 sets of 1 way: a 2 MiB page splinters
    tables = PageTables(bench)
    tables.map(0x4000_0000, 0, RW, level=2)
    tables.enable()
    assert bench.load(0x4000_0000).tlb_miss and bench.load(0x4000_1000).tlb_miss  # sets 0 and 1
    assert bench.load(0x4000_1000, user=True).fault == Fault.PAGE
    assert bench.load(0x4000_0000).tlb_miss  # set 0's splinter went too


# -- dirty re-walk --------------------------------------------------------------------------------------------


def test_store_hitting_a_clean_entry_rewalks_to_set_dirty(bench: Bench, tables: PageTables) -> None:
    leaf = tables.map(VA, FRAME, RW | Pte.ACCESSED)
    tables.enable()
    bench.load(VA)
    response = bench.store(VA, 7)
    assert (response.tlb_hit, response.tlb_miss, response.walk_levels, response.ad_writes) == (1, 0, 1, 1)
    assert response.pwc_hits == 1  # the load's walk cached the PDE
    assert bench.store(VA + 8, 9).walk_levels == 0  # D is now cached as set
    assert bench.physical(leaf) == FRAME | RW | Pte.ACCESSED | Pte.DIRTY


def test_store_rewalk_that_finds_the_page_read_only_faults_and_drops_the_entry(bench: Bench,
                                                                             tables: PageTables) -> None:
    leaf = tables.map(VA, FRAME, RW)
    identity = 0x0000_0100_0000_0000
    tables.map(identity, 0, RW, level=3)  # a 1 GiB identity map of the RAM, to edit tables with paging on
    tables.enable()
    bench.load(VA)
    # make the leaf read-only behind the TLB's back
    assert bench.store(identity + leaf, FRAME | Pte.PRESENT | Pte.ACCESSED).fault == Fault.NONE
    response = bench.store(VA, 1)
    assert (response.fault, response.errcode, response.tlb_hit, response.walk_levels) == (Fault.PAGE, P | W, 1, 1)
    assert bench.load(VA).tlb_miss


# -- paging-structure cache -----------------------------------------------------------------------------------


def test_walk_starts_below_the_longest_pwc_prefix(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME)
    tables.map(VA + 0x1000, FRAME)  # same PT
    tables.map(VA + (1 << 21), FRAME)  # same PD, next PT
    tables.map(VA + (1 << 30), FRAME)  # same PDPT, next PD
    tables.enable()
    walks = [bench.load(va) for va in (VA, VA + 0x1000, VA + (1 << 21), VA + (1 << 30))]
    assert [(w.walk_levels, w.pwc_hits) for w in walks] == [(4, 0), (1, 1), (2, 1), (3, 1)]


def test_invlpg_empties_the_pwc(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME)
    tables.map(VA + 0x1000, FRAME)
    tables.enable()
    bench.load(VA)
    bench.op(Op.INVLPG, VA + 0x5000)  # another page: the TLB keeps VA, the PWC empties
    response = bench.load(VA + 0x1000)
    assert (response.walk_levels, response.pwc_hits, bench.load(VA).tlb_hit) == (4, 0, 1)


def test_without_pwc_every_walk_reads_four_levels(make_bench) -> None:
    bench = make_bench(pwc_entries=0)
    tables = PageTables(bench)
    tables.map(VA, FRAME)
    tables.map(VA + 0x1000, FRAME)
    tables.enable()
    assert [bench.load(va).walk_levels for va in (VA, VA + 0x1000)] == [4, 4]


def test_pwc_replaces_its_oldest_entry_when_full(make_bench) -> None:
    bench = make_bench(pwc_entries=2)
    tables = PageTables(bench)
    for vaddr in (VA, VA + 0x1000, VA + (1 << 30)):
        tables.map(vaddr, FRAME)
    tables.enable()
    bench.load(VA)  # inserts PML4E (0), PDPTE (1); PDE evicts the PML4E (0)
    assert (bench.load(VA + 0x1000).walk_levels, bench.load(VA + (1 << 30)).walk_levels) == (1, 4)


# -- TLB management -------------------------------------------------------------------------------------------


def test_invlpg_removes_a_global_entry_and_flush_removes_all(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, RW | Pte.GLOBAL)
    tables.map(VA + 0x1000, FRAME, RW | Pte.GLOBAL)
    tables.enable()
    bench.load(VA)
    bench.load(VA + 0x1000)
    bench.op(Op.INVLPG, VA + 0x10)
    assert (bench.load(VA).tlb_miss, bench.load(VA + 0x1000).tlb_hit) == (1, 1)
    bench.op(Op.FLUSH, 0)
    assert bench.load(VA + 0x1000).tlb_miss


def test_invlpg_of_a_non_canonical_address_does_nothing(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME)
    tables.enable()
    bench.load(VA)
    assert bench.op(Op.INVLPG, VA | (1 << 50)).fault == Fault.NONE
    assert bench.load(VA).tlb_hit


def test_cr3_write_keeps_global_entries_only(bench: Bench, tables: PageTables) -> None:
    tables.map(VA, FRAME, RW | Pte.GLOBAL)
    tables.map(VA + 0x1000, FRAME, RW)
    tables.enable()
    bench.load(VA)
    bench.load(VA + 0x1000)
    bench.write_csr(Csr.CR3, tables.pml4)
    assert (bench.load(VA).tlb_hit, bench.load(VA + 0x1000).tlb_miss) == (1, 1)


def test_turning_paging_off_and_on_empties_the_tlb_even_of_global_entries(bench: Bench,
                                                                          tables: PageTables) -> None:
    tables.map(VA, FRAME, RW | Pte.GLOBAL)
    tables.enable()
    bench.load(VA)
    bench.paging(False)
    bench.paging(True)
    assert bench.load(VA).tlb_miss


# -- replacement ----------------------------------------------------------------------------------------------

PAGES = [VA + (i << 12) for i in range(6)]


def _fill_four_then(bench: Bench, tables: PageTables) -> list[int]:
    """Map six pages; fill a 4-way TLB with pages 0-3, hit page 0, then fill pages 4 and 5: the evicted VPNs."""
    for page in PAGES:
        tables.map(page, FRAME)
    tables.enable()
    for page in PAGES[:4]:
        assert not bench.load(page).evict  # free ways first
    assert bench.load(PAGES[0]).tlb_hit
    evicted = []
    for page in PAGES[4:]:
        response = bench.load(page)
        assert response.evict
        evicted.append(response.evict_vpn)
    return [PAGES.index(vpn << 12) for vpn in evicted]


@pytest.mark.parametrize(("policy", "victims"), [
    # PLRU: after fills of ways 0..3 the tree points at way 0; the hit on way 0 points the root right and node 3
    # (ways 2, 3) still points at way 2: page 2 goes. That fill points the root left, node 2 at way 1: page 1.
    (TlbPolicy.PLRU, [2, 1]),
    # FIFO: the pointer starts at way 0 and the hit does not move it.
    (TlbPolicy.FIFO, [0, 1]),
    # RANDOM: 0xACE1 & 3 = 1; then 0xACE1 >> 1 ^ 0xB400 = 0xE270, & 3 = 0.
    (TlbPolicy.RANDOM, [1, 0]),
])
def test_full_set_evicts_the_way_the_policy_chooses(make_bench, policy: TlbPolicy, victims: list[int]) -> None:
    bench = make_bench(tlb_entries=4, tlb_policy=policy)
    assert _fill_four_then(bench, PageTables(bench)) == victims


def test_set_associative_tlb_fills_only_the_accessed_pages_set(make_bench) -> None:
    bench = make_bench(tlb_entries=4, tlb_ways=2)  # 2 sets: even and odd VPNs
    tables = PageTables(bench)
    for page in PAGES:
        tables.map(page, FRAME)
    tables.enable()
    for page in (PAGES[0], PAGES[2]):
        assert not bench.load(page).evict
    assert not bench.load(PAGES[1]).evict  # the odd set is still empty
    response = bench.load(PAGES[4])  # third even page: evicts in the even set
    assert (response.evict, response.evict_vpn) == (1, PAGES[0] >> 12)
    assert bench.load(PAGES[1]).tlb_hit


def test_overlapping_entries_resolve_to_the_lowest_way_within_and_across_groups_of_ways(make_bench) -> None:
    # 4 KiB entries stay cached in ways 1-5 while their 2 MiB region becomes a huge page, whose fill then takes way
    # 6: ways 1-3 lie in another group of ways than way 6 (hdl/tlb.py, GROUP_WAYS), ways 4-5 in its own group.
    bench = make_bench(pwc_entries=0)  # no PWC: the huge page's walk must read the new PDE
    tables = PageTables(bench)
    region = 0x4020_0000
    alias = 0x4060_0000  # maps the region's page directory, so that the PDE can be written with paging on
    directory = tables.table_for(region, 2)
    tables.map(alias, directory)
    for i in range(5):
        tables.map(region + (i + 1) * 0x1000, FRAME + i * 0x1000)
    tables.enable()
    bench.load(alias)  # way 0
    assert [bench.load(region + (i + 1) * 0x1000).tlb_miss for i in range(5)] == [1] * 5  # ways 1-5
    huge_pde = RW | Pte.HUGE_PAGE  # frame 0
    assert bench.store(alias + 8 * table_index(region, 2), huge_pde).tlb_hit
    response = bench.load(region + 7 * 0x1000 + 8)  # way 6: the 2 MiB page
    assert (response.tlb_miss, response.paddr) == (1, 7 * 0x1000 + 8)
    for i in range(5):  # each cached 4 KiB page answers for its own page: the lower way
        response = bench.load(region + (i + 1) * 0x1000 + 16)
        assert (response.tlb_hit, response.paddr) == (1, FRAME + i * 0x1000 + 16)
    response = bench.load(region + 6 * 0x1000)  # a page with no 4 KiB entry: the 2 MiB one
    assert (response.tlb_hit, response.paddr) == (1, 6 * 0x1000)


# -- timing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("latency", "hit_cycles", "walk_cycles"), [(1, 6, 32), (3, 8, 42)])
def test_cycles_per_operation(make_bench, latency: int, hit_cycles: int, walk_cycles: int) -> None:
    """A hit load takes LOOKUP, a cycle that issues the read from the registered address, and the read (the RAM's
    latency and its three port registers: R = latency + 3); a 4-level walk (A already set) adds START +
    4 × (READ + R + CHECK) + DONE."""
    bench = make_bench(mem_latency=latency)
    tables = PageTables(bench)
    tables.table_for(VA, 1, flags=TABLE | Pte.ACCESSED)  # every entry already accessed: no write-backs
    tables.map(VA, FRAME, RW | Pte.ACCESSED)
    tables.enable()
    before = bench.op(Op.CSR_READ, Csr.CR0).cycle
    miss = bench.load(VA)
    hit = bench.load(VA)
    assert (miss.walk_levels, miss.ad_writes, hit.tlb_hit) == (4, 0, 1)
    assert (miss.cycle - before, hit.cycle - miss.cycle) == (walk_cycles, hit_cycles)


# -- random page tables against the reference model ----------------------------------------------------------


def _random_session(rng: random.Random, mem_bytes: int, ops: int) -> Iterator[tuple[int, int, int, int, bool, bool]]:
    """Requests that build random tables (huge pages, reserved bits, tables outside RAM, every flag) with paging
    off, then mix accesses of every kind with INVLPG, FLUSH, CR3 writes and edits of live entries."""
    tables = iter(range(0x1000, mem_bytes, 0x1000))  # data frames are random: they may land on tables too
    pml4, identity_pdpt = next(tables), next(tables)
    identity = 6 << 39  # PML4 slot 6 maps the first GiB to itself, to edit live entries
    entries: list[int] = []
    vaddrs: list[int] = []
    flag_odds = ((Pte.PRESENT, 0.97), (Pte.WRITABLE, 0.85), (Pte.USER_ACCESSIBLE, 0.8), (Pte.NO_EXECUTE, 0.15),
                 (Pte.ACCESSED, 0.5), (Pte.DIRTY, 0.5), (Pte.GLOBAL, 0.2), (1 << 45, 0.01))

    def entry(level: int, table: int, index: int, vaddr: int) -> Iterator:
        flags = sum(bit for bit, odds in flag_odds if rng.random() < odds)
        leaf = level == 1 or (level in (2, 3) and rng.random() < 0.3) or (level == 4 and rng.random() < 0.03)
        if leaf:
            shift = 12 + 9 * (level - 1)
            frame = rng.randrange(0, (mem_bytes >> shift) + 2) << shift | (rng.random() < 0.05) << 13
            value = frame | flags | (Pte.HUGE_PAGE if level > 1 else 0)
        else:
            child = next(tables, mem_bytes) if rng.random() > 0.03 else mem_bytes
            value = child | flags | (TABLE if rng.random() < 0.8 else 0)  # most restrictions at the leaf
        entries.append(table + 8 * index)
        yield Op.STORE, table + 8 * index, 3, value, False, False
        if leaf or not flags & Pte.PRESENT or child >= mem_bytes:
            vaddrs.append(vaddr)
            return
        for child_index in rng.sample(range(512), 2):
            yield from entry(level - 1, child, child_index, vaddr | child_index << (12 + 9 * (level - 2)))

    for index in (0, 2, 511):
        yield from entry(4, pml4, index, (index << 39) | (0xFFFF << 48 if index >= 256 else 0))
    yield Op.STORE, pml4 + 8 * 6, 3, identity_pdpt | RW, False, False
    yield Op.STORE, identity_pdpt, 3, RW | Pte.HUGE_PAGE, False, False
    yield Op.CSR_WRITE, Csr.CR3, 3, pml4, False, False
    yield Op.CSR_WRITE, Csr.CR0, 3, CR0_PG, False, False
    counters = [Csr.COUNTER_BASE + c for c in Counter if c not in (Counter.CYCLES, Counter.WALK_CYCLES)]
    for _ in range(ops):
        size = rng.randrange(4)
        vaddr = rng.choice(vaddrs) + rng.randrange(0, 1 << rng.choice((12, 12, 12, 12, 13, 22))) & ~((1 << size) - 1)
        if rng.random() < 0.02:
            vaddr ^= 1 << 50
        kind = rng.random()
        if kind < 0.75:
            store = rng.random() < 0.4
            yield (Op.STORE if store else Op.LOAD, vaddr, size, rng.getrandbits(8 << size), rng.random() < 0.15,
                   not store and rng.random() < 0.15)
        elif kind < 0.85:  # an entry's flags change behind the TLB's back
            yield Op.STORE, identity + rng.choice(entries) + rng.choice((0, 7)), 0, rng.getrandbits(8), False, False
        elif kind < 0.9:
            yield Op.INVLPG, vaddr, 3, 0, False, False
        elif kind < 0.93:
            yield rng.choice([(Op.FLUSH, 0, 3, 0, False, False), (Op.CSR_WRITE, Csr.CR3, 3, pml4, False, False)])
        else:
            yield Op.CSR_READ, rng.choice([Csr.CR2, Csr.PFEC, *counters]), 3, 0, False, False


@pytest.mark.parametrize(("seed", "config"), [
    (1, {}),
    (2, {"tlb_entries": 4, "tlb_ways": 1, "pwc_entries": 0}),
    (3, {"tlb_entries": 8, "tlb_ways": 2, "tlb_policy": TlbPolicy.FIFO, "pwc_entries": 2, "mem_latency": 2}),
    (4, {"tlb_entries": 4, "tlb_policy": TlbPolicy.RANDOM, "maxphyaddr": 36}),
])
def test_random_tables_and_accesses_agree_with_the_reference_model(make_bench, seed: int, config: dict) -> None:
    from cosim.backends.reference import ReferenceBackend

    bench = make_bench(**config)
    model = ReferenceBackend(bench.config, trace=True)
    responses = []
    for request in _random_session(random.Random(seed), SMALL_RAM, ops=300):
        model.transact(*request)
        responses.append((request, bench.op(*request)))
    for (request, got), want in zip(responses, model.drain_events(), strict=True):
        assert (got.rdata, got.fault, got.errcode, got.paddr, got.tlb_hit, got.tlb_miss,
                got.evict_vpn if got.evict else -1, got.walk_levels, got.pwc_hits, got.ad_writes) == (
            want.data if request[0] in (Op.LOAD, Op.CSR_READ) else got.rdata, want.fault, want.errcode,
            want.paddr, want.tlb_hit, want.tlb_miss, want.evicted_vpn, want.walk_levels, want.pwc_hits,
            want.ad_writes), f"operation {want.seq}: {request}"


# -- Verilog --------------------------------------------------------------------------------------------------


def test_config_tag_names_every_parameter() -> None:
    assert config_tag(MmuConfig()) == "e16w16plru_p8_m1M_l1_pa40"
    assert config_tag(MmuConfig(tlb_entries=64, tlb_ways=4, tlb_policy=TlbPolicy.RANDOM, pwc_entries=0,
                                mem_bytes=64 << 20, mem_latency=3, maxphyaddr=52)) == "e64w4random_p0_m64M_l3_pa52"


def test_exported_verilog_lints_clean_and_is_rewritten_only_on_change(tmp_path: Path) -> None:
    config = MmuConfig(mem_bytes=SMALL_RAM, tlb_entries=8, tlb_ways=2, tlb_policy=TlbPolicy.FIFO)
    path = export_verilog(config, tmp_path)
    assert path == tmp_path / "verilog" / config_tag(config) / "mmu.v"
    lint(path)
    stamp = path.stat().st_mtime_ns
    assert export_verilog(config, tmp_path).stat().st_mtime_ns == stamp
    text = path.read_text()
    assert "module mmu (" in text and "reg [63:0] memory_controller0_ram0_mem_words [0:8192-1];" in text
    if shutil.which("iverilog"):
        result = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "mmu.vvp"), str(path)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("config", [
    MmuConfig(),
    MmuConfig(tlb_entries=4, tlb_ways=1, tlb_policy=TlbPolicy.FIFO, pwc_entries=0),
    MmuConfig(tlb_entries=8, tlb_ways=2, tlb_policy=TlbPolicy.RANDOM, mem_latency=3),
    MmuConfig(tlb_entries=2, tlb_ways=2, pwc_entries=1, maxphyaddr=52),
    MmuConfig(tlb_entries=32, tlb_ways=4, pwc_entries=2, mem_bytes=SMALL_RAM, mem_latency=2, maxphyaddr=32),
], ids=config_tag)
def test_exported_verilog_is_lint_clean_on_its_own_without_waivers(config: MmuConfig, tmp_path: Path) -> None:
    # Every geometry the TLB's index logic distinguishes (one set, one way, both; PLRU with one tree level), no PWC
    # and a one-entry PWC, multi-cycle reads, MAXPHYADDR 32 and 52 (ev_paddr unpadded), the smallest RAM.
    lint(export_verilog(config, tmp_path))


def test_64_mib_ram_is_declared_at_full_depth_without_reset_and_zeroed_at_time_0(tmp_path: Path) -> None:
    path = export_verilog(MmuConfig(mem_bytes=64 << 20), tmp_path)
    text = path.read_text()
    # two banks (hdl.interfaces.ram_banks), each half of the 8 Mi words, each with its zeroing loop and its way out
    assert "memory_controller0_ram0_mem_words [0:4194304-1];" in text
    assert "memory_controller0_ram1_mem_words [0:4194304-1];" in text
    assert text.count("initial begin") == 2 and text.count("`ifndef MMU_RAM_NO_INIT") == 2
    assert text.count("for (word = 0; word < 4194304; word = word + 1) begin") == 2
    assert not [line for line in text.splitlines() if "mem_words[" in line and "<= 0;" in line]  # no reset
    lint(path)
