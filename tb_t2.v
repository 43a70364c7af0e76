module tb_t2;

reg clk;
reg [39:0] a;
wire [35:0] b;
wire [35:0] c;
wire [35:0] d;
reg [26:0] e;

initial begin
    $from_myhdl(
        clk,
        a,
        e
    );
    $to_myhdl(
        b,
        c,
        d
    );
end

t2 dut(
    clk,
    a,
    b,
    c,
    d,
    e
);

endmodule
