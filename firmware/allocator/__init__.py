"""blog_os `allocator.rs`: the heap region, `init_heap`, the `Dummy` allocator, and the allocation interface
of Rust's `alloc` crate that every allocator implements (`Layout`, `GlobalAlloc`, `handle_alloc_error`).

The kernel heap is the 100 KiB at virtual address `HEAP_START`; `init_heap` maps it page by page and then
initialises the global allocator, a `linked_list_allocator::LockedHeap` static that lives in the kernel's
statics region (`firmware.boot.KERNEL_STATICS`). A `GlobalAlloc` answers `alloc` with an address or 0 (null),
exactly as the Rust trait does; collections turn a null into `handle_alloc_error`, which raises `AllocError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from firmware.boot import KERNEL_STATICS
from firmware.cpu import Cpu
from firmware.x86_64.addr import VirtAddr
from firmware.x86_64.mapper import MapToError
from firmware.x86_64.paging import Page, PageTableFlags

if TYPE_CHECKING:
    from firmware.linked_list_allocator import LockedHeap
    from firmware.x86_64.mapper import FrameAllocator, OffsetPageTable

HEAP_START = 0x_4444_4444_0000
HEAP_SIZE = 100 * 1024  # 100 KiB

ISIZE_MAX = (1 << 63) - 1
USIZE_MAX = (1 << 64) - 1


class LayoutError(ValueError):
    """`Layout::from_size_align` refused its parameters (Rust: `LayoutError`)."""

    def __init__(self, size: int, align: int, reason: str) -> None:
        super().__init__(
            f"invalid parameters to Layout::from_size_align: size {size}, align {align}: {reason}")
        self.size = size
        self.align = align


class Layout(NamedTuple):
    """`core::alloc::Layout`: the size and alignment of a block of memory. Build checked ones with
    `from_size_align`; `Layout(size, align)` is `from_size_align_unchecked`."""

    size: int
    align: int

    @classmethod
    def from_size_align(cls, size: int, align: int) -> Layout:
        """Rust's rules: `align` is a non-zero power of two, `size` rounded up to `align` fits an isize."""
        if type(align) is not int or align <= 0 or align & (align - 1):
            raise LayoutError(size, align, "align must be a power of two")
        if type(size) is not int or size < 0:
            raise LayoutError(size, align, "size must be a usize")
        if size > ISIZE_MAX - (align - 1):
            raise LayoutError(size, align, "size rounded up to align overflows isize::MAX")
        return cls(size, align)

    @classmethod
    def array(cls, element: Layout, n: int) -> Layout:
        """`Layout::array::<T>(n)`: `n` elements of `element` (whose size is a multiple of its align)."""
        if n < 0 or element.size * n > ISIZE_MAX - (element.align - 1):
            raise LayoutError(element.size * n, element.align, f"{n} elements overflow isize::MAX")
        return cls(element.size * n, element.align)

    def __repr__(self) -> str:
        return f"Layout {{ size: {self.size}, align: {self.align} }}"


class AllocError(MemoryError):
    """The global allocator returned null and `handle_alloc_error` ran. The message is Rust's current wording;
    the seed's own `#[alloc_error_handler]` turns it into `panic!("allocation error: {:?}", layout)`, which is
    `seed_panic_message`."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(f"memory allocation of {layout.size} bytes failed")
        self.layout = layout

    @property
    def seed_panic_message(self) -> str:
        return f"allocation error: {self.layout!r}"


class KernelPanic(Exception):
    """A `panic!` in kernel code; the message is what the panic handler prints after `panicked at`."""


def alloc_error_handler(layout: Layout) -> NoReturn:
    """`handle_alloc_error(layout)`: an allocation failed and the kernel cannot continue."""
    raise AllocError(layout)


handle_alloc_error = alloc_error_handler


def copy_nonoverlapping(cpu: Cpu, src: int, dst: int, count: int) -> None:
    """`ptr::copy_nonoverlapping`: `count` bytes, chunk by chunk (load, store), as wide as both allow."""
    load, store = cpu.load, cpu.store
    end = src + count
    while src < end:
        remaining = end - src
        log2 = 3
        while log2 and ((src | dst) & ((1 << log2) - 1) or remaining < 1 << log2):
            log2 -= 1
        store(dst, log2, load(src, log2))
        src += 1 << log2
        dst += 1 << log2


class GlobalAlloc(ABC):
    """`GlobalAlloc`: `alloc` returns an address or 0 (null); `alloc_zeroed` and `realloc` have Rust's default
    implementations on top of `alloc` and `dealloc`."""

    cpu: Cpu

    @abstractmethod
    def alloc(self, layout: Layout) -> int:
        """A block of at least `layout.size` bytes aligned to `layout.align`, or 0."""

    @abstractmethod
    def dealloc(self, ptr: int, layout: Layout) -> None:
        """Give back a block `alloc` returned for the same `layout`."""

    def alloc_zeroed(self, layout: Layout) -> int:
        """`alloc`, then the block filled with zeros (`ptr::write_bytes`)."""
        cpu = self.cpu
        if cpu.listener is None:
            return self._alloc_zeroed(layout)
        with cpu.context("alloc_zeroed({}, {})", layout.size, layout.align):
            return self._alloc_zeroed(layout)

    def _alloc_zeroed(self, layout: Layout) -> int:
        ptr = self.alloc(layout)
        if ptr:
            self.cpu.fill(ptr, layout.size, 0)
        return ptr

    def realloc(self, ptr: int, layout: Layout, new_size: int) -> int:
        """A block of `new_size` bytes with the old contents (up to the smaller size), or 0 with the old block
        untouched. Default: `alloc` a new block, copy, `dealloc` the old one."""
        cpu = self.cpu
        if cpu.listener is None:
            return self._realloc(ptr, layout, new_size)
        with cpu.context("realloc({:#x}, {}, {}, {})", ptr, layout.size, layout.align, new_size):
            return self._realloc(ptr, layout, new_size)

    def _realloc(self, ptr: int, layout: Layout, new_size: int) -> int:
        new_ptr = self.alloc(Layout(new_size, layout.align))
        if new_ptr:
            copy_nonoverlapping(self.cpu, ptr, new_ptr, min(layout.size, new_size))
            self.dealloc(ptr, layout)
        return new_ptr


class Dummy(GlobalAlloc):
    """The seed's first allocator: every allocation fails, so `dealloc` can never legitimately run."""

    def __init__(self, cpu: Cpu) -> None:
        self.cpu = cpu

    def alloc(self, layout: Layout) -> int:
        return 0

    def dealloc(self, ptr: int, layout: Layout) -> None:
        raise KernelPanic("dealloc should be never called")


# The `#[global_allocator] static ALLOCATOR: LockedHeap` sits at the start of the kernel's statics region.
ALLOCATOR_OFFSET = 0


def global_allocator(cpu: Cpu) -> LockedHeap:
    """The `ALLOCATOR` static as seen from `cpu`: a handle on the `LockedHeap` at `KERNEL_STATICS`.

    The handle touches no memory; the loader's zeroed statics are `LockedHeap::empty()`.
    """
    from firmware.linked_list_allocator import LockedHeap  # here: the crate imports this module's Layout

    return LockedHeap(cpu, KERNEL_STATICS + ALLOCATOR_OFFSET)


def init_heap(mapper: OffsetPageTable, frame_allocator: FrameAllocator, heap: LockedHeap) -> None:
    """Map every page of `[HEAP_START, HEAP_START + HEAP_SIZE)` to a fresh frame (PRESENT | WRITABLE), then
    `heap.lock().init(HEAP_START, HEAP_SIZE)`. Raises MapToError as the seed's `?` returns it; the heap is
    initialised only after all its pages are mapped, since `init` writes the first hole at HEAP_START."""
    cpu = heap.cpu
    if cpu.listener is None:
        _init_heap(mapper, frame_allocator, heap)
        return
    with cpu.context("init_heap"):
        _init_heap(mapper, frame_allocator, heap)


def _init_heap(mapper: OffsetPageTable, frame_allocator: FrameAllocator, heap: LockedHeap) -> None:
    cpu = heap.cpu
    heap_start = VirtAddr.new(HEAP_START)
    heap_end = heap_start + HEAP_SIZE - 1
    page_range = Page.range_inclusive(Page.containing_address(heap_start), Page.containing_address(heap_end))
    flags = PageTableFlags.PRESENT | PageTableFlags.WRITABLE
    for page in page_range:
        frame = frame_allocator.allocate_frame()
        if frame is None:
            raise MapToError.FrameAllocationFailed()
        if cpu.listener is None:
            mapper.map_to(page, frame, flags, frame_allocator).flush()
            continue
        start = page.start_address().as_u64()
        with cpu.context("map_to({:#x})", start):
            flush = mapper.map_to(page, frame, flags, frame_allocator)
        with cpu.context("flush({:#x})", start):
            flush.flush()
    with heap.lock() as locked:
        locked.init(HEAP_START, HEAP_SIZE)
