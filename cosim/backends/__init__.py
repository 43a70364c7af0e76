"""The backends that simulate the MMU, one module each, registered here by name.

A module is imported only when its backend is first used (MyHDL, Verilator and cocotb are heavy, and the cocotb
module is also what runs inside the simulator). In-process backends are `Backend` classes that `open_backend`
builds; the cocotb backends own the process they run in, so `cosim.runner.run_program` hands them the whole program.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosim.backends.base import Backend, BackendError
from hdl.protocol import MEMORY_KINDS, MmuConfig


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend lives and what kind it is."""

    name: str
    module: str
    entry: str  # a Backend class (in process), or the function that runs a program inside the simulator
    in_process: bool
    hdl: bool  # simulates the RTL (as opposed to the reference model)
    waves: tuple[str, ...] = ()  # the waveform formats it writes, by file suffix
    builder: str | None = None  # "module:function(config)" building what it simulates (cached), if anything
    memories: tuple[str, ...] = MEMORY_KINDS  # the MmuConfig.memory kinds it simulates (reference: ignores it)

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.entry)


REGISTRY = {
    info.name: info
    for info in (
        BackendInfo("reference", "cosim.backends.reference", "ReferenceBackend", in_process=True, hdl=False),
        BackendInfo("myhdl", "cosim.backends.myhdl_sim", "MyhdlBackend", in_process=True, hdl=True,
                    waves=(".vcd",), memories=("bram",)),
        BackendInfo("verilator", "cosim.backends.verilated", "VerilatorBackend", in_process=True, hdl=True,
                    waves=(".vcd", ".fst"), builder="cosim.backends.verilated:build_library", memories=("bram",)),
        BackendInfo("cocotb-verilator", "cosim.backends.cocotb_sim", "run_in_simulator", in_process=False, hdl=True,
                    waves=(".vcd", ".fst"), builder="cosim.backends.cocotb_sim:build_for_verilator"),
        BackendInfo("cocotb-icarus", "cosim.backends.cocotb_sim", "run_in_simulator", in_process=False, hdl=True,
                    waves=(".vcd", ".fst"), builder="cosim.backends.cocotb_sim:build_for_icarus"),
    )
}
BACKENDS = tuple(REGISTRY)
IN_PROCESS_BACKENDS = tuple(name for name, info in REGISTRY.items() if info.in_process)
HDL_BACKENDS = tuple(name for name, info in REGISTRY.items() if info.hdl)


def backend_info(name: str) -> BackendInfo:
    """The registry entry of `name`; a BackendError naming the choices when there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None


def check_memory(name: str, config: MmuConfig) -> None:
    """A BackendError unless backend `name` simulates `config.memory` (the AXI port needs a subordinate that only
    the cocotb backends attach; the reference model has no memory port and runs any)."""
    if config.memory not in backend_info(name).memories:
        able = ", ".join(n for n, info in REGISTRY.items() if config.memory in info.memories)
        raise BackendError(f"{name} simulates the {' and '.join(backend_info(name).memories)} memory only, not "
                           f"{config.memory!r}: use {able}")


def check_waves(name: str, waves: Path) -> None:
    """A BackendError unless backend `name` can write a waveform to a file named like `waves`."""
    formats = backend_info(name).waves
    if not formats:
        raise BackendError(f"{name} simulates no signals, so it writes no waves; use an RTL backend "
                           f"({', '.join(HDL_BACKENDS)})")
    if waves.suffix.lower() not in formats:
        raise BackendError(f"{name} writes waves as {' or '.join('*' + f for f in formats)}, not {waves.name}")
    if waves.suffix.lower() == ".fst" and "verilator" in name and not _lz4_headers():
        raise BackendError(f"Verilator writes FST through liblz4, whose headers are missing here (apt-get install "
                           f"liblz4-dev); name the file {waves.with_suffix('.vcd').name} for VCD, which needs nothing")


def _lz4_headers() -> bool:
    """Whether the C compiler finds lz4.h where Debian's liblz4-dev puts it."""
    return any(Path(folder, "lz4.h").is_file() for folder in ("/usr/include", "/usr/local/include"))


def build_for(name: str, config: MmuConfig) -> None:
    """Build (or find in the cache) what backend `name` simulates for `config`, so that a timed run that follows
    does not include the build."""
    builder = backend_info(name).builder
    if builder is not None:
        module, function = builder.split(":")
        getattr(importlib.import_module(module), function)(config)


def open_backend(
    name: str, config: MmuConfig | None = None, *, trace: bool = False, waves: Path | None = None
) -> Backend:
    """Build the in-process backend `name` for `config` (default MmuConfig())."""
    info = backend_info(name)
    if not info.in_process:
        raise BackendError(f"{name} runs the firmware inside its simulator: use cosim.runner.run_program")
    check_memory(name, config or MmuConfig())
    return info.load()(config or MmuConfig(), trace=trace, waves=waves)


__all__ = [
    "BACKENDS", "HDL_BACKENDS", "IN_PROCESS_BACKENDS", "REGISTRY", "Backend", "BackendError", "BackendInfo",
    "backend_info", "build_for", "check_memory", "check_waves", "open_backend",
]  # fmt: skip
