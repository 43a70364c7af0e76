"""`x86_64::structures::paging::mapper`: `OffsetPageTable`, `MapperFlush` and the mapper errors (crate 0.14).

`OffsetPageTable` reaches every page-table frame at `phys_offset + physical address`, as the crate's
`MappedPageTable<PhysOffset>` does; here every entry is a `cpu.load_u64`/`cpu.store_u64` there. One class
covers the crate's `Mapper<Size4KiB>`, `Mapper<Size2MiB>` and `Mapper<Size1GiB>` impls: the page's size class
chooses.

Behaviour reproduced from the crate, including its corners:
- `map_to` passes `flags & (PRESENT | WRITABLE | USER_ACCESSIBLE)` as parent-table flags. A missing parent
  table is allocated, entered with exactly those flags and zeroed; an *existing* parent entry that lacks some
  of them gets them OR-ed in (so a USER_ACCESSIBLE mapping makes its existing parents user-accessible) — even
  when that parent entry is a huge page, which is then reported as ParentEntryHugePage after the write.
- `PageAlreadyMapped` carries the frame that was passed in, not the one already mapped.
- `translate` reports a P1 entry that is non-zero but not PRESENT as mapped (the crate checks `is_unused`
  there).
- a PRESENT entry with HUGE_PAGE in the P4 table is a panic in `translate` (`PageTablePanic` here).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from .addr import PhysAddr, VirtAddr
from .paging import (
    UNUSED_ENTRY,
    AddressNotAligned,
    FrameError,
    Page,
    PageTable,
    PageTableEntry,
    PageTableFlags,
    PageTablePanic,
    PhysFrame,
    Size1GiB,
    Size2MiB,
    Size4KiB,
    enum_variant,
)

if TYPE_CHECKING:
    from firmware.cpu import Cpu

PARENT_FLAGS_FROM_LEAF = PageTableFlags.PRESENT | PageTableFlags.WRITABLE | PageTableFlags.USER_ACCESSIBLE
_LEAF_LEVEL = {Size4KiB: 1, Size2MiB: 2, Size1GiB: 3}  # the table level holding a page's leaf entry


class FrameAllocator(Protocol):
    """`FrameAllocator<Size4KiB>`: hands out unused 4 KiB frames, or None when there are none left."""

    def allocate_frame(self) -> PhysFrame | None: ...


# ------------------------------------------------------------------------------------------------------------
# Flush promises


class MustUseWarning(UserWarning):
    """A `#[must_use]` value was dropped unused. A UserWarning, shown by default, as rustc always shows it."""


class MapperFlush:
    """A page whose mapping changed and may still be cached in the TLB: `flush()` it or `ignore()` it.

    Dropping it unused warns with MustUseWarning, as Rust's `#[must_use]` does. Each promise is used once.
    """

    __slots__ = ("_cpu", "_page", "_used")

    def __init__(self, cpu: Cpu, page: Page) -> None:
        self._cpu = cpu
        self._page = page
        self._used = False

    @property
    def page(self) -> Page:
        return self._page

    def flush(self) -> None:
        """`invlpg` the page, so the next access walks the new tables."""
        self._consume()
        self._cpu.invlpg(self._page.start_address().as_u64())

    def ignore(self) -> None:
        """Do not flush (the caller knows the TLB cannot hold the page) and silence the warning."""
        self._consume()

    def _consume(self) -> None:
        if self._used:
            raise RuntimeError(f"{self!r} was already flushed or ignored")
        self._used = True

    def __del__(self) -> None:
        if not getattr(self, "_used", True):
            warnings.warn(
                f"Page Table changes must be flushed or ignored: {self._page!r}", MustUseWarning, stacklevel=2
            )

    def __repr__(self) -> str:
        return f"MapperFlush({self._page!r})"


# ------------------------------------------------------------------------------------------------------------
# Errors (Rust enums; each variant is a subclass reachable as `Enum.Variant`)


class MapToError(Exception):
    """Why `map_to` failed."""

    FrameAllocationFailed: ClassVar[type[MapToError]]
    ParentEntryHugePage: ClassVar[type[MapToError]]
    PageAlreadyMapped: ClassVar[type[_PageAlreadyMapped]]


@enum_variant(MapToError, "FrameAllocationFailed")
class _MapFrameAllocationFailed(MapToError):
    """A page table was needed, but the frame allocator returned None."""

    def __init__(self) -> None:
        super().__init__("frame allocation failed")


@enum_variant(MapToError, "ParentEntryHugePage")
class _MapParentEntryHugePage(MapToError):
    """An upper-level entry has HUGE_PAGE: the page is part of an already mapped huge page."""

    def __init__(self) -> None:
        super().__init__("parent entry is a huge page")


@enum_variant(MapToError, "PageAlreadyMapped")
class _PageAlreadyMapped(MapToError):
    """The page is already mapped; `frame` is the frame passed to `map_to` (as in the crate)."""

    def __init__(self, frame: PhysFrame) -> None:
        super().__init__(f"page already mapped (asked to map it to {frame!r})")
        self.frame = frame


class UnmapError(Exception):
    """Why `unmap` failed."""

    ParentEntryHugePage: ClassVar[type[UnmapError]]
    PageNotMapped: ClassVar[type[UnmapError]]
    InvalidFrameAddress: ClassVar[type[_UnmapInvalidFrameAddress]]


@enum_variant(UnmapError, "ParentEntryHugePage")
class _UnmapParentEntryHugePage(UnmapError):
    """An entry on the way is a huge page (or, for a huge page, the entry is not one)."""

    def __init__(self) -> None:
        super().__init__("parent entry is a huge page")


@enum_variant(UnmapError, "PageNotMapped")
class _UnmapPageNotMapped(UnmapError):
    def __init__(self) -> None:
        super().__init__("page not mapped")


@enum_variant(UnmapError, "InvalidFrameAddress")
class _UnmapInvalidFrameAddress(UnmapError):
    """The entry's address is not aligned to the page size."""

    def __init__(self, addr: PhysAddr) -> None:
        super().__init__(f"invalid frame address {addr!r}")
        self.addr = addr


class FlagUpdateError(Exception):
    """Why `update_flags` failed."""

    PageNotMapped: ClassVar[type[FlagUpdateError]]
    ParentEntryHugePage: ClassVar[type[FlagUpdateError]]


@enum_variant(FlagUpdateError, "PageNotMapped")
class _FlagPageNotMapped(FlagUpdateError):
    def __init__(self) -> None:
        super().__init__("page not mapped")


@enum_variant(FlagUpdateError, "ParentEntryHugePage")
class _FlagParentEntryHugePage(FlagUpdateError):
    def __init__(self) -> None:
        super().__init__("parent entry is a huge page")


class TranslateError(Exception):
    """Why `translate_page` failed."""

    PageNotMapped: ClassVar[type[TranslateError]]
    ParentEntryHugePage: ClassVar[type[TranslateError]]
    InvalidFrameAddress: ClassVar[type[_TranslateInvalidFrameAddress]]


@enum_variant(TranslateError, "PageNotMapped")
class _TranslatePageNotMapped(TranslateError):
    def __init__(self) -> None:
        super().__init__("page not mapped")


@enum_variant(TranslateError, "ParentEntryHugePage")
class _TranslateParentEntryHugePage(TranslateError):
    def __init__(self) -> None:
        super().__init__("parent entry is a huge page")


@enum_variant(TranslateError, "InvalidFrameAddress")
class _TranslateInvalidFrameAddress(TranslateError):
    def __init__(self, addr: PhysAddr) -> None:
        super().__init__(f"invalid frame address {addr!r}")
        self.addr = addr


_WalkErrors = type[UnmapError] | type[FlagUpdateError] | type[TranslateError]

# ------------------------------------------------------------------------------------------------------------
# Translation results


class TranslateResult:
    """What `translate` found: `TranslateResult.Mapped`, `.NotMapped` or `.InvalidFrameAddress`."""

    Mapped: ClassVar[type[_Mapped]]
    NotMapped: ClassVar[type[_NotMapped]]
    InvalidFrameAddress: ClassVar[type[_InvalidFrameAddress]]


@enum_variant(TranslateResult, "Mapped")
@dataclass(frozen=True)
class _Mapped(TranslateResult):
    """Mapped to `frame` (its size class is the page size) at `offset` inside it, by an entry with `flags`."""

    frame: PhysFrame
    offset: int
    flags: PageTableFlags


@enum_variant(TranslateResult, "NotMapped")
@dataclass(frozen=True)
class _NotMapped(TranslateResult):
    """No mapping."""


@enum_variant(TranslateResult, "InvalidFrameAddress")
@dataclass(frozen=True)
class _InvalidFrameAddress(TranslateResult):
    """The leaf entry's address is not a valid frame start.

    Never produced by `translate` (a P1 entry's address is always 4 KiB aligned, in the crate too); kept so
    that code matching on it reads as in Rust.
    """

    addr: PhysAddr


# ------------------------------------------------------------------------------------------------------------
# The mapper


class OffsetPageTable:
    """`OffsetPageTable<'a>`: a mapper whose page-table frames are all visible at `phys_offset + phys`."""

    def __init__(self, level_4_table: PageTable, phys_offset: VirtAddr) -> None:
        """`OffsetPageTable::new`: `level_4_table` must be the active P4 seen through `phys_offset`."""
        if not isinstance(level_4_table, PageTable) or not isinstance(phys_offset, VirtAddr):
            raise TypeError(f"OffsetPageTable needs a PageTable and a VirtAddr, got {level_4_table!r}, {phys_offset!r}")
        self._level_4_table = level_4_table
        self._cpu = level_4_table.cpu
        self._phys_offset = phys_offset

    def level_4_table(self) -> PageTable:
        return self._level_4_table

    def phys_offset(self) -> VirtAddr:
        return self._phys_offset

    # -- Mapper ----------------------------------------------------------------------------------------------
    def map_to(
        self, page: Page, frame: PhysFrame, flags: PageTableFlags, frame_allocator: FrameAllocator
    ) -> MapperFlush:
        """Map `page` to `frame` with `flags`; parents get `flags & (PRESENT | WRITABLE | USER_ACCESSIBLE)`.

        Raises MapToError. At most three frames are taken from `frame_allocator`, for missing tables.
        """
        parent_table_flags = flags & PARENT_FLAGS_FROM_LEAF
        return self.map_to_with_table_flags(page, frame, flags, parent_table_flags, frame_allocator)

    def map_to_with_table_flags(
        self,
        page: Page,
        frame: PhysFrame,
        flags: PageTableFlags,
        parent_table_flags: PageTableFlags,
        frame_allocator: FrameAllocator,
    ) -> MapperFlush:
        """`map_to` with explicit flags for the parent entries: set in new ones, OR-ed into existing ones."""
        leaf_level = _leaf_level(page, frame)
        table = self._level_4_table
        for level in range(4, leaf_level, -1):
            index = page.page_table_index(level)
            table = self._create_next_table(table, index, parent_table_flags, frame_allocator)
        index = page.page_table_index(leaf_level)
        if not table[index].is_unused():
            raise MapToError.PageAlreadyMapped(frame)
        if leaf_level == 1:
            table[index] = PageTableEntry.from_frame(frame, flags)
        else:
            table[index] = PageTableEntry.from_addr(frame.start_address(), flags | PageTableFlags.HUGE_PAGE)
        return MapperFlush(self._cpu, page)

    def unmap(self, page: Page) -> tuple[PhysFrame, MapperFlush]:
        """Remove the mapping of `page`; return the frame it mapped and the flush promise. Raises UnmapError.

        No page table is freed, as in the crate.
        """
        leaf_level = _leaf_level(page)
        table = self._leaf_table(page, leaf_level, UnmapError)
        index = page.page_table_index(leaf_level)
        entry = table[index]
        if leaf_level == 1:
            try:
                frame = entry.frame()
            except FrameError.FrameNotPresent:
                raise UnmapError.PageNotMapped() from None
            except FrameError.HugeFrame:
                raise UnmapError.ParentEntryHugePage() from None
        else:
            flags = entry.flags()
            if PageTableFlags.PRESENT not in flags:
                raise UnmapError.PageNotMapped()
            if PageTableFlags.HUGE_PAGE not in flags:
                raise UnmapError.ParentEntryHugePage()
            try:
                frame = PhysFrame.from_start_address(entry.addr(), page.size_class)
            except AddressNotAligned:
                raise UnmapError.InvalidFrameAddress(entry.addr()) from None
        table[index] = UNUSED_ENTRY
        return frame, MapperFlush(self._cpu, page)

    def update_flags(self, page: Page, flags: PageTableFlags) -> MapperFlush:
        """Replace all flags of `page`'s leaf entry (HUGE_PAGE kept on huge pages). Raises FlagUpdateError."""
        leaf_level = _leaf_level(page)
        table = self._leaf_table(page, leaf_level, FlagUpdateError)
        index = page.page_table_index(leaf_level)
        entry = table[index]
        if entry.is_unused():
            raise FlagUpdateError.PageNotMapped()
        table[index] = entry.with_flags(flags if leaf_level == 1 else flags | PageTableFlags.HUGE_PAGE)
        return MapperFlush(self._cpu, page)

    def translate_page(self, page: Page) -> PhysFrame:
        """The frame `page` maps, assuming a mapping of the page's own size. Raises TranslateError."""
        leaf_level = _leaf_level(page)
        entry = self._leaf_table(page, leaf_level, TranslateError)[page.page_table_index(leaf_level)]
        if entry.is_unused():
            raise TranslateError.PageNotMapped()
        try:
            return PhysFrame.from_start_address(entry.addr(), page.size_class)
        except AddressNotAligned:
            raise TranslateError.InvalidFrameAddress(entry.addr()) from None

    # -- Translate -------------------------------------------------------------------------------------------
    def translate(self, addr: VirtAddr) -> TranslateResult:
        """The frame, offset and leaf flags that `addr` maps to, for pages of every size."""
        table = self._level_4_table
        for level, size in ((4, None), (3, Size1GiB), (2, Size2MiB)):
            entry = table[addr.page_table_index(level)]
            try:
                table = self._frame_to_table(entry.frame())
            except FrameError.FrameNotPresent:
                return TranslateResult.NotMapped()
            except FrameError.HugeFrame:
                if size is None:
                    raise PageTablePanic("level 4 entry has huge page bit set") from None
                frame = PhysFrame.containing_address(entry.addr(), size)
                return TranslateResult.Mapped(frame, addr.as_u64() & (size.SIZE - 1), entry.flags())
        entry = table[addr.p1_index()]
        if entry.is_unused():
            return TranslateResult.NotMapped()
        return TranslateResult.Mapped(PhysFrame(entry.addr()), addr.page_offset(), entry.flags())

    def translate_addr(self, addr: VirtAddr) -> PhysAddr | None:
        """The physical address `addr` maps to, or None."""
        result = self.translate(addr)
        if isinstance(result, TranslateResult.Mapped):
            return result.frame.start_address() + result.offset
        return None

    # -- walking ---------------------------------------------------------------------------------------------
    def _frame_to_table(self, frame: PhysFrame) -> PageTable:
        return PageTable(self._cpu, self._phys_offset + frame.start_address().as_u64())

    def _leaf_table(self, page: Page, leaf_level: int, errors: _WalkErrors) -> PageTable:
        """The table holding the leaf entry of `page`, reached through present, non-huge entries only."""
        table = self._level_4_table
        for level in range(4, leaf_level, -1):
            try:
                table = self._frame_to_table(table[page.page_table_index(level)].frame())
            except FrameError.FrameNotPresent:
                raise errors.PageNotMapped() from None
            except FrameError.HugeFrame:
                raise errors.ParentEntryHugePage() from None
        return table

    def _create_next_table(
        self, table: PageTable, index: int, insert_flags: PageTableFlags, frame_allocator: FrameAllocator
    ) -> PageTable:
        """The table that entry `index` of `table` points at; allocated, entered, zeroed if unused."""
        entry = table[index]
        created = entry.is_unused()
        if created:
            frame = frame_allocator.allocate_frame()
            if frame is None:
                raise MapToError.FrameAllocationFailed()
            entry = PageTableEntry.from_frame(frame, insert_flags)
            table[index] = entry
        elif insert_flags and not entry.flags().contains(insert_flags):
            entry = entry.with_flags(entry.flags() | insert_flags)
            table[index] = entry
        try:
            next_table = self._frame_to_table(entry.frame())
        except FrameError.HugeFrame:
            raise MapToError.ParentEntryHugePage() from None
        except FrameError.FrameNotPresent:
            raise PageTablePanic("entry should be mapped at this point (parent flags lack PRESENT)") from None
        if created:
            next_table.zero()
        return next_table


def _leaf_level(page: Page, frame: PhysFrame | None = None) -> int:
    """The level of the table holding `page`'s entry; TypeError where Rust's types would not match."""
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {page!r}")
    if frame is not None and (not isinstance(frame, PhysFrame) or frame.size_class is not page.size_class):
        raise TypeError(f"cannot map {page!r} to {frame!r}: page and frame sizes differ")
    return _LEAF_LEVEL[page.size_class]
