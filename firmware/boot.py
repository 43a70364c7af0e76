"""The bootloader: plays `bootloader` 0.9 (feature `map_physical_memory`), the one blog_os boots with.

`boot(cpu)` runs from reset, with paging off, so every access is physical. Like bootloader 0.9 it

1. builds the memory map (`MemoryRegionType`, `MemoryRegion` of frame ranges). Our machine's "E820" has one
   RAM range, `CFG_MEM_BYTES` long, with the PC's legacy window 0xA0000..0x100000 (VGA memory, BIOS ROM)
   Reserved when RAM reaches it. Frame 0 becomes FrameZero, never usable. Frames are then taken as bootloader
   0.9's frame allocator takes them: page tables from the highest usable region, everything else from the
   lowest, and a region grows into the usable frames right after it when it can;
2. maps the kernel's statics: `KERNEL_STATICS_SIZE` bytes of zeroed Kernel frames at `KERNEL_STATICS`, where a
   blog_os kernel ELF is linked; flags PRESENT | WRITABLE | NO_EXECUTE, as bootloader 0.9 maps a read-write,
   non-executable segment (its `.bss`). The allocator keeps its `LockedHeap` static here, as Rust does in
   `.bss`;
3. maps all physical memory, frame 0 up to the 2 MiB frame holding the highest address of the memory map
   (inclusive, so a RAM size that is a multiple of 2 MiB maps one 2 MiB page past its end, as 0.9 does), at
   `physical_memory_offset` with 2 MiB pages and exactly PRESENT | WRITABLE: 0.9 sets neither NO_EXECUTE nor
   GLOBAL there. Missing tables get PRESENT | WRITABLE;
4. loads CR3 and turns paging on.

The tables are built through the same `OffsetPageTable` the kernel uses, with offset 0: with paging off,
"offset 0 + physical" *is* the physical address. Bootloader 0.9 builds them through a recursive P4 entry,
which it removes before jumping to the kernel; the resulting tables are the same.

Deliberate differences: there is no kernel code image, kernel stack, boot-info page or bootloader image in our
RAM (the firmware is Python), so the map has no Bootloader, KernelStack or BootInfo regions; `BootInfo` is a
Python value handed to the kernel, not a structure in RAM; and an offset that is not 2 MiB aligned, or whose
mapping would be non-canonical or would meet the kernel statics, is a BootError where 0.9 would map garbage or
panic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from itertools import pairwise

from firmware.cpu import Cpu
from hdl.protocol import CR0_PG, PAGE_SIZE, Csr

from .x86_64.addr import PhysAddr, VirtAddr, VirtAddrNotValid, u64
from .x86_64.mapper import MapToError, OffsetPageTable
from .x86_64.paging import Page, PageTable, PageTableFlags, PhysFrame, Size2MiB

KERNEL_STATICS = 0x20_0000
"""Virtual address of the kernel's static data (`.bss`): 2 MiB, where a blog_os kernel ELF is linked."""

KERNEL_STATICS_SIZE = 4 * PAGE_SIZE
"""Bytes of kernel statics mapped at KERNEL_STATICS (4 KiB pages, zeroed)."""

PHYSICAL_MEMORY_OFFSET = 0x180_0000_0000
"""Where 0.9 maps physical memory by default: P4 entry 3, the first one left after the kernel (0), the
recursive entry (1) and the boot info (2); the address the chapter's output shows."""

LEGACY_HOLE = (0xA_0000, 0x10_0000)
"""The PC's VGA memory and BIOS ROM window, Reserved in the memory map."""

MIN_RAM_BYTES = 256 * 1024
"""The least physical RAM (a power of two, as the MMU's is) the kernel boots in: in 128 KiB the page tables and
statics leave too few usable frames for the heap's 25 pages, and `init_heap` fails with FrameAllocationFailed."""

KERNEL_STATICS_FLAGS = PageTableFlags.PRESENT | PageTableFlags.WRITABLE | PageTableFlags.NO_EXECUTE
PHYSICAL_MEMORY_FLAGS = PageTableFlags.PRESENT | PageTableFlags.WRITABLE


class MemoryRegionType(Enum):
    """`bootloader::bootinfo::MemoryRegionType` (0.9), with its `repr(C)` discriminants."""

    Usable = 0
    InUse = 1
    Reserved = 2
    AcpiReclaimable = 3
    AcpiNvs = 4
    BadMemory = 5
    Kernel = 6
    KernelStack = 7
    PageTable = 8
    Bootloader = 9
    FrameZero = 10
    Empty = 11
    BootInfo = 12
    Package = 13


@dataclass(frozen=True)
class FrameRange:
    """Frames `start_frame_number` up to, not including, `end_frame_number` (4 KiB frames)."""

    start_frame_number: int
    end_frame_number: int

    def start_addr(self) -> int:
        return self.start_frame_number * PAGE_SIZE

    def end_addr(self) -> int:
        """The first address after the range."""
        return self.end_frame_number * PAGE_SIZE

    def is_empty(self) -> bool:
        return self.start_frame_number == self.end_frame_number


@dataclass(frozen=True)
class MemoryRegion:
    range: FrameRange
    region_type: MemoryRegionType


@dataclass(frozen=True)
class BootInfo:
    """What the bootloader hands `kernel_main`: the memory map (sorted by address) and where RAM is mapped."""

    memory_map: tuple[MemoryRegion, ...]
    physical_memory_offset: int


class BootError(Exception):
    """The machine cannot be booted as asked (paging already on, too little RAM, an unusable offset)."""


def boot(cpu: Cpu, *, physical_memory_offset: int = PHYSICAL_MEMORY_OFFSET) -> BootInfo:
    """Build the memory map and the page tables, load CR3, enable paging; return the BootInfo."""
    if cpu.read_csr(Csr.CR0) & CR0_PG:
        raise BootError("paging is already on: boot() starts from reset")
    if u64(physical_memory_offset, "physical_memory_offset") % Size2MiB.SIZE:
        raise BootError(f"physical_memory_offset {physical_memory_offset:#x} is not 2 MiB aligned")
    mem_bytes = cpu.read_csr(Csr.CFG_MEM_BYTES)
    memory_map = _MemoryMap(mem_bytes)
    max_phys_addr = memory_map.max_phys_addr()

    p4 = memory_map.allocate_frame(MemoryRegionType.PageTable)
    level_4_table = PageTable(cpu, VirtAddr(p4.start_address().as_u64()))
    level_4_table.zero()
    mapper = OffsetPageTable(level_4_table, VirtAddr(0))
    table_frames = _PageTableFrames(memory_map)

    with cpu.context("map kernel statics"):
        statics = Page.containing_address(VirtAddr(KERNEL_STATICS))
        for page in Page.range(statics, statics + KERNEL_STATICS_SIZE // PAGE_SIZE):
            frame = memory_map.allocate_frame(MemoryRegionType.Kernel)
            cpu.fill(frame.start_address().as_u64(), PAGE_SIZE)  # .bss starts zeroed
            mapper.map_to(page, frame, KERNEL_STATICS_FLAGS, table_frames).flush()

    with cpu.context("map physical memory"):
        start = PhysFrame.containing_address(PhysAddr(0), Size2MiB)
        end = PhysFrame.containing_address(PhysAddr(max_phys_addr), Size2MiB)
        try:
            for frame in PhysFrame.range_inclusive(start, end):
                virt = VirtAddr(frame.start_address().as_u64() + physical_memory_offset)
                page = Page.containing_address(virt, Size2MiB)
                mapper.map_to(page, frame, PHYSICAL_MEMORY_FLAGS, table_frames).flush()
        except (VirtAddrNotValid, OverflowError, MapToError) as err:
            offset = f"{physical_memory_offset:#x}"
            raise BootError(f"cannot map physical memory at offset {offset}: {err}") from err

    with cpu.context("enable paging"):
        cpu.write_cr3(p4.start_address().as_u64())
        cpu.enable_paging()
    return BootInfo(memory_map.regions(), physical_memory_offset)


class _MemoryMap:
    """The bootloader's memory map while it allocates: sorted, non-overlapping, no empty regions."""

    def __init__(self, mem_bytes: int) -> None:
        ram_end = mem_bytes // PAGE_SIZE
        self._regions = [_Region(0, ram_end, MemoryRegionType.Usable)]
        hole_start, hole_end = (addr // PAGE_SIZE for addr in LEGACY_HOLE)
        if ram_end > hole_start:
            self._mark_allocated_region(hole_start, min(hole_end, ram_end), MemoryRegionType.Reserved)
        self._mark_allocated_region(0, 1, MemoryRegionType.FrameZero)

    def max_phys_addr(self) -> int:
        return max(region.end for region in self._regions) * PAGE_SIZE

    def regions(self) -> tuple[MemoryRegion, ...]:
        return tuple(MemoryRegion(FrameRange(r.start, r.end), r.region_type) for r in self._regions)

    def allocate_frame(self, region_type: MemoryRegionType) -> PhysFrame:
        """One frame for `region_type`, taken as bootloader 0.9's `FrameAllocator::allocate_frame` does."""
        number = self._grow(region_type)
        if number is None:
            usable = [r for r in self._regions if r.region_type is MemoryRegionType.Usable]
            if not usable:
                raise BootError(f"out of physical memory in {self.max_phys_addr():#x} bytes of RAM")
            # page tables come from the top, so that they do not fragment the usable memory below
            source = usable[-1] if region_type is MemoryRegionType.PageTable else usable[0]
            number = source.start
            source.start += 1
            self._regions.append(_Region(number, number + 1, region_type))
            self._normalize()
        return PhysFrame(PhysAddr(number * PAGE_SIZE))

    def _grow(self, region_type: MemoryRegionType) -> int | None:
        """Extend a `region_type` region into the usable region right after it; the frame gained, or None."""
        for region, after in pairwise(self._regions):
            if (region.region_type is region_type and after.region_type is MemoryRegionType.Usable
                    and after.start == region.end):
                region.end += 1
                after.start += 1
                self._normalize()
                return region.end - 1
        return None

    def _mark_allocated_region(self, start: int, end: int, region_type: MemoryRegionType) -> None:
        """Carve frames start..end out of the usable region that holds them (the map starts all Usable)."""
        (usable,) = (r for r in self._regions if r.start <= start and end <= r.end)
        self._regions.remove(usable)
        self._regions += [
            _Region(usable.start, start, MemoryRegionType.Usable),
            _Region(start, end, region_type),
            _Region(end, usable.end, MemoryRegionType.Usable),
        ]
        self._normalize()

    def _normalize(self) -> None:
        self._regions = sorted((r for r in self._regions if r.start < r.end), key=lambda r: r.start)


@dataclass
class _Region:
    start: int  # frame numbers
    end: int
    region_type: MemoryRegionType


@dataclass
class _PageTableFrames:
    """The `FrameAllocator` the mapper gets while booting: every frame it takes becomes a PageTable frame."""

    memory_map: _MemoryMap

    def allocate_frame(self) -> PhysFrame:
        return self.memory_map.allocate_frame(MemoryRegionType.PageTable)
