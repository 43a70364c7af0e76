"""blog_os `memory.rs` (posts 9 and 10): the kernel's mapper and frame allocators.

Deliberate differences from the Rust kernel:
- `init` takes the CPU (Rust reads CR3 with an instruction; here CR3 is a CSR of the simulated MMU);
- a frame allocator's state (the memory map it reads and its position) lives on the Python side, where Rust
  keeps it in a kernel struct in RAM: it is the kernel's bookkeeping, not something the MMU ever reads;
- `BootInfoFrameAllocator.allocate_frame` is O(1) per frame: it keeps the iterator over the usable frames. The
  blog rebuilds the iterator and calls `nth(self.next)` each time, which is O(n) in the frames handed out so
  far. The frames come out in the same order, and the `next` counter advances on every call, as in the blog.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from firmware.boot import MemoryRegion, MemoryRegionType
from firmware.cpu import Cpu
from hdl.protocol import PAGE_SIZE

from .x86_64.addr import PhysAddr, VirtAddr
from .x86_64.mapper import FrameAllocator, OffsetPageTable
from .x86_64.paging import ENTRY_ADDR_MASK, Page, PageTable, PageTableFlags, PhysFrame

VGA_BUFFER = 0xB8000  # the frame `create_example_mapping` maps to (the VGA text buffer in the blog)


def init(cpu: Cpu, physical_memory_offset: VirtAddr | int) -> OffsetPageTable:
    """An `OffsetPageTable` over the active P4 (CR3), all physical memory being mapped at the given offset.

    Takes the offset as a `VirtAddr` (as the blog does) or as the `u64` of `BootInfo.physical_memory_offset`.
    """
    if not isinstance(physical_memory_offset, VirtAddr):
        physical_memory_offset = VirtAddr(physical_memory_offset)
    level_4_table = _active_level_4_table(cpu, physical_memory_offset)
    return OffsetPageTable(level_4_table, physical_memory_offset)


def _active_level_4_table(cpu: Cpu, physical_memory_offset: VirtAddr) -> PageTable:
    """The P4 table CR3 points at, seen through the physical-memory mapping (`Cr3::read` keeps 12..51)."""
    level_4_table_frame = PhysFrame.containing_address(PhysAddr(cpu.read_cr3() & ENTRY_ADDR_MASK))
    return PageTable(cpu, physical_memory_offset + level_4_table_frame.start_address().as_u64())


def create_example_mapping(page: Page, mapper: OffsetPageTable, frame_allocator: FrameAllocator) -> None:
    """Map `page` to the VGA buffer frame 0xb8000, PRESENT | WRITABLE (`expect`: a MapToError propagates)."""
    frame = PhysFrame.containing_address(PhysAddr(VGA_BUFFER))
    flags = PageTableFlags.PRESENT | PageTableFlags.WRITABLE
    mapper.map_to(page, frame, flags, frame_allocator).flush()


class EmptyFrameAllocator:
    """A FrameAllocator that always returns None."""

    def allocate_frame(self) -> PhysFrame | None:
        return None


class BootInfoFrameAllocator:
    """Hands out the usable frames of the bootloader's memory map, lowest region first, each frame once."""

    def __init__(self, memory_map: Sequence[MemoryRegion]) -> None:
        self.memory_map = tuple(memory_map)
        self.next = 0  # allocate_frame calls so far (the blog's index into usable_frames)
        self._frames = self.usable_frames()

    @classmethod
    def init(cls, memory_map: Sequence[MemoryRegion]) -> BootInfoFrameAllocator:
        """`BootInfoFrameAllocator::init`: the caller guarantees the Usable regions really are unused."""
        return cls(memory_map)

    def usable_frames(self) -> Iterator[PhysFrame]:
        """Every 4 KiB frame of every Usable region, in map order."""
        for region in self.memory_map:
            if region.region_type is MemoryRegionType.Usable:
                for addr in range(region.range.start_addr(), region.range.end_addr(), PAGE_SIZE):
                    yield PhysFrame.containing_address(PhysAddr(addr))

    def allocate_frame(self) -> PhysFrame | None:
        self.next += 1
        return next(self._frames, None)
