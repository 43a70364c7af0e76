module tb_t1;

reg clk;
reg [39:0] a;
wire [39:0] b;
wire [3:0] c;
wire [3:0] d;
wire [26:0] e;

initial begin
    $from_myhdl(
        clk,
        a
    );
    $to_myhdl(
        b,
        c,
        d,
        e
    );
end

t1 dut(
    clk,
    a,
    b,
    c,
    d,
    e
);

endmodule
