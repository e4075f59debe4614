/* SIMD helpers shared by the nn kernels (src/nn only). With AVX2 and FMA
 * (the build targets x86-64-v3) MM_NN_AVX2 is defined and exp8 is there;
 * without, the kernels take their scalar libm paths. */
#ifndef MMEMBED_NN_SIMD_H
#define MMEMBED_NN_SIMD_H

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

#endif
#endif
