/* SIMD helpers shared by the nn kernels (src/nn only). With AVX2 and FMA
 * (the build targets x86-64-v3) MM_NN_AVX2 is defined and exp8 and the
 * activations (act8) are there;
 * without, the kernels take their scalar libm paths. */
#ifndef MMEMBED_NN_SIMD_H
#define MMEMBED_NN_SIMD_H

#include "mmembed/nn.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MM_NN_AVX2 1

/* exp(x) for 8 floats: range reduction x = n ln2 + r with |r| <= ln2/2, then
 * a degree-6 minimax polynomial for e^r (Cephes expf coefficients; about
 * 1 ulp over the f32 range). Inputs are clamped so 2^n stays a normal
 * number: below -87.3 the result is ~1e-38 rather than 0, harmless here. */
static inline __m256 exp8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.3762626647949f);
    const __m256 lo = _mm256_set1_ps(-87.3365478515625f);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* ln2 split in two so n*ln2_hi is exact */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* x * sigmoid(1.702 x) */
static inline __m256 quick_gelu8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = exp8(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
    return _mm256_div_ps(x, _mm256_add_ps(one, e));
}

/* 0.5 x (1 + erf(x / sqrt 2)). erf by Abramowitz & Stegun 7.1.26
 * (|error| <= 1.5e-7 absolute, i.e. at f32 rounding level for the GELU
 * output); the tanh approximation ("gelu_new") would be off by ~1e-3. */
static inline __m256 gelu8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    __m256 az = _mm256_andnot_ps(sign, z);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(az, _mm256_set1_ps(0.3275911f), one));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 e = exp8(_mm256_mul_ps(_mm256_xor_ps(az, sign), az)); /* exp(-z^2) */
    __m256 erf_abs = _mm256_fnmadd_ps(p, e, one);
    __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, erf));
}

/* x * sigmoid(x) */
static inline __m256 silu8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/* 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3); tanh(u) as
 * 1 - 2 / (exp(2u) + 1), with u clamped where tanh is +-1 in f32 */
static inline __m256 gelu_tanh8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
    u = _mm256_min_ps(_mm256_max_ps(u, _mm256_set1_ps(-10.0f)), _mm256_set1_ps(10.0f));
    __m256 e = exp8(_mm256_add_ps(u, u));
    __m256 th = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, th));
}

/* act(x) for 8 floats: the kernels of mm_act_t (act.c; q4.c applies them
 * to its AMX tiles' outputs, bit-identical to mm_nn_bias_act_row) */
static inline __m256 act8(__m256 x, mm_act_t act)
{
    switch (act) {
    case MM_ACT_QUICK_GELU: return quick_gelu8(x);
    case MM_ACT_GELU: return gelu8(x);
    case MM_ACT_GELU_TANH: return gelu_tanh8(x);
    case MM_ACT_RELU: return _mm256_max_ps(x, _mm256_setzero_ps());
    case MM_ACT_SILU: return silu8(x);
    default: return x;
    }
}

/* The same activations 16 lanes at a time, for code compiled for AVX-512
 * (q4's AMX tile epilogue; mm_nn_bias_act_row on AVX-512 CPUs): every lane
 * goes through the very operations of its 8-lane twin above, in the same
 * order (the same IEEE roundings), so act16 and act8 give bit-identical
 * results; half the instructions per element. */
#define MM_NN_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,fma"), always_inline)) static inline

MM_NN_AVX512 __m512 exp16(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(88.3762626647949f);
    const __m512 lo = _mm512_set1_ps(-87.3365478515625f);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

MM_NN_AVX512 __m512 act16(__m512 x, mm_act_t act)
{
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    switch (act) {
    case MM_ACT_QUICK_GELU:
        return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)))));
    case MM_ACT_GELU: {
        __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
        __m512 az = _mm512_andnot_ps(sign, z);
        __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f), one));
        __m512 p = _mm512_set1_ps(1.061405429f);
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
        p = _mm512_mul_ps(p, t);
        __m512 e = exp16(_mm512_mul_ps(_mm512_xor_ps(az, sign), az));
        __m512 erf_abs = _mm512_fnmadd_ps(p, e, one);
        __m512 erf = _mm512_or_ps(erf_abs, _mm512_and_ps(z, sign));
        return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, erf));
    }
    case MM_ACT_GELU_TANH: {
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286536f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
        u = _mm512_min_ps(_mm512_max_ps(u, _mm512_set1_ps(-10.0f)), _mm512_set1_ps(10.0f));
        __m512 e = exp16(_mm512_add_ps(u, u));
        __m512 th = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
        return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, th));
    }
    case MM_ACT_RELU: return _mm512_max_ps(x, _mm512_setzero_ps());
    case MM_ACT_SILU: return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    default: return x;
    }
}

#endif
#endif
