/* The engine's SIMD kernels, chosen at run time on the CPU (included by ext/_kernels.pxi).
 *
 * Wheels and plain `pip install .` are built for the x86-64 baseline (SSE2), so the
 * wide kernels are compiled per function with __attribute__((target(...))) and picked
 * once per process with __builtin_cpu_supports: the default build runs AVX-512 on a
 * CPU that has it, and the portable Cython code everywhere else.
 *
 * Spike-exactness: every path does the same float32 operations per neuron as the
 * portable update (V + drive, V >= θ, V - θ or 0 where it spiked; dst + src in the
 * scatter), only more lanes at a time, so all paths give the same bits. The
 * threshold is a positive finite float32 (checked in engine.py), so "V - θ·0" and
 * "V unchanged", and "V·0" and "+0" where V >= θ > 0, agree bit for bit.
 */
#ifndef SPK_SIMD_H
#define SPK_SIMD_H

#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define SPK_CTZ64(x) __builtin_ctzll(x)
#else
static int SPK_CTZ64(unsigned long long x) { int k = 0; while (!(x & 1)) { x >>= 1; k++; } return k; }
#endif

/* Kernel paths, narrowest first; spk_path_name(i) names path i. */
enum { SPK_PORTABLE = 0, SPK_AVX2 = 1, SPK_AVX512F = 2 };

static const char* spk_path_name(int path) {
    switch (path) {
    case SPK_AVX512F: return "avx512f";
    case SPK_AVX2: return "avx2";
    default: return "portable";
    }
}

/* One row of n lanes, one lane at a time: the portable path of spk_sweep_row (below),
   and the scalar tail of the AVX2 sweeps. */
static int spk_sweep_row_portable(float* v, const float* drive, int n, float threshold,
                                  int reset_zero, int base, int32_t* out, int* pending) {
    int n_sp = 0, still = 0;
    for (int j = 0; j < n; j++) {
        float x = v[j] + drive[j];
        int s = x >= threshold;
        v[j] = reset_zero ? x * (float)(1 - s) : x - threshold * (float)s;
        out[n_sp] = base + j;
        n_sp += s;
        still |= s & (v[j] >= threshold);
    }
    *pending |= still;
    return n_sp;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPK_X86_DISPATCH 1
/* Every AVX2 or AVX-512F CPU also has POPCNT (the spike counts of the compress stores). */
#define SPK_AVX512 __attribute__((target("avx512f,popcnt")))
#define SPK_AVX2_FN __attribute__((target("avx2,popcnt")))

/* AVX2 has no compress store: entry m of this table lists the set lanes of the 8-bit
   mask m in ascending order, one byte each (unused slots 0), widened and stored as a
   left-pack (spk_emit_avx2). Filled by spk_cpu_path(), which the modules call at import. */
static uint8_t spk_lpack[256 * 8];

/* The widest path this CPU (and its OS: libgcc checks XGETBV) supports; asked once. */
static int spk_cpu_path(void) {
    static int path = -1;
    if (path < 0) {
        for (int m = 0; m < 256; m++)
            for (int lane = 0, k = 0; lane < 8; lane++)
                if (m >> lane & 1)
                    spk_lpack[m * 8 + k++] = (uint8_t)lane;
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f"))
            path = SPK_AVX512F;
        else if (__builtin_cpu_supports("avx2"))
            path = SPK_AVX2;
        else
            path = SPK_PORTABLE;
    }
    return path;
}

/* ---- AVX-512F ---------------------------------------------------------------- */

/* Lanes [0, n) of a 16-lane mask, 0 <= n <= 16. */
SPK_AVX512 static inline __mmask16 spk_head16(int n) {
    return (__mmask16)((1u << n) - 1u);
}

/* dst[:n] += src[:n]; the tail is one masked step, not a scalar loop. */
SPK_AVX512 static inline void spk_add_row_avx512(float* dst, const float* src, int n) {
    int j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(dst + j, _mm512_add_ps(_mm512_loadu_ps(dst + j), _mm512_loadu_ps(src + j)));
    if (j < n) {
        __mmask16 m = spk_head16(n - j);
        __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + j), _mm512_maskz_loadu_ps(m, src + j));
        _mm512_mask_storeu_ps(dst + j, m, x);
    }
}

/* One spike's conv runs k in [k, k1): v[tab_m[k]:][:tab_n[k]] += wb[tab_w[k]:]. Returns SynOps. */
SPK_AVX512 static int64_t spk_add_runs_avx512(float* v, const float* wb, const int32_t* tab_w,
                                              const int32_t* tab_m, const int32_t* tab_n,
                                              int k, int k1) {
    int64_t synops = 0;
    for (; k < k1; k++) {
        spk_add_row_avx512(v + tab_m[k], wb + tab_w[k], tab_n[k]);
        synops += tab_n[k];
    }
    return synops;
}

/* Append the lanes of k (base + lane) to out[*n_sp]; one 16-lane compress store, so
   out needs 16 slots of room past the last spike it keeps (the engine allocates n + 16). */
SPK_AVX512 static inline void spk_emit_avx512(__mmask16 k, int base, int32_t* out, int* n_sp) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm512_storeu_si512((void*)(out + *n_sp),
                        _mm512_maskz_compress_epi32(k, _mm512_add_epi32(_mm512_set1_epi32(base), iota)));
    *n_sp += __builtin_popcount((unsigned int)k);
}

/* The sweep of whole rows of `period` lanes, period a multiple of 16 (no masks), with
   the reset mode and the spike-list strategy compile-time constants once inlined:
   branch_free emits every vector's (maybe empty) compress store, faster than a branch
   when many vectors hold a spike (the branch is then a coin flip), slower when few do. */
SPK_AVX512 static inline __attribute__((always_inline)) int spk_sweep16_avx512(
    float* v, const float* drive, int period, int n, float threshold, int reset_zero,
    int branch_free, int32_t* out) {
    const __m512 th = _mm512_set1_ps(threshold);
    const __m512 zero = _mm512_setzero_ps();
    int n_sp = 0;
    for (int p = 0; p < n; p += period) {
        float* vp = v + p;
        for (int j = 0; j < period; j += 16) {
            __m512 x = _mm512_add_ps(_mm512_load_ps(vp + j), _mm512_loadu_ps(drive + j));
            __mmask16 k = _mm512_cmp_ps_mask(x, th, _CMP_GE_OQ);
            x = reset_zero ? _mm512_mask_mov_ps(x, k, zero) : _mm512_mask_sub_ps(x, k, x, th);
            _mm512_store_ps(vp + j, x);
            if (branch_free || k)  /* one flag for the whole sweep: a hoisted branch */
                spk_emit_avx512(k, p + j, out, &n_sp);
        }
    }
    return n_sp;
}

/* One row of n lanes (any n): V += drive; spike; reset; spikes as base + lane. *pending
   is set when a lane is still >= θ after its reset (reset by subtraction from V >= 2θ):
   it will spike again with no input, so a sparse sweep must visit it next step. */
SPK_AVX512 static int spk_sweep_row_avx512(float* v, const float* drive, int n, float threshold,
                                           int reset_zero, int base, int32_t* out, int* pending) {
    const __m512 th = _mm512_set1_ps(threshold);
    const __m512 zero = _mm512_setzero_ps();
    int n_sp = 0;
    __mmask16 still = 0;
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : spk_head16(n - j);
        __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, v + j), _mm512_maskz_loadu_ps(m, drive + j));
        __mmask16 k = _mm512_mask_cmp_ps_mask(m, x, th, _CMP_GE_OQ);
        x = reset_zero ? _mm512_mask_mov_ps(x, k, zero) : _mm512_mask_sub_ps(x, k, x, th);
        _mm512_mask_storeu_ps(v + j, m, x);
        if (k) {
            spk_emit_avx512(k, base + j, out, &n_sp);
            still |= _mm512_mask_cmp_ps_mask(k, x, th, _CMP_GE_OQ);
        }
    }
    *pending |= still != 0;
    return n_sp;
}

/* The dense sweep: V += drive (repeated every `period` lanes), S = V >= θ, reset; `out`
   gets the spiking indices in ascending order (16 slots of room past the last). */
SPK_AVX512 static int spk_sweep_avx512(float* v, const float* drive, int period, int n,
                                       float threshold, int reset_zero, int branch_free,
                                       int32_t* out) {
    int n_sp = 0, pending = 0;
    if (period % 16 == 0 && ((uintptr_t)v & 63) == 0) {
        if (branch_free)
            return reset_zero ? spk_sweep16_avx512(v, drive, period, n, threshold, 1, 1, out)
                              : spk_sweep16_avx512(v, drive, period, n, threshold, 0, 1, out);
        return reset_zero ? spk_sweep16_avx512(v, drive, period, n, threshold, 1, 0, out)
                          : spk_sweep16_avx512(v, drive, period, n, threshold, 0, 0, out);
    }
    for (int p = 0; p < n; p += period)
        n_sp += spk_sweep_row_avx512(v + p, drive, period, threshold, reset_zero, p, out + n_sp, &pending);
    return n_sp;
}

/* ---- AVX2 -------------------------------------------------------------------- */

SPK_AVX2_FN static inline void spk_add_row_avx2(float* dst, const float* src, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_add_ps(_mm256_loadu_ps(dst + j), _mm256_loadu_ps(src + j)));
    for (; j < n; j++)
        dst[j] += src[j];
}

SPK_AVX2_FN static int64_t spk_add_runs_avx2(float* v, const float* wb, const int32_t* tab_w,
                                             const int32_t* tab_m, const int32_t* tab_n,
                                             int k, int k1) {
    int64_t synops = 0;
    for (; k < k1; k++) {
        spk_add_row_avx2(v + tab_m[k], wb + tab_w[k], tab_n[k]);
        synops += tab_n[k];
    }
    return synops;
}

/* Append the lanes of the 8-bit mask `bits` (base + lane) to out[*n_sp]: one table
   lookup, one widening load and one 8-lane store, so out needs 8 slots of room past the
   last spike it keeps (the engine allocates n + 16). */
SPK_AVX2_FN static inline void spk_emit_avx2(unsigned int bits, int base, int32_t* out, int* n_sp) {
    __m256i lanes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(spk_lpack + 8 * bits)));
    _mm256_storeu_si256((__m256i*)(out + *n_sp), _mm256_add_epi32(_mm256_set1_epi32(base), lanes));
    *n_sp += __builtin_popcount(bits);
}

/* spk_sweep16_avx512 on AVX2: whole rows of `period` lanes, period a multiple of 8. */
SPK_AVX2_FN static inline __attribute__((always_inline)) int spk_sweep8_avx2(
    float* v, const float* drive, int period, int n, float threshold, int reset_zero,
    int branch_free, int32_t* out) {
    const __m256 th = _mm256_set1_ps(threshold);
    int n_sp = 0;
    for (int p = 0; p < n; p += period) {
        float* vp = v + p;
        for (int j = 0; j < period; j += 8) {
            __m256 x = _mm256_add_ps(_mm256_loadu_ps(vp + j), _mm256_loadu_ps(drive + j));
            __m256 s = _mm256_cmp_ps(x, th, _CMP_GE_OQ);
            /* s is all-ones where it spiked: V - (θ & s), or V & ~s for reset to zero. */
            x = reset_zero ? _mm256_andnot_ps(s, x) : _mm256_sub_ps(x, _mm256_and_ps(s, th));
            _mm256_storeu_ps(vp + j, x);
            unsigned int bits = (unsigned int)_mm256_movemask_ps(s);
            if (branch_free || bits)  /* one flag for the whole sweep: a hoisted branch */
                spk_emit_avx2(bits, p + j, out, &n_sp);
        }
    }
    return n_sp;
}

/* spk_sweep_row_avx512 on AVX2 (the same lanes, 8 at a time, a scalar tail). */
SPK_AVX2_FN static int spk_sweep_row_avx2(float* v, const float* drive, int n, float threshold,
                                          int reset_zero, int base, int32_t* out, int* pending) {
    const __m256 th = _mm256_set1_ps(threshold);
    int n_sp = 0, still = 0;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_add_ps(_mm256_loadu_ps(v + j), _mm256_loadu_ps(drive + j));
        __m256 s = _mm256_cmp_ps(x, th, _CMP_GE_OQ);
        x = reset_zero ? _mm256_andnot_ps(s, x) : _mm256_sub_ps(x, _mm256_and_ps(s, th));
        _mm256_storeu_ps(v + j, x);
        unsigned int bits = (unsigned int)_mm256_movemask_ps(s);
        if (bits) {
            still |= _mm256_movemask_ps(_mm256_and_ps(s, _mm256_cmp_ps(x, th, _CMP_GE_OQ)));
            spk_emit_avx2(bits, base + j, out, &n_sp);
        }
    }
    *pending |= still != 0;
    return n_sp + spk_sweep_row_portable(v + j, drive + j, n - j, threshold, reset_zero, base + j,
                                         out + n_sp, pending);
}

/* The dense sweep (see spk_sweep_avx512), 8 lanes at a time; a period that is not a
   multiple of 8 goes row by row with a scalar tail. */
SPK_AVX2_FN static int spk_sweep_avx2(float* v, const float* drive, int period, int n,
                                      float threshold, int reset_zero, int branch_free,
                                      int32_t* out) {
    int n_sp = 0, unused = 0;  /* the dense sweep visits every neuron anyway */
    if (period % 8 == 0) {
        if (branch_free)
            return reset_zero ? spk_sweep8_avx2(v, drive, period, n, threshold, 1, 1, out)
                              : spk_sweep8_avx2(v, drive, period, n, threshold, 0, 1, out);
        return reset_zero ? spk_sweep8_avx2(v, drive, period, n, threshold, 1, 0, out)
                          : spk_sweep8_avx2(v, drive, period, n, threshold, 0, 0, out);
    }
    for (int p = 0; p < n; p += period)
        n_sp += spk_sweep_row_avx2(v + p, drive, period, threshold, reset_zero, p, out + n_sp, &unused);
    return n_sp;
}

#else  /* not x86-64 GCC/Clang: the portable Cython kernels only */
#define SPK_X86_DISPATCH 0
static int spk_cpu_path(void) { return SPK_PORTABLE; }
static int64_t spk_add_runs_avx512(float* v, const float* wb, const int32_t* tab_w, const int32_t* tab_m,
                                   const int32_t* tab_n, int k, int k1) { return -1; }
static int64_t spk_add_runs_avx2(float* v, const float* wb, const int32_t* tab_w, const int32_t* tab_m,
                                 const int32_t* tab_n, int k, int k1) { return -1; }
static void spk_add_row_avx512(float* dst, const float* src, int n) {}
static void spk_add_row_avx2(float* dst, const float* src, int n) {}
static int spk_sweep_avx512(float* v, const float* drive, int period, int n, float threshold,
                            int reset_zero, int branch_free, int32_t* out) { return -1; }
static int spk_sweep_avx2(float* v, const float* drive, int period, int n, float threshold,
                          int reset_zero, int branch_free, int32_t* out) { return -1; }
#endif


/* ---- Every path: the sparse sweep ---------------------------------------------- */

static inline int spk_sweep_row(int path, float* v, const float* drive, int n, float threshold,
                                int reset_zero, int base, int32_t* out, int* pending) {
    if (path == SPK_AVX512F)
        return spk_sweep_row_avx512(v, drive, n, threshold, reset_zero, base, out, pending);
    if (path == SPK_AVX2)
        return spk_sweep_row_avx2(v, drive, n, threshold, reset_zero, base, out, pending);
    return spk_sweep_row_portable(v, drive, n, threshold, reset_zero, base, out, pending);
}

/* Row marks: bit r of bits[] says row r (one pixel's c_out channels, channel-last) must
   be visited by the next sweep; bit w of summary[] says bits[w] is not zero. */
static inline void spk_mark_rows(uint64_t* bits, uint64_t* summary, int32_t row, int32_t count) {
    for (int32_t r = row; r < row + count; r++) {
        bits[r >> 6] |= 1ULL << (r & 63);
        summary[r >> 12] |= 1ULL << ((r >> 6) & 63);
    }
}

static inline int spk_row_marked(const uint64_t* bits, int64_t r) {
    return (int)((bits[r >> 6] >> (r & 63)) & 1);
}

/* The sweep of a layer whose drive (bias) is zero on some channels. A row with no input
   this step, no pending spike and zero drive keeps its V bit for bit (V + 0 = V: the
   engine's membranes are never -0) and cannot spike (V < θ since its last visit), so
   only marked rows are swept whole; unmarked rows are swept only on the 16-lane blocks
   listed in `blocks` (offsets within a row where some drive is nonzero; none: a
   bias-free layer, whose cost is then the marked rows alone). Marks are cleared, except
   on rows left pending. Spikes come out in ascending order, as from the dense sweep. */
static int spk_sweep_marked(int path, float* v, const float* drive, int c, int n_rows,
                            float threshold, int reset_zero, const int32_t* blocks, int n_blocks,
                            uint64_t* bits, uint64_t* summary, int32_t* out) {
    int n_sp = 0;
    if (n_blocks == 0) {
        int n_summary = ((n_rows + 63) / 64 + 63) / 64;
        for (int s = 0; s < n_summary; s++) {
            uint64_t sw = summary[s];
            while (sw) {
                int w = s * 64 + SPK_CTZ64(sw);
                uint64_t word = bits[w], keep = 0;
                sw &= sw - 1;
                while (word) {
                    int b = SPK_CTZ64(word);
                    int64_t r = (int64_t)w * 64 + b;
                    int pending = 0;
                    word &= word - 1;
                    n_sp += spk_sweep_row(path, v + r * c, drive, c, threshold, reset_zero,
                                          (int)(r * c), out + n_sp, &pending);
                    if (pending)
                        keep |= 1ULL << b;
                }
                bits[w] = keep;
                if (!keep)
                    summary[s] &= ~(1ULL << (w & 63));
            }
        }
        return n_sp;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        float* vr = v + r * c;
        int pending = 0;
        if (spk_row_marked(bits, r)) {
            n_sp += spk_sweep_row(path, vr, drive, c, threshold, reset_zero, (int)(r * c),
                                  out + n_sp, &pending);
            if (!pending)
                bits[r >> 6] &= ~(1ULL << (r & 63));
        } else {
            for (int i = 0; i < n_blocks; i++) {
                int j = blocks[i];
                int len = c - j < 16 ? c - j : 16;
                n_sp += spk_sweep_row(path, vr + j, drive + j, len, threshold, reset_zero,
                                      (int)(r * c + j), out + n_sp, &pending);
            }
            if (pending)
                spk_mark_rows(bits, summary, (int32_t)r, 1);
        }
    }
    return n_sp;
}


/* ---- Every path: the membrane read-out (docs/step-semantics.md, "Read-out") -----
   Plain loops, compiled once per instruction set (the compiler vectorises each for its
   target) and picked with the other kernels. Only elementwise IEEE operations in a fixed
   order, and the build turns off FMA contraction (setup.py), so every path and the
   reference (converters/reference.py, membrane_logits) give the same bits. */

#define SPK_READOUT_KERNELS(SFX, ATTR)                                                   \
/* u = ReLU(base + (v - v0) * inv): a spiking layer's integrated input in units of θ. */\
ATTR static void spk_soft_relu_##SFX(float* u, const float* base, const float* v,       \
                                     float v0, float inv, int n) {                       \
    for (int j = 0; j < n; j++) {                                                        \
        float x = base[j] + (v[j] - v0) * inv;                                           \
        u[j] = x > 0.0f ? x : 0.0f;                                                      \
    }                                                                                    \
}                                                                                        \
/* Max-pool of u >= 0 (channel-last, c per position) through a pool's CSR tables. */     \
ATTR static void spk_pool_max_##SFX(float* out, int n_out, const float* u, int n_pos,   \
                                    int c, const int32_t* tab_ptr, const int32_t* tab_m) { \
    for (int j = 0; j < n_out; j++) out[j] = 0.0f;                                       \
    for (int pos = 0; pos < n_pos; pos++) {                                              \
        const float* x = u + (int64_t)pos * c;                                           \
        for (int e = tab_ptr[pos]; e < tab_ptr[pos + 1]; e++) {                          \
            float* o = out + (int64_t)tab_m[e] * c;                                      \
            for (int k = 0; k < c; k++) o[k] = x[k] > o[k] ? x[k] : o[k];                \
        }                                                                                \
    }                                                                                    \
}                                                                                        \
/* out = spk_pool_max of u = ReLU(base + (v - v0) * inv), in one pass: each position a     \
   window reads is computed where it is read (the same operations, so the same bits),      \
   and positions no window reads are skipped. */                                          \
ATTR static void spk_relu_pool_max_##SFX(float* out, int n_out, const float* base,       \
                                         const float* v, float v0, float inv, int n_pos,  \
                                         int c, const int32_t* tab_ptr,                   \
                                         const int32_t* tab_m) {                          \
    for (int j = 0; j < n_out; j++) out[j] = 0.0f;                                       \
    for (int pos = 0; pos < n_pos; pos++) {                                              \
        const float* b = base + (int64_t)pos * c;                                        \
        const float* vv = v + (int64_t)pos * c;                                          \
        for (int e = tab_ptr[pos]; e < tab_ptr[pos + 1]; e++) {                          \
            float* o = out + (int64_t)tab_m[e] * c;                                      \
            for (int k = 0; k < c; k++) {                                                \
                float x = b[k] + (vv[k] - v0) * inv;                                     \
                x = x > 0.0f ? x : 0.0f;                                                 \
                o[k] = x > o[k] ? x : o[k];                                              \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}                                                                                        \
/* acc[0..16) = Σ_i u[i]·w[i·stride + 0..16): four partial sums over i mod 4 (the tail   \
   i >= 4·floor(n/4) into the first), then (s0 + s1) + (s2 + s3). */                    \
ATTR static void spk_dot16_##SFX(float* acc, const float* u, const float* w, int n,     \
                                 int stride) {                                           \
    float a0[16], a1[16], a2[16], a3[16];                                                \
    for (int j = 0; j < 16; j++) a0[j] = a1[j] = a2[j] = a3[j] = 0.0f;                   \
    int i = 0;                                                                           \
    for (; i + 4 <= n; i += 4) {                                                         \
        const float* w0 = w + (int64_t)i * stride;                                       \
        const float* w1 = w0 + stride;                                                   \
        const float* w2 = w1 + stride;                                                   \
        const float* w3 = w2 + stride;                                                   \
        for (int j = 0; j < 16; j++) {                                                   \
            a0[j] += u[i] * w0[j];                                                       \
            a1[j] += u[i + 1] * w1[j];                                                   \
            a2[j] += u[i + 2] * w2[j];                                                   \
            a3[j] += u[i + 3] * w3[j];                                                   \
        }                                                                                \
    }                                                                                    \
    for (; i < n; i++)                                                                   \
        for (int j = 0; j < 16; j++) a0[j] += u[i] * w[(int64_t)i * stride + j];         \
    for (int j = 0; j < 16; j++) acc[j] = (a0[j] + a1[j]) + (a2[j] + a3[j]);             \
}

SPK_READOUT_KERNELS(portable, )
#if SPK_X86_DISPATCH
SPK_READOUT_KERNELS(avx2, SPK_AVX2_FN)
SPK_READOUT_KERNELS(avx512, SPK_AVX512)
#define SPK_READOUT_PICK(path, name) \
    ((path) == SPK_AVX512F ? name##_avx512 : (path) == SPK_AVX2 ? name##_avx2 : name##_portable)
#else
#define SPK_READOUT_PICK(path, name) name##_portable
#endif

static void spk_soft_relu(int path, float* u, const float* base, const float* v, float v0,
                          float inv, int n) {
    SPK_READOUT_PICK(path, spk_soft_relu)(u, base, v, v0, inv, n);
}

static void spk_pool_max(int path, float* out, int n_out, const float* u, int n_pos, int c,
                         const int32_t* tab_ptr, const int32_t* tab_m) {
    SPK_READOUT_PICK(path, spk_pool_max)(out, n_out, u, n_pos, c, tab_ptr, tab_m);
}

static void spk_relu_pool_max(int path, float* out, int n_out, const float* base,
                              const float* v, float v0, float inv, int n_pos, int c,
                              const int32_t* tab_ptr, const int32_t* tab_m) {
    SPK_READOUT_PICK(path, spk_relu_pool_max)(out, n_out, base, v, v0, inv, n_pos, c, tab_ptr, tab_m);
}

static void spk_dot16(int path, float* acc, const float* u, const float* w, int n, int stride) {
    SPK_READOUT_PICK(path, spk_dot16)(acc, u, w, n, stride);
}

#endif  /* SPK_SIMD_H */
