# galaxyd — one Makefile for the engine, the binaries, the tests and the benchmarks.
#
#   make              build the static library (and binaries, as they arrive)
#   make test         install missing dependencies, build, run every test
#   make test-asan    the same tests under AddressSanitizer + UBSan (build-asan/)
#   make bench        kernels, WaveletMamba, CF-INN and UDA beside PyTorch, decoding beside PIL/astropy
#   make fixtures     regenerate the PyTorch parity fixtures (tests/fixtures/)
#
# Options: MARCH=1 (tune for this CPU: -march=native; off by default so the
# binaries run on any x86-64), CUDA=0|1 (default: 1 when nvcc is found),
# WERROR=0 (drop -Werror), BUILD=dir, SAN=1 (sanitizers; used by test-asan).

BUILD   ?= build
CC      ?= gcc
WERROR  ?= 1
MARCH   ?= 0
SAN     ?= 0
PYTHON  ?= /usr/bin/python3

NVCC    := $(shell command -v nvcc 2>/dev/null)
ifeq ($(NVCC),)
CUDA    ?= 0
else ifeq ($(SAN),1)
# Sanitizer builds are CPU-only unless CUDA=1 is given: ASan's shadow gap
# breaks the CUDA driver (it needs ASAN_OPTIONS=protect_shadow_gap=0), and a
# second nvcc pass would double test-asan's compile time (kernels/cuda/README.md).
CUDA    ?= 0
else
CUDA    ?= 1
endif

# -fno-trapping-math: no code here reads FP exception flags; it lets GCC
# vectorise elementwise selects such as ReLU's (docs/engine.md, Precision).
CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE -O2 -fno-trapping-math -g -Wall -Wextra -fopenmp -Ikernels -Iio -Imodels -Isynth -Itrainer -Idaemon -Imorph -Itests $(HDF5_CFLAGS) -MMD -MP
ifeq ($(WERROR),1)
CFLAGS_COMMON += -Werror
endif
ifeq ($(MARCH),1)
CFLAGS_COMMON += -march=native
endif
ifeq ($(SAN),1)
CFLAGS_COMMON += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS       += -fsanitize=address,undefined
endif
HDF5_CFLAGS := $(shell pkg-config --cflags hdf5 2>/dev/null)
HDF5_LIBS   := $(or $(shell pkg-config --libs hdf5 2>/dev/null),-lhdf5)
# OpenBLAS: the OpenMP build, linked by path (with an rpath) whatever the
# system's libopenblas alternative says. The pthread build runs its own thread
# pool beside libgomp's, and on 2 cores the two pools spin against each other
# (WaveletMamba tiny at batch 32: 946 ms/batch with it, 154 ms with the OpenMP
# build, same machine and load).
MULTIARCH   := $(shell $(CC) -print-multiarch 2>/dev/null)
BLAS_DIR    ?= /usr/lib/$(MULTIARCH)/openblas-openmp
comma       := ,
BLAS_LIBS   := $(if $(wildcard $(BLAS_DIR)/libopenblas.so),-L$(BLAS_DIR) -Wl$(comma)-rpath$(comma)$(BLAS_DIR)) -lopenblas
LDLIBS := $(BLAS_LIBS) -lmicrohttpd -ljansson -lsqlite3 -lpng -ljpeg -lcfitsio $(HDF5_LIBS) -lz -lpthread -lm -fopenmp

# ---------------------------------------------------------------- sources
KERNEL_SRCS := $(sort $(wildcard kernels/*.c))
IO_SRCS     := $(sort $(wildcard io/*.c))
MODEL_SRCS  := $(sort $(wildcard models/*.c))
SYNTH_SRCS  := $(sort $(wildcard synth/*.c))
TRAIN_SRCS  := $(sort $(wildcard trainer/*.c))
SERVE_SRCS  := $(sort $(wildcard daemon/*.c))
MORPH_SRCS  := $(sort $(wildcard morph/*.c))
# Database migrations are compiled into the library (scripts/embed_migrations.sh
# turns migrations/*.sql into one C array), so both binaries carry their schema.
MIGRATIONS  := $(sort $(wildcard migrations/*.sql))
GEN_SRCS    := $(if $(MIGRATIONS),$(BUILD)/gen/migrations.c)
LIB_SRCS    := $(KERNEL_SRCS) $(IO_SRCS) $(MODEL_SRCS) $(SYNTH_SRCS) $(TRAIN_SRCS) $(SERVE_SRCS) $(MORPH_SRCS) $(GEN_SRCS)
# Programs: tools/<name>.c holds the main() of build/<name> (galaxy-synth, ...).
PROG_SRCS   := $(sort $(wildcard tools/*.c))
PROGS       := $(PROG_SRCS:tools/%.c=$(BUILD)/%)
CU_SRCS     := $(sort $(wildcard kernels/cuda/*.cu))
# The device ops (plain C over the launchers; gx_tensor dispatch lands there).
CU_C_SRCS   := $(sort $(wildcard kernels/cuda/*.c))
TESTLIB_SRC := tests/gx_test.c
UNIT_SRCS   := $(sort $(wildcard tests/unit/*.c))
GRAD_SRCS   := $(sort $(wildcard tests/grad/*.c))
BENCH_SRCS  := $(sort $(wildcard bench/*.c))

OBJ32 := $(BUILD)/obj
OBJ64 := $(BUILD)/obj64
LIB   := $(BUILD)/libgalaxyd.a
LIB64 := $(BUILD)/libgalaxyd_f64.a

LIB_OBJS   := $(LIB_SRCS:%.c=$(OBJ32)/%.o)
LIB64_OBJS := $(KERNEL_SRCS:%.c=$(OBJ64)/%.o)
UNIT_OBJS  := $(UNIT_SRCS:%.c=$(OBJ32)/%.o) $(TESTLIB_SRC:%.c=$(OBJ32)/%.o)
GRAD_OBJS  := $(GRAD_SRCS:%.c=$(OBJ64)/%.o) $(TESTLIB_SRC:%.c=$(OBJ64)/%.o)

# CUDA_EMU=1 (make test-cuda-emu, mk/cuda_emu.mk): the device ops built
# over tests/cuda/emu/ (the CUDA runtime and every launcher emulated on the
# host) instead of the nvcc objects and cudart/cuBLAS. Test-only.
ifeq ($(CUDA_EMU),1)
override CUDA := 0
CFLAGS_COMMON += -DGX_HAVE_CUDA=1
LIB_OBJS   += $(CU_C_SRCS:%.c=$(OBJ32)/%.o) $(patsubst %.c,$(OBJ32)/%.o,$(sort $(wildcard tests/cuda/emu/*.c)))
endif

ifeq ($(CUDA),1)
ifneq ($(CU_SRCS),)
CU_OBJS    := $(CU_SRCS:%.cu=$(OBJ32)/%.o)
LIB_OBJS   += $(CU_OBJS) $(CU_C_SRCS:%.c=$(OBJ32)/%.o)
# The rpath lets the binaries find cudart/cuBLAS where ld.so.conf does not
# list the toolkit; without a driver or GPU they still start (gx_cuda_probe
# answers 0 and the CPU backend is chosen).
CUDA_HOME  ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_LIB   := $(if $(CUDA_HOME),$(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib)))
CFLAGS_COMMON += -DGX_HAVE_CUDA=1
LDLIBS     += $(if $(CUDA_LIB),-L$(CUDA_LIB) -Wl$(comma)-rpath$(comma)$(CUDA_LIB)) -lcublas -lcudart -lstdc++
NVCCFLAGS  ?= -O2 -Ikernels -DGX_HAVE_CUDA=1 -std=c++17 -Xcompiler -Wall,-Wextra$(if $(filter 1,$(WERROR)),$(comma)-Werror) $(if $(filter 1,$(WERROR)),-Werror all-warnings) -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
endif
endif

.PHONY: all lib test test-run test-asan bench fixtures deps clean info
# Keep tools' objects (make would delete them as intermediates and relink every time).
.SECONDARY:
all: info lib $(PROGS)

# The dashboard's charts: Chart.js from Debian's libjs-chart.js, copied into the
# web root galaxyd serves (web/vendor/, not committed) so it works offline. Without
# the package the dashboard says "charts not available" instead.
CHARTJS_SRC ?= /usr/share/javascript/chart.js/chart.min.js
WEB_VENDOR  := $(if $(wildcard $(CHARTJS_SRC)),web/vendor/chart.min.js)
all: $(WEB_VENDOR)
$(BUILD)/galaxyd: | $(WEB_VENDOR)
web/vendor/chart.min.js: $(CHARTJS_SRC)
	@mkdir -p $(@D)
	cp $< $@

info:
	@printf 'galaxyd build: %s, threads via OpenMP, GEMM via OpenBLAS\n' "$(BUILD)"
ifeq ($(CUDA),1)
	@printf '  ✓ CUDA: nvcc found (%s); %d .cu file(s) in kernels/cuda/\n' "$(NVCC)" $(words $(CU_SRCS))
else
	@printf '  ✗ CUDA: off (nvcc not found or CUDA=0); CPU backend only\n'
endif

lib: $(LIB) $(LIB64)

$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(LIB64): $(LIB64_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(OBJ32)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -c $< -o $@

$(OBJ64)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -DGX_F64 -c $< -o $@

$(BUILD)/gen/migrations.c: $(MIGRATIONS) scripts/embed_migrations.sh
	@mkdir -p $(@D)
	scripts/embed_migrations.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(OBJ32)/%.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/%: $(OBJ32)/tools/%.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/test_unit: $(UNIT_OBJS) $(LIB)
	$(CC) $(LDFLAGS) $(UNIT_OBJS) $(LIB) $(LDLIBS) -o $@

$(BUILD)/test_grad: $(GRAD_OBJS) $(LIB64)
	$(CC) $(LDFLAGS) $(GRAD_OBJS) $(LIB64) $(LDLIBS) -o $@

# io/, models/, synth/ and trainer/ are compiled into the f32 library only: the f64 library exists for the
# engine's gradient checks.

$(BUILD)/bench_kernels: $(BENCH_SRCS:%.c=$(OBJ32)/%.o) $(LIB)
	$(CC) $(LDFLAGS) $(BENCH_SRCS:%.c=$(OBJ32)/%.o) $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench_io: $(OBJ32)/bench/io/bench_io.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench_wm: $(OBJ32)/bench/wm/bench_wm.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# ---------------------------------------------------------------- targets
deps:
	@scripts/deps.sh build

test: deps
	@$(MAKE) --no-print-directory test-run

# The benchmark programs are compiled by `make test` (not run), so that a change
# to a library API cannot leave a benchmark that no longer builds.
BENCH_PROGS := $(addprefix $(BUILD)/,bench_kernels bench_io bench_wm bench_cf bench_uda bench_uda_score \
                 bench_anomaly bench_morph bench_serve_fwd bench_gx_gpu)

test-run: all $(BUILD)/test_unit $(BUILD)/test_grad $(BUILD)/test_cuda_dispatch $(BENCH_PROGS)
	@$(MAKE) --no-print-directory BUILD=$(BUILD)-emu CUDA_EMU=1 $(BUILD)-emu/test_cuda_dispatch \
	    $(BUILD)-emu/galaxy-train $(BUILD)-emu/bench_gx_gpu $(BUILD)-emu/galaxyd \
	    $(BUILD)-emu/galaxy-loadgen $(BUILD)-emu/bench_serve_fwd
	@scripts/run_tests.sh $(BUILD) $(BUILD)-emu

test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 test-run

bench: deps
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory $(BUILD)/bench_kernels $(BUILD)/bench_io $(BUILD)/bench_wm $(BUILD)/bench_cf $(BUILD)/bench_uda
	@scripts/bench.sh $(BUILD)
	@scripts/bench_io.sh $(BUILD)
	@scripts/bench_wm.sh $(BUILD)
	@scripts/bench_cf.sh $(BUILD)
	@scripts/bench_uda.sh $(BUILD)

fixtures:
	@scripts/deps.sh bench
	@for s in tests/parity/gen_*.py; do echo "== $$s"; $(PYTHON) $$s || exit 1; done

# Every build folder `make test`, `make test-asan` and the fuzz targets make
# (their emulated-device twins included); other BUILD= folders are yours to remove.
clean:
	rm -rf build build-emu build-asan build-asan-emu build-fuzz

# Fragments owned by one component each (fuzzing, benchmarks, ...).
include $(sort $(wildcard mk/*.mk))

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
