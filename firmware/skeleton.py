"""Firmware for the walking skeleton: paging off, physical RAM and CSRs, on every backend.

Programs for `cosim.runner.run_program` ("firmware.skeleton:memory_roundtrip", ...). They live in the package, not in
tests/, because the cocotb backends import them inside the simulator process.
"""

from __future__ import annotations

from firmware.cpu import Cpu, CpuFault, PageFault
from hdl.protocol import CR0_PG, PAGE_SIZE, Csr, Pte, table_index

SCRATCH = 0x1000  # a physical address every RAM size holds


def memory_roundtrip(cpu: Cpu, base: int = SCRATCH) -> dict[str, int]:
    """Store and load every access size, build one word from sub-word stores, and touch the last word of RAM.

    Returns what each load saw, by name, for comparison between backends and with the little-endian arithmetic.
    """
    seen: dict[str, int] = {}
    cpu.store_u64(base, 0x0123_4567_89AB_CDEF)
    seen["u64"] = cpu.load_u64(base)
    cpu.store_u32(base + 8, 0xDEAD_BEEF)
    seen["u32"] = cpu.load_u32(base + 8)
    cpu.store_u16(base + 12, 0xCAFE)
    seen["u16"] = cpu.load_u16(base + 12)
    cpu.store_u8(base + 15, 0x5A)
    seen["u8"] = cpu.load_u8(base + 15)

    # One word assembled from a byte, a byte, a half-word and a word, then one byte overwritten in its middle.
    word = base + 16
    cpu.store_u64(word, 0xFFFF_FFFF_FFFF_FFFF)
    cpu.store_u8(word, 0x11)
    cpu.store_u8(word + 1, 0x22)
    cpu.store_u16(word + 2, 0x4433)
    cpu.store_u32(word + 4, 0x8877_6655)
    seen["assembled"] = cpu.load_u64(word)
    cpu.store_u8(word + 5, 0xAA)
    seen["patched"] = cpu.load_u64(word)
    seen["patched_low_u32"] = cpu.load_u32(word)
    seen["patched_high_u32"] = cpu.load_u32(word + 4)
    seen["patched_u16_at_4"] = cpu.load_u16(word + 4)
    seen["patched_u8_at_5"] = cpu.load_u8(word + 5)

    # An unaligned byte string, split by the Cpu into the widest aligned accesses.
    cpu.write_bytes(word + 8 + 3, b"walking skeleton")
    seen["string"] = int.from_bytes(cpu.read_bytes(word + 8 + 3, 16), "little")

    top = cpu.read_csr(Csr.CFG_MEM_BYTES) - 8
    seen["mem_bytes"] = top + 8
    cpu.store_u64(top, 0x7E57_0F_7A11)
    seen["last_word"] = cpu.load_u64(top)
    return seen


def misaligned_load(cpu: Cpu) -> int:
    """A 4-byte load from an address that is not a multiple of 4: an AlignmentCheck."""
    return cpu.load_u32(SCRATCH + 2)


def load_beyond_ram(cpu: Cpu) -> int:
    """A load from the first byte after RAM: a BusError."""
    return cpu.load_u64(cpu.read_csr(Csr.CFG_MEM_BYTES))


def read_unknown_csr(cpu: Cpu) -> int:
    """A read of a CSR address the map does not list: a GeneralProtection."""
    return cpu.read_csr(0x7FF)


def write_read_only_csr(cpu: Cpu) -> None:
    """A write to a read-only configuration CSR: a GeneralProtection."""
    cpu.write_csr(Csr.CFG_MEM_BYTES, 1)


def nested_contexts(cpu: Cpu) -> int:
    """Three operations in two nested named contexts, for the span log."""
    with cpu.context("outer"):
        cpu.store_u64(SCRATCH, 1)
        with cpu.context("inner"):
            cpu.store_u64(SCRATCH + 8, 2)
        return cpu.load_u64(SCRATCH) + cpu.load_u64(SCRATCH + 8)


def caught_faults(cpu: Cpu) -> list[tuple[str, int]]:
    """Provoke each fault of the skeleton and catch it, as a kernel's handler would: (exception name, address)."""
    faults = []
    for provoke in (misaligned_load, load_beyond_ram, read_unknown_csr, write_read_only_csr):
        try:
            provoke(cpu)
        except CpuFault as fault:
            faults.append((type(fault).__name__, fault.addr))
    return faults


class KernelPanic(Exception):
    """A firmware error that is no CPU fault; its __init__ does not take its own args, as with CpuFault."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"kernel panic: {reason} (code {code})")
        self.code = code


def panics(cpu: Cpu) -> None:
    """Store one word, then fail the way buggy firmware does: the caller must see a KernelPanic."""
    cpu.store_u64(SCRATCH, 1)
    raise KernelPanic("deliberate", code=7)


def repeated_loads(cpu: Cpu, count: int = 10_000) -> int:
    """`count` loads of one word (a TLB hit each, once paging is on): the backends' throughput on the hot path."""
    cpu.store_u64(SCRATCH, 1)
    total = 0
    load = cpu.load_u64
    for _ in range(count):
        total += load(SCRATCH)
    return total


def one_mapped_page(cpu: Cpu) -> dict[str, int]:
    """Map one 4 KiB page through four fresh tables, turn paging on, and use it: a walk, TLB hits, a page fault
    on the page next to it, an `invlpg` and the walk again (from the paging-structure cache)."""
    pml4, pdpt, pd, pt, frame = (0x10000 + n * PAGE_SIZE for n in range(5))
    page = 0x0000_7F12_3456_7000
    flags = Pte.PRESENT | Pte.WRITABLE
    for table, level, entry in ((pml4, 4, pdpt), (pdpt, 3, pd), (pd, 2, pt), (pt, 1, frame)):
        cpu.store_u64(table + 8 * table_index(page, level), entry | flags)
    cpu.store_u64(frame + 8, 0xF00D)
    cpu.write_cr3(pml4)
    cpu.enable_paging()
    seen = {"first_load": cpu.load_u64(page + 8)}  # a TLB miss and a walk
    cpu.store_u32(page + 16, 0xBEEF)  # a hit; sets D in the PT entry
    seen["hit_load"] = cpu.load_u32(page + 16)
    try:
        cpu.load_u64(page + PAGE_SIZE)
    except PageFault as fault:
        seen["fault_error_code"] = fault.error_code
        seen["cr2"] = cpu.read_cr2()
    cpu.invlpg(page)
    seen["after_invlpg"] = cpu.load_u64(page + 8)
    cpu.write_csr(Csr.CR0, cpu.read_csr(Csr.CR0) & ~CR0_PG)
    seen["pt_entry"] = cpu.load_u64(pt + 8 * table_index(page, 1))  # with A and D set by the hardware
    seen["stored_physically"] = cpu.load_u32(frame + 16)
    return seen
