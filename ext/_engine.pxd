# Types of the event-driven engine, declared once (found by _engine.pyx by name).
#
# A NetPlan is compiled once from a Network and is read-only afterwards, so any
# number of EngineStates (one per stream or per thread) can share it without locks.
# Layout conventions (all chosen for scatter):
#   - neuron states are channel-last: index (y * W + x) * C + c;
#   - conv weights are [c_in][ky][kw-1-kx][c_out] (kx reversed): one spike adds contiguous
#     runs, and with stride 1 the taps kx of one kernel row land on adjacent membrane
#     positions in the same order, so a whole kernel row is one run of kw * c_out floats;
#     grouped convs: [c_in][ky][kw-1-kx][c_out/groups], one run of c_out/groups floats per
#     tap at the spike's group's channel offset;
#   - a layer reads the spikes of `src` (the previous layer in a chain) and, through the
#     plan's extras, of further earlier layers (residual sums, concatenations);
#   - linear weights are [n_in][n_out] with rows in the channel-last order of the input.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef enum:
    KIND_CONV = 0
    KIND_LINEAR = 1
    KIND_POOL = 2

# How a conv/linear layer's sweep visits its neurons (docs/step-semantics.md, "Sparse
# sweep"): every neuron (a nonzero bias on every 16-channel block), or only the rows
# (pixels) that received input or are pending plus the blocks of channels with a
# nonzero bias, or (bias-free) only those rows. Output layer: SPARSE skips integrating.
cdef enum:
    SWEEP_DENSE = 0
    SWEEP_MIXED = 1
    SWEEP_SPARSE = 2

# Why a run stopped; code i is spikecast.ext.core.exits.EXIT_REASONS[i] (a test checks).
cpdef enum ExitCode:
    EXIT_NONE = 0
    EXIT_CONFIDENT = 1
    EXIT_MAX_STEPS = 2
    EXIT_END_OF_STREAM = 3

ctypedef struct LayerPlan:
    int kind
    int src                  # the layer whose spikes it reads (-1: the network input)
    int spiking              # 0 only for the output integrator
    int n_in                 # input neurons (channel-last)
    int n_out                # output neurons (channel-last)
    int c_in, h_in, w_in
    int c_out, h_out, w_out
    int kh, kw, sh, sw
    int c_in_shift           # log2(c_in) if c_in is a power of two, else -1
    int c_in_g, c_out_g      # conv: channels per group (ungrouped: c_in, c_out)
    float threshold
    int max_spikes           # spikes a neuron may emit per step (pool: its source's); 1: classic IF
    float lam
    float v_init             # membrane potential after a reset (v_init·θ; 0: output, pool)
    const float* weight      # conv [c_in][kh][kw reversed][c_out/groups]; linear [n_in][n_out]; pool NULL
    const float* bias        # (c_out,) per channel (linear: c_out = n_out); zeros if none
    # CSR tables over input positions y * w_in + x (conv, pool), border-aware:
    const int32_t* tab_ptr   # (h_in * w_in + 1,)
    const int32_t* tab_w     # conv: weight offset of each run within the c_in block
    const int32_t* tab_m     # conv: membrane offset of each run (grouped: for group 0);
                             # pool: window oy * w_out + ox
    const int32_t* tab_n     # conv: run length in floats (a multiple of c_out/groups)
    const int32_t* win_init  # pool: (n_out,) each window's first input, its winner at t = 0
    int sweep_mode           # SWEEP_*; extras: their target layer's
    const int32_t* nz_blocks # MIXED: offsets j (multiples of 16) of the bias blocks with a nonzero
    int n_nz_blocks
    const int32_t* tab_px    # conv, MIXED/SPARSE: first output row (pixel) of each run
    const int32_t* tab_pn    # conv, MIXED/SPARSE: rows each run covers

ctypedef struct NetPlan:
    int n_layers
    const LayerPlan* layers
    int n_input              # C * H * W of the network input
    const int32_t* in_perm   # torch flat input index (c*H + y)*W + x -> channel-last index
    const int32_t* out_perm  # torch flat output index -> channel-last index of the output layer
    int n_classes
    float temperature
    float evidence_steps     # 0: the rate rule; t_e: c(t) from z·t_eff/t_e (the evidence rule)
    int reset_zero
    int pool_count           # max-pools: 1 count (M(t) - M(t-1) spikes), 0 gated
    int max_neurons          # largest n_out over layers (scratch size)
    # Membrane read-out (Network.readout): the spiking layer it reads, or -1 for the
    # spike read-out; layers readout_src + 1 .. n_layers - 2 are the max-pools between.
    int readout_src
    int readout_floats       # scratch floats it needs: the source, each pool, the output
    const float* readout_w   # the output's weights [n_in][readout_pad], columns zero-padded
    int readout_pad          # n_out rounded up to a multiple of 16
    float readout_inv_theta  # 1/θ of readout_src, rounded to float32
    # Further inputs (residual adds, concatenations): layer l also scatters the spikes of
    # extras[k].src through extras[k] for k in [extra_ptr[l], extra_ptr[l + 1]); each is
    # a conv or linear plan into layer l's membranes (its n_out, c_out), with no bias.
    const LayerPlan* extras
    const int32_t* extra_ptr # (n_layers + 1,)

ctypedef struct PoolWindow:
    int32_t winner           # input with the largest count so far (lowest index on a tie)
    int32_t wcount           # the winner's count when last compared (it may have spiked since)
    int32_t touched          # last step a spiking input touched the window
    int32_t hit              # at that step: whether the winner spiked

ctypedef struct LayerState:
    float* v                 # (n_out,) membranes; NULL for pool
    int32_t* spikes          # (n_out + 16,) channel-last indices that spiked at the last step
                             # (16 slots of room: the SIMD sweeps store whole vectors)
    int n_spikes
    int32_t* counts          # pool: (n_in,) input spike counts so far
    PoolWindow* windows      # gated pool: (n_out,) one record per window, in one cache line
    int32_t* wmax            # count pool: (n_out,) M, the largest count among each window's
                             # inputs (a quarter of the records' bytes: stays in L1)
    uint64_t* bits           # MIXED/SPARSE: one bit per row (pixel) to visit at the next sweep
    uint64_t* summary        # SPARSE: one bit per nonzero word of bits
    int64_t synops
    int64_t spike_total

ctypedef struct EngineState:
    int t                    # steps since reset (or since the last decay)
    float t_eff              # the divisor of z = λ V_L / t_eff: t, or its decayed sum
    int exit
    int has_current
    LayerState* layers
    float* current           # (layers[0].n_out,) frame input current W1·x + b1
    uint8_t* mask            # (max_neurons,) scratch: which neurons spiked in the sweep
    uint8_t* mult            # (max_neurons,) scratch, zero between steps: a burst pool's spikes per input
    float* logits            # (n_classes,) z(t), torch order
    float* ro_base           # membrane read-out: (n_out of readout_src,) spike counts N as floats
                             # (after decay(), the decayed N + V/θ less the current V/θ)
    float* ro_buf            # membrane read-out: (readout_floats,) scratch
    int class_index
    double confidence
