"""blog_os `allocator.rs`: the heap region, `init_heap`, the `Dummy` allocator, and the allocation interface
of Rust's `alloc` crate that every allocator implements (`Layout`, `GlobalAlloc`, `handle_alloc_error`); and,
from the "Allocator Designs" chapter, `align_up`, the `Locked<A>` spin-lock wrapper and the allocator modules
`bump`, `linked_list` and `fixed_size_block` (`src/allocator/{bump,linked_list,fixed_size_block}.rs`).

The kernel heap is the 100 KiB at virtual address `HEAP_START`; `init_heap` maps it page by page and then
initialises the global allocator, a static that lives in the kernel's statics region
(`firmware.boot.KERNEL_STATICS`). Which allocator that static is, is chosen by name (`ALLOCATORS`): `lla`, the
heap-allocation chapter's `linked_list_allocator::LockedHeap` (the default), or one of the allocator-designs
chapter's `Locked<BumpAllocator>` (`bump`), `Locked<LinkedListAllocator>` (`linked-list`) and
`Locked<FixedSizeBlockAllocator>` (`fixed-size-block`). A `GlobalAlloc` answers `alloc` with an address or 0
(null), exactly as the Rust trait does; collections turn a null into `handle_alloc_error`, which raises
`AllocError`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, NoReturn, Protocol, TypeVar

from firmware.boot import KERNEL_STATICS
from firmware.cpu import Cpu
from firmware.x86_64.addr import VirtAddr
from firmware.x86_64.mapper import MapToError
from firmware.x86_64.paging import Page, PageTableFlags

if TYPE_CHECKING:
    from firmware.x86_64.mapper import FrameAllocator, OffsetPageTable

HEAP_START = 0x_4444_4444_0000
HEAP_SIZE = 100 * 1024  # 100 KiB

ISIZE_MAX = (1 << 63) - 1
USIZE_MAX = (1 << 64) - 1
USIZE = 8  # size_of::<usize>()

LOCKED_LOCK = 0  # Locked<A>: offset of the spinlock's AtomicBool
LOCKED_DATA = USIZE  # Locked<A>: offset of the allocator, after the lock byte padded to 8


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
    implementations on top of `alloc` and `dealloc`.

    An allocator implements `_alloc` and `_dealloc`; the public calls wrap them in a labelled firmware context
    when a tracer listens, so that every allocator's calls show in traces under the same names.
    """

    cpu: Cpu

    def alloc(self, layout: Layout) -> int:
        """A block of at least `layout.size` bytes aligned to `layout.align`, or 0."""
        cpu = self.cpu
        if cpu.listener is None:
            return self._alloc(layout)
        with cpu.context("alloc({}, {})", layout.size, layout.align):
            return self._alloc(layout)

    def dealloc(self, ptr: int, layout: Layout) -> None:
        """Give back a block `alloc` returned for the same `layout`."""
        cpu = self.cpu
        if cpu.listener is None:
            self._dealloc(ptr, layout)
            return
        with cpu.context("dealloc({:#x}, {}, {})", ptr, layout.size, layout.align):
            self._dealloc(ptr, layout)

    @abstractmethod
    def _alloc(self, layout: Layout) -> int:
        """The allocator's own `alloc`."""

    @abstractmethod
    def _dealloc(self, ptr: int, layout: Layout) -> None:
        """The allocator's own `dealloc`."""

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

    def _alloc(self, layout: Layout) -> int:
        return 0

    def _dealloc(self, ptr: int, layout: Layout) -> None:
        raise KernelPanic("dealloc should be never called")


class AllocatorAssertionFailed(KernelPanic):
    """An `assert!`/`assert_eq!` in an allocator's own code failed (the chapter's allocators check a freed
    region's alignment and size before writing a list node into it); the message is Rust's."""


def align_up(addr: int, align: int) -> int:
    """`align_up`: the smallest multiple of `align` (a power of two) that is >= `addr`, as
    `(addr + align - 1) & !(align - 1)`, the chapter's fast variant (both of its variants agree)."""
    return (addr + align - 1) & -align


class KernelAllocator(Protocol):
    """What the kernel needs of its global allocator static, beyond `GlobalAlloc`: `lock()` for `init_heap`
    (`ALLOCATOR.lock().init(HEAP_START, HEAP_SIZE)`), and two read-only views for tests and analysis."""

    cpu: Cpu

    def alloc(self, layout: Layout) -> int: ...

    def dealloc(self, ptr: int, layout: Layout) -> None: ...

    def realloc(self, ptr: int, layout: Layout, new_size: int) -> int: ...

    def lock(self) -> Any: ...

    def live_blocks(self) -> dict[int, Layout]:
        """Blocks handed out and not freed since, address -> layout (an observer's record, not the heap's)."""
        ...

    def free_regions(self) -> list[tuple[int, int]]:
        """(address, size) of every region the allocator could hand out again, read from memory."""
        ...


class SpinlockDeadlock(Exception):
    """`lock()` found the spinlock held: on one core it would spin forever (e.g. allocating in a handler that
    interrupted an allocation)."""


A = TypeVar("A")


class Locked(GlobalAlloc, Generic[A]):
    """`Locked<A> { inner: spin::Mutex<A> }` at `addr` in memory, with `GlobalAlloc` for a wrapped allocator.

    spin 0.5's `Mutex<T: ?Sized> { lock: AtomicBool, data: UnsafeCell<T> }`: rustc keeps the possibly unsized
    last field last, so the lock byte is at +0 and `A` at +8 (`LOCKED_DATA`, padded to the allocators' 8-byte
    alignment), as in `LockedHeap`. `lock()` is the `compare_and_swap(false, true)` of `Mutex::lock`, one load
    and one store of the lock byte; the guard's drop stores 0. A subclass is the chapter's `unsafe impl
    GlobalAlloc for Locked<X>`: its `_alloc`/`_dealloc` are the chapter's method bodies. `alloc` and `dealloc`
    open the same `alloc(size, align)`/`dealloc(ptr, size, align)` contexts as `LockedHeap`.

    `live_blocks` is an observer's record kept in Python (which addresses `alloc` returned and `dealloc` has not
    taken back): it checks nothing and changes neither placement nor memory traffic. The chapter's allocators
    do not detect a double or foreign free, and neither do these (see each one's `_dealloc`).
    """

    __slots__ = ("_live", "addr", "cpu", "inner")

    def __init__(self, cpu: Cpu, addr: int, inner: A) -> None:
        self.cpu = cpu
        self.addr = addr
        self.inner = inner
        self._live: dict[int, Layout] = {}

    def _acquire(self) -> None:
        cpu = self.cpu
        if cpu.load_u8(self.addr + LOCKED_LOCK):
            raise SpinlockDeadlock(f"the Locked spinlock at {self.addr:#x} is already held")
        cpu.store_u8(self.addr + LOCKED_LOCK, 1)

    def _release(self) -> None:
        self.cpu.store_u8(self.addr + LOCKED_LOCK, 0)

    def lock(self) -> _LockedGuard[A]:
        """`self.inner.lock()`: `with locked.lock() as inner: ...` holds the spinlock for the block (and
        releases it when the block raises, so that a refused call leaves the allocator usable)."""
        return _LockedGuard(self)

    def alloc(self, layout: Layout) -> int:
        ptr = super().alloc(layout)
        if ptr:
            self._live[ptr] = layout
        return ptr

    def dealloc(self, ptr: int, layout: Layout) -> None:
        super().dealloc(ptr, layout)
        self._live.pop(ptr, None)

    @abstractmethod
    def _alloc(self, layout: Layout) -> int:
        """The chapter's `alloc` body."""

    @abstractmethod
    def _dealloc(self, ptr: int, layout: Layout) -> None:
        """The chapter's `dealloc` body."""

    @abstractmethod
    def free_regions(self) -> list[tuple[int, int]]:
        """(address, size) of every region the allocator could hand out again, read from memory without
        taking the lock (a debugger's view)."""

    def live_blocks(self) -> dict[int, Layout]:
        return dict(self._live)


class _LockedGuard(Generic[A]):
    """The `MutexGuard` of a `Locked<A>`: the wrapped allocator while the lock is held."""

    __slots__ = ("_locked",)

    def __init__(self, locked: Locked[A]) -> None:
        self._locked = locked

    def __enter__(self) -> A:
        self._locked._acquire()
        return self._locked.inner

    def __exit__(self, *exc: object) -> None:
        self._locked._release()


class UsizeField:
    """A `usize` field at `offset` in a struct whose handle has `cpu` and `addr`: reading the attribute is one
    `load_u64`, assigning it one `store_u64`. Code that reads a field twice where rustc -O would keep it in a
    register reads it into a local instead."""

    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.cpu.load_u64(obj.addr + self.offset)

    def __set__(self, obj: Any, value: int) -> None:
        obj.cpu.store_u64(obj.addr + self.offset, value)


# -- the global allocator static -----------------------------------------------------------------------------

DEFAULT_ALLOCATOR = "lla"
ALLOCATORS: dict[str, tuple[str, str]] = {
    # name -> (module, class) of the `#[global_allocator] static ALLOCATOR`, imported when chosen
    "lla": ("firmware.linked_list_allocator", "LockedHeap"),
    "bump": ("firmware.allocator.bump", "LockedBumpAllocator"),
    "linked-list": ("firmware.allocator.linked_list", "LockedLinkedListAllocator"),
    "fixed-size-block": ("firmware.allocator.fixed_size_block", "LockedFixedSizeBlockAllocator"),
}


class UnknownAllocator(ValueError):
    """An allocator name that is not in `ALLOCATORS`."""

    def __init__(self, name: object) -> None:
        super().__init__(f"unknown allocator {name!r}; choose one of {', '.join(ALLOCATORS)}")
        self.name = name


def allocator_class(name: str) -> type:
    """The class of the global allocator static called `name`; raises UnknownAllocator."""
    if not isinstance(name, str) or name not in ALLOCATORS:
        raise UnknownAllocator(name)
    module, cls = ALLOCATORS[name]
    return getattr(importlib.import_module(module), cls)


# The `#[global_allocator] static ALLOCATOR` sits at the start of the kernel's statics region.
ALLOCATOR_OFFSET = 0


def global_allocator(cpu: Cpu, allocator: str = DEFAULT_ALLOCATOR) -> KernelAllocator:
    """The `ALLOCATOR` static as seen from `cpu`: a handle on the allocator named `allocator` (`ALLOCATORS`) at
    `KERNEL_STATICS`; raises UnknownAllocator.

    The handle touches no memory; the loader's zeroed statics are each allocator's `const fn new()` (`empty()`).
    """
    return allocator_class(allocator)(cpu, KERNEL_STATICS + ALLOCATOR_OFFSET)


def init_heap(mapper: OffsetPageTable, frame_allocator: FrameAllocator, heap: KernelAllocator) -> None:
    """Map every page of `[HEAP_START, HEAP_START + HEAP_SIZE)` to a fresh frame (PRESENT | WRITABLE), then
    `heap.lock().init(HEAP_START, HEAP_SIZE)`. Raises MapToError as the seed's `?` returns it; the heap is
    initialised only after all its pages are mapped, since `init` writes the first hole at HEAP_START."""
    cpu = heap.cpu
    if cpu.listener is None:
        _init_heap(mapper, frame_allocator, heap)
        return
    with cpu.context("init_heap"):
        _init_heap(mapper, frame_allocator, heap)


def _init_heap(mapper: OffsetPageTable, frame_allocator: FrameAllocator, heap: KernelAllocator) -> None:
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
