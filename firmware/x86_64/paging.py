"""`x86_64::structures::paging`: page sizes, `Page`, `PhysFrame`, `PageTableFlags` and page-table entries.

Pages and frames share their arithmetic (`containing_address`, `+ n`, ranges), so one base class serves both;
they differ in the address type (`VirtAddr` vs `PhysAddr`). The page size is a class (`Size4KiB`, `Size2MiB`,
`Size1GiB`) passed where Rust has a type parameter: `Page.containing_address(addr, Size2MiB)` is
`Page::<Size2MiB>::containing_address(addr)`; the default is 4 KiB, as in the crate. Mixing sizes where Rust's
types would not compile (a 2 MiB page with a 4 KiB frame) is a TypeError.

A `PageTableEntry` is one 64-bit value as loaded from RAM (a register, not a copy of a table); a `PageTable`
is a view of a table *in the simulated RAM* whose every index reads or writes memory through the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntFlag
from functools import total_ordering
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar, overload

from hdl.protocol import (
    ENTRIES_PER_TABLE,
    HUGE_1G_SHIFT,
    HUGE_2M_SHIFT,
    PAGE_SIZE,
    Pte,
    pte_addr_mask,
)

from .addr import PHYS_ADDR_BITS, U64_MAX, PhysAddr, VirtAddr, u64

if TYPE_CHECKING:
    from firmware.cpu import Cpu

# ------------------------------------------------------------------------------------------------------------
# Rust enums as exception families


E = TypeVar("E", bound=type)


def enum_variant(base: type, name: str) -> Callable[[E], E]:
    """Class decorator: publish the class as `base.<name>`, as Rust names an enum variant (`Enum::Variant`).

    Each variant is a subclass of its enum's base class, so `except MapToError:` catches every variant and
    `except MapToError.PageAlreadyMapped:` one of them.
    """

    def attach(cls: E) -> E:
        cls.__name__ = name
        cls.__qualname__ = f"{base.__qualname__}.{name}"
        setattr(base, name, cls)
        return cls

    return attach


class PageTablePanic(RuntimeError):
    """An assertion of the crate failed (Rust panics): an argument or a table breaks an API invariant."""


# ------------------------------------------------------------------------------------------------------------
# Flags


class PageTableFlags(IntFlag):
    """The flags of a page-table entry, with the crate's names and the bit numbers of `hdl.protocol.Pte`.

    The crate also names the bits the OS may use (BIT_9..BIT_11, BIT_52..BIT_62); they are not listed here,
    but `from_bits_truncate` and `PageTableEntry.flags()` keep them, as the crate does.
    """

    PRESENT = Pte.PRESENT
    WRITABLE = Pte.WRITABLE
    USER_ACCESSIBLE = Pte.USER_ACCESSIBLE
    WRITE_THROUGH = Pte.WRITE_THROUGH
    NO_CACHE = Pte.NO_CACHE
    ACCESSED = Pte.ACCESSED
    DIRTY = Pte.DIRTY
    HUGE_PAGE = Pte.HUGE_PAGE
    GLOBAL = Pte.GLOBAL
    NO_EXECUTE = Pte.NO_EXECUTE

    @classmethod
    def empty(cls) -> PageTableFlags:
        return cls(0)

    @classmethod
    def from_bits_truncate(cls, bits: int) -> PageTableFlags:
        """Every bit of `bits` outside the address field (bits 12..51)."""
        return cls(bits & ENTRY_FLAG_BITS)

    def contains(self, other: int) -> bool:
        """All bits of `other` are set (bitflags' `contains`)."""
        return self & other == other

    def bits(self) -> int:
        return int(self)


ENTRY_ADDR_MASK = pte_addr_mask(PHYS_ADDR_BITS)  # 0x000f_ffff_ffff_f000: 52 bits, whatever MAXPHYADDR is
ENTRY_FLAG_BITS = U64_MAX & ~ENTRY_ADDR_MASK

# ------------------------------------------------------------------------------------------------------------
# Page sizes


class PageSize:
    """A page size, used as a type (never instantiated): `SIZE` bytes, `DEBUG_STR` for repr."""

    SIZE: ClassVar[int]
    DEBUG_STR: ClassVar[str]


class Size4KiB(PageSize):
    SIZE = PAGE_SIZE
    DEBUG_STR = "4KiB"


class Size2MiB(PageSize):
    SIZE = 1 << HUGE_2M_SHIFT
    DEBUG_STR = "2MiB"


class Size1GiB(PageSize):
    SIZE = 1 << HUGE_1G_SHIFT
    DEBUG_STR = "1GiB"


PAGE_SIZES: tuple[type[PageSize], ...] = (Size4KiB, Size2MiB, Size1GiB)

# ------------------------------------------------------------------------------------------------------------
# Pages and frames


class AddressNotAligned(ValueError):
    """The address is not a multiple of the page size (the crate's `AddressNotAligned`)."""

    def __init__(self, address: VirtAddr | PhysAddr, size: type[PageSize]) -> None:
        super().__init__(f"the given address was not sufficiently aligned: {address!r} ({size.DEBUG_STR})")
        self.address = address


A = TypeVar("A", VirtAddr, PhysAddr)
B = TypeVar("B", bound="_Block")


@total_ordering
class _Block(Generic[A]):
    """A naturally aligned block of one address space: what Page and PhysFrame have in common."""

    __slots__ = ("_size", "_start")
    _ADDRESS: ClassVar[type]  # VirtAddr or PhysAddr
    _MAX_ADDRESS: ClassVar[int]  # the highest address of that space

    def __init__(self, start_address: A, size: type[PageSize] = Size4KiB) -> None:
        """The block starting at `start_address`; AddressNotAligned if it is not a multiple of the size."""
        self._check_address(start_address)
        if size not in PAGE_SIZES:
            raise TypeError(f"page size must be Size4KiB, Size2MiB or Size1GiB, got {size!r}")
        if not start_address.is_aligned(size.SIZE):
            raise AddressNotAligned(start_address, size)
        self._start = start_address
        self._size = size

    @classmethod
    def from_start_address(cls: type[B], address: A, size: type[PageSize] = Size4KiB) -> B:
        return cls(address, size)

    @classmethod
    def containing_address(cls: type[B], address: A, size: type[PageSize] = Size4KiB) -> B:
        cls._check_address(address)
        return cls(address.align_down(size.SIZE), size)

    @classmethod
    def _check_address(cls, address: object) -> None:
        if not isinstance(address, cls._ADDRESS):
            raise TypeError(f"{cls.__name__} needs a {cls._ADDRESS.__name__}, got {address!r}")

    def start_address(self) -> A:
        return self._start

    def size(self) -> int:
        """The size in bytes."""
        return self._size.SIZE

    @property
    def size_class(self) -> type[PageSize]:
        """The size as a type (`Size4KiB`, ...), the crate's type parameter `S`."""
        return self._size

    @classmethod
    def range(cls: type[B], start: B, end: B) -> PageRange[B]:
        """The blocks from `start` up to, not including, `end`."""
        return PageRange(start, end)

    @classmethod
    def range_inclusive(cls: type[B], start: B, end: B) -> PageRangeInclusive[B]:
        """The blocks from `start` up to and including `end`."""
        return PageRangeInclusive(start, end)

    def _same_size(self, other: _Block[A]) -> None:
        if type(other) is not type(self) or other._size is not self._size:
            raise TypeError(f"cannot mix {self!r} and {other!r}")

    def __add__(self: B, count: int) -> B:
        return self.containing_address(self._start + u64(count, "count") * self._size.SIZE, self._size)

    @overload
    def __sub__(self: B, other: B) -> int: ...

    @overload
    def __sub__(self: B, other: int) -> B: ...

    def __sub__(self: B, other: B | int) -> B | int:
        """`block - n` is the block n earlier; `block - block` counts the blocks between them."""
        if isinstance(other, _Block):
            self._same_size(other)
            return (self._start - other._start) // self._size.SIZE
        return self.containing_address(self._start - u64(other, "count") * self._size.SIZE, self._size)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._start == self._start and other._size is self._size

    def __lt__(self, other: _Block[A]) -> bool:
        self._same_size(other)
        return self._start < other._start

    def __hash__(self) -> int:
        return hash((type(self), self._start, self._size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}[{self._size.DEBUG_STR}]({self._start.as_u64():#x})"


class Page(_Block[VirtAddr]):
    """A virtual memory page (`Page<S>`)."""

    __slots__ = ()
    _ADDRESS = VirtAddr
    _MAX_ADDRESS = U64_MAX

    def p4_index(self) -> int:
        return self._start.p4_index()

    def p3_index(self) -> int:
        return self._start.p3_index()

    def p2_index(self) -> int:
        """Defined for 4 KiB and 2 MiB pages only (the crate's `NotGiantPageSize`)."""
        if self._size is Size1GiB:
            raise TypeError("a 1 GiB page has no level 2 index")
        return self._start.p2_index()

    def p1_index(self) -> int:
        """Defined for 4 KiB pages only."""
        if self._size is not Size4KiB:
            raise TypeError(f"a {self._size.DEBUG_STR} page has no level 1 index")
        return self._start.p1_index()

    def page_table_index(self, level: int) -> int:
        return self._start.page_table_index(level)


class PhysFrame(_Block[PhysAddr]):
    """A physical memory frame (`PhysFrame<S>`)."""

    __slots__ = ()
    _ADDRESS = PhysAddr
    _MAX_ADDRESS = (1 << PHYS_ADDR_BITS) - 1


@dataclass(frozen=True)
class PageRange(Generic[B]):
    """Blocks `start` up to, not including, `end` (`PageRange` / `PhysFrameRange`); iterable many times."""

    start: B
    end: B

    def is_empty(self) -> bool:
        return self.start >= self.end

    def len(self) -> int:
        """The number of blocks (a method, as in Rust: see PageRangeInclusive.len for why not `__len__`)."""
        return 0 if self.is_empty() else self.end - self.start

    def size(self) -> int:
        """The bytes of all blocks in the range."""
        return self.start.size() * self.len()

    def __iter__(self) -> Iterator[B]:
        block, end = self.start, self.end
        while block < end:
            yield block
            block = block + 1


@dataclass(frozen=True)
class PageRangeInclusive(Generic[B]):
    """Blocks `start` up to and including `end` (`PageRangeInclusive` / `PhysFrameRangeInclusive`).

    Iterates as the crate does: `start + 1` each step (so a page range jumps the non-canonical hole), and at
    the last block of the address space it stops instead of overflowing. The crate's frame ranges panic there;
    ours stop too.
    """

    start: B
    end: B

    def is_empty(self) -> bool:
        return self.start > self.end

    def len(self) -> int:
        """`(end - start) / size + 1`. Not `__len__`: across the hole it counts the hole's pages, and `list()`
        would try to preallocate that many."""
        return 0 if self.is_empty() else self.end - self.start + 1

    def size(self) -> int:
        """The bytes of all blocks in the range."""
        return self.start.size() * self.len()

    def __iter__(self) -> Iterator[B]:
        block, end = self.start, self.end
        last_start = block._MAX_ADDRESS - (block.size() - 1)
        while block <= end:
            yield block
            if block.start_address().as_u64() < last_start:
                block = block + 1
            else:
                end = end - 1


PhysFrameRange = PageRange
PhysFrameRangeInclusive = PageRangeInclusive

# ------------------------------------------------------------------------------------------------------------
# Entries and tables


class FrameError(Exception):
    """Why `PageTableEntry.frame` has no 4 KiB frame to return."""

    FrameNotPresent: ClassVar[type[FrameError]]
    HugeFrame: ClassVar[type[FrameError]]


@enum_variant(FrameError, "FrameNotPresent")
class _FrameNotPresent(FrameError):
    """The entry does not have the PRESENT flag set."""


@enum_variant(FrameError, "HugeFrame")
class _HugeFrame(FrameError):
    """The entry has HUGE_PAGE set: it maps a huge frame, not a table or a 4 KiB frame."""


@dataclass(frozen=True)
class PageTableEntry:
    """One 64-bit page-table entry, as loaded from RAM: the address bits 12..51 and the flags around them."""

    raw: int

    @classmethod
    def from_addr(cls, addr: PhysAddr, flags: PageTableFlags) -> PageTableEntry:
        """`set_addr`: the entry mapping `addr` (4 KiB aligned, else a panic) with `flags`."""
        if not addr.is_aligned(Size4KiB.SIZE):
            raise PageTablePanic(f"entry address {addr!r} is not 4 KiB aligned")
        return cls(addr.as_u64() | int(flags))

    @classmethod
    def from_frame(cls, frame: PhysFrame, flags: PageTableFlags) -> PageTableEntry:
        """`set_frame`: an entry pointing at a table or a 4 KiB frame; HUGE_PAGE in `flags` is a panic."""
        if frame.size_class is not Size4KiB:
            raise TypeError(f"set_frame takes a 4 KiB frame, got {frame!r}")
        if PageTableFlags.HUGE_PAGE in flags:
            raise PageTablePanic("set_frame with HUGE_PAGE: use set_addr for huge frames")
        return cls.from_addr(frame.start_address(), flags)

    def is_unused(self) -> bool:
        """The whole entry is zero (a non-present entry with other bits set is *used*)."""
        return self.raw == 0

    def flags(self) -> PageTableFlags:
        return PageTableFlags.from_bits_truncate(self.raw)

    def addr(self) -> PhysAddr:
        return PhysAddr(self.raw & ENTRY_ADDR_MASK)

    def frame(self) -> PhysFrame:
        """The 4 KiB frame (a table or a page) the entry points at; FrameError if not present or huge."""
        if not self.raw & Pte.PRESENT:
            raise FrameError.FrameNotPresent(f"entry {self.raw:#x} is not present")
        if self.raw & Pte.HUGE_PAGE:
            raise FrameError.HugeFrame(f"entry {self.raw:#x} maps a huge page")
        return PhysFrame.containing_address(self.addr())

    def with_flags(self, flags: PageTableFlags) -> PageTableEntry:
        """`set_flags`: the same address with `flags` in place of all the old flags."""
        return PageTableEntry(self.addr().as_u64() | int(flags))

    def __repr__(self) -> str:
        return f"PageTableEntry(addr={self.addr()!r}, flags={self.flags()!r})"


UNUSED_ENTRY = PageTableEntry(0)


class PageTable:
    """A page table in the simulated RAM, seen at virtual address `start` (Rust's `&mut PageTable`).

    Indexing loads or stores the entry through the CPU every time: nothing is cached on the Python side, so
    the MMU's A/D updates and other writers are always seen.
    """

    __slots__ = ("_base", "_cpu")

    def __init__(self, cpu: Cpu, start: VirtAddr) -> None:
        if not isinstance(start, VirtAddr):
            raise TypeError(f"a page table is reached at a VirtAddr, got {start!r}")
        if not start.is_aligned(PAGE_SIZE):
            raise PageTablePanic(f"a page table must be 4 KiB aligned, got {start!r}")
        self._cpu = cpu
        self._base = start.as_u64()

    @property
    def cpu(self) -> Cpu:
        """The CPU whose loads and stores reach this table."""
        return self._cpu

    def start_address(self) -> VirtAddr:
        return VirtAddr(self._base)

    def entry_address(self, index: int) -> int:
        """The virtual address of entry `index` (0..511)."""
        if not 0 <= index < ENTRIES_PER_TABLE:
            raise IndexError(f"page-table index {index} outside 0..{ENTRIES_PER_TABLE - 1}")
        return self._base + 8 * index

    def __getitem__(self, index: int) -> PageTableEntry:
        return PageTableEntry(self._cpu.load_u64(self.entry_address(index)))

    def __setitem__(self, index: int, entry: PageTableEntry) -> None:
        self._cpu.store_u64(self.entry_address(index), entry.raw)

    def __len__(self) -> int:
        return ENTRIES_PER_TABLE

    def zero(self) -> None:
        """Clear all 512 entries (512 stores: the bursts a trace shows where a new table is made)."""
        with self._cpu.context("PageTable::zero"):
            self._cpu.fill(self._base, PAGE_SIZE)

    def __repr__(self) -> str:
        return f"PageTable(at {self._base:#x})"
