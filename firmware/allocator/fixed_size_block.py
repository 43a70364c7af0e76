"""blog_os `src/allocator/fixed_size_block.rs`: the chapter's `FixedSizeBlockAllocator`, in simulated memory.

`ListNode { next: Option<&'static mut ListNode> }` is one pointer (8 bytes, 0 is `None`), written into the first
8 bytes of a free block. The struct is

    FixedSizeBlockAllocator {
        list_heads: [Option<&'static mut ListNode>; 9],   // +0: one head per BLOCK_SIZES entry, 72 bytes
        fallback_allocator: linked_list_allocator::Heap,  // +72: the crate's Heap, 40 bytes (our 0.9.1 port)
    }

112 bytes, at +8 in the `Locked<FixedSizeBlockAllocator>` static (120 bytes in all). Rust's default layout
may reorder fields; it orders them by alignment and moves a field with a large niche to an end. Both fields
here have 8-byte alignment and neither has a niche left to offer (`Option<&mut _>` spends its null niche on
`None`, and `Heap` is usizes plus such an `Option`), so we take declaration order, which is what rustc
produces for this struct today. The choice moves only where the allocator's own loads and stores land in the
statics page, never where a block is placed.

Placement is the chapter's: `list_index` is the first of `BLOCK_SIZES` that is at least `max(size, align)`;
`alloc` pops the head of that list, or, when the list is empty, allocates one block of exactly that size and
alignment from the fallback (`allocate_first_fit`, the crate's first fit over its address-ordered, merging hole
list); requests above 2048 go to the fallback with their own layout. `dealloc` pushes the block on its list
(writing a `ListNode` into it) or gives a large one back to the fallback. Blocks never return from the lists to
the fallback.

Memory traffic follows the Rust code as `rustc -O` emits it: `list_heads[index].take()` is one load, plus a
store only where nothing overwrites the `None` it leaves (it never needs one here); `node.next.take()` loads the
popped node's `next` and leaves a 0 in it.
"""

from __future__ import annotations

from firmware.allocator import (
    LOCKED_DATA,
    USIZE,
    AllocatorAssertionFailed,
    KernelPanic,
    Layout,
    Locked,
)
from firmware.cpu import Cpu
from firmware.linked_list_allocator import Heap
from firmware.linked_list_allocator.heap import HEAP_LAYOUT

BLOCK_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
"""The block sizes to use; each is also the block's alignment, so each must be a power of 2."""

LIST_NODE_SIZE = USIZE  # mem::size_of::<ListNode>()
LIST_NODE_ALIGN = USIZE  # mem::align_of::<ListNode>()
NODE_NEXT = 0  # offset of ListNode.next

LIST_HEADS = 0  # offset of FixedSizeBlockAllocator.list_heads
FALLBACK_ALLOCATOR = LIST_HEADS + len(BLOCK_SIZES) * USIZE  # offset of FixedSizeBlockAllocator.fallback_allocator
FIXED_SIZE_BLOCK_LAYOUT = Layout(FALLBACK_ALLOCATOR + HEAP_LAYOUT.size, USIZE)


def list_index(layout: Layout) -> int | None:
    """Choose an appropriate block size for the given layout: the index into `BLOCK_SIZES` of the first block
    size >= `max(layout.size, layout.align)`, or None when the request is larger than every block."""
    required_block_size = max(layout.size, layout.align)
    for index, block_size in enumerate(BLOCK_SIZES):
        if block_size >= required_block_size:
            return index
    return None


class FixedSizeBlockAllocator:
    """The `FixedSizeBlockAllocator` struct at `addr`. The loader's zeroed statics are `new()`: every list
    head `None`, the fallback `Heap::empty()`."""

    __slots__ = ("addr", "cpu", "fallback_allocator")

    def __init__(self, cpu: Cpu, addr: int) -> None:
        self.cpu = cpu
        self.addr = addr
        self.fallback_allocator = Heap(cpu, addr + FALLBACK_ALLOCATOR)

    def list_head(self, index: int) -> int:
        """`list_heads[index]`: the address of the first free block of `BLOCK_SIZES[index]` bytes, or 0."""
        return self.cpu.load_u64(self.addr + LIST_HEADS + index * USIZE)

    def set_list_head(self, index: int, node: int) -> None:
        self.cpu.store_u64(self.addr + LIST_HEADS + index * USIZE, node)

    def write_new(self) -> None:
        """`FixedSizeBlockAllocator::new()`: empty lists, `Heap::empty()`."""
        for index in range(len(BLOCK_SIZES)):
            self.set_list_head(index, 0)
        self.fallback_allocator.write_empty()

    def init(self, heap_start: int, heap_size: int) -> None:
        """`init`: the fallback gets the whole heap; the lists start empty and fill lazily."""
        self.fallback_allocator.init(heap_start, heap_size)

    def fallback_alloc(self, layout: Layout) -> int:
        """Allocates using the fallback allocator: its address, or 0 (null) for `Err`."""
        return self.fallback_allocator.allocate_first_fit(layout) or 0

    def blocks(self, index: int) -> list[int]:
        """The addresses on the list of `BLOCK_SIZES[index]`-byte blocks, head first (a debugging view)."""
        out = []
        node = self.list_head(index)
        while node:
            out.append(node)
            node = self.cpu.load_u64(node + NODE_NEXT)
        return out


class LockedFixedSizeBlockAllocator(Locked[FixedSizeBlockAllocator]):
    """`unsafe impl GlobalAlloc for Locked<FixedSizeBlockAllocator>`, the static at `addr`.

    Misuse: a block `dealloc` puts on a list is not checked at all, as in the chapter: a double or foreign free
    links it in (a second time), and later allocations hand it out. A pointer that is not 8-aligned makes the
    `ListNode` store an AlignmentCheck fault (x86 would store it; Rust calls it undefined). A large block goes
    to the fallback's `deallocate`, where our crate port refuses a double or foreign free or a wrong layout
    (`firmware.linked_list_allocator.InvalidFree`) before touching memory; a null pointer panics in
    `NonNull::new(ptr).unwrap()`.
    """

    __slots__ = ()

    def __init__(self, cpu: Cpu, addr: int) -> None:
        super().__init__(cpu, addr, FixedSizeBlockAllocator(cpu, addr + LOCKED_DATA))

    def write_new(self) -> None:
        """`Locked::new(FixedSizeBlockAllocator::new())`: unlocked, empty."""
        self._release()
        self.inner.write_new()

    def _alloc(self, layout: Layout) -> int:
        with self.lock() as allocator:
            index = list_index(layout)
            if index is None:
                return allocator.fallback_alloc(layout)
            node = allocator.list_head(index)  # list_heads[index].take()
            if node:
                next_ = self.cpu.load_u64(node + NODE_NEXT)  # node.next.take()
                self.cpu.store_u64(node + NODE_NEXT, 0)
                allocator.set_list_head(index, next_)
                return node
            # no block exists in list => allocate new block
            block_size = BLOCK_SIZES[index]
            # only works if all block sizes are a power of 2
            block_align = block_size
            return allocator.fallback_alloc(Layout.from_size_align(block_size, block_align))

    def _dealloc(self, ptr: int, layout: Layout) -> None:
        with self.lock() as allocator:
            index = list_index(layout)
            if index is not None:
                new_node_next = allocator.list_head(index)  # ListNode { next: list_heads[index].take() }
                # verify that block has size and alignment required for storing node
                if BLOCK_SIZES[index] < LIST_NODE_SIZE:
                    raise AllocatorAssertionFailed(
                        "assertion failed: mem::size_of::<ListNode>() <= BLOCK_SIZES[index]")
                if BLOCK_SIZES[index] < LIST_NODE_ALIGN:
                    raise AllocatorAssertionFailed(
                        "assertion failed: mem::align_of::<ListNode>() <= BLOCK_SIZES[index]")
                self.cpu.store_u64(ptr + NODE_NEXT, new_node_next)  # new_node_ptr.write(new_node)
                allocator.set_list_head(index, ptr)
            else:
                if not ptr:
                    raise KernelPanic("called `Option::unwrap()` on a `None` value")
                allocator.fallback_allocator.deallocate(ptr, layout)

    def free_regions(self) -> list[tuple[int, int]]:
        """Every block on every list, (address, block size), then the fallback's holes."""
        allocator = self.inner
        regions = [(block, size) for index, size in enumerate(BLOCK_SIZES) for block in allocator.blocks(index)]
        return regions + allocator.fallback_allocator.holes.holes()
