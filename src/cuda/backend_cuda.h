/* The CUDA backend's entry point (src/cuda/backend.cu), for
 * mm_backend_open; everything else of it is behind mm_backend_ops_t. */
#ifndef MMEMBED_BACKEND_CUDA_H
#define MMEMBED_BACKEND_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mm_backend;

/* Opens GPU `device` with dense-layer operands `dtype` ("f16", "bf16",
 * "tf32"): a stream, a cuBLAS handle. mm_backend_open's contract. */
int mm_cuda_open(int device, const char *dtype, struct mm_backend **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
