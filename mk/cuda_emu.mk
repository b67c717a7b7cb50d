# mk/cuda_emu.mk — the device dispatch run on the host emulation of the CUDA
# backend (tests/cuda/emu/gx_cuda_emu.c), so that it executes without a GPU.
#
#   make test-cuda-emu   builds $(EMU_BUILD) with CUDA_EMU=1 (GX_HAVE_CUDA=1,
#                        kernels/cuda/*.c, no nvcc objects, no cudart/cuBLAS)
#                        and runs test_cuda_dispatch there: every test of
#                        tests/cuda/dispatch_*.c runs (none skips), the device
#                        ops, transfers, optimiser and models against the CPU.
#                        Also part of `make test` (and test-asan): the dispatch
#                        code is then executed in CI, which has no GPU.

.PHONY: test-cuda-emu

# Beside the main build dir (build-emu, or build-asan-emu under test-asan).
EMU_BUILD ?= $(BUILD)-emu

test-cuda-emu:
	@$(MAKE) --no-print-directory BUILD=$(EMU_BUILD) CUDA_EMU=1 $(EMU_BUILD)/test_cuda_dispatch
	$(EMU_BUILD)/test_cuda_dispatch
