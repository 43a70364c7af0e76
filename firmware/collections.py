"""Rust's `alloc` collections over a `GlobalAlloc`: `Box`, `Vec`, `String`, `Rc` and `Weak`.

What Rust keeps in the heap is in the simulated heap: a Box's value, a Vec's elements, an Rc's `RcBox {
strong, weak, value }` with its counts. What Rust keeps in registers and on the stack (a Vec's `ptr, cap,
len`, a Box or Rc pointer) is a Python object. Placement follows Rust exactly: `Layout`s of the element types
(x86_64 sizes and alignments), `RawVec` growth (first capacity 8, 4 or 1 by element size, then `max(2 * cap,
needed)`, grown with `realloc`), `vec![..]` and `String::from` allocating exactly their length, empty Vecs
and Strings never reaching the allocator, and a null from the allocator ending in `handle_alloc_error`.

Allocators are passed explicitly, as with Rust's `*_in` constructors (`Box::new_in(x, alloc)`), since several
simulated machines may run in one Python process. A handle that was dropped or moved refuses further use
(`UseAfterDrop`), the runtime stand-in for the borrow checker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from firmware.allocator import USIZE_MAX, GlobalAlloc, KernelPanic, Layout, LayoutError, handle_alloc_error
from firmware.cpu import Cpu

WORD = 8  # size_of::<usize>()


class UseAfterDrop(Exception):
    """A collection handle was used after it was dropped or moved (Rust rejects this at compile time)."""


class CapacityOverflow(KernelPanic):
    """`RawVec` could not compute the new capacity's layout: Rust panics with "capacity overflow"."""

    def __init__(self) -> None:
        super().__init__("capacity overflow")


class IndexOutOfBounds(KernelPanic, IndexError):
    """Indexing past the end of a Vec (Rust's bounds-check panic)."""

    def __init__(self, index: int, length: int) -> None:
        super().__init__(f"index out of bounds: the len is {length} but the index is {index}")


class ValueOutOfRange(ValueError):
    """An integer that the element type cannot hold (Rust rejects such literals at compile time)."""


class ValueType(Protocol):
    """What a Box, Vec or Rc needs of the type it stores: its layout and how to move a value in and out."""

    @property
    def layout(self) -> Layout: ...

    def write(self, alloc: GlobalAlloc, addr: int, value: Any) -> None: ...

    def read(self, alloc: GlobalAlloc, addr: int) -> Any: ...

    def drop_in_place(self, alloc: GlobalAlloc, addr: int) -> None: ...


class Scalar:
    """A primitive integer type: x86_64 sizes, alignment equal to size, two's complement in memory."""

    __slots__ = ("high", "layout", "low", "name", "sign_bit", "signed", "size", "size_log2")

    def __init__(self, name: str, size: int, signed: bool) -> None:
        self.name, self.size, self.signed = name, size, signed
        self.layout = Layout(size, size)
        self.size_log2 = size.bit_length() - 1
        bits = 8 * size
        self.sign_bit = 1 << (bits - 1) if signed else 0
        self.low, self.high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def __repr__(self) -> str:
        return self.name

    def check(self, value: int) -> int:
        if type(value) is not int or not self.low <= value <= self.high:
            raise ValueOutOfRange(f"{value!r} is not a {self.name} ({self.low}..={self.high})")
        return value

    def from_raw(self, raw: int) -> int:
        """The value of the bits `raw` loaded from memory."""
        return raw - (self.sign_bit << 1) if raw & self.sign_bit else raw

    def write(self, alloc: GlobalAlloc, addr: int, value: int) -> None:
        alloc.cpu.store(addr, self.size_log2, self.check(value))

    def read(self, alloc: GlobalAlloc, addr: int) -> int:
        return self.from_raw(alloc.cpu.load(addr, self.size_log2))

    def drop_in_place(self, alloc: GlobalAlloc, addr: int) -> None:
        """Integers have no destructor."""


U8, U16, U32, U64 = (Scalar(f"u{8 * size}", size, False) for size in (1, 2, 4, 8))
I8, I16, I32, I64 = (Scalar(f"i{8 * size}", size, True) for size in (1, 2, 4, 8))
USIZE, ISIZE = Scalar("usize", 8, False), Scalar("isize", 8, True)


def _alloc_or_fail(alloc: GlobalAlloc, layout: Layout) -> int:
    ptr = alloc.alloc(layout)
    if not ptr:
        handle_alloc_error(layout)
    return ptr


class _Owned:
    """A handle that owns heap memory until `drop` (also at the end of a `with` block)."""

    __slots__ = ("_alive",)

    def _check_alive(self) -> None:
        if not self._alive:
            raise UseAfterDrop(f"this {type(self).__name__} was already dropped or moved")

    def drop(self) -> None:
        self._check_alive()
        self._alive = False
        self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._alive:
            self.drop()


# ------------------------------------------------------------------------------------------------------------
# Box


class Box(_Owned):
    """`Box<T>`: one value of type `ty` in its own heap block."""

    __slots__ = ("alloc", "ptr", "ty")

    def __init__(self, alloc: GlobalAlloc, ptr: int, ty: ValueType) -> None:
        self.alloc, self.ptr, self.ty, self._alive = alloc, ptr, ty, True

    @classmethod
    def new_in(cls, value: Any, alloc: GlobalAlloc, ty: ValueType = I32) -> Box:
        """`Box::new(value)`: allocate `ty`'s layout, then move the value in (integer literals are i32)."""
        cpu = alloc.cpu
        if cpu.listener is None:
            return cls._new(value, alloc, ty)
        with cpu.context("Box::new({}, {})", ty.layout.size, ty.layout.align):
            return cls._new(value, alloc, ty)

    @classmethod
    def _new(cls, value: Any, alloc: GlobalAlloc, ty: ValueType) -> Box:
        ptr = _alloc_or_fail(alloc, ty.layout)
        ty.write(alloc, ptr, value)
        return cls(alloc, ptr, ty)

    def get(self) -> Any:
        """`*box`."""
        self._check_alive()
        return self.ty.read(self.alloc, self.ptr)

    def set(self, value: Any) -> None:
        """`*box = value` (the old value is dropped first)."""
        self._check_alive()
        self.ty.drop_in_place(self.alloc, self.ptr)
        self.ty.write(self.alloc, self.ptr, value)

    def _release(self) -> None:
        self.ty.drop_in_place(self.alloc, self.ptr)
        self.alloc.dealloc(self.ptr, self.ty.layout)


# ------------------------------------------------------------------------------------------------------------
# Vec


def min_non_zero_cap(element: Layout) -> int:
    """`RawVec::MIN_NON_ZERO_CAP`: 8 for 1-byte elements, 4 up to 1 KiB, else 1."""
    if element.size == 1:
        return 8
    return 4 if element.size <= 1024 else 1


class Vec(_Owned):
    """`Vec<T>` of a `Scalar` element type: `ptr, cap, len` here, the elements in the heap."""

    __slots__ = ("alloc", "borrowed", "cap", "elem", "len", "ptr")

    def __init__(self, alloc: GlobalAlloc, elem: Scalar, ptr: int, cap: int, length: int,
                 borrowed: bool = False) -> None:
        self.alloc, self.elem, self.ptr, self.cap, self.len = alloc, elem, ptr, cap, length
        self.borrowed = borrowed  # a view of a Vec stored inside an Rc: read-only, owned by the Rc
        self._alive = True

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def new_in(cls, alloc: GlobalAlloc, elem: Scalar = I32) -> Vec:
        """`Vec::new()`: no allocation; the pointer is dangling (`align` as an address)."""
        return cls(alloc, elem, elem.size, 0, 0)

    @classmethod
    def with_capacity_in(cls, capacity: int, alloc: GlobalAlloc, elem: Scalar = I32) -> Vec:
        """`Vec::with_capacity(capacity)`: exactly `capacity` elements, allocated at once."""
        vec = cls.new_in(alloc, elem)
        if capacity:
            layout = vec._array_layout(capacity)
            vec.ptr, vec.cap = _alloc_or_fail(alloc, layout), capacity
        return vec

    @classmethod
    def from_iter_in(cls, values: Iterable[int], alloc: GlobalAlloc, elem: Scalar = I32) -> Vec:
        """`vec![a, b, c]`: a boxed slice of exactly the given length, turned into a Vec."""
        items = [elem.check(v) for v in values]
        vec = cls.with_capacity_in(len(items), alloc, elem)
        for i, value in enumerate(items):
            alloc.cpu.store(vec.ptr + i * elem.size, elem.size_log2, value)
        vec.len = len(items)
        return vec

    # -- RawVec growth ---------------------------------------------------------------------------------------
    def _array_layout(self, capacity: int) -> Layout:
        try:
            return Layout.array(self.elem.layout, capacity)
        except LayoutError:
            raise CapacityOverflow() from None

    def reserve(self, additional: int) -> None:
        """`Vec::reserve`: room for `additional` more elements, growing amortized if there is not."""
        self._check_mutable()
        if self.cap - self.len < additional:
            self._grow_amortized(self.len, additional)

    def _grow_amortized(self, length: int, additional: int) -> None:
        required = length + additional
        if required > USIZE_MAX:
            raise CapacityOverflow()
        cap = max(self.cap * 2, required, min_non_zero_cap(self.elem.layout))
        new_layout = self._array_layout(cap)
        alloc = self.alloc
        if self.cap:  # finish_grow: Global::grow, same alignment -> realloc
            ptr = alloc.realloc(self.ptr, self._array_layout(self.cap), new_layout.size)
        else:
            ptr = alloc.alloc(new_layout)
        if not ptr:
            handle_alloc_error(new_layout)
        self.ptr, self.cap = ptr, cap

    # -- elements --------------------------------------------------------------------------------------------
    def push(self, value: int) -> None:
        """`Vec::push`: grow when full, then store the element after the last one."""
        self._check_mutable()
        cpu = self.alloc.cpu
        if cpu.listener is None:
            self._push(value)
            return
        with cpu.context("Vec::push(len {}, cap {})", self.len, self.cap):
            self._push(value)

    def _push(self, value: int) -> None:
        elem = self.elem
        if type(value) is not int or not elem.low <= value <= elem.high:
            elem.check(value)
        if self.len == self.cap:
            self._grow_amortized(self.len, 1)
        self.alloc.cpu.store(self.ptr + self.len * elem.size, elem.size_log2, value)
        self.len += 1

    def pop(self) -> int | None:
        """`Vec::pop`: the last element, or None when empty; the capacity stays."""
        self._check_mutable()
        if not self.len:
            return None
        self.len -= 1
        return self._load(self.len)

    def extend_from_slice(self, values: Iterable[int]) -> None:
        """`Vec::extend_from_slice`: one `reserve` for all of them, then the stores."""
        items = [self.elem.check(v) for v in values]
        self.reserve(len(items))
        store, log2, size = self.alloc.cpu.store, self.elem.size_log2, self.elem.size
        for i, value in enumerate(items, self.len):
            store(self.ptr + i * size, log2, value)
        self.len += len(items)

    def _load(self, index: int) -> int:
        elem = self.elem
        return elem.from_raw(self.alloc.cpu.load(self.ptr + index * elem.size, elem.size_log2))

    def __len__(self) -> int:
        return self.len

    def __getitem__(self, index: int) -> int:
        self._check_alive()
        if not 0 <= index < self.len:
            raise IndexOutOfBounds(index, self.len)
        return self._load(index)

    def __setitem__(self, index: int, value: int) -> None:
        self._check_mutable()
        if not 0 <= index < self.len:
            raise IndexOutOfBounds(index, self.len)
        elem = self.elem
        self.alloc.cpu.store(self.ptr + index * elem.size, elem.size_log2, elem.check(value))

    def __iter__(self) -> Iterator[int]:
        self._check_alive()
        return (self._load(i) for i in range(self.len))

    def to_list(self) -> list[int]:
        return list(self)

    def as_ptr(self) -> int:
        """`vec.as_ptr()` / `{:p}` of `vec.as_slice()`."""
        return self.ptr

    def capacity(self) -> int:
        return self.cap

    # -- ownership -------------------------------------------------------------------------------------------
    def _check_mutable(self) -> None:
        self._check_alive()
        if self.borrowed:
            raise UseAfterDrop("cannot borrow data in an `Rc` as mutable")

    def drop(self) -> None:
        if self.borrowed:
            raise UseAfterDrop("cannot move out of an `Rc`")
        super().drop()

    def _release(self) -> None:
        if self.cap:
            self.alloc.dealloc(self.ptr, self._array_layout(self.cap))

    def _move_out(self) -> tuple[int, int, int]:
        """The (ptr, cap, len) of this Vec, which stops owning them (it was moved into the heap)."""
        self._check_mutable()
        self._alive = False
        return self.ptr, self.cap, self.len


class VecOf(NamedTuple):
    """`Vec<elem>` as a value stored in the heap (in a Box or an Rc): the three words ptr, cap, len."""

    elem: Scalar

    @property
    def layout(self) -> Layout:
        return Layout(3 * WORD, WORD)

    def write(self, alloc: GlobalAlloc, addr: int, value: Vec) -> None:
        """Move `value` into the heap; the Python handle stops owning it."""
        if not isinstance(value, Vec) or value.elem != self.elem:
            raise TypeError(f"expected a Vec<{self.elem.name}>, got {value!r}")
        for offset, word in zip((0, WORD, 2 * WORD), value._move_out(), strict=True):
            alloc.cpu.store_u64(addr + offset, word)

    def read(self, alloc: GlobalAlloc, addr: int) -> Vec:
        """A read-only view of the stored Vec, which its container keeps owning."""
        ptr, cap, length = (alloc.cpu.load_u64(addr + offset) for offset in (0, WORD, 2 * WORD))
        return Vec(alloc, self.elem, ptr, cap, length, borrowed=True)

    def drop_in_place(self, alloc: GlobalAlloc, addr: int) -> None:
        """Drop the stored Vec: free its buffer if it has one."""
        cap = alloc.cpu.load_u64(addr + WORD)
        if cap:
            alloc.dealloc(alloc.cpu.load_u64(addr), Layout.array(self.elem.layout, cap))


# ------------------------------------------------------------------------------------------------------------
# String


class String(_Owned):
    """`String`: UTF-8 bytes in a `Vec<u8>`."""

    __slots__ = ("vec",)

    def __init__(self, vec: Vec) -> None:
        self.vec, self._alive = vec, True

    @classmethod
    def new_in(cls, alloc: GlobalAlloc) -> String:
        """`String::new()`: no allocation."""
        return cls(Vec.new_in(alloc, U8))

    @classmethod
    def from_str_in(cls, text: str, alloc: GlobalAlloc) -> String:
        """`String::from(text)`: exactly `text`'s length in UTF-8 bytes, allocated and copied in."""
        data = text.encode()
        string = cls(Vec.with_capacity_in(len(data), alloc, U8))
        string._append(data)
        return string

    def push_str(self, text: str) -> None:
        """`String::push_str`: one `reserve`, then the bytes."""
        self._check_alive()
        data = text.encode()
        self.vec.reserve(len(data))
        self._append(data)

    def push(self, ch: str) -> None:
        """`String::push`: a one-byte character is a `Vec::push`; a longer one is `extend_from_slice`."""
        self._check_alive()
        if len(ch) != 1:
            raise ValueError(f"push takes one character, got {ch!r}")
        data = ch.encode()
        if len(data) == 1:
            self.vec.push(data[0])
        else:
            self.vec.reserve(len(data))
            self._append(data)

    def _append(self, data: bytes) -> None:
        self.vec.alloc.cpu.write_bytes(self.vec.ptr + self.vec.len, data)
        self.vec.len += len(data)

    def as_str(self) -> str:
        self._check_alive()
        return self.vec.alloc.cpu.read_bytes(self.vec.ptr, self.vec.len).decode()

    def __len__(self) -> int:
        return self.vec.len

    def capacity(self) -> int:
        return self.vec.cap

    def as_ptr(self) -> int:
        return self.vec.ptr

    def _release(self) -> None:
        self.vec.drop()


# ------------------------------------------------------------------------------------------------------------
# Rc and Weak

STRONG = 0  # RcBox { strong: Cell<usize>, weak: Cell<usize>, value: T }, #[repr(C)]
WEAK = WORD


def rc_box_layout(ty: ValueType) -> tuple[Layout, int]:
    """The layout of `RcBox<T>` and the offset of its value: two words of counts, then the value."""
    value_layout = ty.layout
    align = max(WORD, value_layout.align)
    value_offset = -(-2 * WORD // value_layout.align) * value_layout.align
    size = -(-(value_offset + value_layout.size) // align) * align
    return Layout(size, align), value_offset


class Rc(_Owned):
    """`Rc<T>`: a pointer to an `RcBox` whose strong and weak counts live in the heap next to the value.

    The value is dropped when the strong count reaches zero; the RcBox is freed when the weak count does too
    (the strong references together hold one weak reference).
    """

    __slots__ = ("alloc", "ptr", "ty")

    def __init__(self, alloc: GlobalAlloc, ptr: int, ty: ValueType) -> None:
        self.alloc, self.ptr, self.ty, self._alive = alloc, ptr, ty, True

    @classmethod
    def new_in(cls, value: Any, alloc: GlobalAlloc, ty: ValueType = I32) -> Rc:
        """`Rc::new(value)`: allocate the RcBox and write strong = 1, weak = 1 (the strong refs' shared weak
        ref), then the value."""
        cpu = alloc.cpu
        layout, value_offset = rc_box_layout(ty)
        ptr = _alloc_or_fail(alloc, layout)
        cpu.store_u64(ptr + STRONG, 1)
        cpu.store_u64(ptr + WEAK, 1)
        ty.write(alloc, ptr + value_offset, value)
        return cls(alloc, ptr, ty)

    def get(self) -> Any:
        """`*rc` (a Vec comes back as a read-only view)."""
        self._check_alive()
        return self.ty.read(self.alloc, self.ptr + rc_box_layout(self.ty)[1])

    def clone(self) -> Rc:
        """`Rc::clone`: the strong count goes up by one, in memory."""
        self._check_alive()
        _add(self.alloc.cpu, self.ptr + STRONG, 1)
        return Rc(self.alloc, self.ptr, self.ty)

    def downgrade(self) -> Weak:
        """`Rc::downgrade`: the weak count goes up by one."""
        self._check_alive()
        _add(self.alloc.cpu, self.ptr + WEAK, 1)
        return Weak(self.alloc, self.ptr, self.ty)

    def strong_count(self) -> int:
        """`Rc::strong_count(&rc)`, read from the RcBox."""
        self._check_alive()
        return self.alloc.cpu.load_u64(self.ptr + STRONG)

    def weak_count(self) -> int:
        """`Rc::weak_count(&rc)`: the weak count without the strong refs' shared one."""
        self._check_alive()
        return self.alloc.cpu.load_u64(self.ptr + WEAK) - 1

    def _release(self) -> None:
        if _add(self.alloc.cpu, self.ptr + STRONG, -1) == 0:
            layout, value_offset = rc_box_layout(self.ty)
            self.ty.drop_in_place(self.alloc, self.ptr + value_offset)
            if _add(self.alloc.cpu, self.ptr + WEAK, -1) == 0:
                self.alloc.dealloc(self.ptr, layout)


class Weak(_Owned):
    """`Weak<T>`: counts in the weak count only; `upgrade` fails once the value was dropped."""

    __slots__ = ("alloc", "ptr", "ty")

    def __init__(self, alloc: GlobalAlloc, ptr: int, ty: ValueType) -> None:
        self.alloc, self.ptr, self.ty, self._alive = alloc, ptr, ty, True

    def upgrade(self) -> Rc | None:
        """An Rc again (strong count + 1), or None when the strong count is 0."""
        self._check_alive()
        cpu = self.alloc.cpu
        if cpu.load_u64(self.ptr + STRONG) == 0:
            return None
        _add(cpu, self.ptr + STRONG, 1)
        return Rc(self.alloc, self.ptr, self.ty)

    def strong_count(self) -> int:
        self._check_alive()
        return self.alloc.cpu.load_u64(self.ptr + STRONG)

    def _release(self) -> None:
        if _add(self.alloc.cpu, self.ptr + WEAK, -1) == 0:
            self.alloc.dealloc(self.ptr, rc_box_layout(self.ty)[0])


def _add(cpu: Cpu, addr: int, delta: int) -> int:
    """A `Cell<usize>` count: load, add `delta`, store; returns the new value."""
    value = cpu.load_u64(addr) + delta
    cpu.store_u64(addr, value)
    return value
