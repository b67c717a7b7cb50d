# mk/cuda.mk — the CUDA backend's tests (kernels/cuda/README.md).
#
#   make test-cuda            1. test_cuda_host: the kernels' per-element bodies
#                                (gx_cuda_body.cuh) run on the CPU against the
#                                CPU ops (needs nvcc to build, no GPU to run);
#                             2. test_cuda: every launcher against the CPU op on
#                                the GPU, forward and backward; without a GPU each
#                                group prints "skipped: no GPU (<reason>)"
#                             3. test_cuda_dispatch: the gx ops and the models
#                                with their tensors on the device (GX_CUDA_DISPATCH)
#                                against the same calls on the CPU
#                                (tests/cuda/dispatch_*.c, harness dispatch_util.h)
#   make test-cuda-memcheck   test_cuda under compute-sanitizer --tool memcheck
#
# Part of nothing else: make test stays CPU-only (tests/unit/test_cuda_select.c
# covers the probe, device selection and the pool/arena bookkeeping).

.PHONY: test-cuda test-cuda-memcheck

$(BUILD)/test_cuda: $(OBJ32)/tests/cuda/test_cuda.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

DISPATCH_SRCS := $(sort $(wildcard tests/cuda/dispatch_*.c))
DISPATCH_OBJS := $(DISPATCH_SRCS:%.c=$(OBJ32)/%.o) $(OBJ32)/tests/gx_test.o
$(BUILD)/test_cuda_dispatch: $(DISPATCH_OBJS) $(LIB)
	$(CC) $(LDFLAGS) $(DISPATCH_OBJS) $(LIB) $(LDLIBS) -o $@

CUDA_HOST_TEST :=
ifeq ($(CUDA),1)
ifneq ($(CU_SRCS),)
# nvcc has no -MMD here: the shared headers are listed by hand.
CUDA_HDRS := kernels/gx_cuda.h kernels/gx_math.h $(wildcard kernels/cuda/*.cuh)
$(CU_OBJS) $(OBJ32)/tests/cuda/test_cuda_host.o: $(CUDA_HDRS)
$(OBJ32)/tests/cuda/test_cuda_host.o: tests/cuda/cuda_test_util.h
$(BUILD)/test_cuda_host: $(OBJ32)/tests/cuda/test_cuda_host.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@
CUDA_HOST_TEST := $(BUILD)/test_cuda_host
endif
endif

test-cuda: $(BUILD)/test_cuda $(BUILD)/test_cuda_dispatch $(CUDA_HOST_TEST)
ifneq ($(CUDA_HOST_TEST),)
	$(CUDA_HOST_TEST)
endif
	$(BUILD)/test_cuda
	$(BUILD)/test_cuda_dispatch

CUDA_SANITIZER ?= $(or $(shell command -v compute-sanitizer 2>/dev/null),$(wildcard $(CUDA_HOME)/bin/compute-sanitizer))

test-cuda-memcheck: $(BUILD)/test_cuda
ifneq ($(CUDA_SANITIZER),)
	$(CUDA_SANITIZER) --tool memcheck --leak-check full --error-exitcode 1 $(BUILD)/test_cuda
else
	@echo "compute-sanitizer not found; running the tests without it"
	$(BUILD)/test_cuda --need-sanitizer
endif
