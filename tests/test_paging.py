"""The x86_64 crate port (addresses, pages, entries, OffsetPageTable) and blog_os memory.rs, on `reference`.

Expected values come from the crate's documented behaviour and its own unit tests, or from walking the tables
by hand: every table is read back through the physical-memory mapping, never through the code under test.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field

import pytest

from cosim.backends import open_backend
from firmware import memory
from firmware.boot import BootInfo, MemoryRegionType, boot
from firmware.cpu import Cpu, PageFault
from firmware.x86_64.addr import PhysAddr, PhysAddrNotValid, VirtAddr, VirtAddrNotValid
from firmware.x86_64.mapper import (
    FlagUpdateError,
    MapToError,
    MustUseWarning,
    OffsetPageTable,
    TranslateError,
    TranslateResult,
    UnmapError,
)
from firmware.x86_64.paging import (
    AddressNotAligned,
    FrameError,
    Page,
    PageTableEntry,
    PageTableFlags,
    PageTablePanic,
    PhysFrame,
    Size1GiB,
    Size2MiB,
)
from hdl.protocol import ErrorCode

P, W, U = PageTableFlags.PRESENT, PageTableFlags.WRITABLE, PageTableFlags.USER_ACCESSIBLE
A, D = PageTableFlags.ACCESSED, PageTableFlags.DIRTY
HUGE, NX = PageTableFlags.HUGE_PAGE, PageTableFlags.NO_EXECUTE
ADDR_MASK = 0x000F_FFFF_FFFF_F000
HEAP_START = 0x4444_4444_0000  # the chapter's heap: P4 entry 136, unused after boot


# -- fixtures ------------------------------------------------------------------------------------------------


@dataclass
class RecordingAllocator:
    """Wraps a frame allocator and remembers what it handed out."""

    inner: memory.BootInfoFrameAllocator
    given: list[PhysFrame] = field(default_factory=list)

    def allocate_frame(self) -> PhysFrame | None:
        frame = self.inner.allocate_frame()
        if frame is not None:
            self.given.append(frame)
        return frame


@dataclass
class Machine:
    cpu: Cpu
    boot_info: BootInfo
    mapper: OffsetPageTable
    frames: RecordingAllocator

    def phys_u64(self, phys: int) -> int:
        """A word of physical memory, read through the bootloader's mapping of all RAM."""
        return self.cpu.load_u64(self.boot_info.physical_memory_offset + phys)

    def entry(self, table_phys: int, index: int) -> int:
        return self.phys_u64(table_phys + 8 * index)

    def walk(self, vaddr: int, levels: int) -> list[int]:
        """The raw entries for `vaddr` from P4 down `levels` levels, read by hand."""
        table, entries = self.cpu.read_cr3() & ADDR_MASK, []
        for level in range(4, 4 - levels, -1):
            entries.append(self.entry(table, (vaddr >> (12 + 9 * (level - 1))) & 0x1FF))
            table = entries[-1] & ADDR_MASK
        return entries


@pytest.fixture
def machine() -> Machine:
    cpu = Cpu(open_backend("reference"))
    boot_info = boot(cpu)
    mapper = memory.init(cpu, boot_info.physical_memory_offset)
    frames = RecordingAllocator(memory.BootInfoFrameAllocator.init(boot_info.memory_map))
    return Machine(cpu, boot_info, mapper, frames)


def heap_page(n: int = 0) -> Page:
    return Page.containing_address(VirtAddr(HEAP_START)) + n


# -- addresses -----------------------------------------------------------------------------------------------


def test_virt_addr_new_rejects_non_canonical_address() -> None:
    with pytest.raises(VirtAddrNotValid) as err:
        VirtAddr(0x1234_5678_9ABC_DEF0)
    assert err.value.addr == 0x1234_5678_9ABC_DEF0
    with pytest.raises(VirtAddrNotValid):
        VirtAddr.try_new(0xFFFE_8000_0000_0000)


def test_virt_addr_new_sign_extends_bit_47_when_bits_48_to_63_are_zero() -> None:
    assert VirtAddr(0x8000_0000_0000).as_u64() == 0xFFFF_8000_0000_0000
    assert VirtAddr(0xFFFF_8000_0000_0000).as_u64() == 0xFFFF_8000_0000_0000
    assert VirtAddr(0x7FFF_FFFF_FFFF).as_u64() == 0x7FFF_FFFF_FFFF


def test_virt_addr_new_truncate_overwrites_bits_48_to_63() -> None:
    assert VirtAddr.new_truncate(0).as_u64() == 0
    assert VirtAddr.new_truncate(123).as_u64() == 123
    assert VirtAddr.new_truncate(1 << 47).as_u64() == 0xFFFF_8000_0000_0000
    assert VirtAddr.new_truncate(123 << 47 & (2**64 - 1)).as_u64() == 0xFFFF_8000_0000_0000
    assert VirtAddr.new_truncate(0x1234_0000_0000_5678).as_u64() == 0x5678


def test_virt_addr_arithmetic_jumps_the_non_canonical_hole() -> None:
    assert VirtAddr(0x7FFF_FFFF_FFFF) + 1 == VirtAddr(0xFFFF_8000_0000_0000)
    assert VirtAddr(0x7FFF_FFFF_FFFF).align_up(2) == VirtAddr(0xFFFF_8000_0000_0000)
    assert VirtAddr(0xFFFF_8000_0000_0000).align_down(1 << 48) == VirtAddr(0)
    assert VirtAddr(0x3000) - VirtAddr(0x1000) == 0x2000


def test_virt_addr_rejects_overflow_and_bad_alignments() -> None:
    with pytest.raises(OverflowError):
        VirtAddr(0xFFFF_FFFF_FFFF_FFFF).align_up(2)
    with pytest.raises(OverflowError):
        VirtAddr(0x1000) - VirtAddr(0x2000)
    with pytest.raises(OverflowError):
        VirtAddr(-1)
    with pytest.raises(ValueError, match="power of two"):
        VirtAddr(0x1000).align_down(3)


def test_virt_addr_page_table_indexes_and_offset() -> None:
    addr = VirtAddr((5 << 39) | (6 << 30) | (7 << 21) | (8 << 12) | 9)
    assert (addr.p4_index(), addr.p3_index(), addr.p2_index(), addr.p1_index(), addr.page_offset()) == (
        5, 6, 7, 8, 9
    )
    assert VirtAddr(0xFFFF_FFFF_FFFF_FFFF).p4_index() == 511


def test_phys_addr_rejects_bits_52_to_63() -> None:
    with pytest.raises(PhysAddrNotValid):
        PhysAddr(1 << 52)
    with pytest.raises(PhysAddrNotValid):
        PhysAddr(0x000F_FFFF_FFFF_FFFF).align_up(2)
    assert PhysAddr.new_truncate(0xFFF0_0000_0000_1234).as_u64() == 0x1234
    assert PhysAddr(0x000F_FFFF_FFFF_FFFF).as_u64() == 0x000F_FFFF_FFFF_FFFF


# -- pages and frames ----------------------------------------------------------------------------------------


def test_page_from_start_address_rejects_misaligned_address() -> None:
    with pytest.raises(AddressNotAligned):
        Page.from_start_address(VirtAddr(0x1008))
    with pytest.raises(AddressNotAligned):
        PhysFrame.from_start_address(PhysAddr(0x1000), Size2MiB)
    assert PhysFrame.from_start_address(PhysAddr(0x20_0000), Size2MiB).size() == 2 << 20


def test_page_containing_address_aligns_down_to_its_size() -> None:
    addr = VirtAddr(0x1234_5678)
    assert Page.containing_address(addr).start_address() == VirtAddr(0x1234_5000)
    assert Page.containing_address(addr, Size2MiB).start_address() == VirtAddr(0x1220_0000)
    assert Page.containing_address(addr, Size1GiB).start_address() == VirtAddr(0)


def test_page_range_inclusive_yields_every_page_through_end() -> None:
    start = Page.containing_address(VirtAddr(0xDEAD_BEAF))
    pages = Page.range_inclusive(start, start + 1000)
    assert list(pages) == [Page.containing_address(VirtAddr(0xDEAD_B000 + 0x1000 * i)) for i in range(1001)]
    assert pages.len() == 1001 and Page.range(start, start + 1000).len() == 1000
    assert list(Page.range_inclusive(start + 1, start)) == []


def test_page_range_inclusive_stops_at_the_last_page_of_the_address_space() -> None:
    last = Page.containing_address(VirtAddr(0xFFFF_FFFF_FFFF_FFFF))
    pages = list(Page.range_inclusive(last - 3, last))
    assert [int(p.start_address()) for p in pages] == [0xFFFF_FFFF_FFFF_C000 + i * 0x1000 for i in range(4)]


def test_page_range_jumps_the_non_canonical_hole() -> None:
    """`Page + 1` goes through `VirtAddr::new`, which sign-extends 0x8000_0000_0000."""
    last_low = Page.containing_address(VirtAddr(0x7FFF_FFFF_FFFF))
    first_high = Page(VirtAddr(0xFFFF_8000_0000_0000))
    assert last_low + 1 == first_high
    hole_crossing = Page.range_inclusive(last_low, first_high)
    assert list(hole_crossing) == [last_low, first_high]
    assert hole_crossing.len() == (0xFFFF_8000_0000_0000 - 0x7FFF_FFFF_F000) // 0x1000 + 1  # as the crate


def test_pages_and_frames_do_not_mix_sizes_or_address_kinds() -> None:
    with pytest.raises(TypeError):
        _ = Page(VirtAddr(0)) < Page(VirtAddr(0x20_0000), Size2MiB)
    with pytest.raises(TypeError):
        Page(VirtAddr(0), Size2MiB).p1_index()
    assert Page(VirtAddr(0)) != Page(VirtAddr(0), Size2MiB)
    with pytest.raises(TypeError):
        Page.containing_address(0x1000)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PhysFrame.containing_address(VirtAddr(0x1000))  # type: ignore[arg-type]


# -- flags and entries ---------------------------------------------------------------------------------------


def test_flags_from_bits_truncate_keep_os_bits_and_drop_the_address() -> None:
    raw = (1 << 63) | (1 << 55) | (1 << 9) | 0x1234_5000 | 0x63
    assert int(PageTableFlags.from_bits_truncate(raw)) == (1 << 63) | (1 << 55) | (1 << 9) | 0x63
    assert PageTableEntry(raw).addr() == PhysAddr(0x1234_5000)


def test_entry_frame_reports_not_present_and_huge() -> None:
    with pytest.raises(FrameError.FrameNotPresent):
        PageTableEntry(0x5000).frame()
    with pytest.raises(FrameError.HugeFrame):
        PageTableEntry(0x20_0000 | P | HUGE).frame()
    assert PageTableEntry(0x5000 | P | W).frame() == PhysFrame(PhysAddr(0x5000))
    assert not PageTableEntry(0x5000).is_unused()


def test_entry_setters_panic_on_huge_flag_or_misaligned_address() -> None:
    with pytest.raises(PageTablePanic):
        PageTableEntry.from_frame(PhysFrame(PhysAddr(0x5000)), P | HUGE)
    with pytest.raises(PageTablePanic):
        PageTableEntry.from_addr(PhysAddr(0x5008), P)
    assert PageTableEntry(0x5000 | P | W | A).with_flags(P).raw == 0x5000 | P


# -- map_to --------------------------------------------------------------------------------------------------


def test_map_to_creates_parent_tables_writable(machine: Machine) -> None:
    page, frame = heap_page(), PhysFrame(PhysAddr(0x50000))
    machine.mapper.map_to(page, frame, P | W, machine.frames).flush()

    p3, p2, p1 = machine.frames.given  # three new tables, taken in walk order
    p4e, p3e, p2e, p1e = machine.walk(HEAP_START, 4)
    assert (p4e, p3e, p2e) == (p3.start_address().as_u64() | P | W, p2.start_address().as_u64() | P | W,
                               p1.start_address().as_u64() | P | W)
    assert p1e == 0x50000 | P | W
    for table in (p3, p2, p1):  # zeroed: only the one entry on the way is set
        words = [machine.entry(table.start_address().as_u64(), i) for i in range(512)]
        assert sum(1 for w in words if w) == 1


def test_map_to_then_store_sets_accessed_and_dirty_in_ram(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    machine.cpu.store_u64(HEAP_START + 8, 0xC0FFEE)

    *parents, leaf = machine.walk(HEAP_START, 4)
    assert all(entry & A for entry in parents) and not any(entry & D for entry in parents)
    assert leaf & (A | D) == A | D
    assert machine.phys_u64(0x50008) == 0xC0FFEE


def test_map_to_second_page_reuses_parent_tables(machine: Machine) -> None:
    for n in range(2):
        frame = PhysFrame(PhysAddr(0x50000 + 0x1000 * n))
        machine.mapper.map_to(heap_page(n), frame, P | W, machine.frames).flush()
    assert len(machine.frames.given) == 3


def test_map_to_read_only_page_gives_new_parents_no_writable(machine: Machine) -> None:
    """`map_to` gives parents `flags & (PRESENT | WRITABLE | USER_ACCESSIBLE)`: only PRESENT here."""
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P, machine.frames).flush()
    assert [e & (P | W | U) for e in machine.walk(HEAP_START, 3)] == [P, P, P]

    machine.mapper.map_to(heap_page(1), PhysFrame(PhysAddr(0x51000)), P | W, machine.frames).flush()
    # WRITABLE is OR-ed into the existing parents
    assert [e & (P | W | U) for e in machine.walk(HEAP_START, 3)] == [P | W] * 3


def test_map_to_user_page_adds_user_accessible_to_existing_parents(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    assert not any(e & U for e in machine.walk(HEAP_START, 3))
    user_page = heap_page(1)
    machine.mapper.map_to(user_page, PhysFrame(PhysAddr(0x51000)), P | W | U, machine.frames).flush()

    assert all(e & U for e in machine.walk(HEAP_START, 3))
    machine.cpu.store(user_page.start_address().as_u64(), 3, 7, user=True)  # allowed all the way down
    with pytest.raises(PageFault) as fault:  # the first page's own entry still says supervisor-only
        machine.cpu.load(HEAP_START, 3, user=True)
    assert fault.value.error_code == ErrorCode.P | ErrorCode.U


def test_map_to_existing_page_is_page_already_mapped(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    other = PhysFrame(PhysAddr(0x60000))
    with pytest.raises(MapToError.PageAlreadyMapped) as err:
        machine.mapper.map_to(heap_page(), other, P | W, machine.frames)
    assert err.value.frame == other  # the crate reports the frame passed in
    assert machine.walk(HEAP_START, 4)[3] == 0x50000 | P | W


def test_map_to_without_frames_for_tables_is_frame_allocation_failed(machine: Machine) -> None:
    with pytest.raises(MapToError.FrameAllocationFailed):
        machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, memory.EmptyFrameAllocator())
    assert machine.walk(HEAP_START, 1) == [0]


def test_map_to_inside_a_2mib_page_is_parent_entry_huge_page(machine: Machine) -> None:
    inside = machine.boot_info.physical_memory_offset + 0x1000
    huge_before = machine.walk(inside, 3)[2]
    with pytest.raises(MapToError.ParentEntryHugePage):
        machine.mapper.map_to(Page(VirtAddr(inside)), PhysFrame(PhysAddr(0x50000)), P | W | U, machine.frames)
    # as in the crate, the missing parent flag is OR-ed into the huge entry before it is found to be huge
    # (that store, through the physical-memory mapping, also makes the 2 MiB page dirty)
    assert machine.walk(inside, 3)[2] & ~D == huge_before | U
    assert machine.frames.given == []


def test_map_to_with_table_flags_lacking_present_panics(machine: Machine) -> None:
    with pytest.raises(PageTablePanic):
        machine.mapper.map_to_with_table_flags(
            heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, PageTableFlags.empty(), machine.frames
        )


def test_map_to_with_mismatched_page_and_frame_sizes_is_a_type_error(machine: Machine) -> None:
    with pytest.raises(TypeError):
        machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0), Size2MiB), P | W, machine.frames)


def test_map_to_1gib_page_is_reached_by_the_mmu(machine: Machine) -> None:
    page = Page.containing_address(VirtAddr(HEAP_START), Size1GiB)
    base = page.start_address().as_u64()
    machine.mapper.map_to(page, PhysFrame(PhysAddr(0), Size1GiB), P | W, machine.frames).flush()
    assert len(machine.frames.given) == 1  # only a P3 table
    assert machine.walk(base, 2)[1] & ~(A | D) == P | W | HUGE
    machine.cpu.store_u64(base + 0x9_0000, 0x1D)
    assert machine.phys_u64(0x9_0000) == 0x1D


# -- translate -----------------------------------------------------------------------------------------------


def test_translate_2mib_page(machine: Machine) -> None:
    addr = VirtAddr(machine.boot_info.physical_memory_offset + 0x12345)
    result = machine.mapper.translate(addr)
    assert isinstance(result, TranslateResult.Mapped)
    assert result.frame == PhysFrame(PhysAddr(0), Size2MiB) and result.offset == 0x12345
    assert result.flags & (P | W | HUGE | NX) == P | W | HUGE
    assert machine.mapper.translate_addr(addr) == PhysAddr(0x12345)


def test_translate_4kib_page(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W | NX, machine.frames).flush()
    result = machine.mapper.translate(VirtAddr(HEAP_START + 0xABC))
    assert result == TranslateResult.Mapped(PhysFrame(PhysAddr(0x50000)), 0xABC, P | W | NX)
    assert machine.mapper.translate_page(heap_page()) == PhysFrame(PhysAddr(0x50000))


def test_translate_unmapped_address_is_not_mapped(machine: Machine) -> None:
    assert machine.mapper.translate(VirtAddr(HEAP_START)) == TranslateResult.NotMapped()
    assert machine.mapper.translate_addr(VirtAddr(HEAP_START)) is None
    with pytest.raises(TranslateError.PageNotMapped):
        machine.mapper.translate_page(heap_page())
    with pytest.raises(TranslateError.ParentEntryHugePage):
        machine.mapper.translate_page(Page(VirtAddr(machine.boot_info.physical_memory_offset)))


def test_translate_reports_a_non_present_nonzero_leaf_as_mapped(machine: Machine) -> None:
    """The crate checks `is_unused` (entry == 0) on the P1 entry, not PRESENT."""
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    p1_table = machine.walk(HEAP_START, 3)[2] & ADDR_MASK
    entry_virt = machine.boot_info.physical_memory_offset + p1_table + 8 * heap_page().p1_index()
    machine.cpu.store_u64(entry_virt, 0x50000)
    result = machine.mapper.translate(VirtAddr(HEAP_START))
    assert result == TranslateResult.Mapped(PhysFrame(PhysAddr(0x50000)), 0, PageTableFlags.empty())


def test_translate_through_a_huge_level_4_entry_panics(machine: Machine) -> None:
    p4 = machine.cpu.read_cr3() & ADDR_MASK
    machine.cpu.store_u64(machine.boot_info.physical_memory_offset + p4 + 8 * 200, P | HUGE)
    with pytest.raises(PageTablePanic, match="level 4"):
        machine.mapper.translate(VirtAddr(200 << 39))


# -- unmap and update_flags ----------------------------------------------------------------------------------


def test_unmap_returns_frame_and_flush(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    machine.cpu.store_u64(HEAP_START, 1)
    frame, flush = machine.mapper.unmap(heap_page())
    assert frame == PhysFrame(PhysAddr(0x50000)) and flush.page == heap_page()
    assert machine.walk(HEAP_START, 4)[3] == 0
    flush.flush()
    with pytest.raises(PageFault) as fault:
        machine.cpu.load_u64(HEAP_START)
    assert fault.value.error_code == 0  # not present


def test_unmap_without_flush_leaves_a_stale_tlb_entry(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    machine.cpu.store_u64(HEAP_START, 0xAB)
    _, flush = machine.mapper.unmap(heap_page())
    flush.ignore()
    assert machine.cpu.load_u64(HEAP_START) == 0xAB  # the TLB still holds the old translation


def test_unmap_reports_why_it_cannot(machine: Machine) -> None:
    with pytest.raises(UnmapError.PageNotMapped):
        machine.mapper.unmap(heap_page())
    offset = machine.boot_info.physical_memory_offset
    with pytest.raises(UnmapError.ParentEntryHugePage):
        machine.mapper.unmap(Page(VirtAddr(offset + 0x1000)))
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    with pytest.raises(UnmapError.ParentEntryHugePage):  # a P2 entry pointing at a table is "not huge"
        machine.mapper.unmap(Page.containing_address(VirtAddr(HEAP_START), Size2MiB))


def test_unmap_2mib_page_returns_its_frame(machine: Machine) -> None:
    page, frame = Page.containing_address(VirtAddr(HEAP_START), Size2MiB), PhysFrame(PhysAddr(0), Size2MiB)
    machine.mapper.map_to(page, frame, P | W, machine.frames).flush()
    assert machine.cpu.load_u64(page.start_address().as_u64() + 0x9_0000) == machine.phys_u64(0x9_0000)
    unmapped, flush = machine.mapper.unmap(page)
    flush.flush()
    assert unmapped == frame
    assert machine.mapper.translate(page.start_address()) == TranslateResult.NotMapped()
    with pytest.raises(PageFault):
        machine.cpu.load_u64(page.start_address().as_u64())


def test_update_flags_makes_page_read_only(machine: Machine) -> None:
    machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames).flush()
    machine.cpu.store_u64(HEAP_START, 5)
    machine.mapper.update_flags(heap_page(), P).flush()
    assert machine.walk(HEAP_START, 4)[3] == 0x50000 | P  # all flags replaced, A and D included
    assert machine.cpu.load_u64(HEAP_START) == 5
    with pytest.raises(PageFault) as fault:
        machine.cpu.store_u64(HEAP_START, 6)
    assert fault.value.error_code == ErrorCode.P | ErrorCode.W


def test_update_flags_of_unmapped_page_is_page_not_mapped(machine: Machine) -> None:
    with pytest.raises(FlagUpdateError.PageNotMapped):
        machine.mapper.update_flags(heap_page(), P)
    with pytest.raises(FlagUpdateError.ParentEntryHugePage):
        machine.mapper.update_flags(Page(VirtAddr(machine.boot_info.physical_memory_offset)), P)


# -- MapperFlush must be used --------------------------------------------------------------------------------


def test_dropping_an_unused_mapper_flush_warns(machine: Machine) -> None:
    with pytest.warns(MustUseWarning, match="flushed or ignored"):
        machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames)
        gc.collect()


def test_flushed_or_ignored_mapper_flush_is_silent_and_single_use(machine: Machine) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", MustUseWarning)
        flush = machine.mapper.map_to(heap_page(), PhysFrame(PhysAddr(0x50000)), P | W, machine.frames)
        flush.flush()
        with pytest.raises(RuntimeError, match="already"):
            flush.ignore()
        machine.mapper.map_to(heap_page(1), PhysFrame(PhysAddr(0x51000)), P | W, machine.frames).ignore()
        del flush
        gc.collect()


# -- memory.rs -----------------------------------------------------------------------------------------------


def test_memory_init_uses_the_level_4_table_in_cr3(machine: Machine) -> None:
    cr3 = machine.cpu.read_cr3()
    assert machine.mapper.level_4_table().start_address() == VirtAddr(
        machine.boot_info.physical_memory_offset + cr3
    )
    assert machine.mapper.phys_offset() == VirtAddr(machine.boot_info.physical_memory_offset)


def test_boot_info_frame_allocator_hands_out_usable_frames_in_order(machine: Machine) -> None:
    expected = [
        PhysFrame(PhysAddr(addr))
        for region in machine.boot_info.memory_map
        if region.region_type is MemoryRegionType.Usable
        for addr in range(region.range.start_addr(), region.range.end_addr(), 0x1000)
    ]
    allocator = memory.BootInfoFrameAllocator.init(machine.boot_info.memory_map)
    handed_out = [allocator.allocate_frame() for _ in range(len(expected))]
    assert handed_out == expected
    assert allocator.allocate_frame() is None and allocator.allocate_frame() is None
    assert allocator.next == len(expected) + 2  # counts calls, as the blog's `next += 1` does


def test_empty_frame_allocator_never_gives_a_frame() -> None:
    assert memory.EmptyFrameAllocator().allocate_frame() is None


def test_create_example_mapping_writes_reach_the_vga_frame(machine: Machine) -> None:
    page = Page.containing_address(VirtAddr(0))
    memory.create_example_mapping(page, machine.mapper, machine.frames)
    machine.cpu.store_u64(400, 0xF021_F077_F065_F04E)  # "New!" in the blog
    assert machine.phys_u64(0xB8000 + 400) == 0xF021_F077_F065_F04E
    assert len(machine.frames.given) == 1  # P4, P3 exist (kernel statics); a P1 table is new
