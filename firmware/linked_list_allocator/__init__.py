"""A mirror of the Rust crate `linked_list_allocator` 0.9.1 whose heap metadata lives in simulated memory.

`hole` is the algorithm (the address-ordered free list), `heap` the public `Heap` and `LockedHeap` API.
"""

from firmware.linked_list_allocator.heap import (
    DoubleFree,
    ForeignFree,
    Heap,
    InvalidFree,
    LayoutMismatch,
    LockedHeap,
    SpinlockDeadlock,
)
from firmware.linked_list_allocator.hole import HoleList, InvalidDeallocation, align_up

__all__ = [
    "DoubleFree",
    "ForeignFree",
    "Heap",
    "HoleList",
    "InvalidDeallocation",
    "InvalidFree",
    "LayoutMismatch",
    "LockedHeap",
    "SpinlockDeadlock",
    "align_up",
]
