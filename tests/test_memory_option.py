"""`--memory bram|axi` on the command line and in MmuConfig: bram changes nothing that existed, axi builds the AXI4
manager port (hdl/axi_manager.py), the backends that cannot run it say so up front, and the acceptance command
`mmucosim check --backends reference,cocotb-verilator --memory axi demo` passes. tests/cocotb/test_axi.py checks
the port itself against cocotbext-axi's AxiRam."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_simulator, run_cli

from cosim.backends import BackendError, open_backend
from cosim.runner import run_program
from cosim.toolchain.export import config_tag, export_verilog, lint
from hdl.protocol import AXI_PROT_WALKER, AxiProt, Csr, MmuConfig, Op, axi_ports, top_port_widths

COMMANDS_WITH_CONFIG = ("demo", "run", "replay", "check", "compare-allocators", "verilog", "synth")




@pytest.mark.parametrize("command", COMMANDS_WITH_CONFIG)
def test_every_command_that_builds_the_mmu_takes_memory_and_says_what_runs_axi(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    flat = " ".join(out.split())
    assert code == 0 and "--memory {bram,axi}" in flat and "--axi-id-width BITS" in flat
    assert "verilator and myhdl simulate bram only" in flat


def test_the_verilator_backends_help_says_it_keeps_bram(capsys):
    _, out, _ = run_cli(capsys, "demo", "--help")
    assert "verilator and myhdl: --memory bram only" in " ".join(out.split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--memory", "axi"], "--memory axi: verilator simulates the bram memory only"),
        (["run", "demo", "--memory", "axi", "--backend", "myhdl"], "myhdl simulates the bram memory only"),
        (["check", "demo", "--memory", "axi", "--backends", "reference,verilator"],
         "use reference, cocotb-verilator, cocotb-icarus"),
        (["run", "demo", "--memory", "axi", "--mem-latency", "3"], "mem_latency applies to the bram memory only"),
        (["run", "demo", "--axi-id-width", "2"], "--axi-id-width is a parameter of the AXI port: add --memory axi"),
        (["run", "demo", "--memory", "axi", "--axi-id-width", "0"], "axi_id_width must be 1..32, got 0"),
        (["run", "demo", "--memory", "sram"], "invalid choice: 'sram'"),
    ],
)
def test_memory_options_refused_with_one_clear_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err + out


def test_backends_without_a_subordinate_refuse_axi_when_built_directly():
    for backend in ("verilator", "myhdl"):
        with pytest.raises(BackendError, match="simulates the bram memory only"):
            open_backend(backend, MmuConfig(memory="axi"))


def test_bram_keeps_its_tags_and_report_fields_and_axi_adds_its_own():
    assert config_tag(MmuConfig()) == "e16w16plru_p8_m1M_l1_pa40"
    assert config_tag(MmuConfig(memory="axi")) == "e16w16plru_p8_m1M_l1_pa40_axi"
    assert config_tag(MmuConfig(memory="axi", axi_id_width=6)) == "e16w16plru_p8_m1M_l1_pa40_axi_id6"
    bram = MmuConfig().fields()
    assert "memory" not in bram and "axi_id_width" not in bram
    assert MmuConfig(memory="axi").fields() == {**bram, "memory": "axi", "axi_id_width": 4}
    assert top_port_widths(MmuConfig()) == top_port_widths(dataclasses.replace(MmuConfig(), axi_id_width=7))


def test_prot_of_the_walker_is_a_privileged_non_secure_data_access():
    assert AXI_PROT_WALKER == AxiProt.PRIVILEGED | AxiProt.NON_SECURE


def test_reference_runs_axi_as_bram_but_reads_no_fixed_latency():
    bram = run_program("firmware.kernel:demo", "reference", MmuConfig(), trace=True)
    axi = run_program("firmware.kernel:demo", "reference", MmuConfig(memory="axi"), trace=True)
    assert axi.value == bram.value and axi.events == bram.events
    with open_backend("reference", MmuConfig(memory="axi")) as sim:
        assert sim.transact(Op.CSR_READ, Csr.CFG_MEM_LATENCY)[0] == 0
    with open_backend("reference", MmuConfig()) as sim:
        assert sim.transact(Op.CSR_READ, Csr.CFG_MEM_LATENCY)[0] == 1


def test_run_on_reference_with_axi_writes_to_its_own_folder(capsys, tmp_path, monkeypatch):
    from cosim import outputs

    monkeypatch.setattr(outputs, "BUILD", tmp_path)
    code, out, _ = run_cli(capsys, "run", "simple_allocation", "--memory", "axi", "--no-plots")
    assert code == 0 and "simple_allocation-reference-e16w16plru_p8_m1M_l1_pa40_axi" in out


@pytest.mark.rtl
def test_axi_verilog_has_the_ports_of_protocol_lints_clean_and_compiles_on_icarus(tmp_path: Path):
    config = MmuConfig(memory="axi", maxphyaddr=44, axi_id_width=2)
    path = export_verilog(config, tmp_path)
    lint(path)
    text = path.read_text()
    inputs, outputs = axi_ports(44, 2)
    for direction, ports in (("input", inputs), ("output", outputs)):
        for name, width in ports.items():
            declared = f"{direction} [{width - 1}:0] {name};" if width > 1 else f"{direction} {name};"
            assert declared in text, declared
    assert not re.search(r"mem_words", text), "the AXI build has no RAM of its own"
    if shutil.which("iverilog"):
        done = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "mmu.vvp"), str(path)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr


@pytest.mark.rtl
def test_check_reference_against_cocotb_verilator_on_axi_passes(capsys):
    require_simulator("cocotb-verilator")
    code, out, _ = run_cli(capsys, "check", "--backends", "reference,cocotb-verilator", "--memory", "axi", "demo")
    assert code == 0 and "OK: all" in out and "RAM on the AXI4 port" in out


def test_the_synthesis_harness_reaches_the_axi_ports_too():
    from cosim.toolchain.synth import harness_verilog

    text = harness_verilog(MmuConfig(memory="axi"))
    inputs, outputs = axi_ports()
    assert all(f".{name}(" in text for name in (*inputs, *outputs))
    assert "m_axi" not in harness_verilog()
