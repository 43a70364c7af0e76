"""The CPU as the kernel sees it: loads, stores, `invlpg`, control registers, and the faults they raise.

Firmware code reads like kernel code (`cpu.load_u64(addr)`, `cpu.write_cr3(frame)`) and never knows which backend
runs underneath. A fault is raised as a `CpuFault`, the way an x86 exception enters the kernel's handler; the
kernel decides whether it is fatal. Every access is naturally aligned: `read_bytes`/`write_bytes` split.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from hdl.protocol import CR0_PG, Counter, Csr, ErrorCode, Fault, Op


class Transactor(Protocol):
    """What the CPU needs of a backend (see cosim.backends.base.Backend)."""

    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]: ...


class ContextListener(Protocol):
    """Receives the firmware's nesting of named operations (a tracer), keyed by operation number."""

    def enter(self, label: str, seq: int) -> None: ...

    def exit(self, seq: int) -> None: ...


class CpuFault(Exception):
    """An exception the MMU raised for one access. It is a result to report, not a simulator crash."""

    kind: Fault

    def __init__(self, addr: int, detail: str) -> None:
        super().__init__(f"{self.__class__.__name__} at {addr:#x}: {detail}")
        self.addr = addr


class PageFault(CpuFault):
    """#PF: CR2 holds `addr`; `error_code` has the x86 bits P, W/R, U/S, RSVD, I/D."""

    kind = Fault.PAGE

    def __init__(self, addr: int, error_code: int) -> None:
        self.error_code = error_code
        names = [n for n, bit in (("P", ErrorCode.P), ("W", ErrorCode.W), ("U", ErrorCode.U),
                                  ("RSVD", ErrorCode.RSVD), ("I", ErrorCode.I)) if error_code & bit]
        cause = "protection violation" if error_code & ErrorCode.P else "page not present"
        super().__init__(addr, f"{cause}, error code {error_code:#x} ({'|'.join(names) or '0'})")


class GeneralProtection(CpuFault):
    """#GP: a non-canonical address, or a bad control-register access."""

    kind = Fault.GP

    def __init__(self, addr: int) -> None:
        super().__init__(addr, "general protection (non-canonical address or bad CSR access)")


class AlignmentCheck(CpuFault):
    """An access whose address is not a multiple of its size."""

    kind = Fault.ALIGN

    def __init__(self, addr: int) -> None:
        super().__init__(addr, "misaligned access")


class BusError(CpuFault):
    """A physical address (of data or of a page-table entry) outside installed RAM."""

    kind = Fault.BUS

    def __init__(self, addr: int) -> None:
        super().__init__(addr, "physical address outside RAM")


def fault_exception(fault: int, addr: int, errcode: int) -> CpuFault:
    """The exception for a non-zero `resp_fault`."""
    if fault == Fault.PAGE:
        return PageFault(addr, errcode)
    if fault == Fault.GP:
        return GeneralProtection(addr)
    if fault == Fault.ALIGN:
        return AlignmentCheck(addr)
    return BusError(addr)


_LOAD, _STORE = int(Op.LOAD), int(Op.STORE)


def _sized_load(size_log2: int, checkpoints: bool = False) -> Callable[[Cpu, int], int]:
    """`Cpu.load_uN`: a supervisor data load of 1 << size_log2 bytes (`checkpoints`: CheckpointCpu's)."""

    def load(self: Cpu, addr: int) -> int:
        self.ops += 1
        rdata, fault, errcode = self._transact(_LOAD, addr, size_log2, 0, False, False)
        if fault:
            raise fault_exception(fault, addr, errcode)
        return rdata

    def checked_load(self: CheckpointCpu, addr: int) -> int:
        if self.ops >= self.next_checkpoint:
            self.reach_checkpoint()
        self.ops += 1
        rdata, fault, errcode = self._transact(_LOAD, addr, size_log2, 0, False, False)
        if fault:
            raise fault_exception(fault, addr, errcode)
        return rdata

    load = checked_load if checkpoints else load
    load.__name__ = load.__qualname__ = f"load_u{8 << size_log2}"
    return load


def _sized_store(size_log2: int, checkpoints: bool = False) -> Callable[[Cpu, int, int], None]:
    """`Cpu.store_uN`: a supervisor store of the low 1 << size_log2 bytes of `value` (`checkpoints`:
    CheckpointCpu's)."""
    mask = (1 << (8 << size_log2)) - 1

    def store(self: Cpu, addr: int, value: int) -> None:
        self.ops += 1
        _, fault, errcode = self._transact(_STORE, addr, size_log2, value & mask, False, False)
        if fault:
            raise fault_exception(fault, addr, errcode)

    def checked_store(self: CheckpointCpu, addr: int, value: int) -> None:
        if self.ops >= self.next_checkpoint:
            self.reach_checkpoint()
        self.ops += 1
        _, fault, errcode = self._transact(_STORE, addr, size_log2, value & mask, False, False)
        if fault:
            raise fault_exception(fault, addr, errcode)

    store = checked_store if checkpoints else store
    store.__name__ = store.__qualname__ = f"store_u{8 << size_log2}"
    return store


class Cpu:
    """A single supervisor-mode core. `user=True` on an access models CPL 3 for permission tests."""

    def __init__(self, backend: Transactor, listener: ContextListener | None = None) -> None:
        self._transact = backend.transact
        self.listener = listener
        self.ops = 0  # operations issued; the sequence number of the next one

    # -- memory ---------------------------------------------------------------------------------------------
    def load(self, addr: int, size_log2: int, *, user: bool = False, fetch: bool = False) -> int:
        self.ops += 1
        rdata, fault, errcode = self._transact(_LOAD, addr, size_log2, 0, user, fetch)
        if fault:
            raise fault_exception(fault, addr, errcode)
        return rdata

    def store(self, addr: int, size_log2: int, value: int, *, user: bool = False) -> None:
        self.ops += 1
        _, fault, errcode = self._transact(_STORE, addr, size_log2, value & ((1 << (8 << size_log2)) - 1), user)
        if fault:
            raise fault_exception(fault, addr, errcode)

    # One body per width, made by _sized_load/_sized_store: the allocator's hot path saves a call per access.
    load_u8 = _sized_load(0)
    load_u16 = _sized_load(1)
    load_u32 = _sized_load(2)
    load_u64 = _sized_load(3)
    store_u8 = _sized_store(0)
    store_u16 = _sized_store(1)
    store_u32 = _sized_store(2)
    store_u64 = _sized_store(3)

    def read_bytes(self, addr: int, length: int) -> bytes:
        """`length` bytes from `addr`, read with the widest aligned accesses that fit."""
        out = bytearray()
        end = addr + length
        while addr < end:
            size_log2 = _widest(addr, end - addr)
            out += self.load(addr, size_log2).to_bytes(1 << size_log2, "little")
            addr += 1 << size_log2
        return bytes(out)

    def write_bytes(self, addr: int, data: bytes) -> None:
        """Store `data` at `addr` with the widest aligned accesses that fit.

        Once an 8-byte store fits, every whole word left is one: those are unpacked in one go (a page table's
        `fill` is 512 of them).
        """
        pos, end = 0, len(data)
        while pos < end:
            size_log2 = _widest(addr + pos, end - pos)
            if size_log2 == 3:
                words_end = end - (end - pos) % 8
                for (word,) in struct.iter_unpack("<Q", data[pos:words_end]):
                    self.store_u64(addr + pos, word)
                    pos += 8
                continue
            n = 1 << size_log2
            self.store(addr + pos, size_log2, int.from_bytes(data[pos:pos + n], "little"))
            pos += n

    def fill(self, addr: int, length: int, byte: int = 0) -> None:
        """memset: `length` copies of `byte` from `addr`."""
        self.write_bytes(addr, bytes([byte]) * length)

    # -- TLB and control registers ---------------------------------------------------------------------------
    def _control(self, op: Op, addr: int = 0, value: int = 0) -> int:
        self.ops += 1
        rdata, fault, errcode = self._transact(int(op), addr, 3, value)
        if fault:
            raise fault_exception(fault, addr, errcode)
        return rdata

    def invlpg(self, addr: int) -> None:
        self._control(Op.INVLPG, addr)

    def flush_tlb(self) -> None:
        self._control(Op.FLUSH)

    def read_csr(self, csr: int) -> int:
        return self._control(Op.CSR_READ, csr)

    def write_csr(self, csr: int, value: int) -> None:
        self._control(Op.CSR_WRITE, csr, value)

    def read_cr3(self) -> int:
        return self.read_csr(Csr.CR3)

    def write_cr3(self, pml4_frame_addr: int) -> None:
        self.write_csr(Csr.CR3, pml4_frame_addr)

    def read_cr2(self) -> int:
        return self.read_csr(Csr.CR2)

    def enable_paging(self) -> None:
        self.write_csr(Csr.CR0, self.read_csr(Csr.CR0) | CR0_PG)

    def read_counter(self, counter: Counter) -> int:
        return self.read_csr(Csr.COUNTER_BASE + counter)

    # -- tracing ---------------------------------------------------------------------------------------------
    def context(self, label: str, *args: object) -> AbstractContextManager[None]:
        """Tag the operations issued inside with `label.format(*args)` (nested), for traces.

        Formatting waits until someone listens, so an untraced run pays one call and no string work.
        """
        if self.listener is None:
            return _NO_CONTEXT
        return _Context(self, label.format(*args) if args else label)


class CheckpointCpu(Cpu):
    """A Cpu that calls `checkpoint()` before every `interval`-th operation, when the operations before it are done:
    a streamed trace drains the backend's events there. Its own class, so that other runs pay nothing for it (the
    check is one comparison per operation)."""

    def __init__(
        self, backend: Transactor, listener: ContextListener | None, *, interval: int, checkpoint: Callable[[], None]
    ) -> None:
        super().__init__(backend, listener)
        self.interval = interval
        self.next_checkpoint = interval
        self._checkpoint = checkpoint

    def reach_checkpoint(self) -> None:
        self.next_checkpoint = self.ops + self.interval
        self._checkpoint()

    def load(self, addr: int, size_log2: int, *, user: bool = False, fetch: bool = False) -> int:
        if self.ops >= self.next_checkpoint:
            self.reach_checkpoint()
        return super().load(addr, size_log2, user=user, fetch=fetch)

    def store(self, addr: int, size_log2: int, value: int, *, user: bool = False) -> None:
        if self.ops >= self.next_checkpoint:
            self.reach_checkpoint()
        super().store(addr, size_log2, value, user=user)

    def _control(self, op: Op, addr: int = 0, value: int = 0) -> int:
        if self.ops >= self.next_checkpoint:
            self.reach_checkpoint()
        return super()._control(op, addr, value)

    load_u8 = _sized_load(0, checkpoints=True)
    load_u16 = _sized_load(1, checkpoints=True)
    load_u32 = _sized_load(2, checkpoints=True)
    load_u64 = _sized_load(3, checkpoints=True)
    store_u8 = _sized_store(0, checkpoints=True)
    store_u16 = _sized_store(1, checkpoints=True)
    store_u32 = _sized_store(2, checkpoints=True)
    store_u64 = _sized_store(3, checkpoints=True)


class _Context:
    """One open firmware context: tells the listener the operation numbers where it starts and ends."""

    __slots__ = ("cpu", "label")

    def __init__(self, cpu: Cpu, label: str) -> None:
        self.cpu = cpu
        self.label = label

    def __enter__(self) -> None:
        self.cpu.listener.enter(self.label, self.cpu.ops)

    def __exit__(self, *exc: object) -> None:
        self.cpu.listener.exit(self.cpu.ops)


_NO_CONTEXT = nullcontext()


def _widest(addr: int, remaining: int) -> int:
    """log2 of the widest naturally aligned access at `addr` that does not pass `remaining` bytes."""
    for size_log2 in (3, 2, 1):
        n = 1 << size_log2
        if addr % n == 0 and remaining >= n:
            return size_log2
    return 0
