"""The bootloader (bootloader 0.9 with `map_physical_memory`) on the reference MMU.

After `boot` every check reads RAM through the physical-memory mapping it built, and walks the page tables by
hand from CR3; expectations come from what bootloader 0.9 does, not from our own output.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from cosim.backends import open_backend
from firmware import memory
from firmware.boot import (
    KERNEL_STATICS,
    KERNEL_STATICS_SIZE,
    BootError,
    BootInfo,
    FrameRange,
    MemoryRegion,
    MemoryRegionType,
    boot,
)
from firmware.cpu import BusError, Cpu, PageFault
from hdl.protocol import CR0_PG, Csr, ErrorCode, MmuConfig, Pte

KIB, MIB = 1 << 10, 1 << 20
ADDR_MASK = 0x000F_FFFF_FFFF_F000
AD = Pte.ACCESSED | Pte.DIRTY


def new_cpu(mem_bytes: int = MIB) -> Cpu:
    return Cpu(open_backend("reference", MmuConfig(mem_bytes=mem_bytes)))


def phys_u64(cpu: Cpu, boot_info: BootInfo, phys: int) -> int:
    return cpu.load_u64(boot_info.physical_memory_offset + phys)


def table_frames(cpu: Cpu, boot_info: BootInfo) -> set[int]:
    """Physical addresses of every page table reachable from CR3, found by walking the tables by hand."""
    found, todo = set(), [(cpu.read_cr3() & ADDR_MASK, 4)]
    while todo:
        table, level = todo.pop()
        found.add(table)
        for index in range(512):
            entry = phys_u64(cpu, boot_info, table + 8 * index)
            if level > 1 and entry & Pte.PRESENT and not entry & Pte.HUGE_PAGE:
                todo.append((entry & ADDR_MASK, level - 1))
    return found


def frames_of(boot_info: BootInfo, region_type: MemoryRegionType) -> set[int]:
    return {
        addr
        for region in boot_info.memory_map
        if region.region_type is region_type
        for addr in range(region.range.start_addr(), region.range.end_addr(), 4 * KIB)
    }


def leaf_entry(cpu: Cpu, boot_info: BootInfo, vaddr: int) -> tuple[int, int]:
    """(level, raw entry) of the leaf that maps `vaddr`, walked by hand."""
    table = cpu.read_cr3() & ADDR_MASK
    for level in (4, 3, 2, 1):
        entry = phys_u64(cpu, boot_info, table + 8 * ((vaddr >> (12 + 9 * (level - 1))) & 0x1FF))
        assert entry & Pte.PRESENT, f"{vaddr:#x} not mapped at level {level}"
        if level == 1 or entry & Pte.HUGE_PAGE:
            return level, entry
        table = entry & ADDR_MASK
    raise AssertionError("unreachable")


# -- paging on, physical memory mapped -----------------------------------------------------------------------


def test_boot_enables_paging_with_cr3_at_a_page_table_frame() -> None:
    cpu = new_cpu()
    boot_info = boot(cpu)
    assert cpu.read_csr(Csr.CR0) & CR0_PG
    assert cpu.read_cr3() in frames_of(boot_info, MemoryRegionType.PageTable)
    assert boot_info.physical_memory_offset == 0x180_0000_0000  # P4 entry 3, as in the chapter's output


def test_boot_maps_all_physical_memory_at_offset() -> None:
    cpu = new_cpu()
    signature = {frame + 0x7F8: frame ^ 0x5A5A_0000_0000_5A5A for frame in range(0, MIB, 4 * KIB)}
    for phys, value in signature.items():  # paging is off: these stores are physical
        cpu.store_u64(phys, value)
    boot_info = boot(cpu)

    written_by_boot = frames_of(boot_info, MemoryRegionType.PageTable)
    written_by_boot |= frames_of(boot_info, MemoryRegionType.Kernel)
    for phys, value in signature.items():
        if phys & ~0xFFF not in written_by_boot:
            assert phys_u64(cpu, boot_info, phys) == value, hex(phys)
    for frame in frames_of(boot_info, MemoryRegionType.Kernel):  # the statics start zeroed
        assert phys_u64(cpu, boot_info, frame + 0x7F8) == 0


@pytest.mark.parametrize(("mem_bytes", "huge_pages"), [(64 * KIB, 1), (MIB, 1), (4 * MIB, 3)])
def test_boot_maps_ram_with_2mib_pages_through_the_one_holding_its_end(
    mem_bytes: int, huge_pages: int
) -> None:
    """0.9 maps the 2 MiB frames from 0 to the one containing the highest map address, inclusive."""
    cpu = new_cpu(mem_bytes)
    boot_info = boot(cpu)
    offset = boot_info.physical_memory_offset
    p4_entry = phys_u64(cpu, boot_info, (cpu.read_cr3() & ADDR_MASK) + 8 * (offset >> 39))
    p3_entry = phys_u64(cpu, boot_info, (p4_entry & ADDR_MASK) + 8 * ((offset >> 30) & 0x1FF))
    assert p4_entry & ~ADDR_MASK & ~AD == Pte.PRESENT | Pte.WRITABLE
    assert p3_entry & ~ADDR_MASK & ~AD == Pte.PRESENT | Pte.WRITABLE
    p2_table = p3_entry & ADDR_MASK
    p2 = [phys_u64(cpu, boot_info, p2_table + 8 * i) for i in range(512)]
    # exactly PRESENT | WRITABLE | HUGE_PAGE: neither NO_EXECUTE nor GLOBAL in 0.9
    assert [entry & ~AD for entry in p2[:huge_pages]] == [
        (i << 21) | Pte.PRESENT | Pte.WRITABLE | Pte.HUGE_PAGE for i in range(huge_pages)
    ]
    assert not any(p2[huge_pages:])
    with pytest.raises(BusError):  # mapped, but past the end of RAM
        cpu.load_u64(offset + mem_bytes)


def test_boot_accepts_an_upper_half_offset() -> None:
    cpu = new_cpu()
    boot_info = boot(cpu, physical_memory_offset=0xFFFF_8000_0000_0000)
    cr3 = cpu.read_cr3()
    assert cpu.load_u64(0xFFFF_8000_0000_0000 + cr3 + 8 * 511) == phys_u64(cpu, boot_info, cr3 + 8 * 511)
    assert (cpu.load_u64(0xFFFF_8000_0000_0000 + cr3 + 8 * 256) & ADDR_MASK) in table_frames(cpu, boot_info)


# -- the memory map ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mem_bytes", [64 * KIB, MIB, 4 * MIB])
def test_memory_map_tiles_ram_in_address_order(mem_bytes: int) -> None:
    boot_info = boot(new_cpu(mem_bytes))
    ranges = [region.range for region in boot_info.memory_map]
    assert ranges[0].start_addr() == 0 and ranges[-1].end_addr() == mem_bytes
    assert all(a.end_frame_number == b.start_frame_number for a, b in pairwise(ranges))
    assert not any(r.is_empty() for r in ranges)
    reserved = [r.range for r in boot_info.memory_map if r.region_type is MemoryRegionType.Reserved]
    expected_hole = [FrameRange(0xA0, 0x100)] if mem_bytes >= MIB else []  # VGA and BIOS window
    assert reserved == expected_hole


def test_frame_zero_is_never_usable() -> None:
    boot_info = boot(new_cpu())
    assert boot_info.memory_map[0] == MemoryRegion(FrameRange(0, 1), MemoryRegionType.FrameZero)
    allocator = memory.BootInfoFrameAllocator.init(boot_info.memory_map)
    handed_out = []
    while (frame := allocator.allocate_frame()) is not None:
        handed_out.append(frame.start_address().as_u64())
    assert 0 not in handed_out
    assert len(handed_out) == len(set(handed_out)) == len(frames_of(boot_info, MemoryRegionType.Usable))


@pytest.mark.parametrize("mem_bytes", [64 * KIB, MIB, 4 * MIB])
def test_page_table_region_holds_exactly_the_tables_boot_built(mem_bytes: int) -> None:
    cpu = new_cpu(mem_bytes)
    boot_info = boot(cpu)
    tables = table_frames(cpu, boot_info)
    assert tables == frames_of(boot_info, MemoryRegionType.PageTable)
    # P4; P3, P2, P1 for the statics at 2 MiB; P3, P2 for physical memory (P4 entry 3)
    assert len(tables) == 6
    kinds = {region.region_type for region in boot_info.memory_map}
    assert kinds <= {MemoryRegionType.FrameZero, MemoryRegionType.Kernel, MemoryRegionType.PageTable,
                     MemoryRegionType.Usable, MemoryRegionType.Reserved}


def test_boot_fits_in_the_smallest_ram() -> None:
    boot_info = boot(new_cpu(64 * KIB))
    # 16 frames: frame zero, 4 of statics, 6 tables
    assert len(frames_of(boot_info, MemoryRegionType.Usable)) == 16 - 1 - 4 - 6


# -- kernel statics ------------------------------------------------------------------------------------------


def test_kernel_statics_are_mapped_to_kernel_frames_writable_no_execute() -> None:
    cpu = new_cpu()
    boot_info = boot(cpu)
    kernel_frames = frames_of(boot_info, MemoryRegionType.Kernel)
    assert len(kernel_frames) * 4 * KIB == KERNEL_STATICS_SIZE
    mapped = set()
    for vaddr in range(KERNEL_STATICS, KERNEL_STATICS + KERNEL_STATICS_SIZE, 4 * KIB):
        level, entry = leaf_entry(cpu, boot_info, vaddr)
        assert level == 1
        assert entry & ~ADDR_MASK & ~AD == Pte.PRESENT | Pte.WRITABLE | Pte.NO_EXECUTE
        mapped.add(entry & ADDR_MASK)
    assert mapped == kernel_frames


def test_kernel_statics_start_zeroed_and_alias_their_physical_frames() -> None:
    cpu = new_cpu()
    boot_info = boot(cpu)
    last_word = KERNEL_STATICS + KERNEL_STATICS_SIZE - 8
    assert all(cpu.load_u64(addr) == 0 for addr in range(KERNEL_STATICS, last_word + 8, 512))
    cpu.store_u64(last_word, 0x1EA9)
    _, entry = leaf_entry(cpu, boot_info, last_word)
    assert phys_u64(cpu, boot_info, (entry & ADDR_MASK) + (last_word & 0xFFF)) == 0x1EA9


def test_kernel_statics_are_not_executable() -> None:
    cpu = new_cpu()
    boot(cpu)
    with pytest.raises(PageFault) as fault:
        cpu.load(KERNEL_STATICS, 3, fetch=True)
    assert fault.value.error_code == ErrorCode.P | ErrorCode.I


# -- refusals ------------------------------------------------------------------------------------------------


def test_boot_refuses_to_run_twice() -> None:
    cpu = new_cpu()
    boot(cpu)
    with pytest.raises(BootError, match="paging is already on"):
        boot(cpu)


@pytest.mark.parametrize(
    ("offset", "why"),
    [
        (0x180_0000_1000, "not 2 MiB aligned"),
        (0x8000_0000_0000_0000, "cannot map physical memory"),  # not canonical
        (0, "cannot map physical memory"),  # identity map: its 2 MiB page at 2 MiB meets the kernel statics
    ],
)
def test_boot_rejects_offsets_it_cannot_map(offset: int, why: str) -> None:
    cpu = new_cpu(4 * MIB)
    with pytest.raises(BootError, match=why):
        boot(cpu, physical_memory_offset=offset)
