module tb_t3;

reg clk;
reg [63:0] a;
wire [51:0] b;
wire [3:0] c;

initial begin
    $from_myhdl(
        clk,
        a
    );
    $to_myhdl(
        b,
        c
    );
end

t3 dut(
    clk,
    a,
    b,
    c
);

endmodule
