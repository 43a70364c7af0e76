"""The reference backend against the behaviour contract of docs/architecture.md, one situation per test.

Page tables are built by hand in the model's RAM: with paging off through the backend's own STOREs, then CR3
and CR0.PG. A test that changes a table under a cached translation, or inspects A/D bits, uses `ram` directly,
as a second agent on the bus would, so that the access itself leaves no trace in the TLB or the counters.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from cosim.backends import BackendError, open_backend
from cosim.backends.reference import ReferenceBackend, Translation, walk
from hdl.protocol import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    AccessEvent,
    Counter,
    Csr,
    ErrorCode,
    Fault,
    MmuConfig,
    Op,
    Pte,
    TlbPolicy,
)

P, W, U = Pte.PRESENT, Pte.WRITABLE, Pte.USER_ACCESSIBLE
A, D, PS, G, NX = Pte.ACCESSED, Pte.DIRTY, Pte.HUGE_PAGE, Pte.GLOBAL, Pte.NO_EXECUTE
KIB4, MIB2, GIB1 = 1 << 12, 1 << 21, 1 << 30
PAGE_LEVEL = {KIB4: 1, MIB2: 2, GIB1: 3}


class TB:
    """One traced reference MMU plus a page-table builder that allocates table frames from 64 KiB up."""

    def __init__(self, **config: object) -> None:
        self.mmu = ReferenceBackend(MmuConfig(**config), trace=True)  # type: ignore[arg-type]
        self.next_frame = 0x10000
        self.pml4 = self.alloc()
        self.paging = False
        self.last: AccessEvent | None = None

    def alloc(self) -> int:
        frame = self.next_frame
        self.next_frame += KIB4
        return frame

    # -- operations: each returns (rdata, fault, errcode) and keeps its event in `last` --------------------------
    def op(self, op: Op, addr: int, size: int = 3, wdata: int = 0, *, user: bool = False,
           fetch: bool = False) -> tuple[int, int, int]:
        result = self.mmu.transact(op, addr, size, wdata, user, fetch)
        events = self.mmu.drain_events()
        self.last = events[-1] if events else None
        if op == Op.CSR_WRITE and addr == Csr.CR0:
            self.paging = bool(wdata & CR0_PG)
        return result

    def load(self, addr: int, size: int = 3, **kw: bool) -> tuple[int, int, int]:
        return self.op(Op.LOAD, addr, size, **kw)

    def store(self, addr: int, value: int, size: int = 3, **kw: bool) -> tuple[int, int, int]:
        return self.op(Op.STORE, addr, size, value, **kw)

    def csr(self, csr: int) -> int:
        rdata, fault, _ = self.op(Op.CSR_READ, csr)
        assert fault == Fault.NONE
        return rdata

    def set_csr(self, csr: int, value: int) -> tuple[int, int, int]:
        return self.op(Op.CSR_WRITE, csr, 3, value)

    def counter(self, counter: Counter) -> int:
        return self.csr(Csr.COUNTER_BASE + counter)

    def enable(self) -> None:
        assert self.set_csr(Csr.CR3, self.pml4)[1] == Fault.NONE
        assert self.set_csr(Csr.CR0, CR0_PG)[1] == Fault.NONE

    # -- physical memory ------------------------------------------------------------------------------------------
    def poke(self, paddr: int, value: int) -> None:
        """Write 8 bytes: through the MMU with paging off, straight into RAM (behind its back) with paging on."""
        if self.paging:
            struct.pack_into("<Q", self.mmu.ram, paddr, value)
        else:
            assert self.store(paddr, value)[1] == Fault.NONE

    def peek(self, paddr: int) -> int:
        return struct.unpack_from("<Q", self.mmu.ram, paddr)[0]

    # -- page tables ----------------------------------------------------------------------------------------------
    def map(self, vaddr: int, paddr: int, flags: int = P | W, page: int = KIB4, table_flags: int = P | W | U) -> None:
        """Map the page of `page` bytes at `vaddr`, creating missing tables with `table_flags`."""
        table = self.pml4
        for level in range(4, PAGE_LEVEL[page], -1):
            slot = table + 8 * ((vaddr >> (12 + 9 * (level - 1))) & 511)
            entry = self.peek(slot)
            if not entry & P:
                entry = self.alloc() | table_flags
                self.poke(slot, entry)
            table = entry & ~0xFFF & ((1 << 52) - 1)
        leaf = PAGE_LEVEL[page]
        self.poke(table + 8 * ((vaddr >> (12 + 9 * (leaf - 1))) & 511), paddr | flags | (PS if leaf > 1 else 0))

    def entry_addr(self, vaddr: int, level: int) -> int:
        """Physical address of the entry of `level` (4 = PML4 ... 1 = PT) that maps `vaddr`."""
        table = self.pml4
        for lvl in range(4, level, -1):
            table = self.peek(table + 8 * ((vaddr >> (12 + 9 * (lvl - 1))) & 511)) & 0xFFFFFFFFFF000
        return table + 8 * ((vaddr >> (12 + 9 * (level - 1))) & 511)

    def set_bits(self, vaddr: int, level: int, set_mask: int = 0, clear_mask: int = 0) -> None:
        slot = self.entry_addr(vaddr, level)
        self.poke(slot, (self.peek(slot) | set_mask) & ~clear_mask)


VA = 0x0000_1234_5660_0000  # table indices 36, 209, 179, 0: an entry of each level sits at a distinct offset
FRAME = 0x8000


def tb_with_page(flags: int = P | W, **config: object) -> TB:
    tb = TB(**config)
    tb.map(VA, FRAME, flags)
    tb.enable()
    return tb


# ----------------------------------------------------------------------------------------------------------------
# Paging off


def test_paging_off_store_then_narrower_loads_are_little_endian() -> None:
    tb = TB()
    assert tb.store(0x100, 0x1122334455667788) == (0, 0, 0)
    assert tb.load(0x100, 0)[0] == 0x88
    assert tb.load(0x102, 1)[0] == 0x5566
    assert tb.load(0x104, 2)[0] == 0x11223344
    assert tb.last.paddr == 0x104 and tb.last.size == 4 and tb.last.data == 0x11223344
    assert not tb.last.tlb_hit and not tb.last.tlb_miss


def test_paging_off_store_writes_and_reports_only_the_low_bytes_of_wdata() -> None:
    tb = TB()
    tb.store(0x200, 0)
    tb.store(0x201, 0xABCD, size=0)
    assert tb.last.data == 0xCD
    assert tb.load(0x200)[0] == 0xCD00
    tb.store(0x203, 0x1234, size=1)  # misaligned: the event still carries the data the store would write
    assert tb.last.fault == Fault.ALIGN and tb.last.data == 0x1234


def test_paging_off_misaligned_is_align_before_bus() -> None:
    tb = TB()
    mem = tb.mmu.config.mem_bytes
    assert tb.load(mem + 4, 3) == (0, Fault.ALIGN, 0)
    assert tb.load(mem, 3) == (0, Fault.BUS, 0)
    assert tb.load(mem - 8, 3)[1] == Fault.NONE
    assert tb.last.paddr == mem - 8


def test_paging_off_has_no_canonical_check() -> None:
    tb = TB()
    assert tb.load(0x8000_0000_0000_0000)[1] == Fault.BUS
    assert tb.counter(Counter.FAULTS_GP) == 0 and tb.counter(Counter.FAULTS_BUS) == 1


# ----------------------------------------------------------------------------------------------------------------
# CSRs


def test_cr0_reads_pe_and_wp_as_one_and_keeps_only_pg() -> None:
    tb = TB()
    assert tb.csr(Csr.CR0) == CR0_PE | CR0_WP
    tb.set_csr(Csr.CR0, 0xFFFF_FFFF)
    assert tb.csr(Csr.CR0) == CR0_PE | CR0_WP | CR0_PG
    tb.set_csr(Csr.CR0, CR0_PE | CR0_WP)
    assert tb.csr(Csr.CR0) == CR0_PE | CR0_WP


def test_cr2_is_writable_and_pfec_is_read_only() -> None:
    tb = TB()
    tb.set_csr(Csr.CR2, 0xDEAD_BEEF_0000_1234)
    assert tb.csr(Csr.CR2) == 0xDEAD_BEEF_0000_1234
    assert tb.set_csr(Csr.PFEC, 5) == (0, Fault.GP, 0)
    assert tb.csr(Csr.PFEC) == 0


def test_cr3_reads_back_as_written_and_the_walk_uses_only_its_address_bits() -> None:
    tb = TB(maxphyaddr=40)
    tb.map(VA, FRAME)
    tb.enable()
    cr3 = (1 << 45) | tb.pml4 | Pte.WRITE_THROUGH | Pte.NO_CACHE  # bits above M and the PWT/PCD flags
    tb.set_csr(Csr.CR3, cr3)
    assert tb.csr(Csr.CR3) == cr3
    assert tb.load(VA)[1] == Fault.NONE and tb.last.paddr == FRAME


def test_config_csrs_report_the_configuration_and_are_read_only() -> None:
    tb = TB(tlb_entries=32, tlb_ways=4, tlb_policy=TlbPolicy.FIFO, pwc_entries=4, mem_bytes=1 << 18,
            mem_latency=3, maxphyaddr=36)
    expected = {Csr.CFG_TLB_ENTRIES: 32, Csr.CFG_TLB_WAYS: 4, Csr.CFG_TLB_POLICY: TlbPolicy.FIFO,
                Csr.CFG_PWC_ENTRIES: 4, Csr.CFG_MEM_BYTES: 1 << 18, Csr.CFG_MEM_LATENCY: 3,
                Csr.CFG_MAXPHYADDR: 36}
    for csr, value in expected.items():
        assert tb.csr(csr) == value, csr.name
        assert tb.set_csr(csr, 1)[1] == Fault.GP
        assert tb.csr(csr) == value


def test_fully_associative_config_reports_ways_equal_to_entries() -> None:
    assert TB(tlb_entries=8, tlb_ways=0).csr(Csr.CFG_TLB_WAYS) == 8


@pytest.mark.parametrize("csr", [0x001, 0x005, 0x017, 0x0FF, 0x100 + len(Counter), 0x1000, 0x1000 + Csr.CR0])
def test_csr_not_in_the_map_is_gp_and_leaves_cr2_alone(csr: int) -> None:
    tb = TB()
    tb.set_csr(Csr.CR2, 77)
    assert tb.op(Op.CSR_READ, csr) == (0, Fault.GP, 0)
    assert tb.last.fault == Fault.GP and tb.last.data == 0
    assert tb.op(Op.CSR_WRITE, csr, 3, 9) == (0, Fault.GP, 0)
    assert tb.last.data == 9
    assert tb.counter(Counter.FAULTS_GP) == 2
    assert tb.csr(Csr.CR2) == 77


@pytest.mark.parametrize("op", [6, 7])
def test_undefined_op_is_gp(op: int) -> None:
    tb = TB()
    assert tb.op(op, Csr.CR2, 3, 5) == (0, Fault.GP, 0)  # type: ignore[arg-type]
    assert (tb.last.op, tb.last.size, tb.last.data, tb.last.fault) == (op, 0, 0, Fault.GP)
    assert tb.counter(Counter.FAULTS_GP) == 1 and tb.csr(Csr.CR2) == 0


def test_privileged_operations_at_cpl3_are_gp_and_change_nothing() -> None:
    # x86: INVLPG, MOV to CR3 (the FLUSH) and MOV to or from a control register are #GP(0) at CPL 3, reads too.
    tb = tb_with_page(flags=P | W | U)
    tb.set_csr(Csr.CR2, 0x77)
    tb.load(VA)  # cached
    assert tb.op(Op.INVLPG, VA, user=True) == (0, Fault.GP, 0)
    assert tb.op(Op.FLUSH, 0, user=True) == (0, Fault.GP, 0)
    assert tb.op(Op.CSR_WRITE, Csr.CR3, 3, 0, user=True) == (0, Fault.GP, 0)
    assert tb.last.data == 0  # the event still carries the data written, as for any CSR write
    assert tb.op(Op.CSR_WRITE, Csr.CR0, 3, 0, user=True) == (0, Fault.GP, 0)
    for csr in (Csr.CR0, Csr.CR2, Csr.CR3, Csr.PFEC, Csr.CFG_TLB_ENTRIES, Csr.COUNTER_BASE + Counter.CYCLES):
        assert tb.op(Op.CSR_READ, csr, user=True) == (0, Fault.GP, 0), csr
        assert tb.last.data == 0
    assert tb.load(VA, user=True) == (0, Fault.NONE, 0) and tb.last.tlb_hit  # nothing was dropped
    assert tb.csr(Csr.CR3) == tb.pml4 and tb.csr(Csr.CR0) == CR0_PE | CR0_WP | CR0_PG and tb.csr(Csr.CR2) == 0x77
    assert tb.counter(Counter.FAULTS_GP) == 10
    assert tb.counter(Counter.INVLPGS) == 0 and tb.counter(Counter.FLUSHES) == 1  # the enabling CR3 write only


def test_counters_are_read_only() -> None:
    tb = TB()
    assert tb.set_csr(Csr.COUNTER_BASE + Counter.LOADS, 5)[1] == Fault.GP
    assert tb.counter(Counter.LOADS) == 0


def test_cycles_counter_reads_the_operation_number() -> None:
    tb = TB()
    tb.load(0)
    tb.store(8, 1)
    assert tb.counter(Counter.CYCLES) == 2  # the third operation, numbered from 0
    assert tb.last.seq == 2 and tb.last.cycle == 2


def test_csr_events_carry_the_value_and_no_size() -> None:
    tb = TB()
    tb.set_csr(Csr.CR2, 0x55)
    assert tb.last[:7] == (0, 0, Op.CSR_WRITE, Csr.CR2, 0, 0, 0x55)
    tb.op(Op.CSR_READ, Csr.CR2)
    assert (tb.last.op, tb.last.vaddr, tb.last.size, tb.last.data) == (Op.CSR_READ, Csr.CR2, 0, 0x55)


# ----------------------------------------------------------------------------------------------------------------
# Translation


@pytest.mark.parametrize(("page", "reads"), [(KIB4, 4), (MIB2, 3), (GIB1, 2)])
def test_page_of_each_size_translates_its_offset(page: int, reads: int) -> None:
    tb = TB(mem_bytes=1 << 20, maxphyaddr=40, pwc_entries=0)
    vaddr = 0x0000_7F80_0000_0000 + 5 * GIB1  # 1 GiB aligned, so aligned for every page size
    frame = 7 * page  # beyond RAM for the huge pages: only the translation is checked there
    tb.map(vaddr, frame, P | W, page=page)
    tb.enable()
    offset = page - 8
    _, fault, _ = tb.load(vaddr + offset)
    assert tb.last.walk_levels == reads and tb.last.tlb_miss
    if frame + offset < (1 << 20):
        assert fault == Fault.NONE and tb.last.paddr == frame + offset
    else:
        assert fault == Fault.BUS and tb.last.paddr == 0


def test_4k_translation_reaches_the_frame_in_ram() -> None:
    tb = tb_with_page()
    tb.poke(FRAME + 0x10, 0xFEED)
    assert tb.load(VA + 0x10) == (0xFEED, 0, 0)
    assert tb.last.paddr == FRAME + 0x10 and tb.last.vaddr == VA + 0x10


def test_2m_page_ignores_the_pat_bit_in_its_frame() -> None:
    tb = TB(mem_bytes=1 << 23)
    tb.map(VA, MIB2 | (1 << 12), P | W, page=MIB2)  # bit 12 is PAT in a 2 MiB leaf, not an address bit
    tb.enable()
    assert tb.load(VA + 0x1238)[1] == Fault.NONE
    assert tb.last.paddr == MIB2 + 0x1238


def test_upper_half_addresses_translate_through_pml4_entry_511() -> None:
    tb = TB()
    vaddr = 0xFFFF_FFFF_FFFF_F000
    tb.map(vaddr, FRAME)
    tb.enable()
    assert tb.store(vaddr + 8, 42)[1] == Fault.NONE
    assert tb.peek(FRAME + 8) == 42
    assert tb.load(vaddr + 8)[0] == 42 and tb.last.tlb_hit


# ----------------------------------------------------------------------------------------------------------------
# Faults and error codes


def test_non_canonical_is_gp_before_alignment_with_no_lookup() -> None:
    tb = tb_with_page()
    tb.set_csr(Csr.CR2, 1)
    assert tb.load(0x0000_8000_0000_0003) == (0, Fault.GP, 0)
    assert not tb.last.tlb_hit and not tb.last.tlb_miss
    assert tb.csr(Csr.CR2) == 1
    assert tb.counter(Counter.TLB_MISSES) == 0 and tb.counter(Counter.FAULTS_GP) == 1


def test_misaligned_is_align_before_the_lookup() -> None:
    tb = tb_with_page(flags=0)  # not even present: alignment is checked first
    assert tb.load(VA + 2, 2) == (0, Fault.ALIGN, 0)
    assert tb.counter(Counter.TLB_MISSES) == 0 and tb.counter(Counter.FAULTS_ALIGN) == 1


@pytest.mark.parametrize("level", [4, 3, 2, 1])
def test_not_present_entry_at_each_level_is_a_page_fault_with_p_clear(level: int) -> None:
    tb = tb_with_page()
    tb.set_bits(VA, level, clear_mask=P)
    assert tb.load(VA + 0x18) == (0, Fault.PAGE, 0)
    assert tb.last.walk_levels == 5 - level
    assert tb.csr(Csr.CR2) == VA + 0x18 and tb.csr(Csr.PFEC) == 0
    assert tb.counter(Counter.FAULTS_PAGE) == 1


@pytest.mark.parametrize(
    ("user", "store", "fetch", "errcode"),
    [
        (False, False, False, 0),
        (False, True, False, ErrorCode.W),
        (True, False, False, ErrorCode.U),
        (True, True, False, ErrorCode.U | ErrorCode.W),
        (False, False, True, ErrorCode.I),
        (True, False, True, ErrorCode.U | ErrorCode.I),
    ],
)
def test_error_code_describes_the_access_whatever_the_cause(user: bool, store: bool, fetch: bool,
                                                             errcode: int) -> None:
    tb = tb_with_page(flags=0)
    op = Op.STORE if store else Op.LOAD
    assert tb.op(op, VA, 3, 0, user=user, fetch=fetch) == (0, Fault.PAGE, errcode)
    tb.set_bits(VA, 1, set_mask=P | W | U)
    tb.set_bits(VA, 2, set_mask=PS | 1 << 13)  # now a 2 MiB leaf with a reserved bit set
    tb.op(Op.FLUSH, 0)  # the PWC holds the PDE as it was
    assert tb.op(op, VA, 3, 0, user=user, fetch=fetch)[2] == errcode | ErrorCode.P | ErrorCode.RSVD
    assert tb.csr(Csr.PFEC) == errcode | ErrorCode.P | ErrorCode.RSVD


def test_fetch_flag_on_a_store_is_not_an_instruction_fetch() -> None:
    tb = tb_with_page(flags=P | W | NX)
    assert tb.op(Op.STORE, VA, 3, 1, fetch=True)[1] == Fault.NONE


def test_supervisor_store_to_read_only_page_faults_because_wp_is_set() -> None:
    tb = tb_with_page(flags=P)
    assert tb.store(VA, 1) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.W)
    assert tb.peek(FRAME) == 0
    assert tb.load(VA)[1] == Fault.NONE


@pytest.mark.parametrize("level", [4, 3, 2, 1])
def test_write_needs_w_at_every_level(level: int) -> None:
    tb = TB()
    tb.map(VA, FRAME, P | W | U)
    tb.set_bits(VA, level, clear_mask=W)
    tb.enable()
    assert tb.store(VA, 1) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.W)
    assert tb.load(VA)[1] == Fault.NONE


@pytest.mark.parametrize("level", [4, 3, 2, 1])
def test_user_access_needs_u_at_every_level(level: int) -> None:
    tb = TB()
    tb.map(VA, FRAME, P | W | U)
    tb.set_bits(VA, level, clear_mask=U)
    tb.enable()
    assert tb.load(VA, user=True) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.U)
    assert tb.load(VA)[1] == Fault.NONE


@pytest.mark.parametrize("level", [4, 3, 2, 1])
def test_nx_at_any_level_forbids_fetches_only(level: int) -> None:
    tb = TB()
    tb.map(VA, FRAME, P | W)
    tb.set_bits(VA, level, set_mask=NX)
    tb.enable()
    assert tb.load(VA)[1] == Fault.NONE
    tb.op(Op.FLUSH, 0)
    assert tb.load(VA, fetch=True) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.I)
    assert tb.last.tlb_miss  # the fault is found by the walk here, not by the cached entry


# (level, is a huge leaf, bit): reserved bits the walk must reject
RESERVED = [
    (4, False, 40),  # bits M..51 in every entry (M = 40)
    (4, False, 51),
    (4, False, 7),  # PS in a PML4E
    (3, False, 45),
    (3, True, 13),  # bits 29..13 of a 1 GiB leaf
    (3, True, 29),
    (2, False, 40),
    (2, True, 13),  # bits 20..13 of a 2 MiB leaf
    (2, True, 20),
    (1, False, 51),
]


@pytest.mark.parametrize(("level", "huge", "bit"), RESERVED)
def test_reserved_bit_is_a_page_fault_with_p_and_rsvd(level: int, huge: bool, bit: int) -> None:
    tb = TB(maxphyaddr=40)
    page = {2: MIB2, 3: GIB1}[level] if huge else KIB4
    tb.map(VA, 0, P | W, page=page)  # frame 0: aligned for every page size, so no reserved bit is set yet
    tb.enable()
    vaddr = VA & ~(page - 1)  # the page's first byte, in RAM
    assert tb.store(vaddr, 1)[1] == Fault.NONE
    tb.set_bits(VA, level, set_mask=1 << bit)
    tb.op(Op.FLUSH, 0)
    assert tb.store(vaddr, 1) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.RSVD | ErrorCode.W)
    assert tb.last.walk_levels == 5 - level


# bits that look special but are not reserved there, and the outcome of a load with the bit set
NOT_RESERVED = [
    (1, 7, Fault.NONE),  # PAT in a PT entry
    (1, 39, Fault.BUS),  # bit M-1 is an address bit: the frame moves outside RAM, not a page fault
    (2, 8, Fault.NONE),  # G in a non-leaf entry is ignored
    (4, 62, Fault.NONE),  # bits 52..62 are available to software
    (4, 52, Fault.NONE),
]


@pytest.mark.parametrize(("level", "bit", "fault"), NOT_RESERVED)
def test_bit_that_is_not_reserved_does_not_fault(level: int, bit: int, fault: Fault) -> None:
    tb = TB(maxphyaddr=40)
    tb.map(VA, FRAME, P | W)
    tb.set_bits(VA, level, set_mask=1 << bit)
    tb.enable()
    assert tb.load(VA) == (0, fault, 0)


def test_not_present_is_reported_before_a_reserved_bit() -> None:
    tb = tb_with_page()
    tb.set_bits(VA, 2, set_mask=1 << 45, clear_mask=P)
    assert tb.load(VA) == (0, Fault.PAGE, 0)


def test_reserved_bits_follow_maxphyaddr() -> None:
    tb = TB(maxphyaddr=36)
    tb.map(VA, FRAME)
    tb.set_bits(VA, 3, set_mask=1 << 37)
    tb.enable()
    assert tb.load(VA)[2] == ErrorCode.P | ErrorCode.RSVD


def test_table_outside_ram_is_a_bus_fault_with_no_error_code_and_cr2_unchanged() -> None:
    tb = tb_with_page()
    tb.set_csr(Csr.CR2, 3)
    tb.set_bits(VA, 2, set_mask=1 << 30)  # the PT now lies 1 GiB up, outside the 1 MiB of RAM
    assert tb.load(VA) == (0, Fault.BUS, 0)
    assert tb.last.walk_levels == 4  # the read of the PT entry counts: it is the one that faulted
    assert tb.csr(Csr.CR2) == 3 and tb.counter(Counter.FAULTS_BUS) == 1


def test_cr3_outside_ram_is_a_bus_fault_on_the_first_read() -> None:
    tb = TB()
    tb.set_csr(Csr.CR3, 1 << 30)
    tb.set_csr(Csr.CR0, CR0_PG)
    assert tb.load(0) == (0, Fault.BUS, 0)
    assert tb.last.walk_levels == 1 and tb.last.tlb_miss
    assert tb.counter(Counter.WALKS) == 1 and tb.counter(Counter.PTE_READS) == 1


def test_frame_outside_ram_is_a_bus_fault_but_the_translation_stays_cached() -> None:
    tb = TB()
    tb.map(VA, 1 << 32)
    tb.enable()
    assert tb.load(VA) == (0, Fault.BUS, 0)
    assert tb.last.tlb_miss and tb.last.paddr == 0
    assert tb.load(VA) == (0, Fault.BUS, 0)
    assert tb.last.tlb_hit and tb.last.walk_levels == 0


def test_page_fault_leaves_no_tlb_entry() -> None:
    tb = tb_with_page(flags=P)
    assert tb.store(VA, 1)[1] == Fault.PAGE
    tb.load(VA)
    assert tb.last.tlb_miss


# ----------------------------------------------------------------------------------------------------------------
# Accessed and dirty bits


def test_load_sets_a_everywhere_and_d_nowhere() -> None:
    tb = tb_with_page()
    tb.load(VA)
    assert tb.last.ad_writes == 4
    for level in (4, 3, 2, 1):
        entry = tb.peek(tb.entry_addr(VA, level))
        assert entry & A and not entry & D, level


def test_store_sets_d_in_the_leaf_only() -> None:
    tb = tb_with_page()
    tb.store(VA, 5)
    assert tb.last.ad_writes == 4
    assert tb.peek(tb.entry_addr(VA, 1)) & (A | D) == A | D
    for level in (4, 3, 2):
        assert not tb.peek(tb.entry_addr(VA, level)) & D, level


def test_huge_leaf_gets_d_on_a_store() -> None:
    tb = TB(mem_bytes=1 << 22)
    tb.map(VA, MIB2, page=MIB2)
    tb.enable()
    tb.store(VA + 0x100, 5)
    assert tb.peek(tb.entry_addr(VA, 2)) & (A | D) == A | D


def test_entries_already_accessed_are_not_written_again() -> None:
    tb = tb_with_page()
    for level in (4, 3, 2, 1):
        tb.set_bits(VA, level, set_mask=A)
    tb.load(VA)
    assert tb.last.ad_writes == 0 and tb.counter(Counter.AD_WRITES) == 0


def test_non_leaf_a_is_set_even_when_the_walk_faults_lower() -> None:
    tb = tb_with_page()
    tb.set_bits(VA, 1, clear_mask=P)
    assert tb.load(VA)[1] == Fault.PAGE
    assert tb.last.ad_writes == 3
    assert [bool(tb.peek(tb.entry_addr(VA, lvl)) & A) for lvl in (4, 3, 2, 1)] == [True, True, True, False]


def test_leaf_a_is_not_set_when_the_permission_check_fails() -> None:
    tb = tb_with_page(flags=P)
    assert tb.store(VA, 1)[1] == Fault.PAGE
    assert not tb.peek(tb.entry_addr(VA, 1)) & A
    assert tb.last.ad_writes == 3


def test_store_to_a_clean_cached_page_rewalks_and_sets_d() -> None:
    tb = tb_with_page(pwc_entries=0)
    tb.load(VA)
    assert not tb.peek(tb.entry_addr(VA, 1)) & D
    assert tb.store(VA, 9)[1] == Fault.NONE
    ev = tb.last
    assert ev.tlb_hit and not ev.tlb_miss and ev.walk_levels == 4 and ev.ad_writes == 1
    assert tb.peek(tb.entry_addr(VA, 1)) & D and tb.peek(FRAME) == 9
    assert tb.counter(Counter.TLB_HITS) == 1 and tb.counter(Counter.WALKS) == 2
    tb.store(VA, 10)  # the entry was refreshed in place: now dirty, no walk
    assert tb.last.tlb_hit and tb.last.walk_levels == 0


def test_dirty_rewalk_that_faults_removes_the_entry() -> None:
    tb = tb_with_page()
    tb.load(VA)
    tb.set_bits(VA, 1, clear_mask=W)  # behind the TLB's back
    assert tb.store(VA, 1) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.W)
    assert tb.last.tlb_hit and (tb.last.walk_levels, tb.last.pwc_hits) == (1, 1)  # from the PDE in the PWC
    assert tb.csr(Csr.CR2) == VA
    tb.load(VA)
    assert tb.last.tlb_miss


def test_dirty_rewalk_follows_the_tables_as_they_are_now() -> None:
    tb = tb_with_page()
    tb.load(VA)
    tb.set_bits(VA, 1, set_mask=0x1000)  # the page moved to FRAME + 4 KiB without an INVLPG
    tb.store(VA + 8, 3)
    assert tb.last.paddr == FRAME + 0x1008 and tb.peek(FRAME + 0x1008) == 3
    assert tb.load(VA + 8)[0] == 3 and tb.last.tlb_hit


def test_stale_clean_entry_still_translates_loads() -> None:
    tb = tb_with_page()
    tb.load(VA)
    tb.set_bits(VA, 1, clear_mask=P)  # no INVLPG: the TLB keeps the old translation
    assert tb.load(VA)[1] == Fault.NONE and tb.last.tlb_hit


# ----------------------------------------------------------------------------------------------------------------
# TLB: hits, permissions on hits, invalidation, global pages


def test_hit_that_violates_cached_permissions_faults_and_drops_the_entry() -> None:
    tb = tb_with_page(flags=P | W)  # no U
    tb.load(VA)
    assert tb.load(VA, user=True) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.U)
    assert tb.last.tlb_hit and tb.last.walk_levels == 0
    tb.load(VA)
    assert tb.last.tlb_miss


def test_cr3_write_drops_non_global_entries_and_keeps_global_ones() -> None:
    tb = TB()
    tb.map(VA, FRAME, P | W | G)
    tb.map(VA + KIB4, FRAME + KIB4, P | W)
    tb.enable()
    tb.load(VA)
    tb.load(VA + KIB4)
    tb.set_csr(Csr.CR3, tb.pml4)
    tb.load(VA)
    assert tb.last.tlb_hit
    tb.load(VA + KIB4)
    assert tb.last.tlb_miss
    assert tb.counter(Counter.FLUSHES) == 2  # both CR3 writes


def test_g_in_a_non_leaf_entry_does_not_make_the_page_global() -> None:
    tb = TB()
    tb.map(VA, FRAME, P | W, table_flags=P | W | U | G)
    tb.enable()
    tb.load(VA)
    tb.set_csr(Csr.CR3, tb.pml4)
    tb.load(VA)
    assert tb.last.tlb_miss


def test_invlpg_drops_a_global_entry() -> None:
    tb = tb_with_page(flags=P | W | G)
    tb.load(VA)
    tb.op(Op.INVLPG, VA + 0xFF8)
    assert tb.last.size == 0 and tb.last.paddr == 0
    tb.load(VA)
    assert tb.last.tlb_miss
    assert tb.counter(Counter.INVLPGS) == 1


def test_invlpg_of_another_page_keeps_the_entry() -> None:
    tb = tb_with_page()
    tb.load(VA)
    tb.op(Op.INVLPG, VA + KIB4)
    tb.load(VA)
    assert tb.last.tlb_hit


def test_flush_drops_global_entries_too() -> None:
    tb = tb_with_page(flags=P | W | G)
    tb.load(VA)
    tb.op(Op.FLUSH, 0)
    tb.load(VA)
    assert tb.last.tlb_miss and tb.counter(Counter.FLUSHES) == 2  # the enabling CR3 write and the FLUSH


def test_cr0_write_that_changes_pg_empties_the_tlb_and_one_that_does_not_keeps_it() -> None:
    tb = tb_with_page(flags=P | W | G)
    tb.load(VA)
    tb.set_csr(Csr.CR0, CR0_PG | CR0_WP)
    tb.load(VA)
    assert tb.last.tlb_hit
    tb.set_csr(Csr.CR0, 0)
    tb.set_csr(Csr.CR0, CR0_PG)
    tb.load(VA)
    assert tb.last.tlb_miss
    assert tb.counter(Counter.FLUSHES) == 1  # only the enabling CR3 write: CR0 writes are not counted


def test_huge_page_is_one_entry_in_a_fully_associative_tlb() -> None:
    tb = TB(mem_bytes=1 << 22)
    tb.map(VA, MIB2, page=MIB2)
    tb.enable()
    tb.load(VA)
    tb.load(VA + 0x1F_F000)
    assert tb.last.tlb_hit


def test_huge_page_splinters_into_the_set_of_each_accessed_page() -> None:
    tb = TB(mem_bytes=1 << 22, tlb_entries=8, tlb_ways=2)  # 4 sets
    tb.map(VA, MIB2, page=MIB2)
    tb.enable()
    tb.load(VA)  # set 0
    tb.load(VA + KIB4)  # set 1: misses, walks, fills a second entry for the same page
    assert tb.last.tlb_miss
    tb.load(VA + 4 * KIB4)  # set 0 again: the first entry covers it
    assert tb.last.tlb_hit
    tb.op(Op.INVLPG, VA + 0x10_0000)  # any address in the page drops the entry in every set
    tb.load(VA)
    assert tb.last.tlb_miss
    tb.load(VA + KIB4)
    assert tb.last.tlb_miss


def test_page_fault_drops_the_splinters_of_its_page_in_every_set() -> None:
    tb = TB(mem_bytes=1 << 22, tlb_entries=8, tlb_ways=2)  # 4 sets
    tb.map(VA, MIB2, page=MIB2)
    tb.enable()
    tb.load(VA + KIB4)  # an entry for the 2 MiB page in set 1
    tb.load(VA + 2 * KIB4)  # and one in set 2
    tb.set_bits(VA, 2, clear_mask=W)
    tb.store(VA + 2 * KIB4, 1)  # a hit in set 2 that the cached D (clear) sends to a walk, which faults
    assert tb.last.tlb_hit and tb.last.fault == Fault.PAGE
    tb.load(VA + KIB4)  # the splinter in set 1 went too
    assert tb.last.tlb_miss


def test_failed_walk_on_a_miss_drops_splinters_in_other_sets() -> None:
    tb = TB(mem_bytes=1 << 22, tlb_entries=8, tlb_ways=2, pwc_entries=0)
    tb.map(VA, MIB2, P | W | U, page=MIB2)
    tb.enable()
    tb.load(VA + KIB4)  # set 1 caches the page (U allowed)
    tb.set_bits(VA, 2, clear_mask=U)
    assert tb.load(VA, user=True)[1] == Fault.PAGE  # a miss in set 0; the walk faults
    tb.load(VA + KIB4)
    assert tb.last.tlb_miss


def test_invlpg_of_a_non_canonical_address_is_a_no_op() -> None:
    tb = tb_with_page(pwc_entries=8)
    tb.load(VA)
    assert tb.op(Op.INVLPG, 0x8000_0000_0000_0000) == (0, 0, 0)
    tb.load(VA)
    assert tb.last.tlb_hit
    tb.load(VA + KIB4 * 2)  # not mapped, but the walk starts from the PWC: it was not emptied
    assert tb.last.pwc_hits == 1


def test_overlapping_stale_entries_resolve_to_the_lowest_way() -> None:
    # A 4 KiB entry stays cached while its 2 MiB region becomes a huge page; a fill for another page of that
    # region then puts both in the set. The lowest-numbered matching way answers (the contract's reading).
    tb = TB(mem_bytes=1 << 23, pwc_entries=0)  # no PWC: the second walk must see the new PDE
    tb.map(VA + KIB4, FRAME)
    tb.enable()
    tb.load(VA + KIB4)  # way 0: the 4 KiB page -> FRAME
    tb.poke(tb.entry_addr(VA, 2), 2 * MIB2 | P | W | PS)  # the region is now a 2 MiB page -> 4 MiB
    tb.load(VA)  # miss: way 1 holds the 2 MiB page
    assert tb.last.tlb_miss and tb.last.paddr == 2 * MIB2
    tb.load(VA + KIB4)
    assert tb.last.tlb_hit and tb.last.paddr == FRAME  # way 0 wins
    tb.op(Op.INVLPG, VA + KIB4)  # drops both
    tb.load(VA + KIB4)
    assert tb.last.tlb_miss and tb.last.paddr == 2 * MIB2 + KIB4


# ----------------------------------------------------------------------------------------------------------------
# Replacement


def tb_with_pages(n: int, **config: object) -> tuple[TB, list[int]]:
    tb = TB(**config)
    pages = [VA + i * KIB4 for i in range(n)]
    for i, vaddr in enumerate(pages):
        tb.map(vaddr, FRAME + i * KIB4 % 0x10000)
    tb.enable()
    return tb, pages


def victims(tb: TB, accesses: list[int]) -> list[int]:
    """The evicted VPNs of the fills among `accesses`, as page indices relative to VA (-1: none)."""
    out = []
    for vaddr in accesses:
        tb.load(vaddr)
        out.append(-1 if tb.last.evicted_vpn < 0 else tb.last.evicted_vpn - (VA >> 12))
    return out


def test_plru_victim_sequence_in_a_four_way_set() -> None:
    tb, pg = tb_with_pages(8, tlb_entries=4, tlb_policy=TlbPolicy.PLRU)
    # Fills of pages 0..3 take ways 0..3 (the invalid ones, lowest first). Node bits after them: the fill of way
    # 3 pointed node 3 left (b3=0) and the root left (b1=0); way 1's fill left node 2 at 0. The hit on page 0
    # (way 0) points node 2 right (b2=1) and the root right (b1=1).
    # Page 4: root 1 -> node 3, b3=0 -> way 2 (page 2); its fill sets b3=1, b1=0.
    # Page 5: root 0 -> node 2, b2=1 -> way 1 (page 1); its fill sets b2=0, b1=1.
    # Page 6: root 1 -> node 3, b3=1 -> way 3 (page 3).
    got = victims(tb, [pg[0], pg[1], pg[2], pg[3], pg[0], pg[4], pg[5], pg[6]])
    assert got == [-1, -1, -1, -1, -1, 2, 1, 3]
    assert tb.counter(Counter.TLB_EVICTIONS) == 3


def test_plru_in_a_set_associative_tlb_tracks_each_set_apart() -> None:
    tb = TB(tlb_entries=8, tlb_ways=2, tlb_policy=TlbPolicy.PLRU)  # 4 sets of 2 ways: one node per set
    pages = [VA + i * KIB4 for i in range(16)]
    for vaddr in pages:
        tb.map(vaddr, FRAME)
    tb.enable()
    # set 0 holds pages 0, 4, 8...; set 1 pages 1, 5, 9...
    # set 0: page 0 -> way 0 (node -> right), page 4 -> way 1 (node -> left), hit page 0 (node -> right),
    # page 8 evicts way 1 (page 4). Meanwhile set 1 fills only way 0 and evicts nothing.
    got = victims(tb, [pages[0], pages[4], pages[1], pages[0], pages[8], pages[5], pages[12]])
    assert got == [-1, -1, -1, -1, 4, -1, 0]  # the last: set 0's node pointed left after way 1's fill


def test_fifo_evicts_in_fill_order_whatever_the_hits() -> None:
    tb, pg = tb_with_pages(8, tlb_entries=4, tlb_policy=TlbPolicy.FIFO)
    # Pages 0..3 fill ways 0..3 without moving the pointer (way 0). Hits do not move it either.
    got = victims(tb, [pg[0], pg[1], pg[2], pg[3], pg[0], pg[0], pg[4], pg[5], pg[6]])
    assert got == [-1, -1, -1, -1, -1, -1, 0, 1, 2]


def test_fifo_pointer_stays_put_when_a_fill_takes_an_invalid_way() -> None:
    tb, pg = tb_with_pages(8, tlb_entries=4, tlb_policy=TlbPolicy.FIFO)
    victims(tb, pg[:4])
    assert victims(tb, [pg[4]]) == [0]  # pointer 0 -> 1
    tb.op(Op.INVLPG, pg[3])  # way 3 is free again
    assert victims(tb, [pg[5]]) == [-1]  # takes way 3; pointer still 1
    assert victims(tb, [pg[6]]) == [1]  # way 1 held page 1


def lfsr_victims(ways: int, count: int) -> list[int]:
    """The contract's RANDOM policy, written out: victim = lfsr & (ways - 1), then a Galois step."""
    lfsr, out = 0xACE1, []
    for _ in range(count):
        out.append(lfsr & (ways - 1))
        lsb = lfsr & 1
        lfsr >>= 1
        if lsb:
            lfsr ^= 0xB400
    return out


def test_random_victims_follow_the_lfsr() -> None:
    assert lfsr_victims(4, 6) == [1, 0, 0, 0, 2, 3]  # 0xACE1, 0xE270, 0x7138, 0x389C, 0x1C4E, 0x0E27
    tb, pg = tb_with_pages(10, tlb_entries=4, tlb_policy=TlbPolicy.RANDOM)
    ways_content = list(range(4))  # page held by each way
    expected = []
    for page in range(4, 10):
        way = lfsr_victims(4, page - 3)[-1]
        expected.append(ways_content[way])
        ways_content[way] = page
    assert victims(tb, pg[:4]) == [-1] * 4
    assert victims(tb, pg[4:10]) == expected


def test_random_lfsr_steps_only_on_evicting_fills() -> None:
    tb, pg = tb_with_pages(6, tlb_entries=4, tlb_policy=TlbPolicy.RANDOM)
    victims(tb, pg[:4])
    assert victims(tb, [pg[4]]) == [1]  # victim 0xACE1 & 3
    tb.op(Op.INVLPG, pg[0])
    assert victims(tb, [pg[0]]) == [-1]  # refills way 0 without a step
    assert victims(tb, [pg[5]]) == [0]  # 0xE270 & 3 = way 0, which holds page 0


def test_replacement_state_survives_a_flush() -> None:
    tb, pg = tb_with_pages(8, tlb_entries=4, tlb_policy=TlbPolicy.FIFO)
    victims(tb, pg[:5])  # pointer 0 -> 1
    tb.op(Op.FLUSH, 0)
    victims(tb, pg[:4])  # refill the 4 empty ways: no eviction, pointer stays 1
    assert victims(tb, [pg[4]]) == [1]


def test_evicted_vpn_of_a_huge_page_is_its_base() -> None:
    tb = TB(mem_bytes=1 << 22, tlb_entries=1)
    tb.map(VA, MIB2, page=MIB2)
    tb.map(VA + MIB2, FRAME)
    tb.enable()
    tb.load(VA + 5 * KIB4)
    tb.load(VA + MIB2)
    assert tb.last.evicted_vpn == VA >> 12


# ----------------------------------------------------------------------------------------------------------------
# Paging-structure cache


def test_pwc_lets_the_next_walk_in_the_same_2m_region_read_one_entry() -> None:
    tb = TB()
    tb.map(VA, FRAME)
    tb.map(VA + KIB4, FRAME)
    tb.enable()
    tb.load(VA)
    assert tb.last.walk_levels == 4 and tb.last.pwc_hits == 0
    tb.load(VA + KIB4)
    assert tb.last.walk_levels == 1 and tb.last.pwc_hits == 1
    assert tb.counter(Counter.PWC_HITS) == 1 and tb.counter(Counter.PTE_READS) == 5


def test_pwc_starts_below_the_longest_matching_prefix() -> None:
    tb = TB()
    same_pd = VA + MIB2  # same 1 GiB region: the PDPTE is cached, not this PDE
    same_pdpt = VA + GIB1  # same 512 GiB region: only the PML4E
    for vaddr in (VA, same_pd, same_pdpt):
        tb.map(vaddr, FRAME)
    tb.enable()
    tb.load(VA)
    tb.load(same_pd)
    assert (tb.last.walk_levels, tb.last.pwc_hits) == (2, 1)
    tb.load(same_pdpt)
    assert (tb.last.walk_levels, tb.last.pwc_hits) == (3, 1)


def test_pwc_entries_of_neighbouring_pml4_slots_stay_apart() -> None:
    tb = TB()
    slot0, slot1 = 0x0000_0000_4000_0000, 0x0000_0080_4000_0000  # PML4 entries 0 and 1
    tb.map(slot0, FRAME)
    tb.map(slot1, FRAME + KIB4)
    tb.enable()
    tb.load(slot1)  # caches PML4E 1, its PDPTE and PDE
    tb.load(slot0)
    assert (tb.last.walk_levels, tb.last.pwc_hits, tb.last.paddr) == (4, 0, FRAME)
    tb.load(slot1 + KIB4)  # still PML4 slot 1: its PDE is cached
    assert (tb.last.walk_levels, tb.last.pwc_hits) == (1, 1)


def test_pwc_carries_the_permissions_combined_above_it() -> None:
    tb = TB()
    tb.map(VA, FRAME, P | W | U)
    tb.map(VA + KIB4, FRAME, P | W | U)
    tb.set_bits(VA, 4, clear_mask=U)
    tb.enable()
    tb.load(VA)
    assert tb.load(VA + KIB4, user=True) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.U)
    assert tb.last.pwc_hits == 1 and tb.last.walk_levels == 1


@pytest.mark.parametrize("how", ["invlpg", "flush", "cr3", "cr0"])
def test_pwc_is_emptied_by(how: str) -> None:
    tb = tb_with_page()
    tb.map(VA + KIB4, FRAME)
    tb.load(VA)
    if how == "invlpg":
        tb.op(Op.INVLPG, 0x7000_0000)  # an unrelated page: the PWC empties all the same
    elif how == "flush":
        tb.op(Op.FLUSH, 0)
    elif how == "cr3":
        tb.set_csr(Csr.CR3, tb.pml4)
    else:
        tb.set_csr(Csr.CR0, 0)
        tb.set_csr(Csr.CR0, CR0_PG)
    tb.load(VA + KIB4)
    assert (tb.last.walk_levels, tb.last.pwc_hits) == (4, 0)


def test_pwc_replaces_its_oldest_entry_when_full() -> None:
    tb = TB(pwc_entries=4)
    second_pd, third_pd = VA + MIB2, VA + 2 * MIB2
    other_gib = VA + GIB1
    for vaddr in (VA, second_pd, third_pd, other_gib):
        tb.map(vaddr, FRAME)
    tb.enable()
    tb.load(VA)  # inserts PML4E (slot 0), PDPTE (1), PDE (2)
    tb.load(second_pd)  # starts at the PDPTE; inserts its PDE into slot 3
    tb.load(third_pd)  # full: its PDE replaces slot 0, the PML4E
    assert tb.last.walk_levels == 2
    tb.load(other_gib)  # needs the PML4E, which is gone: a walk from CR3
    assert (tb.last.walk_levels, tb.last.pwc_hits) == (4, 0)


def test_pwc_disabled_means_every_walk_starts_at_cr3() -> None:
    tb = TB(pwc_entries=0)
    tb.map(VA, FRAME)
    tb.map(VA + KIB4, FRAME)
    tb.enable()
    tb.load(VA)
    tb.load(VA + KIB4)
    assert (tb.last.walk_levels, tb.last.pwc_hits) == (4, 0)


# ----------------------------------------------------------------------------------------------------------------
# Counters and events


def test_counters_tally_a_scripted_run() -> None:
    tb = TB(pwc_entries=0)
    tb.map(VA, FRAME)
    tb.map(VA + KIB4, FRAME, P)
    tb.enable()
    before = {c: tb.counter(c) for c in Counter}  # table building counted stores; reads change nothing
    first = tb.last.seq + 1
    tb.load(VA)  # miss, walk 4 reads, 4 A writes
    tb.load(VA)  # hit
    tb.store(VA, 1)  # hit, clean: re-walk of 4 reads, 1 write (D)
    tb.store(VA + KIB4, 1)  # miss, walk 4 reads, no A write (shared tables done, leaf faults), page fault
    tb.load(VA + 3)  # align
    tb.load(1 << 60)  # GP
    tb.op(Op.INVLPG, VA)
    tb.op(Op.FLUSH, 0)
    tb.set_csr(Csr.CR3, tb.pml4)
    assert tb.counter(Counter.CYCLES) == first + 9  # this read is the operation after those 9
    expected = {
        Counter.LOADS: 2, Counter.STORES: 1, Counter.TLB_HITS: 2, Counter.TLB_MISSES: 2,
        Counter.TLB_EVICTIONS: 0, Counter.WALKS: 3, Counter.PTE_READS: 12, Counter.WALK_CYCLES: 12,
        Counter.PWC_HITS: 0, Counter.AD_WRITES: 5, Counter.INVLPGS: 1, Counter.FLUSHES: 2,
        Counter.FAULTS_PAGE: 1, Counter.FAULTS_GP: 1, Counter.FAULTS_ALIGN: 1, Counter.FAULTS_BUS: 0,
    }
    assert {c: tb.counter(c) - before[c] for c in expected} == expected


def test_walk_cycles_counter_estimates_mem_latency_per_entry_read() -> None:
    tb = TB(mem_latency=3, pwc_entries=0)
    tb.map(VA, FRAME)
    tb.enable()
    tb.load(VA)
    assert tb.last.walk_cycles == 12 and tb.counter(Counter.WALK_CYCLES) == 12


def test_events_of_a_miss_a_hit_and_a_fault() -> None:
    tb = TB(pwc_entries=0)
    tb.map(VA, FRAME)
    tb.enable()
    seq = tb.last.seq + 1
    tb.store(VA + 8, 0xAB, size=0)
    assert tb.last == AccessEvent(
        seq=seq, cycle=seq, op=Op.STORE, vaddr=VA + 8, paddr=FRAME + 8, size=1, data=0xAB, tlb_hit=False,
        tlb_miss=True, evicted_vpn=-1, walk_levels=4, walk_cycles=4, pwc_hits=0, ad_writes=4, fault=Fault.NONE,
        errcode=0,
    )
    tb.load(VA + 8, size=1)
    assert tb.last._replace(cycle=0, walk_cycles=0) == AccessEvent(
        seq=seq + 1, cycle=0, op=Op.LOAD, vaddr=VA + 8, paddr=FRAME + 8, size=2, data=0xAB, tlb_hit=True,
        tlb_miss=False, evicted_vpn=-1, walk_levels=0, walk_cycles=0, pwc_hits=0, ad_writes=0, fault=Fault.NONE,
        errcode=0,
    )
    tb.load(VA + KIB4, user=True)
    assert tb.last[2:] == (Op.LOAD, VA + KIB4, 0, 8, 0, False, True, -1, 4, 4, 0, 0, Fault.PAGE, ErrorCode.U)


def test_drain_events_returns_each_event_once() -> None:
    mmu = open_backend("reference", MmuConfig(), trace=True)
    mmu.transact(Op.LOAD, 0)
    mmu.transact(Op.FLUSH, 0)
    assert [e.seq for e in mmu.drain_events()] == [0, 1]
    assert mmu.drain_events() == []


def test_untraced_backend_records_nothing() -> None:
    mmu = open_backend("reference", MmuConfig())
    mmu.transact(Op.LOAD, 0)
    assert mmu.drain_events() == []


def random_workload(mmu: ReferenceBackend, seed: int) -> list[tuple[int, int, int]]:
    """Build tables with a mix of page sizes, permissions and PML4 slots, then run random operations (table
    edits included, without invalidation); return the responses."""
    rng = random.Random(seed)
    tb = TB.__new__(TB)
    tb.mmu, tb.next_frame, tb.last, tb.paging = mmu, 0x10000, None, False
    tb.pml4 = tb.alloc()
    bases = [0x0000_0000_0000_0000, 0x0000_0080_0000_0000, 0xFFFF_FF80_0000_0000]  # PML4 slots 0, 1, 511
    flags = [P | W, P, P | W | U, P | W | G, P | W | NX, 0]
    for base in bases:
        for i in range(24):
            tb.map(base + i * KIB4, 0x40000 + (i % 16) * KIB4, rng.choice(flags))
        tb.map(base + MIB2, 0, P | W | U, page=MIB2)  # 2 MiB page over the start of RAM and beyond it
    tb.map(bases[1] + GIB1, 0, P | W, page=GIB1)
    tb.enable()
    out = []
    for _ in range(4000):
        r = rng.random()
        base = rng.choice(bases)
        vaddr = base + rng.randrange(24 + 600) * KIB4 if rng.random() < 0.95 else rng.getrandbits(64)
        if rng.random() < 0.05:
            vaddr = bases[1] + GIB1 + rng.randrange(1 << 18) * KIB4
        if r < 0.02:
            out.append(mmu.transact(Op.INVLPG, vaddr))
        elif r < 0.03:
            out.append(mmu.transact(Op.CSR_WRITE, Csr.CR3, 3, tb.pml4))
        elif r < 0.04:
            frame = 0x40000 + rng.randrange(16) * KIB4
            tb.poke(tb.entry_addr(base, 1) + 8 * rng.randrange(24), frame | rng.choice(flags))
        else:
            size = rng.randrange(4)
            addr = vaddr + rng.randrange(0, KIB4, 1 << size) + (rng.random() < 0.02)
            out.append(mmu.transact(Op.STORE if r < 0.5 else Op.LOAD, addr, size, rng.getrandbits(64),
                                    rng.random() < 0.1, rng.random() < 0.05))
    out.extend(mmu.transact(Op.CSR_READ, Csr.COUNTER_BASE + c) for c in Counter)
    out.append(mmu.transact(Op.CSR_READ, Csr.CR2))
    return out


@pytest.mark.parametrize("policy", list(TlbPolicy))
def test_fast_path_gives_the_same_results_as_the_traced_general_path(policy: TlbPolicy) -> None:
    config = MmuConfig(tlb_entries=8, tlb_ways=2 if policy == TlbPolicy.PLRU else 0, tlb_policy=policy)
    fast, traced = ReferenceBackend(config), ReferenceBackend(config, trace=True)
    results = random_workload(fast, 7)
    assert results == random_workload(traced, 7)
    assert fast.ram == traced.ram
    assert len(traced.drain_events()) == len(results)


def test_fast_path_serves_a_huge_page_at_the_right_offset() -> None:
    tb = TB(mem_bytes=1 << 22)
    tb.map(VA, MIB2, page=MIB2)
    tb.enable()
    tb.mmu.trace = False  # the fast path serves repeated supervisor accesses only when not tracing
    for offset in (0x8, 0x1_2340, 0x1F_FFF8, 0x8):
        assert tb.mmu.transact(Op.STORE, VA + offset, 3, offset) == (0, 0, 0)
        assert tb.mmu.transact(Op.LOAD, VA + offset, 3) == (offset, 0, 0)
        assert tb.peek(MIB2 + offset) == offset


def test_turning_trace_on_later_records_every_operation() -> None:
    tb = tb_with_page()
    tb.mmu.trace = False
    tb.mmu.transact(Op.LOAD, VA)
    tb.mmu.transact(Op.LOAD, VA)  # served by the fast path
    tb.mmu.trace = True
    tb.load(VA)
    assert tb.last.tlb_hit


# ----------------------------------------------------------------------------------------------------------------
# The pure walk


def test_pure_walk_translates_like_the_backend_and_writes_nothing() -> None:
    tb = TB(mem_bytes=1 << 22)
    tb.map(VA, FRAME, P | W | U | G)
    tb.map(VA + MIB2, MIB2, P | NX, page=MIB2)
    before = bytes(tb.mmu.ram)
    ram = tb.mmu.ram

    def read_u64(paddr: int) -> int:
        return struct.unpack_from("<Q", ram, paddr)[0]

    def walk_(vaddr: int, **access: bool) -> Translation:
        kw = dict(write=False, user=False, fetch=False) | access
        return walk(read_u64, tb.pml4, vaddr, maxphyaddr=40, mem_bytes=1 << 22, **kw)

    t = walk_(VA + 0x123, write=True, user=True)
    assert (t.fault, t.paddr, t.page_size, t.writable, t.user, t.no_execute, t.global_page, t.dirty) == (
        Fault.NONE, FRAME + 0x123, KIB4, True, True, False, True, False)
    assert t.pte_reads == 4
    t = walk_(VA + MIB2 + 0x4567)
    assert (t.paddr, t.page_size, t.writable, t.user, t.no_execute) == (MIB2 + 0x4567, MIB2, False, False, True)
    assert walk_(VA + MIB2, write=True)[:2] == (Fault.PAGE, ErrorCode.P | ErrorCode.W)
    assert walk_(VA + MIB2, fetch=True, user=True)[:2] == (Fault.PAGE, ErrorCode.P | ErrorCode.U | ErrorCode.I)
    assert walk_(VA + 2 * KIB4)[:2] == (Fault.PAGE, 0)
    assert walk_(1 << 63)[:2] == (Fault.GP, 0)
    assert bytes(ram) == before
    tb.enable()
    tb.load(VA + 0x120)
    assert tb.last.paddr == walk_(VA + 0x120).paddr


def test_pure_walk_reports_a_table_outside_ram_as_bus() -> None:
    t = walk(lambda paddr: 0, 1 << 30, 0, write=False, user=False, fetch=False, maxphyaddr=40, mem_bytes=1 << 20)
    assert (t.fault, t.errcode, t.pte_reads) == (Fault.BUS, 0, 1)


# ----------------------------------------------------------------------------------------------------------------
# Bad configurations and requests


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(tlb_entries=12), "tlb_entries"),
        (dict(tlb_entries=4, tlb_ways=8), "tlb_ways"),
        (dict(tlb_ways=3), "tlb_ways"),
        (dict(pwc_entries=3), "pwc_entries"),
        (dict(mem_bytes=1 << 12), "mem_bytes"),
        (dict(mem_latency=0), "mem_latency"),
        (dict(maxphyaddr=53), "maxphyaddr"),
        (dict(tlb_policy=3), "tlb_policy"),
    ],
)
def test_bad_configuration_is_refused_naming_the_parameter(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReferenceBackend(MmuConfig(**config))


@pytest.mark.parametrize(
    ("op", "addr", "size", "message"),
    [(8, 0, 3, "operation"), (-1, 0, 3, "operation"), (Op.LOAD, 0, 4, "size"), (Op.LOAD, -8, 3, "address"),
     (Op.STORE, 1 << 64, 3, "address"), (Op.CSR_READ, -1, 3, "address")],
)
def test_bad_request_is_a_value_error(op: int, addr: int, size: int, message: str) -> None:
    mmu = ReferenceBackend(MmuConfig())
    with pytest.raises(ValueError, match=message):
        mmu.transact(op, addr, size)
    mmu.transact(Op.CSR_WRITE, Csr.CR0, 3, CR0_PG)
    with pytest.raises(ValueError, match=message):
        mmu.transact(op, addr, size)


def test_waveforms_are_refused_as_the_model_has_no_clock(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no clock"):
        open_backend("reference", MmuConfig(), waves=tmp_path / "waves.vcd")
