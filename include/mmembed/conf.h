/* Server configuration (libconfig file), validated as a whole before use. */
#ifndef MMEMBED_CONF_H
#define MMEMBED_CONF_H

#include <stdint.h>

#include "mmembed/common.h"

#define MM_MAX_WORKERS 256
#define MM_MAX_MODELS 8
#define MM_PATH_MAX 1024
#define MM_MAX_KEYS 64
#define MM_KEY_MAX 128
#define MM_MAX_ALIASES 8

enum { MM_MOD_TEXT = 1, MM_MOD_IMAGE = 2, MM_MOD_VIDEO = 4 };

typedef struct {
    char name[64];
    char path[MM_PATH_MAX];  /* absolute after load */
    char dtype[8];           /* "f32" (compute precision) */
    int max_tokens;          /* truncation length (0: the model's own) */
    int max_image_tokens;    /* Qwen2-VL: visual tokens per image at most (max_pixels = n * 28 * 28; 0: the
                              * preprocessor's own) */
    int default_for;         /* MM_MOD_* bits: the default model for these modalities */
    char instruction[512];   /* prefix for input_type "query" */
    int is_default;
    int n_aliases;           /* other names clients may use (e.g. "text-embedding-3-small") */
    char aliases[MM_MAX_ALIASES][64];
    /* where it runs (docs/GPU.md): "cpu" in each worker (default), or on an
     * executor process: "cuda" / "cuda:N" (a GPU), "cpu-executor" (the same
     * executor over the CPU backend: how CI tests the executor without a GPU) */
    char device[16];
    char gpu_dtype[8];       /* a GPU's dense-layer operands: "f16" (default), "bf16", "tf32" */
} mm_conf_model_t;

typedef struct {
    char file[MM_PATH_MAX];           /* the config file, absolute */
    /* pool */
    char listen[MM_PATH_MAX];         /* unix path with %d, or host:port base */
    char overflow_listen[MM_PATH_MAX];/* nginx backup that answers 503 when no worker can */
    int workers;
    int threads;                      /* inference threads per worker */
    char user[64], group[64];
    double request_timeout;           /* seconds; master SIGKILLs past it */
    int max_requests;                 /* recycle after this many; 0 = never */
    int queue_depth;                  /* requests a busy worker may hold */
    double stop_timeout;              /* graceful stop before SIGKILL */
    double backoff_max;               /* crash-loop restart delay cap, seconds */
    double heartbeat_timeout;         /* a worker silent this long (stopped, wedged) is replaced */
    int retry_after;                  /* seconds, in 503 answers */
    char pid_file[MM_PATH_MAX];
    char pack_cache[MM_PATH_MAX]; /* directory of converted weight packs; "" = off */
    double memory_share;     /* share of the available memory the packs of all models may take (dtype "auto") */
    int jpeg_dct_scaling;    /* 0: exact JPEG decode; N: DCT-scale while the short edge stays >= N x target */
    int socket_mode;                  /* unix socket permissions, e.g. 0660 */
    /* http front (nginx) */
    char http_listen[128];            /* nginx listen, e.g. 127.0.0.1:8080 */
    int http_tries;                   /* fastcgi_next_upstream_tries */
    /* limits */
    int64_t max_body_bytes;
    int max_items;                    /* inputs per request */
    int64_t max_text_bytes;           /* per input text */
    int64_t max_request_text_bytes;   /* all texts of a request as the tokenizer reads them (instruction included) */
    int64_t max_pixels;               /* per decoded image */
    int max_parts;                    /* multipart parts */
    int max_frames;
    int default_frames;
    double max_video_seconds;
    double video_budget;              /* decode-time budget, seconds */
    double image_budget;              /* image decoding per request, seconds; 0 = none */
    /* documents: the isolated PDF renderer (media/document.h) */
    int max_pages;                    /* pages per request */
    int max_page_pixels;              /* one rendered page */
    double render_budget;             /* renderer wall-clock seconds per request */
    int64_t max_pdf_bytes;
    int64_t render_memory;            /* renderer address space (RLIMIT_AS), bytes */
    int sandbox;                      /* workers: no-new-privs + seccomp allow-list */
    /* logging */
    int log_level;
    char log_file[MM_PATH_MAX];
    /* auth: API keys from auth.keys and auth.keys_file (one per line) */
    int n_keys;
    char keys[MM_MAX_KEYS][MM_KEY_MAX];
    char keys_file[MM_PATH_MAX];
    /* nginx rate limiting (rendered into the nginx config) */
    double http_rate;                 /* requests/s per key or address; 0 = off */
    int http_burst;
    int cache_mb;                     /* shared embedding cache size; 0 = off */
    /* executors (models with device != "cpu"): the shared slot queue and batching */
    int exec_slots;                   /* slots per executor (requests in flight) */
    int64_t exec_slot_bytes;          /* input bytes per slot (ids, f32 pixels) */
    int exec_max_batch_tokens;        /* a batch's budget: text ids + image pixels / 256 */
    int exec_max_batch;               /* inputs per encode pass */
    int exec_batch_delay_us;          /* wait at most this for more inputs while busy (never when idle) */
    /* models */
    int n_models;
    mm_conf_model_t models[MM_MAX_MODELS];
} mm_conf_t;

/* Fill `c` with defaults. */
void mm_conf_defaults(mm_conf_t *c);

/* Parse and validate `path` into `c` (defaults first). Unknown keys, wrong
 * types, out-of-range values are errors: `err` gets "file:line: reason".
 * Relative paths in the file are resolved against the current directory.
 * Returns MM_OK or MM_E_INVALID. */
int mm_conf_load(const char *path, mm_conf_t *c, char *err, size_t errlen);

/* The listen address of worker `i` (0-based) into out: "%d" replaced by i for
 * unix paths, port + i for host:port. Returns 1 for unix, 0 for TCP. */
int mm_conf_worker_addr(const mm_conf_t *c, int i, char *out, size_t cap);

/* The overflow (nginx `backup`) address: overflow_listen if set, else the
 * unix pattern with "overflow" for %d. Returns 1 unix, 0 TCP, -1 none. */
int mm_conf_overflow_addr(const mm_conf_t *c, char *out, size_t cap);

/* Default model index, or -1 if none. */
int mm_conf_default_model(const mm_conf_t *c);

/* Where a model's `device` runs it: in the workers, on an executor over the
 * CPU backend, or on an executor over a GPU. -1: not a device name. */
enum { MM_DEV_WORKER, MM_DEV_CPU_EXECUTOR, MM_DEV_GPU };
int mm_conf_device_kind(const char *device);

#endif
