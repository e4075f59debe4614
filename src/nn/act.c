/* Elementwise kernels: activations, bias, residual add, softmax.
 *
 * The transcendental functions are evaluated 8 lanes at a time with AVX2+FMA
 * (the build targets x86-64-v3). A row's tail (n % 8) goes through the same
 * vector code via a small stack buffer, so every element of a row is computed
 * by identical arithmetic whatever its position or the batch it came in —
 * batched and one-at-a-time forwards give bit-identical results. On AVX-512
 * CPUs mm_nn_bias_act_row runs 16 lanes at a time (act16: the same
 * arithmetic per element). Without AVX2 the scalar libm path is used. */
#include "mmembed/nn.h"

#include <math.h>
#include <string.h>

#include "simd.h"

#ifdef MM_NN_AVX2

/* y[0..n) = act(y + b); b may be NULL */
static void bias_act_row(float *y, const float *b, int n, mm_act_t act)
{
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(y + j);
        if (b)
            v = _mm256_add_ps(v, _mm256_loadu_ps(b + j));
        _mm256_storeu_ps(y + j, act8(v, act));
    }
    if (j < n) {
        float tmp[8] = {0};
        int r = n - j;
        for (int i = 0; i < r; i++)
            tmp[i] = y[j + i] + (b ? b[j + i] : 0.0f);
        _mm256_storeu_ps(tmp, act8(_mm256_loadu_ps(tmp), act));
        memcpy(y + j, tmp, (size_t)r * sizeof(float));
    }
}

static void add_serial(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] += x[i];
}

/* mm_nn_bias_act_row 16 lanes at a time on AVX-512 CPUs: act16 gives each
 * element what act8 gives it (the same operations per lane), so the two
 * paths' rows are bit-identical; the tail through masked loads. */
__attribute__((target("avx512f,avx512dq,avx512vl,fma")))
static void bias_act_row16(float *y, const float *acc, const float *b, int n, mm_act_t act, int add)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(acc + i);
        if (b)
            v = _mm512_add_ps(v, _mm512_loadu_ps(b + i));
        v = act16(v, act);
        if (add)
            v = _mm512_add_ps(v, _mm512_loadu_ps(y + i));
        _mm512_storeu_ps(y + i, v);
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, acc + i);
        if (b)
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
        v = act16(v, act);
        if (add)
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, y + i));
        _mm512_mask_storeu_ps(y + i, k, v);
    }
}

void mm_nn_bias_act_row(float *y, const float *acc, const float *b, int n, mm_act_t act, int add)
{
    if (mm_nn_cpu()->avx512) {
        bias_act_row16(y, acc, b, n, act, add);
        return;
    }
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(acc + j);
        if (b)
            v = _mm256_add_ps(v, _mm256_loadu_ps(b + j));
        v = act8(v, act);
        if (add)
            v = _mm256_add_ps(v, _mm256_loadu_ps(y + j));
        _mm256_storeu_ps(y + j, v);
    }
    if (j < n) {
        float tmp[8] = {0};
        int r = n - j;
        for (int i = 0; i < r; i++)
            tmp[i] = acc[j + i] + (b ? b[j + i] : 0.0f);
        _mm256_storeu_ps(tmp, act8(_mm256_loadu_ps(tmp), act));
        for (int i = 0; i < r; i++)
            y[j + i] = add ? y[j + i] + tmp[i] : tmp[i];
    }
}

void mm_nn_softmax(float *x, int n)
{
    if (n <= 0)
        return;
    int j = 0;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= n; j += 8)
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + j));
    float tmp[8];
    _mm256_storeu_ps(tmp, vm);
    float mx = tmp[0];
    for (int i = 1; i < 8; i++)
        mx = tmp[i] > mx ? tmp[i] : mx;
    for (; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;

    __m256 m = _mm256_set1_ps(mx), vs = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), m));
        _mm256_storeu_ps(x + j, e);
        vs = _mm256_add_ps(vs, e);
    }
    if (j < n) {
        int r = n - j;
        for (int i = 0; i < 8; i++)
            tmp[i] = i < r ? x[j + i] - mx : -INFINITY;
        __m256 e = exp8(_mm256_loadu_ps(tmp));
        /* lanes past the row must not count: exp8 clamps -inf to ~1e-38 */
        e = _mm256_and_ps(e, _mm256_cmp_ps(_mm256_loadu_ps(tmp), _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
        vs = _mm256_add_ps(vs, e);
        _mm256_storeu_ps(tmp, e);
        memcpy(x + j, tmp, (size_t)r * sizeof(float));
    }
    _mm256_storeu_ps(tmp, vs);
    float s = ((tmp[0] + tmp[1]) + (tmp[2] + tmp[3])) + ((tmp[4] + tmp[5]) + (tmp[6] + tmp[7]));
    __m256 inv = _mm256_set1_ps(1.0f / s);
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
    for (; j < n; j++)
        x[j] *= 1.0f / s;
}

#else /* portable scalar path */

static inline float act1(float x, mm_act_t act)
{
    switch (act) {
    case MM_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case MM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case MM_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case MM_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case MM_ACT_SILU: return x / (1.0f + expf(-x));
    default: return x;
    }
}

static void bias_act_row(float *y, const float *b, int n, mm_act_t act)
{
    for (int j = 0; j < n; j++)
        y[j] = act1(y[j] + (b ? b[j] : 0.0f), act);
}

static void add_serial(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void mm_nn_bias_act_row(float *y, const float *acc, const float *b, int n, mm_act_t act, int add)
{
    for (int j = 0; j < n; j++) {
        float v = act1(acc[j] + (b ? b[j] : 0.0f), act);
        y[j] = add ? y[j] + v : v;
    }
}

void mm_nn_softmax(float *x, int n)
{
    if (n <= 0)
        return;
    float mx = x[0], s = 0.0f;
    for (int j = 1; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        s += x[j];
    }
    for (int j = 0; j < n; j++)
        x[j] /= s;
}

#endif

/* ============================================================ parallel */

/* Below this many floats a pass is done on the calling thread: waking the
 * pool costs more than it saves. Splitting never changes a value — every
 * element goes through the same arithmetic wherever a chunk starts. */
#define PAR_MIN 65536

typedef struct {
    float *y;
    const float *x;
    size_t rows, cols; /* rows x cols floats; elementwise ops use cols = 1 */
    mm_act_t act;
} ew_job_t;

static void range(size_t n, int part, int nparts, size_t *a, size_t *b)
{
    *a = n * (size_t)part / (size_t)nparts;
    *b = n * (size_t)(part + 1) / (size_t)nparts;
}

static void bias_act_part(void *arg, int part, int nparts)
{
    const ew_job_t *j = arg;
    size_t a, b;
    range(j->rows, part, nparts, &a, &b);
    for (size_t i = a; i < b; i++)
        bias_act_row(j->y + i * j->cols, j->x, (int)j->cols, j->act);
}

static void act_part(void *arg, int part, int nparts)
{
    const ew_job_t *j = arg;
    size_t a, b;
    range(j->rows, part, nparts, &a, &b);
    /* rows of up to 2^20 so the int row length cannot overflow */
    const size_t chunk = (size_t)1 << 20;
    for (size_t i = a; i < b; i += chunk)
        bias_act_row(j->y + i, NULL, (int)(b - i < chunk ? b - i : chunk), j->act);
}

static void add_part(void *arg, int part, int nparts)
{
    const ew_job_t *j = arg;
    size_t a, b;
    range(j->rows, part, nparts, &a, &b);
    add_serial(j->y + a, j->x + a, b - a);
}

void mm_nn_bias_act(float *y, const float *b, int M, int N, mm_act_t act)
{
    if (!b && act == MM_ACT_NONE)
        return;
    ew_job_t j = {.y = y, .x = b, .rows = (size_t)M, .cols = (size_t)N, .act = act};
    if ((size_t)M * N < PAR_MIN)
        bias_act_part(&j, 0, 1);
    else
        mm_nn_parallel(bias_act_part, &j);
}

void mm_nn_act(float *x, size_t n, mm_act_t act)
{
    if (act == MM_ACT_NONE)
        return;
    ew_job_t j = {.y = x, .rows = n, .cols = 1, .act = act};
    if (n < PAR_MIN)
        act_part(&j, 0, 1);
    else
        mm_nn_parallel(act_part, &j);
}

void mm_nn_add(float *y, const float *x, size_t n)
{
    ew_job_t j = {.y = y, .x = x, .rows = n, .cols = 1};
    if (n < PAR_MIN)
        add_part(&j, 0, 1);
    else
        mm_nn_parallel(add_part, &j);
}
