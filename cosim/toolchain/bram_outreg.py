"""A netlist pass Yosys lacks: fold the register behind an ECP5 block RAM's output into the block (REGMODE OUTREG).

A DP16KD answers 5.6 ns after its clock edge without its output register (nextpnr's figure for the ECP5-85F), which
leaves a 100 MHz design under 4.4 ns to route each bit to a register of the fabric; 256 KiB take 128 blocks across
the die, so some bits do not make it. With its output register the block answers within a nanosecond of the edge, and
the bit has a whole cycle to travel. The RTL registers every block's output (hdl/memory_controller.py: a bank's
word), as vendor tools expect before they fold that register in; Yosys's `synth_ecp5` maps the memory and the
register apart and has no pass that joins them, so this one does, on the JSON netlist nextpnr reads.

A fabric flip-flop is folded only when it is the one load of a block's data output and is what the block's output
register can be: clocked by the same net and edge, no clock enable (CEMUX 1: the block's OCE is tied high), no set
or reset (LSR tied 0), starting at 0 as the block's register does (REGSET RESET); and the block's RST tied low (it
would reset the block's register a cycle before the flip-flop saw the reset read). Then the block's port gets
REGMODE OUTREG and drives the flip-flop's output net, and the flip-flop goes. A port with any data output that does
not qualify keeps its flip-flops and NOREG: a port's register mode covers all of its bits. The timing is the same
cycle for cycle; what changes is which cell holds the register. The gate-level simulation (cosim.toolchain.gatesim)
applies the same pass, so the netlist it simulates is the one placed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

BLOCK_RAM = "DP16KD"
FABRIC_FF = "TRELLIS_FF"
PORTS = ("A", "B")


def absorb_output_registers(netlist: dict[str, Any]) -> int:
    """Fold qualifying output flip-flops into every DP16KD of the Yosys JSON `netlist` (changed in place); return
    how many flip-flops were folded."""
    return sum(_absorb_in_module(module) for module in netlist["modules"].values())


def _absorb_in_module(module: dict[str, Any]) -> int:
    cells: dict[str, dict[str, Any]] = module.get("cells", {})
    loads = _loads(module)
    folded = 0
    for ram in [cell for cell in cells.values() if cell["type"] == BLOCK_RAM]:
        for port in PORTS:
            if ram["parameters"].get(f"REGMODE_{port}", "NOREG") != "NOREG":
                continue
            registers = _output_registers(ram, port, cells, loads)
            if not registers:
                continue
            for output, register_name in registers.items():
                ram["connections"][output] = cells[register_name]["connections"]["Q"]
                del cells[register_name]
            ram["parameters"][f"REGMODE_{port}"] = "OUTREG"
            folded += len(registers)
    return folded


def _loads(module: dict[str, Any]) -> dict[int, list[tuple[str, str]]]:
    """Each net bit's loads: (cell name, input pin), with the module's output ports as ("", port name)."""
    loads: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in module.get("cells", {}).items():
        directions = cell.get("port_directions", {})
        for pin, bits in cell["connections"].items():
            if directions.get(pin) == "input":
                for bit in bits:
                    if isinstance(bit, int):
                        loads[bit].append((name, pin))
    for port_name, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for bit in port["bits"]:
                if isinstance(bit, int):
                    loads[bit].append(("", port_name))
    return loads


def _output_registers(
    ram: dict[str, Any], port: str, cells: dict[str, dict[str, Any]], loads: dict[int, list[tuple[str, str]]]
) -> dict[str, str]:
    """The flip-flop behind each used data output of `ram`'s `port`, by output pin; empty unless every used output
    has one that can fold."""
    connections = ram["connections"]
    clock = connections.get(f"CLK{port}")
    if (_parameter(ram["parameters"], f"CLK{port}MUX", f"CLK{port}") != f"CLK{port}"
            or connections.get(f"OCE{port}") != ["1"] or connections.get(f"RST{port}", ["0"]) != ["0"]):
        return {}
    registers = {}
    for pin, bits in connections.items():
        if not pin.startswith(f"DO{port}") or not isinstance(bits[0], int) or not loads.get(bits[0]):
            continue
        (load_name, load_pin), *others = loads[bits[0]]
        register = cells.get(load_name)
        if others or register is None or register["type"] != FABRIC_FF or load_pin != "DI":
            return {}
        parameters, register_connections = register["parameters"], register["connections"]
        if (_parameter(parameters, "CEMUX", "1") != "1" or _parameter(parameters, "CLKMUX", "CLK") != "CLK"
                or register_connections.get("CLK") != clock or _parameter(parameters, "LSRMUX", "LSR") != "LSR"
                or register_connections.get("LSR", ["0"]) != ["0"]
                or _parameter(parameters, "REGSET", "RESET") != "RESET"):
            return {}
        registers[pin] = load_name
    return registers


def _parameter(parameters: dict[str, Any], name: str, default: str) -> str:
    """A cell's string parameter as Yosys writes it (its JSON pads some strings with a space)."""
    return str(parameters.get(name, default)).strip()
