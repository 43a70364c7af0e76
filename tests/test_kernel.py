"""The seed's kernel on the reference backend: `kernel_main`'s output, the Dummy allocator's panic, the heap
before and after `init_heap`, and the integration tests of `tests/heap_allocation.rs`."""

from __future__ import annotations

import pytest

from cosim.backends import open_backend
from cosim.program import ContextLog
from firmware import heap_allocation_tests, memory
from firmware.allocator import HEAP_SIZE, HEAP_START, Layout, global_allocator, init_heap
from firmware.boot import KERNEL_STATICS, boot
from firmware.cpu import Cpu, PageFault
from firmware.heap_allocation_tests import AssertionFailed, assert_eq
from firmware.kernel import demo, demo_dummy
from firmware.memory import BootInfoFrameAllocator, EmptyFrameAllocator
from firmware.x86_64.addr import VirtAddr
from firmware.x86_64.mapper import MapToError
from firmware.x86_64.paging import PageTableFlags
from hdl.protocol import PAGE_SIZE, ErrorCode


@pytest.fixture
def cpu() -> Cpu:
    return Cpu(open_backend("reference"))


def test_demo_prints_the_seed_lines(cpu: Cpu, capsys: pytest.CaptureFixture[str]) -> None:
    lines = demo(cpu)
    assert lines == [
        "Hello World!",
        "heap_value at 0x444444440000",
        "vec at 0x444444440800",
        "current reference count is 2",
        "reference count is 1 now",
        "It did not crash!",
    ]
    assert capsys.readouterr().out.splitlines() == lines


def test_demo_dummy_ends_with_the_alloc_error_handler_panic(cpu: Cpu) -> None:
    assert demo_dummy(cpu) == ["Hello World!", "panicked at 'allocation error: Layout { size: 4, align: 4 }'"]


def test_demo_phases_and_labels(cpu: Cpu) -> None:
    cpu.listener = log = ContextLog()
    demo(cpu)
    phases = [span.label for span in log.spans if span.depth == 0]
    assert phases == ["boot", "memory::init", "init_heap", "kernel_main"]
    pages = HEAP_SIZE // PAGE_SIZE
    labels = [span.label for span in log.spans]
    assert sum(label.startswith("map_to(") for label in labels) == pages
    assert sum(label.startswith("flush(") for label in labels) == pages
    assert "Box::new(4, 4)" in labels
    assert labels.count("Vec::push(len 0, cap 0)") == 1


def _boot_mapper(cpu: Cpu) -> tuple[memory.OffsetPageTable, BootInfoFrameAllocator]:
    boot_info = boot(cpu)
    mapper = memory.init(cpu, boot_info.physical_memory_offset)
    return mapper, BootInfoFrameAllocator.init(boot_info.memory_map)


def test_heap_start_page_faults_before_init_heap(cpu: Cpu) -> None:
    _boot_mapper(cpu)
    with pytest.raises(PageFault) as caught:
        cpu.load_u64(HEAP_START)
    assert caught.value.addr == HEAP_START == 0x4444_4444_0000
    assert cpu.read_cr2() == HEAP_START
    assert caught.value.error_code & ErrorCode.P == 0  # not present


def test_init_heap_maps_the_heap_and_writes_the_first_hole(cpu: Cpu) -> None:
    mapper, frame_allocator = _boot_mapper(cpu)
    heap = global_allocator(cpu)
    init_heap(mapper, frame_allocator, heap)
    for offset in range(0, HEAP_SIZE, PAGE_SIZE):
        mapped = mapper.translate(VirtAddr(HEAP_START + offset))
        assert mapped.flags & (PageTableFlags.PRESENT | PageTableFlags.WRITABLE) == (
            PageTableFlags.PRESENT | PageTableFlags.WRITABLE
        )
    assert mapper.translate_addr(VirtAddr(HEAP_START + HEAP_SIZE)) is None  # 100 KiB is exactly 25 pages
    assert (cpu.load_u64(HEAP_START), cpu.load_u64(HEAP_START + 8)) == (HEAP_SIZE, 0)
    # the LockedHeap static: lock, bottom, size, used, holes.first (size 0, next = the first hole)
    static = [cpu.load_u64(KERNEL_STATICS + 8 * i) for i in range(6)]
    assert static == [0, HEAP_START, HEAP_SIZE, 0, 0, HEAP_START]


def test_init_heap_without_frames_reports_frame_allocation_failed(cpu: Cpu) -> None:
    mapper, _ = _boot_mapper(cpu)
    heap = global_allocator(cpu)
    with pytest.raises(MapToError.FrameAllocationFailed):
        init_heap(mapper, EmptyFrameAllocator(), heap)
    assert heap.alloc(Layout(4, 4)) == 0  # the heap was never initialised: LockedHeap::empty()


def test_simple_allocation(cpu: Cpu) -> None:
    summary = heap_allocation_tests.simple_allocation(cpu)
    assert summary["boxes"] == ["0x444444440000", "0x444444440010"]
    assert summary["leaked_blocks"] == 0


def test_large_vec(cpu: Cpu) -> None:
    summary = heap_allocation_tests.large_vec(cpu)
    assert (summary["n"], summary["sum"], summary["capacity"]) == (1000, 499500, 1024)
    # u64 buffers of 32, 64, ... 8192 bytes: each lands above the merged older ones, at 2 * size - 32
    assert summary["vec"] == f"{HEAP_START + 8192 - 32:#x}"
    assert summary["leaked_blocks"] == 0


def test_many_boxes_reduced(cpu: Cpu) -> None:
    summary = heap_allocation_tests.many_boxes(cpu, n=2000)
    assert (summary["boxes"], summary["last_box"], summary["leaked_blocks"]) == (2000, "0x444444440000", 0)


def test_many_boxes_long_lived_reduced(cpu: Cpu) -> None:
    summary = heap_allocation_tests.many_boxes_long_lived(cpu, n=2000)
    assert (summary["long_lived"], summary["last_box"]) == ("0x444444440000", "0x444444440010")
    assert summary["leaked_blocks"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["many_boxes", "many_boxes_long_lived"])
def test_many_boxes_full_size(cpu: Cpu, name: str) -> None:
    summary = getattr(heap_allocation_tests, name)(cpu)
    assert (summary["n"], summary["boxes"], summary["leaked_blocks"]) == (HEAP_SIZE, HEAP_SIZE, 0)


def test_all_tests_in_one_boot(cpu: Cpu) -> None:
    assert heap_allocation_tests.main(cpu, n=50) == [
        "Running 4 tests", "simple_allocation... [ok]", "large_vec... [ok]", "many_boxes... [ok]",
        "many_boxes_long_lived... [ok]",
    ]


def test_assert_eq_failure_is_a_panic_with_both_sides() -> None:
    with pytest.raises(AssertionFailed, match="left: 1\n right: 2"):
        assert_eq(1, 2)


def test_n_must_be_positive(cpu: Cpu) -> None:
    with pytest.raises(ValueError, match="n must be at least 1"):
        heap_allocation_tests.many_boxes(cpu, n=0)
