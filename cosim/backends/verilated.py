"""The `verilator` backend: the exported Verilog, Verilated into a shared library with a C shim, driven by ctypes.

One ctypes call runs one whole operation (verilator_shim.cpp beside this file owns the clock), so Python never runs
per clock and never switches threads. The request travels through a mailbox in the model's memory, filled with one
`struct.pack_into`: converting six ctypes arguments would cost as much as simulating the operation. Libraries are
cached by cosim.toolchain.build under build/verilator/<config_tag>-<key>/, keyed by everything that goes into them.
"""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import numpy as np

from cosim.backends import check_memory
from cosim.backends.base import Backend, BackendError, waves_format
from cosim.backends.handshake import MAX_OP_CYCLES, RESET_CYCLES
from cosim.toolchain import build
from cosim.toolchain.export import config_tag, exported_verilog
from hdl.protocol import OP_WIDTH, SIZE_WIDTH, AccessEvent, MmuConfig, Op

LIBRARY = "libmmu.so"
SHIM_SOURCE = Path(__file__).with_name("verilator_shim.cpp")

_HUNG = 0xFFFF_FFFF  # mmu_step's status when MAX_OP_CYCLES passed without a response
_STATUS_FAULT_MASK = 0xFF
# The shim's `Mailbox`: op, addr, size, wdata, user, fetch written by Python, then rdata written by mmu_step.
_pack_request = struct.Struct("=6Q").pack_into
_RDATA = 6
_MAILBOX_WORDS = 7

# The shim's `Event` struct, field by field (numpy's align=True reproduces the C layout).
EVENT_DTYPE = np.dtype(
    [
        ("seq", np.uint64),
        ("cycle", np.uint64),
        ("vaddr", np.uint64),
        ("paddr", np.uint64),
        ("data", np.uint64),
        ("evicted_vpn", np.int64),
        ("op", np.uint32),
        ("size", np.uint32),
        ("walk_levels", np.uint32),
        ("walk_cycles", np.uint32),
        ("pwc_hits", np.uint32),
        ("ad_writes", np.uint32),
        ("fault", np.uint32),
        ("errcode", np.uint32),
        ("tlb_hit", np.bool_),
        ("tlb_miss", np.bool_),
    ],
    align=True,
)


def build_library(config: MmuConfig, trace_format: str | None = None, build_root: Path | None = None) -> Path:
    """Verilate and compile `config` with the shim into a shared library (cached; see cosim.toolchain.build)."""
    verilog = exported_verilog(config, build_root)
    defines = {f"MMU_OP_{name}": int(Op[name]) for name in ("LOAD", "STORE", "CSR_READ", "CSR_WRITE")}
    defines |= {"MMU_OP_WIDTH": OP_WIDTH, "MMU_SIZE_WIDTH": SIZE_WIDTH}
    cflags = ["-fPIC", "-O2", "-DVL_TIME_CONTEXT", *(f"-D{name}={value}" for name, value in defines.items())]
    trace_flags = {None: [], "fst": ["--trace-fst"], "vcd": ["--trace-vcd"]}[trace_format]
    flags = [
        "--cc", "--exe", "--build", "-j", "2", "--top-module", "mmu", "-Wno-fatal", "-Wno-lint", "-Wno-style",
        *trace_flags, "-CFLAGS", " ".join(cflags), "-LDFLAGS", "-shared",
        "-MAKEFLAGS", "OPT_FAST=-O2 OPT_SLOW=-O2 OPT_GLOBAL=-O2",
    ]  # fmt: skip
    verilog_text, shim_text = verilog.read_bytes(), SHIM_SOURCE.read_bytes()  # built from these very bytes
    root = build.verilator_root()

    def make(directory: Path) -> None:
        sources = directory / "mmu.v", directory / SHIM_SOURCE.name
        sources[0].write_bytes(verilog_text)
        sources[1].write_bytes(shim_text)
        command = [str(root / "bin" / "verilator"), *flags, "-Mdir", str(directory), "-o", LIBRARY, *map(str, sources)]
        build.run_tool(command, cwd=directory, env=build.verilator_env(), what="verilator")

    inputs = [verilog_text, shim_text, *flags, str(root)]
    return build.cached("verilator", config_tag(config), inputs, LIBRARY, make, build_root) / LIBRARY


def _closed(*_args: object) -> int:
    raise BackendError("the verilator backend is closed")


class VerilatorBackend(Backend):
    """The MMU as a Verilated model in this process."""

    name = "verilator"

    def __init__(self, config: MmuConfig, *, trace: bool = False, waves: Path | None = None) -> None:
        super().__init__(config, trace=trace, waves=waves)
        check_memory(self.name, config)  # the bram only: nothing here answers an AXI port
        self.library_path = build_library(config, waves_format(waves))
        lib = ctypes.CDLL(str(self.library_path))
        lib.mmu_open.argtypes = [ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        lib.mmu_open.restype = ctypes.c_void_p
        lib.mmu_close.argtypes = [ctypes.c_void_p]
        lib.mmu_close.restype = None
        lib.mmu_mailbox.argtypes = [ctypes.c_void_p]
        lib.mmu_mailbox.restype = ctypes.c_void_p
        lib.mmu_step.restype = ctypes.c_uint32  # no argtypes: the handle goes as a c_void_p, unconverted
        lib.mmu_events.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.mmu_events.restype = ctypes.c_uint64
        lib.mmu_events_clear.argtypes = [ctypes.c_void_p]
        lib.mmu_events_clear.restype = None
        lib.mmu_event_size.restype = ctypes.c_uint64
        if lib.mmu_event_size() != EVENT_DTYPE.itemsize:
            raise BackendError(f"{self.library_path}: event record layout differs from EVENT_DTYPE")
        self._lib = lib
        if waves is not None:
            waves.parent.mkdir(parents=True, exist_ok=True)
        waves_arg = str(waves).encode() if waves is not None else None
        handle = lib.mmu_open(RESET_CYCLES, MAX_OP_CYCLES, int(trace), waves_arg)
        if not handle:
            raise BackendError(f"{self.library_path} could not open the model")
        self._handle: ctypes.c_void_p | None = ctypes.c_void_p(handle)
        self._step = lib.mmu_step
        self._mailbox = (ctypes.c_uint64 * _MAILBOX_WORDS).from_address(lib.mmu_mailbox(self._handle))
        self._rdata = memoryview(self._mailbox).cast("B").cast("Q")  # word _RDATA of the mailbox

    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        try:
            _pack_request(self._mailbox, 0, op, addr, size, wdata, user, fetch)
        except struct.error as exc:
            raise ValueError(f"operation {op} at {addr:#x} does not fit the ports: {exc}") from None
        status = self._step(self._handle)
        if status == _HUNG:
            raise BackendError(f"the design did not answer op {op} at {addr:#x} within {MAX_OP_CYCLES} cycles")
        return self._rdata[_RDATA], status & _STATUS_FAULT_MASK, status >> 8

    def drain_events(self) -> list[AccessEvent]:
        if self._handle is None:
            return []
        first = ctypes.c_void_p()
        count = self._lib.mmu_events(self._handle, ctypes.byref(first))
        if not count:
            return []
        raw = (ctypes.c_char * (count * EVENT_DTYPE.itemsize)).from_address(first.value)
        records = np.frombuffer(raw, dtype=EVENT_DTYPE)[list(AccessEvent._fields)].tolist()
        self._lib.mmu_events_clear(self._handle)  # after tolist(): the copy no longer needs the C buffer
        return list(map(AccessEvent._make, records))

    def drain_batch(self) -> np.ndarray:
        """The events since the last drain as they are in the C buffer (EVENT_DTYPE), copied: no Python objects."""
        if self._handle is None:
            return np.empty(0, dtype=EVENT_DTYPE)
        first = ctypes.c_void_p()
        count = self._lib.mmu_events(self._handle, ctypes.byref(first))
        if not count:
            return np.empty(0, dtype=EVENT_DTYPE)
        raw = (ctypes.c_char * (count * EVENT_DTYPE.itemsize)).from_address(first.value)
        records = np.frombuffer(raw, dtype=EVENT_DTYPE).copy()
        self._lib.mmu_events_clear(self._handle)
        return records

    def close(self) -> None:
        if self._handle is not None:
            self._lib.mmu_close(self._handle)
            self._handle = None
            self._step = _closed
            self._mailbox = (ctypes.c_uint64 * _MAILBOX_WORDS)()  # the model's mailbox is gone with it
