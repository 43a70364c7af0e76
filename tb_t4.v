module tb_t4;

reg [63:0] a;
wire [2:0] c;
wire d;

initial begin
    $from_myhdl(
        a
    );
    $to_myhdl(
        c,
        d
    );
end

t4 dut(
    a,
    c,
    d
);

endmodule
