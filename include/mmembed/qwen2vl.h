/* qwen2vl — the Qwen2-VL family used as an embedder (Ops-MM-embedding-v1,
 * GME-Qwen2-VL; src/model/qwen2vl.c): one decoder reads text and images
 * in one sequence. The model is served through the encoder interface
 * (mmembed/encoder.h, mm_enc_qwen2vl); this header has what its tests and
 * tools need beside it. */
#ifndef MMEMBED_QWEN2VL_H
#define MMEMBED_QWEN2VL_H

/* The vision tower's input for one image: chw (channels, h, w) normalized
 * floats, h and w multiples of patch * merge, cut into (h/patch * w/patch)
 * rows of channels * temporal * patch * patch values (c, t, y, x order; the
 * image repeated over the temporal frames), rows in merge-block order (the
 * merge x merge patches that become one token are consecutive, blocks row
 * by row) — HF Qwen2VLImageProcessor's pixel_values for one image.
 * Returns the row count, or -1 when the sizes do not divide. */
int mm_qwen2vl_patchify(const float *chw, int channels, int h, int w, int patch, int temporal, int merge,
                        float *rows);

#endif
