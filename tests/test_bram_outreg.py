"""The fold of block RAM output registers (cosim/toolchain/bram_outreg.py) on small hand-made Yosys JSON netlists:
which fabric flip-flops it moves into a DP16KD, and which it must leave alone because the block's output register
could not do what they do."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from cosim.toolchain.bram_outreg import absorb_output_registers

CLOCK, OTHER_CLOCK, RESET = 2, 3, 4  # net bits of the module's inputs
DOA0, DOA1, DOB0 = 10, 11, 12  # the block's data outputs
QA0, QA1, QB0 = 20, 21, 22  # the flip-flops' outputs, the module's outputs
Netlist = dict[str, Any]


def _block_ram() -> dict[str, Any]:
    """A DP16KD as synth_ecp5 writes it: both ports on CLOCK, OCE tied high, RST tied low, NOREG."""
    connections = {"CLKA": [CLOCK], "CLKB": [CLOCK], "OCEA": ["1"], "OCEB": ["1"], "RSTA": ["0"], "RSTB": ["0"],
                   "DOA0": [DOA0], "DOA1": [DOA1], "DOA2": [30], "DOB0": [DOB0]}  # DOA2: used by nothing
    directions = {pin: "output" if pin.startswith("DO") else "input" for pin in connections}
    parameters = {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA", "CLKBMUX": "CLKB"}
    return {"type": "DP16KD", "parameters": parameters, "port_directions": directions, "connections": connections}


def _flip_flop(data: int, output: int) -> dict[str, Any]:
    """A TRELLIS_FF as synth_ecp5 maps a plain D flip-flop (its JSON pads the string "1" with a space)."""
    parameters = {"CEMUX": "1 ", "CLKMUX": "CLK", "LSRMUX": "LSR", "REGSET": "RESET", "GSR": "DISABLED"}
    directions = {"CLK": "input", "LSR": "input", "CE": "input", "DI": "input", "Q": "output"}
    connections = {"CLK": [CLOCK], "LSR": ["0"], "DI": [data], "Q": [output]}
    return {"type": "TRELLIS_FF", "parameters": parameters, "port_directions": directions, "connections": connections}


def _lut(inputs: list[int], output: int) -> dict[str, Any]:
    pins = ["A", "B", "C", "D"][: len(inputs)]
    return {"type": "LUT4", "parameters": {"INIT": "0110100110010110"},
            "port_directions": {**dict.fromkeys(pins, "input"), "Z": "output"},
            "connections": {**{pin: [bit] for pin, bit in zip(pins, inputs, strict=True)}, "Z": [output]}}


def _netlist() -> Netlist:
    """One DP16KD whose used outputs (DOA0, DOA1 on port A, DOB0 on port B) each feed one foldable flip-flop."""
    ports = {"clk": {"direction": "input", "bits": [CLOCK]}, "clk2": {"direction": "input", "bits": [OTHER_CLOCK]},
             "rst": {"direction": "input", "bits": [RESET]},
             "q": {"direction": "output", "bits": [QA0, QA1, QB0]}}
    cells = {"ram": _block_ram(), "ff_a0": _flip_flop(DOA0, QA0), "ff_a1": _flip_flop(DOA1, QA1),
             "ff_b0": _flip_flop(DOB0, QB0)}
    return {"modules": {"top": {"ports": ports, "cells": cells, "netnames": {}}}}


def _cells(netlist: Netlist) -> dict[str, dict[str, Any]]:
    return netlist["modules"]["top"]["cells"]


def _fold(netlist: Netlist) -> tuple[int, Netlist]:
    """The pass's count, and the netlist as it was before the pass."""
    before = copy.deepcopy(netlist)
    return absorb_output_registers(netlist), before


def test_flip_flops_behind_both_ports_fold_into_the_block_ram():
    netlist = _netlist()
    assert absorb_output_registers(netlist) == 3
    cells = _cells(netlist)
    assert sorted(cells) == ["ram"]
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert (ram["connections"]["DOA0"], ram["connections"]["DOA1"], ram["connections"]["DOB0"]) == ([QA0], [QA1], [QB0])
    assert ram["connections"]["DOA2"] == [30]  # an unused output stays as it was


def _set(cell: str, group: str, **values: Any) -> Callable[[Netlist], None]:
    """A change to one cell's `group` ("parameters" or "connections") of the standard netlist."""
    return lambda netlist: _cells(netlist)[cell][group].update(values)


def _add_cell(name: str, cell: dict[str, Any]) -> Callable[[Netlist], None]:
    return lambda netlist: _cells(netlist).update({name: cell})


def _add_output(bit: int) -> Callable[[Netlist], None]:
    return lambda netlist: netlist["modules"]["top"]["ports"].update({"dout": {"direction": "output", "bits": [bit]}})


def _replace_flip_flop(cell: dict[str, Any]) -> Callable[[Netlist], None]:
    """DOA1 into `cell` instead of into its flip-flop."""
    return lambda netlist: _cells(netlist).update({"ff_a1": cell})


# Each change leaves port A's output register unable to replace DOA1's flip-flop: port A then keeps NOREG and both
# its flip-flops (DOA0's would qualify alone), while port B still folds.
UNFOLDABLE_ON_PORT_A = {
    "a clock enable": _set("ff_a1", "parameters", CEMUX="CE"),
    "another clock net": _set("ff_a1", "connections", CLK=[OTHER_CLOCK]),
    "the other clock edge": _set("ff_a1", "parameters", CLKMUX="INV"),
    "a reset net": _set("ff_a1", "connections", LSR=[RESET]),
    "a reset tied active (LSRMUX INV)": _set("ff_a1", "parameters", LSRMUX="INV"),
    "a power-up value of 1 (REGSET SET)": _set("ff_a1", "parameters", REGSET="SET"),
    "a second load on the output": _add_cell("lut", _lut([DOA1], 41)),
    "the output also a module output": _add_output(DOA1),
    "a load that is not a flip-flop": _replace_flip_flop(_lut([DOA1], QA1)),
    # No other ECP5 primitive has both CLK and DI: a made-up type with every other condition met, so that the type
    # alone decides.
    "a flip-flop's pins on another cell type": _replace_flip_flop({**_flip_flop(DOA1, QA1), "type": "OTHER_FF"}),
    "the output into a flip-flop's clock enable": _set("ff_a1", "connections", DI=[5], CE=[DOA1]),
    "the block's output clock enable not tied high": _set("ram", "connections", OCEA=[6]),
    "the block's port clock inverted": _set("ram", "parameters", CLKAMUX="INV"),
    "the block's port reset not tied low": _set("ram", "connections", RSTA=[RESET]),
}


@pytest.mark.parametrize("change", UNFOLDABLE_ON_PORT_A.values(), ids=UNFOLDABLE_ON_PORT_A)
def test_a_port_with_one_unfoldable_output_keeps_all_its_flip_flops(change):
    netlist = _netlist()
    change(netlist)
    folded, before = _fold(netlist)
    assert folded == 1  # port B's flip-flop
    cells = _cells(netlist)
    assert "ff_b0" not in cells and cells["ram"]["parameters"]["REGMODE_B"] == "OUTREG"
    assert cells["ram"]["parameters"]["REGMODE_A"] == "NOREG"
    for name in ("ff_a0", "ff_a1", "lut"):
        assert cells.get(name) == _cells(before).get(name)
    assert {pin: bits for pin, bits in cells["ram"]["connections"].items() if pin.startswith("DOA")} == {
        pin: bits for pin, bits in _cells(before)["ram"]["connections"].items() if pin.startswith("DOA")}


def _ice40_flip_flop(data: int, output: int) -> dict[str, Any]:
    return {"type": "SB_DFF", "parameters": {}, "port_directions": {"C": "input", "D": "input", "Q": "output"},
            "connections": {"C": [CLOCK], "D": [data], "Q": [output]}}


def test_a_netlist_without_dp16kd_is_untouched():
    # An iCE40 netlist: an SB_RAM40_4K read into SB_DFFs, which the pass knows nothing about.
    ram = {"type": "SB_RAM40_4K", "parameters": {"READ_MODE": "00000000000000000000000000000000"},
           "port_directions": {"RCLK": "input", "RDATA": "output"},
           "connections": {"RCLK": [CLOCK], "RDATA": [DOA0, DOA1]}}
    cells = {"ram": ram, "ff0": _ice40_flip_flop(DOA0, QA0), "ff1": _ice40_flip_flop(DOA1, QA1)}
    netlist = {"modules": {"top": {"ports": _netlist()["modules"]["top"]["ports"], "cells": cells, "netnames": {}}}}
    folded, before = _fold(netlist)
    assert folded == 0
    assert netlist == before
