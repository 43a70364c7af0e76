// C ABI around the Verilated `mmu`, loaded by cosim/backends/verilated.py with ctypes.
//
// The shim owns the clock so that one Python call runs one whole operation: it drives req_*, ticks until
// resp_valid, and returns the response; each cycle costs two evaluations (rising and falling edge), nothing else.
// When tracing it also appends the ev_* record of the operation to a C-side buffer that Python drains in
// batches. It drives the handshake by the rule every HDL backend follows, written once in
// cosim/backends/handshake.py (the Python drivers: myhdl_sim.py, cocotb_driver.py); this is its C++ driver:
// inputs change only while clk is low; the request of an operation is presented in the cycle that carried the
// previous response and held until a rising edge samples req_ready = 1.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "Vmmu.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
using WavesFile = VerilatedFstC;
#elif VM_TRACE_VCD
#include "verilated_vcd_c.h"
using WavesFile = VerilatedVcdC;
#endif
#define MMU_WAVES (VM_TRACE_FST || VM_TRACE_VCD)

namespace {

// One operation's access event, laid out for numpy (cosim/backends/verilated.py mirrors it field by field).
struct Event {
    uint64_t seq;
    uint64_t cycle;
    uint64_t vaddr;
    uint64_t paddr;
    uint64_t data;
    int64_t evicted_vpn;  // -1: no valid entry was replaced
    uint32_t op;
    uint32_t size;  // bytes; 0 for non-memory operations
    uint32_t walk_levels;
    uint32_t walk_cycles;
    uint32_t pwc_hits;
    uint32_t ad_writes;
    uint32_t fault;
    uint32_t errcode;
    uint8_t tlb_hit;
    uint8_t tlb_miss;
};

// hdl.protocol.Op values and port widths, defined on the compiler command line by cosim/backends/verilated.py.
constexpr uint32_t kOpLoad = MMU_OP_LOAD, kOpStore = MMU_OP_STORE;
constexpr uint32_t kOpCsrRead = MMU_OP_CSR_READ, kOpCsrWrite = MMU_OP_CSR_WRITE;

// The request and response of one operation, in memory Python writes and reads directly (see mmu_mailbox).
struct Mailbox {
    uint64_t op, addr, size, wdata, user, fetch;  // written by Python before mmu_step
    uint64_t rdata;                               // written by mmu_step
};

struct Sim {
    Mailbox mailbox{};
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vmmu> top;
#if MMU_WAVES
    std::unique_ptr<WavesFile> waves;
#endif
    bool trace = false;
    uint64_t seq = 0;
    uint64_t max_cycles = 0;  // ticks one operation may take before the shim gives up (a hung design)
    std::vector<Event> events;

    // One half period (two time units): settle the model and, when recording waves, dump it.
    void step() {
        top->eval();
#if MMU_WAVES
        if (waves) waves->dump(context->time());
#endif
        context->timeInc(2);
    }

    // New inputs in the low phase. Without waves the next edge's evaluation settles them anyway; with waves they
    // are settled and dumped in the middle of the low phase, where a reader expects inputs to change.
    void inputs_changed() {
#if MMU_WAVES
        if (waves) {
            top->eval();
            waves->dump(context->time() - 1);
        }
#endif
    }

    // One clock period from low to low: rising edge, then falling edge (where inputs may change).
    void tick() {
        top->clk = 1;
        step();
        top->clk = 0;
        step();
    }
};

}  // namespace

extern "C" {

// A reset model: `reset_cycles` rising edges with rst high, then rst low with clk low and no request.
// `waves_path` (NULL: none) names the waveform file; it needs a --trace-fst or --trace-vcd build.
void* mmu_open(uint32_t reset_cycles, uint64_t max_cycles, int trace, const char* waves_path) {
    auto* sim = new Sim;
    sim->context = std::make_unique<VerilatedContext>();
    sim->context->commandArgs(0, static_cast<const char**>(nullptr));
    sim->top = std::make_unique<Vmmu>(sim->context.get(), "mmu");
    sim->trace = trace != 0;
    sim->max_cycles = max_cycles;
#if MMU_WAVES
    if (waves_path) {
        sim->context->traceEverOn(true);
        sim->waves = std::make_unique<WavesFile>();
        sim->top->trace(sim->waves.get(), 99);
        sim->waves->open(waves_path);
    }
#else
    if (waves_path) {
        delete sim;
        return nullptr;  // this library was built without waves
    }
#endif
    Vmmu& top = *sim->top;
    top.clk = 0;
    top.rst = 1;
    top.req_valid = 0;
    sim->step();
    for (uint32_t i = 0; i < reset_cycles; ++i) sim->tick();
    top.rst = 0;
    sim->step();
    return sim;
}

void mmu_close(void* handle) {
    auto* sim = static_cast<Sim*>(handle);
    sim->top->final();
#if MMU_WAVES
    if (sim->waves) sim->waves->close();
#endif
    delete sim;
}

// The mailbox of a model: Python maps it once and fills it before each mmu_step.
Mailbox* mmu_mailbox(void* handle) { return &static_cast<Sim*>(handle)->mailbox; }

// Run the operation in the mailbox and leave resp_rdata there. Returns fault | errcode << 8, or 0xFFFFFFFF when
// the design did not respond within max_cycles. Python fills the mailbox through a buffer rather than passing
// arguments, because ctypes' per-argument conversion would cost about as much as the simulation itself.
uint32_t mmu_step(void* handle) {
    auto* sim = static_cast<Sim*>(handle);
    Mailbox& box = sim->mailbox;
    Vmmu& top = *sim->top;
    const uint32_t op = box.op, size = box.size;
    top.req_op = op & ((1u << MMU_OP_WIDTH) - 1);  // a port holds no bits beyond its width
    top.req_size = size & ((1u << MMU_SIZE_WIDTH) - 1);
    top.req_user = box.user != 0;
    top.req_fetch = box.fetch != 0;
    top.req_addr = box.addr;
    top.req_wdata = box.wdata;
    top.req_valid = 1;
    sim->inputs_changed();
    uint64_t cycles = 0;
    bool accepted = false;
    while (!accepted) {  // hold the request until a rising edge samples req_ready
        accepted = top.req_ready;  // a register: the value the coming rising edge samples
        top.clk = 1;
        sim->step();  // Verilator settles the new inputs' combinational logic before the edge's processes
        top.clk = 0;
        if (accepted) top.req_valid = 0;
        sim->step();
        if (++cycles > sim->max_cycles) return 0xFFFFFFFFu;
    }
    while (!top.resp_valid) {
        sim->tick();
        if (++cycles > sim->max_cycles) return 0xFFFFFFFFu;
    }
    box.rdata = top.resp_rdata;
    const uint32_t fault = top.resp_fault, errcode = top.resp_errcode;
    if (sim->trace) {
        const bool memory = op == kOpLoad || op == kOpStore;
        const uint64_t size_mask = size >= 3 ? ~0ULL : (1ULL << (8u << size)) - 1;
        Event ev;
        ev.seq = sim->seq;
        ev.cycle = top.ev_cycle;
        ev.vaddr = box.addr;
        ev.paddr = top.ev_paddr;
        ev.data = op == kOpStore      ? box.wdata & size_mask
                  : op == kOpCsrWrite ? box.wdata
                  : op == kOpLoad || op == kOpCsrRead ? box.rdata
                                                       : 0;
        ev.evicted_vpn = top.ev_evict ? static_cast<int64_t>(top.ev_evict_vpn) : -1;
        ev.op = op;
        ev.size = memory ? 1u << size : 0;
        ev.walk_levels = top.ev_walk_levels;
        ev.walk_cycles = top.ev_walk_cycles;
        ev.pwc_hits = top.ev_pwc_hits;
        ev.ad_writes = top.ev_ad_writes;
        ev.fault = fault;
        ev.errcode = errcode;
        ev.tlb_hit = top.ev_tlb_hit;
        ev.tlb_miss = top.ev_tlb_miss;
        sim->events.push_back(ev);
    }
    ++sim->seq;
    return fault | errcode << 8;
}

// The events recorded since the last mmu_events_clear: their count, and their address through *first.
uint64_t mmu_events(void* handle, const void** first) {
    auto* sim = static_cast<Sim*>(handle);
    *first = sim->events.data();
    return sim->events.size();
}

void mmu_events_clear(void* handle) { static_cast<Sim*>(handle)->events.clear(); }

uint64_t mmu_event_size() { return sizeof(Event); }

}  // extern "C"
