# cython: language_level=3
"""The compiled event-driven engine: nogil kernels over a shared read-only plan.

Nothing in this module validates user input beyond what keeps memory safe: the
Python wrappers in :mod:`spikecast.ext.engine` check every argument first. The
kernels still bound-check external indices (events) so that a buffer mutated by
another thread while the GIL is released cannot make them read or write out of
bounds.

Per step the work is proportional to the number of spikes (scatter of contiguous
weight runs through precomputed border-aware tables; max-pool windows touched only
where an input spiked) plus one vectorised sweep over the neuron states of each
conv/linear layer (drive, threshold, reset, spike list).

The scatter rows and the sweep run on the widest SIMD kernels the CPU has (AVX-512F,
AVX2, else portable), chosen once at import whatever the build flags: simd_level()
says which, set_simd_level() narrows it (tests, benchmarks). All paths give the same
bits. Benchmark hooks live in spikecast.ext._bench, over the same kernels.
"""

# The types are declared once, in ext/_engine.pxd. setup.py names this module
# spikecast.ext._engine while its folder is ext/, so Cython's lookup of the
# same-name pxd (by qualified name) misses it; include it textually instead.
include "_engine.pxd"

cimport cython
from libc.math cimport exp, floorf
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

import numpy as np

from spikecast.ext.core.errors import SpikecastError


# The kernels shared with _bench.pyx, and the SIMD dispatch.
include "_kernels.pxi"

# ----------------------------------------------------------------------------------
# Engine-only kernels (no Python objects, no GIL).
# ----------------------------------------------------------------------------------

cdef inline void axpy_row(float* dst, const float* src, float a, int n) noexcept nogil:
    """dst[:n] += a * src[:n] (frame current)."""
    cdef int j
    for j in range(n):
        dst[j] += a * src[j]


cdef int pool_step(
    const LayerPlan* lp,
    LayerState* ls,           # in/out: counts, windows; out: spikes
    const int32_t* src,       # in: spiking inputs, channel-last
    int n_src,
    int t,
) noexcept nogil:
    """Gated max-pool: a window passes a spike iff its highest-count input spiked now.

    Each window keeps its winner: the input with the largest count, lowest index on a
    tie (for one channel, channel-last index order is the window's row-major order).
    Counts only grow, and only for inputs that spike, so once this step's counts are
    in, the new winner is the best of the old winner and the window's spiking inputs:
    only windows that contain a spike are touched. The final winner spiked iff some
    spiking input took the window or the old winner itself spiked (``hit``).

    Each window keeps its winner's count (one random load less per spike). It is stale
    only while the winner has spiked this step and not yet been compared; a stale count
    is lower than the winner's own fresh entry, which is compared later in the same loop,
    so the final winner (the largest (count, -index)) and ``hit`` are unchanged.
    """
    cdef int e, i, pos, c, k, k1, o, w, cw, ci, fresh, better, hit
    cdef int n_touched = 0, n_out = 0
    cdef int C = lp.c_in
    cdef int32_t* counts = ls.counts
    cdef PoolWindow* win = ls.windows
    cdef PoolWindow* pw
    cdef int32_t* out = ls.spikes
    # 1. Counts include this step.
    for e in range(n_src):
        counts[src[e]] += 1
    # 2. Challenge each touched window's winner and list the windows touched. Branch-free:
    #    the outcomes are data-dependent coin flips that a predictor gets wrong.
    for e in range(n_src):
        i = src[e]
        ci = counts[i]
        pos = split_index(i, C, lp.c_in_shift, &c)
        k1 = lp.tab_ptr[pos + 1]
        for k in range(lp.tab_ptr[pos], k1):
            o = lp.tab_m[k] * C + c
            pw = &win[o]
            fresh = pw.touched != t
            pw.touched = t
            out[n_touched] = o
            n_touched += fresh
            w = pw.winner
            cw = pw.wcount
            better = (ci > cw) | ((ci == cw) & (i < w))
            hit = better | (i == w)
            pw.winner = w + better * (i - w)
            pw.wcount = cw + hit * (ci - cw)
            pw.hit = (pw.hit & (1 - fresh)) | hit
    # 3. Emit the touched windows whose winner spiked (filtered in place).
    for e in range(n_touched):
        o = out[e]
        out[n_out] = o
        n_out += win[o].hit
    return n_out


cdef int pool_step_count(
    const LayerPlan* lp,
    LayerState* ls,           # in/out: counts, windows' M (wmax); out: spikes
    const int32_t* src,       # in: spiking inputs, channel-last (an input once per spike)
    int n_src,
    bint unique,              # every input at most once in src (single-spike sources)
) noexcept nogil:
    """Count max-pool: a window emits M(t) - M(t-1) spikes, M its inputs' largest count.

    Counts only grow, and only for inputs that spike, so M changes only in windows that
    contain a spike, and only to the count of one of this step's spiking inputs: with
    this step's counts in, each spiking input raises its windows' M to its count,
    emitting one spike per unit raised. A burst input listed m times raises M at its
    first entry; the later ones find M already there.
    """
    cdef int e, i, c, k, k1, o, ci, m, pos
    cdef int n_out = 0
    cdef int C = lp.c_in
    cdef int32_t* counts = ls.counts
    cdef int32_t* wmax = ls.wmax
    cdef int32_t* out = ls.spikes
    if not unique:  # a burst input's count is in before its first entry is compared
        for e in range(n_src):
            counts[src[e]] += 1
    for e in range(n_src):
        i = src[e]
        if unique:
            ci = counts[i] + 1
            counts[i] = ci
        else:
            ci = counts[i]
        pos = split_index(i, C, lp.c_in_shift, &c)
        k1 = lp.tab_ptr[pos + 1]
        for k in range(lp.tab_ptr[pos], k1):
            o = lp.tab_m[k] * C + c
            m = wmax[o]
            if unique:
                # Its count rose by one, so it raises M by at most one (M >= its last
                # count). Branch-free: whether it does is a coin flip that a branch would
                # mispredict (most of this kernel's time); `unique` is loop-invariant.
                out[n_out] = o
                n_out += m < ci
                m = ci if ci > m else m
            else:
                while m < ci:
                    out[n_out] = o
                    n_out += 1
                    m += 1
            wmax[o] = m
    return n_out


cdef int pool_step_burst(
    const LayerPlan* lp,
    LayerState* ls,
    const int32_t* src,       # in: spiking inputs, an input repeated once per spike
    int n_src,
    int t,
    uint8_t* mult,            # scratch (n_in,) all zero; left all zero
) noexcept nogil:
    """The gated max-pool when inputs spike up to max_spikes times a step: counts grow by
    each spike (pool_step does that with repeated entries), and a window passes as many
    spikes as its winner emitted this step."""
    cdef int e, r, m, o, k, n, total = 0
    cdef int32_t* out = ls.spikes
    for e in range(n_src):
        mult[src[e]] += 1
    n = pool_step(lp, ls, src, n_src, t)
    for e in range(n):
        total += mult[ls.windows[out[e]].winner]
    # Expand in place from the back: window e's copies land at or after position e.
    k = total
    for e in range(n - 1, -1, -1):
        o = out[e]
        m = mult[ls.windows[o].winner]
        for r in range(m):
            k -= 1
            out[k] = o
    for e in range(n_src):
        mult[src[e]] = 0
    return total


@cython.cdivision(True)
cdef int sweep_burst(
    float* v, const float* drive, int period, int n, float threshold, int max_spikes, int32_t* out,
) noexcept nogil:
    """V += drive; where V >= θ the neuron emits m = min(floor(V/θ), B) spikes (float32
    division, as the reference) and V -= m·θ; each spike is one entry of the list."""
    cdef int p = 0, j, r, m, n_sp = 0
    cdef float x, q
    cdef float* vp
    while p < n:
        vp = v + p
        for j in range(period):
            x = vp[j] + drive[j]
            if x >= threshold:
                q = floorf(x / threshold)
                m = max_spikes if q >= <float> max_spikes else <int> q
                if m < 1:
                    m = 1
                x = x - threshold * <float> m
                for r in range(m):
                    out[n_sp] = p + j
                    n_sp += 1
            vp[j] = x
        p += period
    return n_sp


cdef void integrate(float* v, const float* drive, int period, int n) noexcept nogil:
    """The output layer does not spike: V += drive (repeated every `period` neurons)."""
    cdef int p, j
    cdef float* vp
    p = 0
    while p < n:
        vp = v + p
        p += period
        for j in range(period):
            vp[j] += drive[j]


cdef void frame_current(
    const LayerPlan* lp,
    const float* x,           # in: frame, torch (C, H, W) order
    float* current,           # out: (n_out,) W·x + b, channel-last
) noexcept nogil:
    """The first layer's input current, computed once per frame by scatter of x."""
    cdef int c, pos, k, k1, i
    cdef int hw = lp.h_in * lp.w_in
    cdef int per_c_in = lp.kh * lp.kw * lp.c_out_g
    cdef float val
    cdef float* cur
    cdef const float* wb
    for pos in range(lp.n_out // lp.c_out):
        memcpy(current + pos * lp.c_out, lp.bias, lp.c_out * sizeof(float))
    for c in range(lp.c_in):
        for pos in range(hw):
            val = x[c * hw + pos]
            if val == 0:
                continue
            if lp.kind == KIND_CONV:
                wb = lp.weight + <Py_ssize_t> c * per_c_in
                cur = current + (c // lp.c_in_g) * lp.c_out_g  # grouped: the spike's group
                k1 = lp.tab_ptr[pos + 1]
                for k in range(lp.tab_ptr[pos], k1):
                    axpy_row(cur + lp.tab_m[k], wb + lp.tab_w[k], val, lp.tab_n[k])
            else:
                i = pos * lp.c_in + c
                axpy_row(current, lp.weight + <Py_ssize_t> i * lp.n_out, val, lp.n_out)


@cython.cdivision(True)
cdef void membrane_logits(const NetPlan* p, EngineState* s) noexcept nogil:
    """The membrane read-out (docs/step-semantics.md, "Read-out"): u = ReLU(N + (V − v_init·θ)·θ⁻¹)
    of the source layer (its integrated input in units of θ), max-pooled through the
    pools between, then z_k = λ_L (Σ_i u_i W_ik + b_k·t)/t, summed in channel-last order
    in four partial sums (spk_dot16), in float32 (as the reference)."""
    cdef int l, j, o, k, src = p.readout_src
    cdef float acc[16]
    cdef const LayerPlan* lp = &p.layers[src]
    cdef const float* v = s.layers[src].v
    cdef float* u = s.ro_buf
    cdef float* pooled
    cdef float inv = p.readout_inv_theta
    cdef float v0 = lp.v_init
    cdef float tf = s.t_eff
    if src + 1 < p.n_layers - 1:  # the first max-pool reads u where its windows need it
        lp = &p.layers[src + 1]
        u = u + p.layers[src].n_out
        spk_relu_pool_max(simd_path, u, lp.n_out, s.ro_base, v, v0, inv, lp.h_in * lp.w_in,
                          lp.c_in, lp.tab_ptr, lp.tab_m)
    else:
        spk_soft_relu(simd_path, u, s.ro_base, v, v0, inv, lp.n_out)
    for l in range(src + 2, p.n_layers - 1):  # further max-pools: each window's largest u
        lp = &p.layers[l]
        pooled = u + p.layers[l - 1].n_out
        spk_pool_max(simd_path, pooled, lp.n_out, u, lp.h_in * lp.w_in, lp.c_in, lp.tab_ptr, lp.tab_m)
        u = pooled
    lp = &p.layers[p.n_layers - 1]
    pooled = u + lp.n_in  # the output's sums, channel-last
    for k in range(0, p.readout_pad, 16):
        spk_dot16(simd_path, acc, u, p.readout_w + k, lp.n_in, p.readout_pad)
        for j in range(min(16, lp.n_out - k)):
            pooled[k + j] = acc[j]
    for k in range(p.n_classes):
        o = p.out_perm[k]
        s.logits[k] = (lp.lam * (pooled[o] + lp.bias[o] * tf)) / tf


cdef void read_out(const NetPlan* p, EngineState* s) noexcept nogil:
    """z(t) = λ_L V_L / t in float32 (as the reference), or the membrane read-out;
    c(t) = max softmax(z / T), or under the evidence rule c(t) = max softmax(z·t/(t_e·T))
    (docs/decisions.md).

    t_eff equals t (exactly, as a float) unless decay() has scaled the evidence down."""
    cdef const LayerPlan* lp = &p.layers[p.n_layers - 1]
    cdef const float* v = s.layers[p.n_layers - 1].v
    cdef float lam = lp.lam
    cdef float tf = s.t_eff
    cdef float z, zmax = 0
    cdef int k, arg = 0
    cdef double total = 0
    # The evidence rule's gain t/t_e (1 under the rate rule: x·1.0 == x, bit for bit).
    cdef double g = (<double> tf) / (<double> p.evidence_steps) if p.evidence_steps > 0 else 1.0
    if p.readout_src >= 0:
        membrane_logits(p, s)
    for k in range(p.n_classes):
        if p.readout_src < 0:
            s.logits[k] = (lam * v[p.out_perm[k]]) / tf
        z = s.logits[k]
        if k == 0 or z > zmax:
            zmax = z
            arg = k
    for k in range(p.n_classes):
        total += exp(((<double> s.logits[k] - <double> zmax) / p.temperature) * g)
    s.class_index = arg
    s.confidence = 1.0 / total


cdef void engine_step(
    const NetPlan* p,
    EngineState* s,
    const int32_t* events,    # in: torch flat input indices of this step (or NULL)
    int n_events,
    bint readout,             # compute z(t), c(t) and the class at the end of the step
) noexcept nogil:
    """One time step through every layer (docs/step-semantics.md). The read-out depends
    only on the state after the step, so a caller that will not look at it (no exit
    check at this step, and not the last step of a call) skips it; the next read-out is
    the same either way."""
    cdef int l
    cdef const LayerPlan* lp
    cdef LayerState* ls
    cdef const float* drive
    cdef int period, k
    cdef const int32_t* src
    cdef const int32_t* perm
    cdef int n_src
    cdef const LayerPlan* xp
    cdef const LayerState* xs
    cdef uint64_t* bits
    s.t += 1
    s.t_eff += 1.0
    for l in range(p.n_layers):
        lp = &p.layers[l]
        ls = &s.layers[l]
        if lp.src < 0:
            src, n_src, perm = events, n_events, p.in_perm
        else:  # an earlier layer: its spikes of this step
            src, n_src, perm = s.layers[lp.src].spikes, s.layers[lp.src].n_spikes, NULL
        if lp.kind == KIND_POOL:
            if p.pool_count:
                ls.n_spikes = pool_step_count(lp, ls, src, n_src, lp.src >= 0 and lp.max_spikes == 1)
            elif lp.max_spikes > 1:
                ls.n_spikes = pool_step_burst(lp, ls, src, n_src, s.t, s.mult)
            else:
                ls.n_spikes = pool_step(lp, ls, src, n_src, s.t)
        else:
            drive = lp.bias
            period = lp.c_out
            if l == 0 and s.has_current:
                drive = s.current
                period = lp.n_out
            # Row marks for the sparse sweep (not while a frame current drives every row).
            bits = ls.bits if lp.sweep_mode != SWEEP_DENSE and drive == lp.bias else NULL
            if n_src > 0:
                if lp.kind == KIND_CONV:
                    ls.synops += scatter_conv(lp, ls.v, src, n_src, perm, p.n_input, bits, ls.summary)
                else:
                    ls.synops += scatter_linear(lp, ls.v, src, n_src, perm, p.n_input, bits, ls.summary)
            for k in range(p.extra_ptr[l], p.extra_ptr[l + 1]):
                xp = &p.extras[k]
                xs = &s.layers[xp.src]
                if xs.n_spikes > 0:
                    if xp.kind == KIND_CONV:
                        ls.synops += scatter_conv(xp, ls.v, xs.spikes, xs.n_spikes, NULL, 0, bits, ls.summary)
                    else:
                        ls.synops += scatter_linear(xp, ls.v, xs.spikes, xs.n_spikes, NULL, 0, bits, ls.summary)
            if lp.spiking:
                if lp.max_spikes > 1:  # burst layers are compiled dense (no row marks)
                    ls.n_spikes = sweep_burst(ls.v, drive, period, lp.n_out, lp.threshold,
                                              lp.max_spikes, ls.spikes)
                elif bits != NULL:
                    ls.n_spikes = spk_sweep_marked(
                        simd_path, ls.v, drive, period, lp.n_out // period, lp.threshold,
                        p.reset_zero, lp.nz_blocks, lp.n_nz_blocks, bits, ls.summary, ls.spikes,
                    )
                else:
                    # Branch-free spike lists when the last step had a spike in about 1/16
                    # of the 16-lane vectors or more: a mispredicted branch then costs more
                    # than a compress store in every vector (measured on N-MNIST streams,
                    # AMD EPYC: 7% per step; 1/4, the old crossover, was tuned elsewhere;
                    # empty steps stay branchy). Speed only: the same spikes either way.
                    ls.n_spikes = sweep_spiking(
                        ls.v, drive, period, lp.n_out, lp.threshold, p.reset_zero, s.mask,
                        ls.spikes, ls.n_spikes * 256 > lp.n_out,
                    )
                if l == p.readout_src:  # N for the membrane read-out (a burst lists each spike)
                    for k in range(ls.n_spikes):
                        s.ro_base[ls.spikes[k]] += 1.0
            else:
                # A bias-free output layer integrates nothing: V + 0 = V (never -0, see decay).
                if lp.sweep_mode != SWEEP_SPARSE or drive != lp.bias:
                    integrate(ls.v, drive, period, lp.n_out)
                ls.n_spikes = 0
        ls.spike_total += ls.n_spikes
    if readout:
        read_out(p, s)


cdef inline void step_csr(
    const NetPlan* p,
    EngineState* s,
    const int32_t* idx,       # in: events of all steps (CSR values), or NULL for no input
    Py_ssize_t n_idx,
    const int64_t* offsets,   # in: CSR offsets into idx
    int k,
    bint readout,
) noexcept nogil:
    """One step with the events of step k of a CSR pair (none if idx is NULL)."""
    cdef int64_t a, b
    if idx == NULL:
        engine_step(p, s, NULL, 0, readout)
        return
    a = offsets[k]
    b = offsets[k + 1]
    if a < 0 or b > n_idx or b < a:  # only if mutated after validation
        a = b = 0
    engine_step(p, s, idx + a, <int> (b - a), readout)


cdef int run_steps(
    const NetPlan* p,
    EngineState* s,
    const int32_t* idx,       # in: events of all steps (CSR values), or NULL for no input
    Py_ssize_t n_idx,
    const int64_t* offsets,   # in: (n_steps + 1,) CSR offsets into idx
    int n_steps,
    double tau,
    int t_min,
    int t_max,
) noexcept nogil:
    """Advance up to n_steps; stop at the first confident step or at t_max. Returns steps run.
    The read-out runs where the exit rule looks at it and after the last step run."""
    cdef int k
    cdef bint check
    for k in range(n_steps):
        # The rule looks at this step (the step makes s.t one more). τ >= 1 means never
        # confident, even where c(t) rounds to exactly 1.0 in double (the evidence
        # rule's summed margins can get that large).
        check = tau < 1.0 and s.t + 1 >= t_min
        step_csr(p, s, idx, n_idx, offsets, k, check or s.t + 1 >= t_max or k == n_steps - 1)
        if check and s.confidence >= tau:
            s.exit = EXIT_CONFIDENT
            return k + 1
        if s.t >= t_max:
            s.exit = EXIT_MAX_STEPS
            return k + 1
    return n_steps


cdef inline Py_ssize_t row_words(const LayerPlan* lp) noexcept nogil:
    """Words of the row-mark bitmap of a MIXED/SPARSE layer: one bit per c_out row."""
    return (lp.n_out // lp.c_out + 63) // 64


cdef inline Py_ssize_t summary_words(const LayerPlan* lp) noexcept nogil:
    return (row_words(lp) + 63) // 64


cdef void reset_state(const NetPlan* p, EngineState* s) noexcept nogil:
    cdef int l, o
    cdef const LayerPlan* lp
    cdef LayerState* ls
    s.t = 0
    s.t_eff = 0.0
    s.exit = EXIT_NONE
    s.class_index = 0
    s.confidence = 1.0 / p.n_classes
    memset(s.logits, 0, p.n_classes * sizeof(float))
    if p.readout_src >= 0:
        memset(s.ro_base, 0, p.layers[p.readout_src].n_out * sizeof(float))
    for l in range(p.n_layers):
        lp = &p.layers[l]
        ls = &s.layers[l]
        ls.n_spikes = 0
        ls.synops = 0
        ls.spike_total = 0
        if ls.v != NULL:
            if lp.v_init == 0:
                memset(ls.v, 0, lp.n_out * sizeof(float))
            else:  # the network's v_init·θ (docs/step-semantics.md)
                for o in range(lp.n_out):
                    ls.v[o] = lp.v_init
        if ls.bits != NULL:
            memset(ls.bits, 0, row_words(lp) * sizeof(uint64_t))
            memset(ls.summary, 0, summary_words(lp) * sizeof(uint64_t))
        if lp.kind == KIND_POOL:
            memset(ls.counts, 0, lp.n_in * sizeof(int32_t))
            if p.pool_count:
                memset(ls.wmax, 0, lp.n_out * sizeof(int32_t))
                continue
            for o in range(lp.n_out):
                ls.windows[o].winner = lp.win_init[o]
                ls.windows[o].wcount = 0
                ls.windows[o].touched = 0
                ls.windows[o].hit = 0


@cython.cdivision(True)
cdef void decay_state(const NetPlan* p, EngineState* s, float factor) noexcept nogil:
    """Forget old evidence exponentially: V_L <- factor·V_L and t_eff <- factor·t_eff, so
    z = λ_L V_L / t_eff becomes a weighted average in which each earlier decision's span
    counts factor times less. Hidden layers stay warm; step and cost counters restart.
    The membrane read-out's integrated input E = N + (V − v_init·θ)/θ of its source
    becomes factor·E while V stays: N <- factor·E − (V − v_init·θ)/θ."""
    cdef int l, j
    cdef const LayerPlan* lp = &p.layers[p.n_layers - 1]
    cdef float* v = s.layers[p.n_layers - 1].v
    cdef float r
    for j in range(lp.n_out):
        v[j] = v[j] * factor + 0.0  # + 0: a negative V times 0 is -0, and V stays never -0
    if p.readout_src >= 0:
        lp = &p.layers[p.readout_src]
        v = s.layers[p.readout_src].v
        for j in range(lp.n_out):
            r = (v[j] - lp.v_init) * p.readout_inv_theta
            s.ro_base[j] = (s.ro_base[j] + r) * factor - r
    s.t_eff *= factor
    s.t = 0
    s.exit = EXIT_NONE
    for l in range(p.n_layers):
        s.layers[l].synops = 0
        s.layers[l].spike_total = 0


# ----------------------------------------------------------------------------------
# Python-facing classes: hold buffers, release the GIL around the kernels.
# ----------------------------------------------------------------------------------

cdef void* _carve(char** cursor, size_t nbytes) noexcept:
    """Take nbytes (rounded up to 64) from the arena at *cursor; NULL cursor only sizes."""
    cdef void* ptr = cursor[0]
    cursor[0] += (nbytes + 63) & ~(<size_t> 63)
    return ptr


cdef class CompiledPlan:
    """The read-only compiled network; built by spikecast.ext.engine.CompiledNetwork.

    ``layers`` is a list of dicts of ints, floats and contiguous read-only arrays,
    already validated and laid out for scatter. The arrays are kept alive here.
    """

    cdef NetPlan plan
    cdef LayerPlan* layer_plans
    cdef LayerPlan* extra_plans
    cdef list _keep

    def __cinit__(
        self,
        list layers,
        const int32_t[::1] in_perm,
        const int32_t[::1] out_perm,
        int n_classes,
        double temperature,
        double evidence_steps,
        bint reset_zero,
        bint pool_count,
        list extras,
        const int32_t[::1] extra_ptr,
        int readout_src = -1,
        const float[:, ::1] readout_weight = None,
    ):
        cdef int l, n = len(layers)
        cdef LayerPlan* lp
        if extra_ptr.shape[0] != n + 1 or extra_ptr[0] != 0 or extra_ptr[n] != len(extras):
            raise ValueError("extra_ptr does not match the layers and extras")
        for l in range(n):
            if extra_ptr[l + 1] < extra_ptr[l]:
                raise ValueError("extra_ptr is not ascending")
        self._keep = [in_perm.base, out_perm.base, extra_ptr.base]
        self.layer_plans = <LayerPlan*> _alloc(n, sizeof(LayerPlan))
        self.extra_plans = <LayerPlan*> _alloc(len(extras), sizeof(LayerPlan))
        self.plan.extras = self.extra_plans
        self.plan.extra_ptr = &extra_ptr[0]
        for l in range(len(extras)):
            fill_layer(&self.extra_plans[l], extras[l], self._keep)
        self.plan.n_layers = n
        self.plan.layers = self.layer_plans
        self.plan.n_input = in_perm.shape[0]
        self.plan.in_perm = _iptr(in_perm)
        self.plan.out_perm = _iptr(out_perm)
        self.plan.n_classes = n_classes
        self.plan.temperature = <float> temperature
        self.plan.evidence_steps = <float> evidence_steps
        self.plan.reset_zero = reset_zero
        self.plan.pool_count = pool_count
        self.plan.max_neurons = 1
        for l in range(n):
            lp = &self.layer_plans[l]
            fill_layer(lp, layers[l], self._keep)
            if lp.n_out > self.plan.max_neurons:
                self.plan.max_neurons = lp.n_out
        # Membrane read-out: the wrapper has checked the chain (Network.readout_source);
        # keep memory safe here anyway.
        if not -1 <= readout_src < n - 1:
            raise ValueError("readout_src out of range")
        self.plan.readout_src = readout_src
        self.plan.readout_floats = 0
        if readout_src >= 0:
            if self.layer_plans[readout_src].kind == KIND_POOL or self.layer_plans[n - 1].kind != KIND_LINEAR:
                raise ValueError("the membrane read-out reads a conv or linear layer into a linear output")
            for l in range(readout_src, n):
                if l > readout_src and l < n - 1 and self.layer_plans[l].kind != KIND_POOL:
                    raise ValueError("only max-pools may lie between the read-out's source and the output")
                if l > readout_src and self.layer_plans[l].n_in != self.layer_plans[l - 1].n_out:
                    raise ValueError("the read-out chain's sizes do not match")
                self.plan.readout_floats += self.layer_plans[l].n_out
            lp = &self.layer_plans[n - 1]
            if (readout_weight is None or readout_weight.shape[0] != lp.n_in
                    or readout_weight.shape[1] % 16 or readout_weight.shape[1] < lp.n_out):
                raise ValueError("readout_weight must be (n_in, n_out rounded up to 16) of the output")
            self._keep.append(readout_weight.base)
            self.plan.readout_w = &readout_weight[0, 0]
            # θ⁻¹ rounded to float32 once: a multiply per neuron instead of a division
            # (exact for the θ = 1 of converted networks; the reference uses the same value).
            self.plan.readout_inv_theta = <float> (1.0 / <double> self.layer_plans[readout_src].threshold)
            self.plan.readout_pad = <int> readout_weight.shape[1]

    def __dealloc__(self):
        free(self.layer_plans)
        free(self.extra_plans)

    @property
    def n_layers(self) -> int:
        return self.plan.n_layers


cdef Py_ssize_t csr_pointers(
    const int32_t[::1] indices,
    const int64_t[::1] offsets,
    int n_steps,
    const int32_t** idx,      # out: the events, never NULL (NULL means "no input")
    const int64_t** off,      # out: the offsets
) except -1:
    """Pointers into a CSR pair of n_steps steps of events; returns the number of events."""
    if offsets is None or offsets.shape[0] < n_steps + 1:
        raise ValueError("offsets must have n_steps + 1 entries")
    cdef Py_ssize_t n_idx = indices.shape[0]
    idx[0] = &indices[0] if n_idx > 0 else <const int32_t*> &offsets[0]
    off[0] = &offsets[0]
    return n_idx


def events_valid(const int32_t[::1] indices, const int64_t[::1] offsets, int n_input) -> bool:
    """Whether a CSR pair is well formed: offsets start at 0, never decrease and end at
    len(indices), every index in [0, n_input). One pass in C: the per-packet check of
    Engine.feed (spikecast.ext.engine._check_events says what is wrong when it is not)."""
    cdef Py_ssize_t k, n_off = offsets.shape[0], n_idx = indices.shape[0]
    if n_off < 1 or offsets[0] != 0 or offsets[n_off - 1] != n_idx:
        return False
    for k in range(n_off - 1):
        if offsets[k + 1] < offsets[k]:
            return False
    for k in range(n_idx):
        if <unsigned int> indices[k] >= <unsigned int> n_input:
            return False
    return True


cdef class EngineCore:
    """Per-stream state over a shared CompiledPlan. Not for two threads at once."""

    cdef EngineState st
    cdef void* arena
    cdef CompiledPlan owner
    cdef const NetPlan* plan
    cdef bint busy

    def __cinit__(self, CompiledPlan plan not None):
        cdef int l, rep
        cdef size_t total = 0
        cdef char* cur
        cdef const LayerPlan* lp
        cdef LayerState* ls
        cdef const NetPlan* p = &plan.plan
        self.owner = plan
        self.plan = p
        self.st.layers = <LayerState*> _alloc(p.n_layers, sizeof(LayerState))
        # One arena for every buffer, each 64-byte aligned: rows of 16 floats then never
        # straddle a cache line (AVX-512 scatter is ~1.5x faster aligned). Pass 0 sizes
        # the arena, pass 1 carves it.
        for rep in range(2):
            if rep == 1:
                self.arena = _alloc(total + 64, 1)
                cur = <char*> ((<uintptr_t> self.arena + 63) & ~(<uintptr_t> 63))
            else:
                cur = NULL
            self.st.logits = <float*> _carve(&cur, p.n_classes * sizeof(float))
            if p.readout_src >= 0:
                self.st.ro_base = <float*> _carve(&cur, p.layers[p.readout_src].n_out * sizeof(float))
                self.st.ro_buf = <float*> _carve(&cur, p.readout_floats * sizeof(float))
            self.st.mask = <uint8_t*> _carve(&cur, p.max_neurons)
            self.st.mult = <uint8_t*> _carve(&cur, p.max_neurons)
            self.st.current = <float*> _carve(&cur, p.layers[0].n_out * sizeof(float))
            for l in range(p.n_layers):
                lp = &p.layers[l]
                ls = &self.st.layers[l]
                # n_out + 16: the branch-free list builders may write one slot past the
                # last entry they keep, the SIMD sweeps a whole vector of 16.
                # A burst layer lists a neuron once per spike: up to max_spikes times.
                ls.spikes = <int32_t*> _carve(&cur, (<size_t> lp.n_out * lp.max_spikes + 16) * sizeof(int32_t))
                if lp.kind == KIND_POOL:
                    ls.counts = <int32_t*> _carve(&cur, lp.n_in * sizeof(int32_t))
                    if p.pool_count:
                        ls.wmax = <int32_t*> _carve(&cur, lp.n_out * sizeof(int32_t))
                    else:
                        ls.windows = <PoolWindow*> _carve(&cur, lp.n_out * sizeof(PoolWindow))
                else:
                    ls.v = <float*> _carve(&cur, lp.n_out * sizeof(float))
                    if lp.sweep_mode != SWEEP_DENSE and lp.spiking:
                        ls.bits = <uint64_t*> _carve(&cur, row_words(lp) * sizeof(uint64_t))
                        ls.summary = <uint64_t*> _carve(&cur, summary_words(lp) * sizeof(uint64_t))
            total = <size_t> cur
        reset_state(p, &self.st)

    def __dealloc__(self):
        free(self.st.layers)
        free(self.arena)

    cdef int _enter(self) except -1:
        # Check-and-set under the GIL: a second thread gets an error, not a data race.
        if self.busy:
            raise SpikecastError("this engine is running in another thread; use one engine per thread")
        self.busy = True
        return 0

    def reset(self) -> None:
        self._enter()
        reset_state(self.plan, &self.st)
        self.st.has_current = 0
        self.busy = False

    def decay(self, float factor) -> None:
        self._enter()
        decay_state(self.plan, &self.st, factor)
        self.busy = False

    def set_current(self, const float[::1] frame) -> None:
        """Compute the first layer's input current from a frame in torch order."""
        if frame.shape[0] != self.plan.n_input:
            raise ValueError("frame size does not match the plan")
        self._enter()
        try:
            with nogil:
                frame_current(&self.plan.layers[0], &frame[0], self.st.current)
                self.st.has_current = 1
        finally:
            self.busy = False

    def advance(
        self,
        const int32_t[::1] indices,
        const int64_t[::1] offsets,
        int n_steps,
        double tau,
        int t_min,
        int t_max,
    ) -> int:
        """Run up to n_steps steps (events from the CSR pair, or none if indices is None)."""
        cdef const int32_t* idx = NULL
        cdef const int64_t* off = NULL
        cdef Py_ssize_t n_idx = 0
        cdef int done
        if indices is not None:
            n_idx = csr_pointers(indices, offsets, n_steps, &idx, &off)
        self._enter()
        try:
            with nogil:
                done = run_steps(self.plan, &self.st, idx, n_idx, off, n_steps, tau, t_min, t_max)
        finally:
            self.busy = False
        return done

    def run_frames(
        self,
        const float[:, ::1] frames,
        int t_max,
        double tau,
        int t_min,
        int64_t[::1] class_index,
        double[::1] confidence,
        int32_t[::1] steps,
        int8_t[::1] exit_code,
        int64_t[:, ::1] synops,
        int64_t[:, ::1] spikes,
        float[:, ::1] logits,
    ) -> None:
        """Run each frame from reset with early exit; write one row of each output per frame."""
        cdef Py_ssize_t i, n = frames.shape[0]
        cdef int l
        cdef const NetPlan* p = self.plan
        if frames.shape[1] != p.n_input or logits.shape[1] != p.n_classes:
            raise ValueError("frames or logits do not match the plan")
        if synops.shape[1] != p.n_layers or spikes.shape[1] != p.n_layers:
            raise ValueError("synops or spikes do not match the plan")
        for arr_len in (class_index.shape[0], confidence.shape[0], steps.shape[0],
                        exit_code.shape[0], synops.shape[0], spikes.shape[0], logits.shape[0]):
            if arr_len < n:
                raise ValueError("an output array is shorter than the batch")
        self._enter()
        try:
            with nogil:
                for i in range(n):
                    reset_state(p, &self.st)
                    frame_current(&p.layers[0], &frames[i, 0], self.st.current)
                    self.st.has_current = 1
                    steps[i] = run_steps(p, &self.st, NULL, 0, NULL, t_max, tau, t_min, t_max)
                    class_index[i] = self.st.class_index
                    confidence[i] = self.st.confidence
                    exit_code[i] = self.st.exit
                    memcpy(&logits[i, 0], self.st.logits, p.n_classes * sizeof(float))
                    for l in range(p.n_layers):
                        synops[i, l] = self.st.layers[l].synops
                        spikes[i, l] = self.st.layers[l].spike_total
        finally:
            self.busy = False

    def trace(
        self,
        const int32_t[::1] indices,
        const int64_t[::1] offsets,
        int n_steps,
        int32_t[::1] class_index,
        float[::1] confidence,
        int64_t[::1] synops,
        float[:, ::1] logits,
    ) -> int:
        """Advance n_steps from the current state (events from the CSR pair, or the frame
        current if indices is None) and record each step's class, c(t), total SynOps and,
        if ``logits`` has rows, z(t). Returns the steps run."""
        cdef const int32_t* idx = NULL
        cdef const int64_t* off = NULL
        cdef Py_ssize_t n_idx = 0
        cdef int k, l
        cdef int64_t syn
        cdef bint keep_logits = logits.shape[0] > 0
        cdef const NetPlan* p = self.plan
        if class_index.shape[0] < n_steps or confidence.shape[0] < n_steps or synops.shape[0] < n_steps:
            raise ValueError("output arrays are shorter than n_steps")
        if keep_logits and (logits.shape[0] < n_steps or logits.shape[1] != p.n_classes):
            raise ValueError("logits must be (n_steps, n_classes)")
        if indices is not None:
            n_idx = csr_pointers(indices, offsets, n_steps, &idx, &off)
        self._enter()
        try:
            with nogil:
                for k in range(n_steps):
                    step_csr(p, &self.st, idx, n_idx, off, k, True)
                    class_index[k] = self.st.class_index
                    confidence[k] = <float> self.st.confidence
                    syn = 0
                    for l in range(p.n_layers):
                        syn += self.st.layers[l].synops
                    synops[k] = syn
                    if keep_logits:
                        memcpy(&logits[k, 0], self.st.logits, p.n_classes * sizeof(float))
        finally:
            self.busy = False
        return n_steps

    def set_exit(self, int code) -> None:
        self.st.exit = code

    @property
    def t(self) -> int:
        return self.st.t

    @property
    def t_eff(self) -> float:
        return self.st.t_eff

    @property
    def exit_code(self) -> int:
        return self.st.exit

    @property
    def has_current(self) -> bool:
        return bool(self.st.has_current)

    @property
    def confidence(self) -> float:
        return self.st.confidence

    @property
    def class_index(self) -> int:
        return self.st.class_index

    def logits(self) -> np.ndarray:
        out = np.empty(self.plan.n_classes, np.float32)
        cdef float[::1] o = out
        memcpy(&o[0], self.st.logits, self.plan.n_classes * sizeof(float))
        return out

    def synops(self) -> np.ndarray:
        out = np.empty(self.plan.n_layers, np.int64)
        cdef int64_t[::1] o = out
        cdef int l
        for l in range(self.plan.n_layers):
            o[l] = self.st.layers[l].synops
        return out

    def spike_totals(self) -> np.ndarray:
        out = np.empty(self.plan.n_layers, np.int64)
        cdef int64_t[::1] o = out
        cdef int l
        for l in range(self.plan.n_layers):
            o[l] = self.st.layers[l].spike_total
        return out

    def spike_list(self, int layer) -> np.ndarray:
        """Channel-last indices of the neurons of ``layer`` that spiked at the last step."""
        if not 0 <= layer < self.plan.n_layers:
            raise IndexError("layer out of range")
        cdef LayerState* ls = &self.st.layers[layer]
        out = np.empty(ls.n_spikes, np.int32)
        cdef int32_t[::1] o = out
        if ls.n_spikes > 0:
            memcpy(&o[0], ls.spikes, ls.n_spikes * sizeof(int32_t))
        return out
