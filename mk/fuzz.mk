# mk/fuzz.mk — libFuzzer targets for the image decoders, the CSV catalogue parser,
# galaxyd's request-body parsers (multipart, base64, numbers) and the safetensors
# reader every checkpoint goes through
# (included by the root Makefile).
#
#   make fuzz          build and run each target for FUZZ_SECS (default 60 s)
#   make fuzz-smoke    the same for FUZZ_SMOKE_SECS (default 10 s); part of `make test`
#   make fuzz-http     galaxyd's whole HTTP surface, FUZZ_HTTP_SECS (default 300 s),
#                      against its sanitizer build (tests/daemon/http_fuzz.py; below)
#
# Each target (tests/fuzz/fuzz_*.c) is built with clang -fsanitize=fuzzer,address,undefined
# and the io sources linked directly (not libgalaxyd.a, which is built with gcc and without
# coverage instrumentation). Seeds are the committed fixtures in tests/fixtures/io/; the
# growing corpus and any crash-* reproducers live in $(FUZZ_BUILD)/. When clang or its
# libFuzzer runtime is missing, both targets print a message and succeed.

FUZZ_CC         ?= clang
FUZZ_BUILD      ?= build-fuzz
FUZZ_SECS       ?= 60
FUZZ_SMOKE_SECS ?= 10
FUZZ_TARGETS    := png jpeg fits image csv multipart base64 safetensors
FUZZ_CFLAGS     := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer \
                   -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                   -Wno-unknown-pragmas -Ikernels -Iio -Imodels -Idaemon -Itests
# The kernels files are the engine core the decoders' tensors need (gx_device.c
# with it, and gx_shape.c for gx_device.c's gx_to_host_scalars).
FUZZ_SRCS       := io/gx_image.c io/gx_png.c io/gx_jpeg.c io/gx_fits.c io/gx_preprocess.c \
                   io/gx_catalog.c daemon/gx_http_parse.c \
                   kernels/gx_core.c kernels/gx_rng.c kernels/gx_device.c kernels/gx_cuda_host.c \
                   kernels/gx_shape.c kernels/gx_safetensors.c
FUZZ_LIBS       := -lpng -ljpeg -lcfitsio -ljansson -lz -lm
FUZZ_BINS       := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
# Seed files per target: the fixtures of that format (all formats for the dispatcher).
FUZZ_SEEDS_png   := tests/fixtures/io/*.png
FUZZ_SEEDS_jpeg  := tests/fixtures/io/*.jpg
FUZZ_SEEDS_fits  := tests/fixtures/io/*.fits
FUZZ_SEEDS_image := tests/fixtures/io/*.png tests/fixtures/io/*.jpg tests/fixtures/io/*.fits
FUZZ_SEEDS_csv   := tests/fixtures/io/csv/*.csv
# galaxyd's body parsers: first line = boundary, rest = body; base64/number text.
FUZZ_SEEDS_multipart := tests/fixtures/fuzz/*.multipart
FUZZ_SEEDS_base64    := tests/fixtures/fuzz/*.b64
FUZZ_SEEDS_safetensors := tests/fixtures/fuzz/*.safetensors

# 1 when $(FUZZ_CC) can link a libFuzzer program (evaluated only in recipes).
FUZZ_HAVE = $(shell printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
              | $(FUZZ_CC) -x c -fsanitize=fuzzer - -o /dev/null >/dev/null 2>&1 && echo 1)

.PHONY: fuzz fuzz-smoke fuzz-build

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_SRCS) io/gx_image.h io/gx_image_impl.h \
                     io/gx_dataset.h daemon/gx_http_parse.h kernels/gx_safetensors.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_SRCS) $(FUZZ_LIBS) -o $@

# $(1) = seconds per target. Runs every target even if one fails; fails at the end.
define fuzz_run
	@if [ "$(FUZZ_HAVE)" != 1 ]; then \
	  echo "fuzz: skipped ($(FUZZ_CC) with libFuzzer not found; install clang to fuzz)"; exit 0; fi; \
	$(MAKE) --no-print-directory $(FUZZ_BINS) || exit 1; \
	status=0; \
	for t in $(FUZZ_TARGETS); do \
	  corpus=$(FUZZ_BUILD)/corpus-$$t; mkdir -p $$corpus; \
	  case $$t in png) seeds="$(FUZZ_SEEDS_png)";; jpeg) seeds="$(FUZZ_SEEDS_jpeg)";; \
	              fits) seeds="$(FUZZ_SEEDS_fits)";; csv) seeds="$(FUZZ_SEEDS_csv)";; \
	              multipart) seeds="$(FUZZ_SEEDS_multipart)";; base64) seeds="$(FUZZ_SEEDS_base64)";; \
	              safetensors) seeds="$(FUZZ_SEEDS_safetensors)";; \
	              *) seeds="$(FUZZ_SEEDS_image)";; esac; \
	  cp -n $$seeds $$corpus/ 2>/dev/null || true; \
	  echo "fuzz: $$t for $(1) s"; \
	  ( cd $(FUZZ_BUILD) && ./fuzz_$$t -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 \
	      -artifact_prefix=crash-$$t- -print_final_stats=0 corpus-$$t ) > $(FUZZ_BUILD)/fuzz_$$t.log 2>&1 \
	    && echo "fuzz: $$t ok ($$(ls $$corpus | wc -l) corpus files)" \
	    || { echo "fuzz: $$t FAILED (see $(FUZZ_BUILD)/fuzz_$$t.log)"; tail -n 30 $(FUZZ_BUILD)/fuzz_$$t.log; status=1; }; \
	done; exit $$status
endef

fuzz-build:
	@if [ "$(FUZZ_HAVE)" = 1 ]; then $(MAKE) --no-print-directory $(FUZZ_BINS); \
	 else echo "fuzz: skipped ($(FUZZ_CC) with libFuzzer not found)"; fi

fuzz:
	$(call fuzz_run,$(FUZZ_SECS))

fuzz-smoke:
	$(call fuzz_run,$(FUZZ_SMOKE_SECS))

# `make test` runs the smoke fuzz once (not again in the sanitizer pass of test-asan,
# where the fuzz targets would add nothing: they already run under ASan and UBSan).
ifneq ($(SAN),1)
test-run: fuzz-smoke
endif

# galaxyd's whole HTTP surface (tests/daemon/http_fuzz.py): a long seeded
# campaign against the AddressSanitizer + UBSan build of galaxyd (galaxy-synth
# and galaxy-train, which only make the tiny models, from the plain $(BUILD)).
# FUZZ_HTTP_SECS (default 300); FUZZ_HTTP_CLIENTS concurrent clients (default 4,
# seeds N, N+1, ...); FUZZ_HTTP_SEED N (default: a fresh one, printed, so a
# failure can be replayed with FUZZ_HTTP_SEED=N). `make test` runs the same test
# file for 15 s with 2 clients from seed 1, in every pass of tests/daemon.
FUZZ_HTTP_SECS ?= 300
FUZZ_HTTP_SEED ?=
FUZZ_HTTP_CLIENTS ?= 4
.PHONY: fuzz-http
fuzz-http:
	@$(MAKE) --no-print-directory $(BUILD)/galaxy-synth $(BUILD)/galaxy-train
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 build-asan/galaxyd
	@seed=$${FUZZ_HTTP_SEED:-$(FUZZ_HTTP_SEED)}; seed=$${seed:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz-http: seed $$seed for $(FUZZ_HTTP_SECS) s against build-asan/galaxyd"; \
	GALAXYD_BUILD=build-asan GALAXYD_TRAIN_BUILD=$(BUILD) GX_HTTP_FUZZ_SEED=$$seed GX_HTTP_FUZZ_SECS=$(FUZZ_HTTP_SECS) \
	  GX_HTTP_FUZZ_CLIENTS=$(FUZZ_HTTP_CLIENTS) \
	  $(PYTHON) -m pytest -q -s -p no:cacheprovider tests/daemon/test_http_fuzz.py \
	  && echo "fuzz-http: ok (seed $$seed)" || { echo "fuzz-http: FAILED (seed $$seed)"; exit 1; }
