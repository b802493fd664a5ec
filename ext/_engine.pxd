# Types of the event-driven engine, declared once (found by _engine.pyx by name).
#
# A NetPlan is compiled once from a Network and is read-only afterwards, so any
# number of EngineStates (one per stream or per thread) can share it without locks.
# Layout conventions (all chosen for scatter):
#   - neuron states are channel-last: index (y * W + x) * C + c;
#   - conv weights are [c_in][ky][kx][c_out], so one spike adds contiguous c_out rows;
#   - linear weights are [n_in][n_out] with rows in the channel-last order of the input.

from libc.stdint cimport int32_t, int64_t, uint8_t

cdef enum:
    KIND_CONV = 0
    KIND_LINEAR = 1
    KIND_POOL = 2

cdef enum:
    EXIT_NONE = 0
    EXIT_CONFIDENT = 1
    EXIT_MAX_STEPS = 2
    EXIT_END_OF_STREAM = 3

ctypedef struct LayerPlan:
    int kind
    int spiking              # 0 only for the output integrator
    int n_in                 # input neurons (channel-last)
    int n_out                # output neurons (channel-last)
    int c_in, h_in, w_in
    int c_out, h_out, w_out
    int kh, kw, sh, sw
    float threshold
    float lam
    const float* weight      # conv [c_in][kh][kw][c_out]; linear [n_in][n_out]; NULL for pool
    const float* bias        # (n_out,) per neuron, channel-last; zeros when the layer has none
    # CSR tables over input positions y * w_in + x (conv, pool), border-aware:
    const int32_t* tab_ptr   # (h_in * w_in + 1,)
    const int32_t* tab_w     # conv: weight offset (ky * kw + kx) * c_out of each valid tap
    const int32_t* tab_m     # conv: membrane offset (oy * w_out + ox) * c_out; pool: window oy * w_out + ox

ctypedef struct NetPlan:
    int n_layers
    const LayerPlan* layers
    int n_input              # C * H * W of the network input
    const int32_t* in_perm   # torch flat input index (c*H + y)*W + x -> channel-last index
    const int32_t* out_perm  # torch flat output index -> channel-last index of the output layer
    int n_classes
    float temperature
    int reset_zero
    int max_neurons          # largest n_out over layers (scratch size)

ctypedef struct LayerState:
    float* v                 # (n_out,) membranes; NULL for pool
    int32_t* spikes          # (n_out,) channel-last indices that spiked at the last step
    int n_spikes
    int32_t* counts          # pool: (n_in,) input spike counts so far
    int32_t* in_stamp        # pool: (n_in,) last step each input spiked
    int32_t* win_stamp       # pool: (n_out,) last step each window was evaluated
    int64_t synops
    int64_t spike_total

ctypedef struct EngineState:
    int t                    # steps since reset
    int exit
    int has_current
    LayerState* layers
    float* current           # (layers[0].n_out,) frame input current W1·x + b1
    uint8_t* mask            # (max_neurons,) scratch: which neurons spiked in the sweep
    float* logits            # (n_classes,) z(t), torch order
    int class_index
    double confidence
