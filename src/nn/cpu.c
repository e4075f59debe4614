/* CPU dispatch: what this processor can multiply natively, read once with
 * cpuid. Which dtype a model runs in is the registry's policy
 * (src/model/registry.c), not the kernels'.
 *
 * Order of preference for bf16: AMX (tile multiply) -> AVX512-BF16
 * (vdpbf16ps) -> none (f32). For q8: AMX-INT8 or AVX512-VNNI (vpdpbusd).
 * oneDNN dispatches its own kernels by the same features; MMEMBED_CPU caps
 * both ours and oneDNN's (dnnl_set_max_cpu_isa), so the fallback paths are
 * exercised by tests on a machine that has the fast ones.
 *
 * AMX also needs the kernel's permission to use the tile state
 * (arch_prctl ARCH_REQ_XCOMP_PERM); oneDNN requests it itself and falls
 * back to AVX-512 kernels when refused, so "amx" here means the CPU has it. */
#include "mmembed/nn.h"

#include <cpuid.h>
#include <dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mm_cpu_t cpu;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* XCR0: which register states the OS saves (AVX-512 needs opmask + ZMM). */
static unsigned long long xcr0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    unsigned long long x = osxsave ? xcr0() : 0;
    const int ymm_os = (x & 0x6) == 0x6, zmm_os = (x & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    const unsigned b7 = b, c7 = c, d7 = d;
    unsigned a71 = 0;
    if (a >= 1) {
        unsigned bb, cc, dd;
        __get_cpuid_count(7, 1, &a71, &bb, &cc, &dd);
    }
    cpu.avx2 = avx && fma && ymm_os && ((b7 >> 5) & 1);
    /* the AVX-512 oneDNN's avx512_core kernels need: F, DQ, BW, VL */
    cpu.avx512 = cpu.avx2 && zmm_os && ((b7 >> 16) & 1) && ((b7 >> 17) & 1) && ((b7 >> 30) & 1) &&
                 ((b7 >> 31) & 1);
    cpu.avx512_vnni = cpu.avx512 && ((c7 >> 11) & 1);
    cpu.avx512_bf16 = cpu.avx512_vnni && ((a71 >> 5) & 1);
    /* AMX-BF16 (edx 22), AMX-TILE (24), AMX-INT8 (25) */
    cpu.amx = cpu.avx512_bf16 && ((d7 >> 22) & 1) && ((d7 >> 24) & 1) && ((d7 >> 25) & 1);

    const char *cap = getenv("MMEMBED_CPU");
    if (cap && *cap) {
        int level = !strcmp(cap, "avx2") ? 1 : !strcmp(cap, "avx512") ? 2
                  : !strcmp(cap, "avx512_bf16") ? 3 : !strcmp(cap, "amx") ? 4 : 0;
        if (level) {
            cpu.forced = cap;
            if (level < 4)
                cpu.amx = 0;
            if (level < 3)
                cpu.avx512_bf16 = cpu.avx512_vnni = 0;
            if (level < 2)
                cpu.avx512 = 0;
            static const dnnl_cpu_isa_t isa[] = {dnnl_cpu_isa_all, dnnl_cpu_isa_avx2,
                                                 dnnl_cpu_isa_avx512_core, dnnl_cpu_isa_avx512_core_bf16,
                                                 dnnl_cpu_isa_all};
            /* only effective before oneDNN's first primitive: callers run
             * this first (model load); a late call is reported, not fatal */
            if (dnnl_set_max_cpu_isa(isa[level]) != dnnl_success)
                fprintf(stderr, "mmembed: MMEMBED_CPU=%s came after oneDNN's first use; its kernels are not capped\n",
                        cap);
        } else {
            fprintf(stderr, "mmembed: MMEMBED_CPU=%s ignored (expected avx2, avx512, avx512_bf16 or amx)\n", cap);
        }
    }
    cpu.isa = cpu.amx ? "amx" : cpu.avx512_bf16 ? "avx512_bf16" : cpu.avx512 ? "avx512" : cpu.avx2 ? "avx2" : "none";
}

const mm_cpu_t *mm_nn_cpu(void)
{
    pthread_once(&once, detect);
    return &cpu;
}

const char *mm_dtype_name(mm_dtype_t dt)
{
    return dt == MM_DT_BF16 ? "bf16" : dt == MM_DT_Q8 ? "q8" : dt == MM_DT_Q4 ? "q4" : "f32";
}

int mm_dtype_parse(const char *s, mm_dtype_t *dt)
{
    if (!strcmp(s, "f32"))
        *dt = MM_DT_F32;
    else if (!strcmp(s, "bf16"))
        *dt = MM_DT_BF16;
    else if (!strcmp(s, "q8"))
        *dt = MM_DT_Q8;
    else if (!strcmp(s, "q4"))
        *dt = MM_DT_Q4;
    else
        return -1;
    return 0;
}

int mm_nn_dtype_native(mm_dtype_t dt)
{
    const mm_cpu_t *c = mm_nn_cpu();
    if (dt == MM_DT_BF16)
        return (c->amx || c->avx512_bf16) && mm_nn_lin_supported(dt);
    if (dt == MM_DT_Q8) /* without VNNI oneDNN's int8 GEMM saturates pairs of products to 16 bits */
        return (c->amx || c->avx512_vnni) && mm_nn_lin_supported(dt);
    if (dt == MM_DT_Q4) /* our kernels; AVX2 is the build's baseline */
        return c->avx2;
    return 1;
}
