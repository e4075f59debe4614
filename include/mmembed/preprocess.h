/* Image preprocessing with Hugging Face CLIPImageProcessor semantics:
 * resize (shortest edge or fixed size) → center crop (zero pad when too
 * small) → rescale → normalize, producing float32 CHW. Configured from
 * preprocessor_config.json.
 *
 * Qwen2VLImageProcessor (`dynamic`): no crop; each image is resized to its
 * own size by smart_resize — both sides multiples of patch_size *
 * merge_size (28), the pixel count brought into [min_pixels, max_pixels],
 * the aspect kept — so mm_preproc_out_dims differs per image. Cutting the
 * result into the vision tower's patch rows is the model's business
 * (mmembed/qwen2vl.h). Its config comes in two forms, both read:
 * "min_pixels" / "max_pixels" (transformers 4) or "size": {"shortest_edge":
 * min_pixels, "longest_edge": max_pixels} (transformers 5; pixel counts
 * despite the names).
 *
 * transformers v5 has two backends that differ in the last bit: the default
 * torchvision one (which produced tests/fixtures/clip/pixels, bit-exactly
 * reproduced here) and the PIL one (also v4's "slow" processors). The
 * config file does not say which one ran ("use_fast" is saved either way),
 * so the caller picks with mm_preproc_t.backend; the default is
 * torchvision. */
#ifndef MMEMBED_PREPROCESS_H
#define MMEMBED_PREPROCESS_H

#include <stddef.h>

struct mm_image;

enum {
    MM_PREPROC_TORCHVISION = 0, /* torch uint8 antialias resize, fused normalize */
    MM_PREPROC_PIL = 1,         /* PIL Image.resize, numpy rescale/normalize */
};

enum {
    MM_PREPROC_SIZE_SHORTEST = 0, /* size = {"shortest_edge": N} */
    MM_PREPROC_SIZE_EXACT = 1,    /* size = {"height": H, "width": W} */
};

/* Plain struct with no pointers so it can live in shared memory. */
typedef struct mm_preproc {
    int backend;         /* MM_PREPROC_TORCHVISION (default) | MM_PREPROC_PIL */
    int do_convert_rgb;  /* recorded only: decoded images are always RGB */
    int do_resize;
    int size_mode;       /* MM_PREPROC_SIZE_* */
    int shortest_edge;   /* SIZE_SHORTEST */
    int resize_h, resize_w; /* SIZE_EXACT */
    int resample;        /* MM_RESAMPLE_* (PIL code) */
    int do_center_crop;
    int crop_h, crop_w;
    int do_rescale;
    double rescale_factor; /* HF rescales in float64, then casts to float32 */
    int do_normalize;
    float mean[3], std[3];
    /* Qwen2-VL (dynamic = 1; crop off) */
    int dynamic;
    long min_pixels, max_pixels; /* smart_resize's bounds on height * width */
    int patch_size;              /* 14 */
    int temporal_patch_size;     /* 2: an image is repeated to 2 frames */
    int merge_size;              /* 2: 2x2 patches become one token */
} mm_preproc_t;

/* Hugging Face's smart_resize (transformers 5): (h, w) -> (*oh, *ow), both
 * multiples of factor. Returns 0, or MM_E_UNPROCESSABLE when the aspect
 * ratio exceeds 200 (HF raises) or a side is not positive. */
int mm_preproc_smart_resize(int h, int w, int factor, long min_pixels, long max_pixels, int *oh, int *ow);

/* Fill *p with CLIPImageProcessor's defaults for a square model input of
 * image_size (224 for ViT-B/32): shortest_edge = crop = image_size, bicubic,
 * rescale 1/255, OpenAI CLIP mean/std, torchvision backend. */
void mm_preproc_default_clip(mm_preproc_t *p, int image_size);

/* Parse preprocessor_config.json text (json[0..len)) into *p. Keys that are
 * absent keep CLIPImageProcessor's defaults (224); backend is left at the
 * default (set it after parsing to choose PIL). Accepts the legacy integer
 * forms of "size" (shortest edge) and "crop_size" (square), and scalar
 * image_mean/image_std. Returns 0, MM_E_INVALID (bad JSON or values) or
 * MM_E_UNSUPPORTED (resample or size form we do not implement). */
int mm_preproc_parse(const char *json, size_t len, mm_preproc_t *p, char *err, size_t errlen);

/* Read and parse a preprocessor_config.json file (server configuration, never
 * a path from a request). Same returns as mm_preproc_parse, plus
 * MM_E_NOTFOUND when the file cannot be read. */
int mm_preproc_load(const char *path, mm_preproc_t *p, char *err, size_t errlen);

/* The shortest edge the image will be resized to (the larger of height/width
 * for a fixed size), or 0 when the image is not resized: the min_edge for
 * mm_image_decode / mm_image_decode_scaled. */
int mm_preproc_min_edge(const mm_preproc_t *p);

/* Output height/width for an image of src_w x src_h pixels (the dimensions
 * stored in the file). With center crop this is always crop_h x crop_w;
 * dynamic: smart_resize. Returns 0, MM_E_INVALID or (dynamic, extreme
 * aspect) MM_E_UNPROCESSABLE. */
int mm_preproc_out_dims(const mm_preproc_t *p, int src_w, int src_h, int *out_h, int *out_w);

/* Preprocess a decoded image into out: float32 (3, out_h, out_w) with dims
 * from mm_preproc_out_dims(p, img->src_w, img->src_h); the caller owns out.
 * Allocates a few scratch buffers for the call. Returns 0, MM_E_INVALID or
 * MM_E_NOMEM. */
int mm_preproc_run(const mm_preproc_t *p, const struct mm_image *img, float *out);

/* Same from a raw RGB8 buffer (e.g. a video frame): rgb is (h, w, 3) with row
 * stride `stride` bytes; output dims from mm_preproc_out_dims(p, w, h). */
int mm_preproc_from_rgb(const mm_preproc_t *p, const unsigned char *rgb, int w, int h,
                        size_t stride, float *out);

#endif
