# The kernels that the engine (_engine.pyx) and its benchmarks (_bench.pyx) share,
# included textually by both after _engine.pxd (the types): one source, each module
# its own compiled copy. nogil, no Python objects, except the plan filler at the end.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc
from libc.string cimport memcpy


# ----------------------------------------------------------------------------------
# Run-time dispatch: the SIMD kernels live in spk_simd.h, compiled per function for
# their instruction set; the CPU is asked once, at import.
# ----------------------------------------------------------------------------------

cdef extern from "spk_simd.h":
    int SPK_PORTABLE, SPK_AVX2, SPK_AVX512F
    int SPK_CTZ64(uint64_t x) noexcept nogil
    int spk_cpu_path() noexcept nogil
    const char* spk_path_name(int path) noexcept nogil
    void spk_add_row_avx512(float* dst, const float* src, int n) noexcept nogil
    void spk_add_row_avx2(float* dst, const float* src, int n) noexcept nogil
    int64_t spk_add_runs_avx512(
        float* v, const float* wb, const int32_t* tab_w, const int32_t* tab_m,
        const int32_t* tab_n, int k, int k1,
    ) noexcept nogil
    int64_t spk_add_runs_avx2(
        float* v, const float* wb, const int32_t* tab_w, const int32_t* tab_m,
        const int32_t* tab_n, int k, int k1,
    ) noexcept nogil
    int spk_sweep_avx512(
        float* v, const float* drive, int period, int n, float threshold, int reset_zero,
        int branch_free, int32_t* out,
    ) noexcept nogil
    int spk_sweep_avx2(
        float* v, const float* drive, int period, int n, float threshold, int reset_zero,
        int branch_free, int32_t* out,
    ) noexcept nogil
    void spk_soft_relu(int path, float* u, const float* base, const float* v, float v0, float inv,
                       int n) noexcept nogil
    void spk_pool_max(int path, float* out, int n_out, const float* u, int n_pos, int c,
                      const int32_t* tab_ptr, const int32_t* tab_m) noexcept nogil
    void spk_relu_pool_max(int path, float* out, int n_out, const float* base, const float* v,
                           float v0, float inv, int n_pos, int c, const int32_t* tab_ptr,
                           const int32_t* tab_m) noexcept nogil
    void spk_dot16(int path, float* acc, const float* u, const float* w, int n, int stride) noexcept nogil
    void spk_mark_rows(uint64_t* bits, uint64_t* summary, int32_t row, int32_t count) noexcept nogil
    int spk_sweep_marked(
        int path, float* v, const float* drive, int c, int n_rows, float threshold,
        int reset_zero, const int32_t* blocks, int n_blocks, uint64_t* bits,
        uint64_t* summary, int32_t* out,
    ) noexcept nogil

# The path the kernels take: the widest the CPU has unless set_simd_level() narrowed it.
# A plain int read at kernel entry; it changes only under the GIL, between runs.
cdef int simd_path = spk_cpu_path()

_PATHS = {spk_path_name(i).decode(): i for i in (SPK_PORTABLE, SPK_AVX2, SPK_AVX512F)}


def simd_level() -> str:
    """The kernel path in use: "avx512f", "avx2" or "portable" (chosen on the CPU at import)."""
    return spk_path_name(simd_path).decode()


def cpu_simd_level() -> str:
    """The widest kernel path this CPU supports (what import chose)."""
    return spk_path_name(spk_cpu_path()).decode()


def set_simd_level(name: str) -> str:
    """Force a kernel path of this module (tests, benchmarks); returns the previous one.

    Raises ValueError for an unknown path or one this CPU lacks. Not while a run is in
    progress in another thread: the kernels read the path once per call.
    """
    global simd_path
    if name not in _PATHS:
        raise ValueError(f"unknown SIMD level {name!r}; expected one of {sorted(_PATHS)}")
    if _PATHS[name] > spk_cpu_path():
        raise ValueError(f"this CPU does not support {name!r} (best: {cpu_simd_level()!r})")
    previous = simd_level()
    simd_path = _PATHS[name]
    return previous


# ----------------------------------------------------------------------------------
# Scatter and sweep kernels (no Python objects, no GIL).
# ----------------------------------------------------------------------------------

cdef inline void add_row(float* dst, const float* src, int n) noexcept nogil:
    """dst[:n] += src[:n]; the one inner loop of every scatter (gcc vectorises it)."""
    cdef int j
    for j in range(n):
        dst[j] += src[j]


cdef inline void add_row_simd(float* dst, const float* src, int n, int path) noexcept nogil:
    """add_row on the given kernel path (the same sums, more lanes at a time)."""
    if path == SPK_AVX512F:
        spk_add_row_avx512(dst, src, n)
    elif path == SPK_AVX2:
        spk_add_row_avx2(dst, src, n)
    else:
        add_row(dst, src, n)


cdef inline int split_index(int i, int c, int shift, int* chan) noexcept nogil:
    """Channel-last index i -> position i // c, channel i % c (a shift for powers of two:
    an integer division costs ~25 cycles, more than a short scatter run)."""
    cdef int pos
    if shift >= 0:
        pos = i >> shift
    else:
        pos = i // c
    chan[0] = i - pos * c
    return pos


cdef int64_t scatter_conv(
    const LayerPlan* lp,
    float* v,                 # out: membranes, channel-last
    const int32_t* src,       # in: spiking inputs
    int n_src,
    const int32_t* perm,      # in: torch -> channel-last map for external input, else NULL
    int n_valid,              # external indices must lie in [0, n_valid)
    uint64_t* bits,           # in/out: row marks of a MIXED/SPARSE layer, else NULL
    uint64_t* summary,
) noexcept nogil:
    """Add each spike's weight runs into the membranes they reach; return SynOps.

    Grouped conv: the runs reach only the spike's group, c_out/g channels from
    (c // (c_in/g)) * (c_out/g) on; the tables hold the offsets of group 0.
    With ``bits``, every output row (pixel) a run reaches is marked for the sweep."""
    cdef int e, i, pos, c, k, k1, r
    cdef int c_in = lp.c_in
    cdef int per_c_in = lp.kh * lp.kw * lp.c_out_g
    cdef bint grouped = lp.c_out_g != lp.c_out
    cdef float* vg = v
    cdef const float* wb
    cdef const int32_t* tab_w = lp.tab_w
    cdef const int32_t* tab_m = lp.tab_m
    cdef const int32_t* tab_n = lp.tab_n
    cdef int64_t synops = 0
    cdef int path = simd_path
    for e in range(n_src):
        i = src[e]
        if perm != NULL:
            if <unsigned int> i >= <unsigned int> n_valid:
                continue
            i = perm[i]
        pos = split_index(i, c_in, lp.c_in_shift, &c)
        wb = lp.weight + <Py_ssize_t> c * per_c_in
        if grouped:
            vg = v + (c // lp.c_in_g) * lp.c_out_g
        k1 = lp.tab_ptr[pos + 1]
        k = lp.tab_ptr[pos]
        if bits != NULL:
            for r in range(k, k1):
                spk_mark_rows(bits, summary, lp.tab_px[r], lp.tab_pn[r])
        # One call per spike (its few runs), not per run: the SIMD kernels cannot inline here.
        if path == SPK_AVX512F:
            synops += spk_add_runs_avx512(vg, wb, tab_w, tab_m, tab_n, k, k1)
        elif path == SPK_AVX2:
            synops += spk_add_runs_avx2(vg, wb, tab_w, tab_m, tab_n, k, k1)
        else:
            while k < k1:
                add_row(vg + tab_m[k], wb + tab_w[k], tab_n[k])
                synops += tab_n[k]
                k += 1
    return synops


cdef int64_t scatter_linear(
    const LayerPlan* lp,
    float* v,                 # out: (n_out,) membranes
    const int32_t* src,       # in: spiking inputs, channel-last
    int n_src,
    const int32_t* perm,      # in: torch -> channel-last map for external input, else NULL
    int n_valid,
    uint64_t* bits,           # in/out: row marks of a MIXED/SPARSE layer (one row), else NULL
    uint64_t* summary,
) noexcept nogil:
    """Add one weight row per spike; return SynOps."""
    cdef int e, i
    cdef int n_out = lp.n_out
    cdef int64_t done = 0
    cdef int path = simd_path
    for e in range(n_src):
        i = src[e]
        if perm != NULL:
            if <unsigned int> i >= <unsigned int> n_valid:
                continue
            i = perm[i]
        add_row_simd(v, lp.weight + <Py_ssize_t> i * n_out, n_out, path)
        done += 1
    if bits != NULL and done > 0:
        spk_mark_rows(bits, summary, 0, 1)
    return done * n_out


cdef void update_subtract(
    float* v,                 # in/out: (n,) membranes
    const float* drive,       # in: (period,) added to every run of `period` neurons
    int period,
    int n,                    # a multiple of period
    float threshold,
    uint8_t* mask,            # out: (n,) 1 where a neuron spiked
) noexcept nogil:
    """V += drive; mask = V >= θ; V -= θ where it spiked. Vectorised over channels.

    Channel-last conv membranes repeat the per-channel bias every c_out neurons, so
    the sweep reads only c_out bias floats instead of a full drive array.
    """
    # s is an int: float->int conversions may trap, which stops gcc vectorising.
    cdef int p, j, s
    cdef float x
    cdef float* vp
    cdef uint8_t* mp
    p = 0
    while p < n:
        vp = v + p
        mp = mask + p
        p += period
        for j in range(period):
            x = vp[j] + drive[j]
            s = x >= threshold
            vp[j] = x - threshold * <float> s  # exactly the reference's V -= θ·S
            mp[j] = <uint8_t> s


cdef void update_zero(
    float* v, const float* drive, int period, int n, float threshold, uint8_t* mask
) noexcept nogil:
    """As update_subtract, but V = 0 where it spiked."""
    cdef int p, j, s
    cdef float x
    cdef float* vp
    cdef uint8_t* mp
    p = 0
    while p < n:
        vp = v + p
        mp = mask + p
        p += period
        for j in range(period):
            x = vp[j] + drive[j]
            s = x >= threshold
            vp[j] = x * <float> (1 - s)  # exactly the reference's V *= 1 - S
            mp[j] = <uint8_t> s


cdef bint little_endian() noexcept nogil:
    cdef uint64_t one = 1
    cdef uint8_t first
    memcpy(&first, &one, 1)
    return first == 1


cdef int compact(const uint8_t* mask, int n, int32_t* out) noexcept nogil:
    """Indices of the set (0/1) bytes of mask, ascending.

    64 bytes at a time: skip them if all clear, else pack them into a 64-bit word
    (w * 0x0102040810204080 >> 56 gathers the low bits of 8 bytes, little-endian)
    and emit one index per set bit, so the cost is ~n/64 plus one per spike.
    """
    cdef int j = 0
    cdef int q, m, n_sp = 0
    cdef int32_t* dst
    cdef uint64_t any_set, bits
    cdef uint64_t[8] words
    if little_endian():
        while j + 64 <= n:
            memcpy(words, mask + j, 64)  # memcpy keeps the loads free of aliasing UB
            any_set = 0
            for q in range(8):
                any_set |= words[q]
            if any_set != 0:
                bits = 0
                for q in range(8):
                    bits |= ((words[q] * <uint64_t> 0x0102040810204080) >> 56) << (8 * q)
                dst = out + n_sp  # a local cursor keeps the count out of memory
                m = 0
                while bits != 0:
                    dst[m] = j + SPK_CTZ64(bits)
                    m += 1
                    bits &= bits - 1
                n_sp += m
            j += 64
    while j < n:  # the tail, or every byte on a big-endian machine
        out[n_sp] = j  # branch-free: n_sp <= j < n, so always in bounds
        n_sp += mask[j]
        j += 1
    return n_sp


cdef int sweep_spiking(
    float* v,                 # in/out: (n,) membranes
    const float* drive,       # in: (period,) bias per channel, or the frame current
    int period,
    int n,
    float threshold,
    int reset_zero,
    uint8_t* mask,            # scratch (n,)
    int32_t* out,             # out: indices that spiked, ascending (n + 16 slots)
    int expect_spikes,        # a hint: many spikes likely (the last step had many)
) noexcept nogil:
    """V += drive; S = V >= θ; reset; emit S as an index list. Returns the spike count.

    The SIMD paths use the compare mask directly as a spike bitmask; the portable one
    goes through a byte mask that compact() turns into indices. The hint picks how the
    SIMD paths build the list (same result either way)."""
    if simd_path == SPK_AVX512F:
        return spk_sweep_avx512(v, drive, period, n, threshold, reset_zero, expect_spikes, out)
    if simd_path == SPK_AVX2:
        return spk_sweep_avx2(v, drive, period, n, threshold, reset_zero, expect_spikes, out)
    if reset_zero:
        update_zero(v, drive, period, n, threshold, mask)
    else:
        update_subtract(v, drive, period, n, threshold, mask)
    return compact(mask, n, out)


# ----------------------------------------------------------------------------------
# Plan building (with the GIL).
# ----------------------------------------------------------------------------------

cdef void* _alloc(size_t n, size_t size) except NULL:
    """calloc that raises MemoryError instead of returning NULL."""
    cdef void* ptr = calloc(n if n > 0 else 1, size)
    if ptr == NULL:
        raise MemoryError(f"cannot allocate {n} x {size} bytes for the engine")
    return ptr


cdef const float* _fptr(const float[::1] a):
    return &a[0] if a.shape[0] > 0 else NULL


cdef const int32_t* _iptr(const int32_t[::1] a):
    return &a[0] if a.shape[0] > 0 else NULL


_ARRAY_KEYS = (
    "weight", "bias", "tab_ptr", "tab_w", "tab_m", "tab_n", "win_init", "nz_blocks", "tab_px", "tab_pn",
)


cdef int fill_layer(LayerPlan* lp, dict d, list keep) except -1:
    """Fill lp from one layer dict of spikecast.ext.engine._compile_layer (validated
    there); its arrays are appended to keep, which must outlive lp."""
    lp.kind = d["kind"]
    lp.src = d["src"]
    lp.spiking = d["spiking"]
    lp.n_in = d["n_in"]
    lp.n_out = d["n_out"]
    lp.c_in, lp.h_in, lp.w_in = d["in_chw"]
    lp.c_out, lp.h_out, lp.w_out = d["out_chw"]
    lp.kh, lp.kw = d["kernel"]
    lp.sh, lp.sw = d["stride"]
    lp.threshold = <float> d["threshold"]
    lp.max_spikes = d.get("max_spikes", 1)
    lp.lam = <float> d["lam"]
    lp.v_init = <float> d["v_init"]
    lp.weight = _fptr(d["weight"])
    lp.bias = _fptr(d["bias"])
    lp.tab_ptr = _iptr(d["tab_ptr"])
    lp.tab_w = _iptr(d["tab_w"])
    lp.tab_m = _iptr(d["tab_m"])
    lp.tab_n = _iptr(d["tab_n"])
    lp.win_init = _iptr(d["win_init"])
    lp.c_in_shift = d["c_in_shift"]
    lp.c_in_g, lp.c_out_g = d["groups_chw"]
    lp.sweep_mode = d["sweep_mode"]
    lp.nz_blocks = _iptr(d["nz_blocks"])
    lp.n_nz_blocks = d["nz_blocks"].shape[0]
    lp.tab_px = _iptr(d["tab_px"])
    lp.tab_pn = _iptr(d["tab_pn"])
    keep.extend([d[key] for key in _ARRAY_KEYS])
    return 0
