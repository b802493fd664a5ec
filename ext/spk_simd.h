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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPK_X86_DISPATCH 1
#define SPK_AVX512 __attribute__((target("avx512f")))
#define SPK_AVX2_FN __attribute__((target("avx2")))

/* The widest path this CPU (and its OS: libgcc checks XGETBV) supports; asked once. */
static int spk_cpu_path(void) {
    static int path = -1;
    if (path < 0) {
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

/* The sweep with the compare mask used directly as a spike bitmask (no byte mask
   round trip); `out` gets the spiking indices in ascending order. */
SPK_AVX512 static int spk_sweep_avx512(float* v, const float* drive, int period, int n,
                                       float threshold, int reset_zero, int32_t* out) {
    const __m512 th = _mm512_set1_ps(threshold);
    const __m512 zero = _mm512_setzero_ps();
    int n_sp = 0;
    for (int p = 0; p < n; p += period) {
        for (int j = 0; j < period; j += 16) {
            __mmask16 m = period - j >= 16 ? (__mmask16)0xFFFF : spk_head16(period - j);
            __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, v + p + j), _mm512_maskz_loadu_ps(m, drive + j));
            __mmask16 k = _mm512_mask_cmp_ps_mask(m, x, th, _CMP_GE_OQ);
            x = reset_zero ? _mm512_mask_mov_ps(x, k, zero) : _mm512_mask_sub_ps(x, k, x, th);
            _mm512_mask_storeu_ps(v + p + j, m, x);
            unsigned long long bits = (unsigned long long)k;
            while (bits) {
                out[n_sp++] = p + j + SPK_CTZ64(bits);
                bits &= bits - 1;
            }
        }
    }
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

SPK_AVX2_FN static int spk_sweep_avx2(float* v, const float* drive, int period, int n,
                                      float threshold, int reset_zero, int32_t* out) {
    const __m256 th = _mm256_set1_ps(threshold);
    int n_sp = 0;
    for (int p = 0; p < n; p += period) {
        int j = 0;
        for (; j + 8 <= period; j += 8) {
            __m256 x = _mm256_add_ps(_mm256_loadu_ps(v + p + j), _mm256_loadu_ps(drive + j));
            __m256 s = _mm256_cmp_ps(x, th, _CMP_GE_OQ);
            /* s is all-ones where it spiked: V - (θ & s), or V & ~s for reset to zero. */
            x = reset_zero ? _mm256_andnot_ps(s, x) : _mm256_sub_ps(x, _mm256_and_ps(s, th));
            _mm256_storeu_ps(v + p + j, x);
            unsigned int bits = (unsigned int)_mm256_movemask_ps(s);
            while (bits) {
                out[n_sp++] = p + j + SPK_CTZ64(bits);
                bits &= bits - 1;
            }
        }
        for (; j < period; j++) {  /* the portable update, one neuron at a time */
            float x = v[p + j] + drive[j];
            int s = x >= threshold;
            v[p + j] = reset_zero ? x * (float)(1 - s) : x - threshold * (float)s;
            out[n_sp] = p + j;
            n_sp += s;
        }
    }
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
                            int reset_zero, int32_t* out) { return -1; }
static int spk_sweep_avx2(float* v, const float* drive, int period, int n, float threshold,
                          int reset_zero, int32_t* out) { return -1; }
#endif

#endif  /* SPK_SIMD_H */
