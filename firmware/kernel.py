"""blog_os `main.rs` at the end of the heap-allocation chapter: `kernel_main`, line for line.

The bootloader runs first (`boot`), then `kernel_main` builds the mapper and the frame allocator, maps and
initialises the heap, and puts a Box, a growing Vec and a reference-counted Vec on it. `demo_dummy` is the
chapter's earlier kernel, whose `Dummy` global allocator makes the first `Box::new` end in the
`#[alloc_error_handler]` panic.

`demo` takes `allocator`, the name of the `#[global_allocator]` static (`firmware.allocator.ALLOCATORS`:
`lla`, the seed's `linked_list_allocator::LockedHeap`, by default; `bump`, `linked-list` or `fixed-size-block`
from the next chapter); an unknown name raises `UnknownAllocator` before the machine boots.

Deliberate differences: `blog_os::init()` (GDT, IDT, PIC) has no MMU traffic and is left out; `println!`
prints and also collects the lines, which the entry points return; the global allocator is passed to the
collections explicitly (`Box::new_in`) instead of being found through `#[global_allocator]`.
"""

from __future__ import annotations

from firmware import memory
from firmware.allocator import (
    DEFAULT_ALLOCATOR,
    AllocError,
    Dummy,
    KernelAllocator,
    KernelPanic,
    allocator_class,
    global_allocator,
    init_heap,
)
from firmware.boot import BootInfo, boot
from firmware.collections import I32, Box, Rc, Vec, VecOf
from firmware.cpu import Cpu
from firmware.memory import BootInfoFrameAllocator
from firmware.x86_64.addr import VirtAddr
from firmware.x86_64.mapper import MapToError


class Console:
    """`println!`: each line is printed and kept, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def println(self, line: str) -> None:
        print(line)
        self.lines.append(line)


def start(cpu: Cpu) -> BootInfo:
    """The bootloader's part: page tables, paging on; then the jump to the kernel with the BootInfo."""
    with cpu.context("boot"):
        return boot(cpu)


def init_kernel_heap(cpu: Cpu, boot_info: BootInfo, allocator: str = DEFAULT_ALLOCATOR) -> KernelAllocator:
    """The lines of `kernel_main` (and of the test kernel's `main`) that set up memory and the heap, with the
    global allocator static named `allocator`."""
    with cpu.context("memory::init"):
        phys_mem_offset = VirtAddr.new(boot_info.physical_memory_offset)
        mapper = memory.init(cpu, phys_mem_offset)
    frame_allocator = BootInfoFrameAllocator.init(boot_info.memory_map)

    heap = global_allocator(cpu, allocator)
    try:
        init_heap(mapper, frame_allocator, heap)
    except MapToError as err:
        raise KernelPanic(f"heap initialization failed: {type(err).__name__}") from err
    return heap


def kernel_main(cpu: Cpu, boot_info: BootInfo, console: Console, allocator: str = DEFAULT_ALLOCATOR) -> None:
    console.println("Hello World!")
    alloc = init_kernel_heap(cpu, boot_info, allocator)

    with cpu.context("kernel_main"):
        # allocate a number on the heap
        heap_value = Box.new_in(41, alloc)
        console.println(f"heap_value at {heap_value.ptr:#x}")

        # create a dynamically sized vector
        vec = Vec.new_in(alloc)
        for i in range(500):
            vec.push(i)
        console.println(f"vec at {vec.as_ptr():#x}")

        # create a reference counted vector -> will be freed when count reaches 0
        reference_counted = Rc.new_in(Vec.from_iter_in([1, 2, 3], alloc), alloc, VecOf(I32))
        cloned_reference = reference_counted.clone()
        console.println(f"current reference count is {cloned_reference.strong_count()}")
        reference_counted.drop()
        console.println(f"reference count is {cloned_reference.strong_count()} now")

    console.println("It did not crash!")


def kernel_main_dummy(cpu: Cpu, boot_info: BootInfo, console: Console) -> None:
    """The chapter's kernel before the heap exists: `#[global_allocator] static ALLOCATOR: Dummy`."""
    console.println("Hello World!")
    with cpu.context("memory::init"):
        memory.init(cpu, VirtAddr.new(boot_info.physical_memory_offset))
    BootInfoFrameAllocator.init(boot_info.memory_map)

    with cpu.context("kernel_main"):
        Box.new_in(41, Dummy(cpu))

    console.println("It did not crash!")


def demo(cpu: Cpu, allocator: str = DEFAULT_ALLOCATOR) -> list[str]:
    """Boot and run `kernel_main` on the global allocator named `allocator`; the printed lines. A panic or fault
    propagates: it is a failure here."""
    allocator_class(allocator)  # an unknown name fails before the machine boots
    console = Console()
    kernel_main(cpu, start(cpu), console, allocator)
    return console.lines


def demo_dummy(cpu: Cpu) -> list[str]:
    """Boot and run the Dummy-allocator kernel. Its allocation failure is the expected result: the lines end
    with the panic message of the seed's `alloc_error_handler`."""
    console = Console()
    try:
        kernel_main_dummy(cpu, start(cpu), console)
    except AllocError as err:
        console.println(f"panicked at '{err.seed_panic_message}'")
    return console.lines
