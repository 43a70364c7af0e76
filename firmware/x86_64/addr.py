"""`x86_64::addr`: canonical virtual addresses and 52-bit physical addresses.

Mirrors the crate at 0.14: `VirtAddr::new` accepts an address whose bits 47..63 are all 0 or all 1 *and* one
whose bits 48..63 are 0 while bit 47 is 1, which it sign-extends (so `VirtAddr.new(0x8000_0000_0000)` is
`0xffff_8000_0000_0000`); anything else is `VirtAddrNotValid`. Both `new` (a panic in Rust) and `try_new` (an
`Err` in Rust) raise it here. Adding to a `VirtAddr` goes through `new`, so a sum that lands just past the
lower half jumps the non-canonical hole, exactly as in the crate.
"""

from __future__ import annotations

from functools import total_ordering
from typing import Self, overload

from hdl.protocol import ENTRIES_PER_TABLE, LEVEL_BITS, PAGE_SHIFT, PAGE_SIZE

U64_MAX = (1 << 64) - 1
PHYS_ADDR_BITS = 52  # the architectural limit; bits 52..63 of a physical address must be zero


class VirtAddrNotValid(ValueError):
    """Bits 48..63 are neither a sign extension of bit 47 nor all zero (the crate's `VirtAddrNotValid`)."""

    def __init__(self, addr: int) -> None:
        super().__init__(
            f"address passed to VirtAddr::new must not contain any data in bits 48 to 64: {addr:#x}"
        )
        self.addr = addr


class PhysAddrNotValid(ValueError):
    """A bit in 52..63 is set (the crate's `PhysAddrNotValid`)."""

    def __init__(self, addr: int) -> None:
        super().__init__(f"physical addresses must not have any bits in the range 52 to 64 set: {addr:#x}")
        self.addr = addr


def u64(value: int, what: str = "value") -> int:
    """`value` if it fits a Rust `u64`, else OverflowError (Rust arithmetic panics on overflow)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= U64_MAX:
        raise OverflowError(f"{what} {value:#x} does not fit in a u64")
    return value


def align_down(addr: int, align: int) -> int:
    """The greatest multiple of `align` (a power of two) that is <= `addr`."""
    _check_power_of_two(align)
    return addr & ~(align - 1)


def align_up(addr: int, align: int) -> int:
    """The smallest multiple of `align` (a power of two) that is >= `addr`; OverflowError past u64."""
    _check_power_of_two(align)
    mask = align - 1
    if addr & mask == 0:
        return addr
    return u64((addr | mask) + 1, "aligned address")


def _check_power_of_two(align: int) -> None:
    if u64(align, "align") == 0 or align & (align - 1):
        raise ValueError(f"`align` must be a power of two, got {align}")


def _sign_extend_47(addr: int) -> int:
    """Bits 48..63 set to copies of bit 47 (`new_truncate`)."""
    low = addr & ((1 << 48) - 1)
    return low | (0xFFFF << 48) if low >> 47 else low


@total_ordering
class _Address:
    """What `VirtAddr` and `PhysAddr` share: a checked u64 with u64 arithmetic, compared only with its own kind.

    Subclasses check the value in `__init__` (`new`) and say how to drop invalid bits in `new_truncate`.
    """

    __slots__ = ("_addr",)
    _addr: int

    @classmethod
    def new(cls, addr: int) -> Self:
        return cls(addr)

    @classmethod
    def try_new(cls, addr: int) -> Self:
        """The same check as `new`; the crate's `Err(...)` is raised."""
        return cls(addr)

    @classmethod
    def new_truncate(cls, addr: int) -> Self:
        raise NotImplementedError

    @classmethod
    def zero(cls) -> Self:
        return cls(0)

    def as_u64(self) -> int:
        return self._addr

    def __int__(self) -> int:
        return self._addr

    def is_null(self) -> bool:
        return self._addr == 0

    @classmethod
    def _from_aligned(cls, addr: int) -> Self:
        """How an aligned value becomes an address: `new`, which checks (PhysAddr, as in the crate)."""
        return cls(addr)

    def align_up(self, align: int) -> Self:
        return self._from_aligned(align_up(self._addr, align))

    def align_down(self, align: int) -> Self:
        return self._from_aligned(align_down(self._addr, align))

    def is_aligned(self, align: int) -> bool:
        return self.align_down(align) == self

    def __add__(self, rhs: int) -> Self:
        return type(self)(u64(self._addr + u64(rhs, "offset"), "address"))

    @overload
    def __sub__(self, rhs: Self) -> int: ...

    @overload
    def __sub__(self, rhs: int) -> Self: ...

    def __sub__(self, rhs: int | Self) -> Self | int:
        """`addr - u64` is an address of the same kind; `addr - addr` is the distance (u64, no underflow)."""
        if isinstance(rhs, type(self)):
            return u64(self._addr - rhs._addr, "address difference")
        return type(self)(u64(self._addr - u64(rhs, "offset"), "address"))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._addr == self._addr

    def __lt__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._addr < other._addr

    def __hash__(self) -> int:
        return hash((type(self), self._addr))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._addr:#x})"


class VirtAddr(_Address):
    """A canonical 64-bit virtual address. `VirtAddr(x)` is `VirtAddr::new(x)`."""

    __slots__ = ()

    def __init__(self, addr: int) -> None:
        top = u64(addr, "virtual address") >> 47
        if top in (0, 0x1FFFF):
            self._addr = addr
        elif top == 1:  # bit 47 set, bits 48..63 clear: the crate sign-extends
            self._addr = _sign_extend_47(addr)
        else:
            raise VirtAddrNotValid(addr)

    @classmethod
    def new_truncate(cls, addr: int) -> VirtAddr:
        """Throw away bits 48..63 and sign-extend bit 47 (never fails)."""
        return cls(_sign_extend_47(u64(addr, "virtual address")))

    @classmethod
    def _from_aligned(cls, addr: int) -> VirtAddr:
        """The crate's `VirtAddr::align_up`/`align_down` truncate rather than check."""
        return cls.new_truncate(addr)

    def page_offset(self) -> int:
        """The 12-bit offset inside a 4 KiB page (the crate's `PageOffset`, as an int)."""
        return self._addr & (PAGE_SIZE - 1)

    def page_table_index(self, level: int) -> int:
        """The 9-bit index into the table of `level` (1 = P1 ... 4 = P4), the crate's `PageTableIndex`."""
        if level not in (1, 2, 3, 4):
            raise ValueError(f"page-table level must be 1..4, got {level}")
        return (self._addr >> (PAGE_SHIFT + LEVEL_BITS * (level - 1))) & (ENTRIES_PER_TABLE - 1)

    def p1_index(self) -> int:
        return self.page_table_index(1)

    def p2_index(self) -> int:
        return self.page_table_index(2)

    def p3_index(self) -> int:
        return self.page_table_index(3)

    def p4_index(self) -> int:
        return self.page_table_index(4)


class PhysAddr(_Address):
    """A physical address with bits 52..63 zero. `PhysAddr(x)` is `PhysAddr::new(x)`."""

    __slots__ = ()

    def __init__(self, addr: int) -> None:
        if u64(addr, "physical address") >> PHYS_ADDR_BITS:
            raise PhysAddrNotValid(addr)
        self._addr = addr

    @classmethod
    def new_truncate(cls, addr: int) -> PhysAddr:
        """Throw away bits 52..63 (never fails)."""
        return cls(u64(addr, "physical address") % (1 << PHYS_ADDR_BITS))
