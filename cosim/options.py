"""The options every command that builds or runs the MMU shares, and how they become a configuration: used by the
command line (`cosim.cli`) and by `mmucosim sweep`, whose dimensions are exactly these options.
"""

from __future__ import annotations

import argparse

from cosim.backends import BackendError
from cosim.backends.base import MAX_PWC_ENTRIES, MAX_RAM_BYTES, MAX_TLB_ENTRIES, check_simulation_limits
from firmware.allocator import ALLOCATORS, DEFAULT_ALLOCATOR
from firmware.boot import MIN_RAM_BYTES
from hdl.protocol import MEMORY_KINDS, MmuConfig, TlbPolicy

EXIT_FAILED, EXIT_USAGE = 1, 2
_DEFAULTS = MmuConfig()


class UsageError(Exception):
    """Bad input found after argument parsing; exits with EXIT_USAGE like argparse's own errors."""


def size(text: str) -> int:
    """A byte count: 1048576, 64K, 1M, 1MiB, 2G."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = number[-1:] if number[-1:] in "KMG" else ""
    try:
        return int(number[: len(number) - len(unit)], 0) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1048576, 64K, 1M)") from None


def config_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("MMU configuration")
    group.add_argument("--tlb-entries", type=int, metavar="N",
                       help=f"TLB entries, a power of two up to {MAX_TLB_ENTRIES} (beyond that, building the "
                            f"simulators takes minutes) (default {_DEFAULTS.tlb_entries})")
    group.add_argument("--tlb-ways", type=int, metavar="N",
                       help="TLB associativity, a power of two; 0 = fully associative (default 0)")
    group.add_argument("--tlb-policy", choices=[p.name.lower() for p in TlbPolicy],
                       help=f"TLB replacement policy (default {_DEFAULTS.tlb_policy.name.lower()})")
    group.add_argument("--pwc-entries", type=int, metavar="N",
                       help=f"paging-structure cache entries, 0 = none, up to {MAX_PWC_ENTRIES} "
                            f"(default {_DEFAULTS.pwc_entries})")
    group.add_argument("--mem-latency", type=int, metavar="CYCLES",
                       help=f"the RAM's own read latency in cycles, 1..64; a read's word arrives 3 cycles later still "
                            f"(the registers around the RAM, docs/hardware.md) (default {_DEFAULTS.mem_latency})")
    group.add_argument("--mem-bytes", type=size, metavar="SIZE",
                       help=f"physical RAM, a power of two from {MIN_RAM_BYTES >> 10}K (the least the kernel boots "
                            f"in; 64K for `verilog` and `synth`) to {MAX_RAM_BYTES >> 30}G (the most Verilator "
                            f"builds) (default {_DEFAULTS.mem_bytes >> 20}M)")
    group.add_argument("--maxphyaddr", type=int, metavar="BITS",
                       help=f"physical address bits M, 32..52: PTE bits M..51 are reserved, and RAM must fit below "
                            f"2**M (default {_DEFAULTS.maxphyaddr})")
    group.add_argument("--memory", choices=MEMORY_KINDS,
                       help="where the MMU's RAM accesses go: bram, the RAM inside the mmu; or axi, an AXI4 manager "
                            "port (docs/hardware.md). The reference, cocotb-verilator and cocotb-icarus backends run "
                            "axi (the cocotb ones attach cocotbext-axi's AxiRam to it); verilator and myhdl "
                            f"simulate bram only (default {_DEFAULTS.memory})")
    group.add_argument("--axi-id-width", type=int, metavar="BITS",
                       help=f"AxID bits of the AXI port, 1..32 (--memory axi; default {_DEFAULTS.axi_id_width})")
    return parent


def workload_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("workload knobs")
    group.add_argument("--n", type=int, help="size of the heap tests (default: the seed's)")
    group.add_argument("--seed", type=int, help="seed of the `random` workload (default 0)")
    group.add_argument("--ops", type=int, help="operations of the `random` workload (default 1000)")
    return parent


def allocator_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--allocator", choices=list(ALLOCATORS), metavar="{" + ",".join(ALLOCATORS) + "}",
                        help=f"the kernel's global allocator (default {DEFAULT_ALLOCATOR}, the seed's "
                             "linked_list_allocator; the others are the next chapter's designs)")
    return parent


def config_from(args: argparse.Namespace, *, simulated: bool = True) -> MmuConfig:
    """The MmuConfig the options describe, validated: as hardware, and unless only its Verilog is wanted
    (`simulated` False), as something the backends simulate and the kernel boots in."""
    given = {
        "tlb_entries": args.tlb_entries,
        "tlb_ways": args.tlb_ways,
        "tlb_policy": None if args.tlb_policy is None else TlbPolicy[args.tlb_policy.upper()],
        "pwc_entries": args.pwc_entries,
        "mem_latency": args.mem_latency,
        "mem_bytes": args.mem_bytes,
        "maxphyaddr": args.maxphyaddr,
        "memory": args.memory,
        "axi_id_width": args.axi_id_width,
    }
    config = MmuConfig(**{name: value for name, value in given.items() if value is not None})
    try:
        if args.axi_id_width is not None and config.memory != "axi":
            raise ValueError("--axi-id-width is a parameter of the AXI port: add --memory axi")
        config.validate()
        if simulated:
            check_simulation_limits(config)
    except (ValueError, BackendError) as err:
        raise UsageError(f"bad MMU configuration: {err}") from None
    if simulated and config.mem_bytes < MIN_RAM_BYTES:
        raise UsageError(f"bad MMU configuration: the kernel needs at least {MIN_RAM_BYTES >> 10} KiB of RAM to "
                         f"boot, got {config.mem_bytes >> 10} KiB")
    return config


def describe_config(config: MmuConfig) -> str:
    """"16-entry fully associative TLB (PLRU), 8-entry PWC, 1 MiB RAM, 1-cycle RAM"."""
    ways = "fully associative" if config.ways == config.tlb_entries else f"{config.ways}-way"
    pwc = f"{config.pwc_entries}-entry paging-structure cache" if config.pwc_entries else "no PWC"
    ram = f"{config.mem_bytes >> 20} MiB" if config.mem_bytes >= 1 << 20 else f"{config.mem_bytes >> 10} KiB"
    policy = TlbPolicy(config.tlb_policy).name
    memory = "on the AXI4 port" if config.memory == "axi" else f"({config.bram_read_cycles}-cycle reads)"
    maxphyaddr = "" if config.maxphyaddr == _DEFAULTS.maxphyaddr else f", MAXPHYADDR {config.maxphyaddr}"
    return f"{config.tlb_entries}-entry {ways} TLB ({policy}), {pwc}, {ram} RAM {memory}{maxphyaddr}"


def is_kernel_failure(err: Exception) -> bool:
    """A fault, panic or failed assertion of the firmware (any exception type the firmware defines): a result
    of the simulated machine, not a bug of this tool."""
    return type(err).__module__.split(".")[0] == "firmware"
