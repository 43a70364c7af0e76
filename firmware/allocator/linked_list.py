"""blog_os `src/allocator/linked_list.rs`: the chapter's own `LinkedListAllocator` (not the crate), in memory.

`ListNode { size: usize, next: Option<&'static mut ListNode> }` is 16 bytes, `size` at +0 and `next` at +8 (0
is `None`; both fields are 8 bytes with 8-byte alignment, so rustc keeps declaration order). A free region
stores its node in its first 16 bytes. `LinkedListAllocator { head: ListNode }` is the dummy head node (size 0),
at +8 in the `Locked<LinkedListAllocator>` static, after the spinlock byte.

Placement is the chapter's, decision for decision:
- `size_align`: the layout's alignment is raised to 8 (`align_to(align_of::<ListNode>())`), its size rounded up
  to that alignment (`pad_to_align`) and raised to at least 16 (`size_of::<ListNode>()`);
- `alloc` takes the first region in list order (`find_region`) where `align_up(region, align) + size` fits and
  the rest behind the allocation is either 0 or at least 16 bytes (`alloc_from_region`); the region leaves the
  list, the rest behind the allocation is pushed back at the head, and the bytes in front of the aligned start
  (front padding) are lost for good;
- `dealloc` pushes `[ptr, ptr + size)` at the head of the list (`add_free_region`); nothing is ever merged, so
  the list only grows and its regions only shrink.

Memory traffic follows the Rust code as `rustc -O` emits it: a node's `size` is loaded once per region looked
at, a `next` pointer when the code follows or takes it; `Option::take` leaves a 0 in a node that nothing else
overwrites (`region.next.take()` in `find_region`), and a `take` followed by an assignment to the same field is
one store.
"""

from __future__ import annotations

from firmware.allocator import (
    LOCKED_DATA,
    USIZE_MAX,
    AllocatorAssertionFailed,
    KernelPanic,
    Layout,
    LayoutError,
    Locked,
    UsizeField,
    align_up,
)
from firmware.cpu import Cpu

LIST_NODE_SIZE = 16  # mem::size_of::<ListNode>()
LIST_NODE_ALIGN = 8  # mem::align_of::<ListNode>()
NODE_SIZE = 0  # offset of ListNode.size
NODE_NEXT = 8  # offset of ListNode.next


class ListNode:
    """A `ListNode` at `addr`. `end_addr()` loads `size` the first time and keeps it, as the compiled code
    keeps it in a register while it works on one region."""

    __slots__ = ("_end", "addr", "cpu")

    size = UsizeField(NODE_SIZE)
    next = UsizeField(NODE_NEXT)

    def __init__(self, cpu: Cpu, addr: int) -> None:
        self.cpu = cpu
        self.addr = addr
        self._end: int | None = None

    def start_addr(self) -> int:
        return self.addr

    def end_addr(self) -> int:
        if self._end is None:
            self._end = self.addr + self.size
        return self._end


class LinkedListAllocator:
    """The `LinkedListAllocator { head: ListNode }` struct at `addr`; `head` is the dummy node at `addr`."""

    __slots__ = ("addr", "cpu", "head")

    def __init__(self, cpu: Cpu, addr: int) -> None:
        self.cpu = cpu
        self.addr = addr
        self.head = ListNode(cpu, addr)

    def write_new(self) -> None:
        """`LinkedListAllocator::new()`: `head: ListNode::new(0)`, no regions."""
        self.head.size = 0
        self.head.next = 0

    def init(self, heap_start: int, heap_size: int) -> None:
        """`init`: the whole heap becomes the one free region."""
        self.add_free_region(heap_start, heap_size)

    def add_free_region(self, addr: int, size: int) -> None:
        """Push `[addr, addr + size)` at the front of the list, writing its node at `addr`. Panics, as the
        chapter's asserts do, when `addr` is not 8-aligned or `size` is below 16; nothing is written then."""
        # ensure that the freed region is capable of holding ListNode
        aligned = align_up(addr, LIST_NODE_ALIGN)
        if aligned != addr:
            raise AllocatorAssertionFailed(
                f"assertion `left == right` failed\n  left: {aligned}\n right: {addr}")
        if not size >= LIST_NODE_SIZE:
            raise AllocatorAssertionFailed("assertion failed: size >= mem::size_of::<ListNode>()")
        # create a new list node and append it at the start of the list
        node_next = self.head.next  # node.next = self.head.next.take(); the None it leaves is overwritten below
        node = ListNode(self.cpu, addr)
        node.size = size  # node_ptr.write(node)
        node.next = node_next
        self.head.next = addr

    def find_region(self, size: int, align: int) -> tuple[ListNode, int] | None:
        """The first region in list order that `alloc_from_region` accepts, removed from the list, with the
        allocation's start address; None when no region fits."""
        cpu = self.cpu
        # reference to current list node, updated for each iteration
        current = self.head
        region_addr = current.next
        # look for a large enough memory region in linked list
        while region_addr:
            region = ListNode(cpu, region_addr)
            alloc_start = self.alloc_from_region(region, size, align)
            if alloc_start is not None:
                # region suitable for allocation -> remove node from list
                next_ = region.next
                region.next = 0  # region.next.take()
                current.next = next_  # current.next.take() then current.next = next: one store
                return region, alloc_start
            # region not suitable -> continue with next region
            current = region
            region_addr = current.next
        # no suitable region found
        return None

    @staticmethod
    def alloc_from_region(region: ListNode, size: int, align: int) -> int | None:
        """The allocation's start address in `region`, or None (Rust's `Err(())`): the region is too small, or
        the rest behind the allocation is 1..15 bytes, too small to hold a `ListNode`."""
        alloc_start = align_up(region.start_addr(), align)
        alloc_end = alloc_start + size
        if alloc_end > USIZE_MAX:  # checked_add overflowed
            return None
        region_end = region.end_addr()
        if alloc_end > region_end:
            # region too small
            return None
        excess_size = region_end - alloc_end
        if 0 < excess_size < LIST_NODE_SIZE:
            # rest of region too small to hold a ListNode
            return None
        # region suitable for allocation
        return alloc_start

    @staticmethod
    def size_align(layout: Layout) -> tuple[int, int]:
        """The (size, align) actually allocated for `layout`: align at least 8, size a multiple of it and at
        least 16. Panics, as the chapter's `expect` does, when the raised alignment makes the layout invalid."""
        try:
            adjusted = Layout.from_size_align(layout.size, max(layout.align, LIST_NODE_ALIGN))  # align_to
        except LayoutError as err:
            raise KernelPanic("adjusting alignment failed: LayoutError") from err
        size = align_up(adjusted.size, adjusted.align)  # pad_to_align
        return max(size, LIST_NODE_SIZE), adjusted.align

    def regions(self) -> list[tuple[int, int]]:
        """(address, size) of every free region in list order (a debugging view; no lock)."""
        out = []
        current = self.head.next
        while current:
            node = ListNode(self.cpu, current)
            out.append((current, node.size))
            current = node.next
        return out


class LockedLinkedListAllocator(Locked[LinkedListAllocator]):
    """`unsafe impl GlobalAlloc for Locked<LinkedListAllocator>`, the static at `addr`.

    Misuse: `dealloc` pushes whatever it is given. The only misuse the chapter's code catches is a pointer that
    is not 8-aligned (`add_free_region`'s `assert_eq!`, an AllocatorAssertionFailed before anything is written);
    a double or foreign free puts the region in the list a second time or adds memory that was never the
    heap's, which later allocations then hand out.
    """

    __slots__ = ()

    def __init__(self, cpu: Cpu, addr: int) -> None:
        super().__init__(cpu, addr, LinkedListAllocator(cpu, addr + LOCKED_DATA))

    def write_new(self) -> None:
        """`Locked::new(LinkedListAllocator::new())`: unlocked, empty list."""
        self._release()
        self.inner.write_new()

    def _alloc(self, layout: Layout) -> int:
        # perform layout adjustments
        size, align = LinkedListAllocator.size_align(layout)
        with self.lock() as allocator:
            found = allocator.find_region(size, align)
            if found is None:
                return 0
            region, alloc_start = found
            alloc_end = alloc_start + size  # checked_add cannot fail: alloc_from_region checked it
            excess_size = region.end_addr() - alloc_end
            if excess_size > 0:
                allocator.add_free_region(alloc_end, excess_size)
            return alloc_start

    def _dealloc(self, ptr: int, layout: Layout) -> None:
        # perform layout adjustments
        size, _ = LinkedListAllocator.size_align(layout)
        with self.lock() as allocator:
            allocator.add_free_region(ptr, size)

    def free_regions(self) -> list[tuple[int, int]]:
        return self.inner.regions()
