# mk/bench_gpu.mk — `make bench-gpu` (issue 10): the GPU benchmarks.
#
# Without a GPU (nvidia-smi missing, or `nvidia-smi -L` failing or listing
# no device) it prints "bench-gpu: skipped: no GPU (<reason>)" and exits 0,
# so it is safe on CI and on the CPU dev box. The check is nvidia-smi's own
# answer: nothing is added to the binaries for it.
#
# With a GPU it runs the PyTorch reference side, bench/gpu/bench_torch.py
# (WaveletMamba default config at 64x64, CF-INN classify and counterfactual
# grids, UDA ResNet-18; inference at batch 1/32/256 and training; fp32 and
# AMP; eager and torch.compile when torch >= 2; see its header): one JSON
# object per measurement in $(BENCH_GPU_OUT)/torch.jsonl, the table on the
# terminal, the GPU's identity in $(BENCH_GPU_OUT)/nvidia-smi.csv. Then our
# side, $(BUILD)/bench_gx_gpu (bench/gpu/bench_gx_gpu.c: the same cases on the
# CUDA backend, fp32) into $(BENCH_GPU_OUT)/galaxyd.jsonl, and
# bench/gpu/compare.py prints both side by side with the ratio.
#
# Knobs: BENCH_GPU_PY (the Python with a CUDA torch; default $(PYTHON)),
# BENCH_GPU_ARGS (extra bench_torch.py flags, e.g. "--compile off" or
# "--models wm --amp-dtype fp16"), BENCH_GPU_OUT (default $(BUILD)/bench-gpu).
.PHONY: bench-gpu

# Our side (bench/gpu/bench_gx_gpu.c): compiled by make test like the other
# benchmark programs; run by bench-gpu.
$(BUILD)/bench_gx_gpu: $(OBJ32)/bench/gpu/bench_gx_gpu.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

BENCH_GPU_PY   ?= $(PYTHON)
BENCH_GPU_ARGS ?=
BENCH_GPU_OUT  ?= $(BUILD)/bench-gpu

bench-gpu: $(BUILD)/bench_gx_gpu
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
	    echo "bench-gpu: skipped: no GPU (nvidia-smi not found)"; exit 0; \
	fi; \
	if ! list=$$(nvidia-smi -L 2>&1) || ! printf '%s\n' "$$list" | grep -q '^GPU '; then \
	    why=$$(printf '%s\n' "$$list" | head -n 1); \
	    echo "bench-gpu: skipped: no GPU (nvidia-smi -L: $${why:-no device listed})"; exit 0; \
	fi; \
	mkdir -p $(BENCH_GPU_OUT); \
	printf '%s\n' "$$list"; \
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $(BENCH_GPU_OUT)/nvidia-smi.csv; \
	echo "bench-gpu: PyTorch reference ($(BENCH_GPU_PY) bench/gpu/bench_torch.py --device cuda $(BENCH_GPU_ARGS))"; \
	$(BENCH_GPU_PY) bench/gpu/bench_torch.py --device cuda $(BENCH_GPU_ARGS) > $(BENCH_GPU_OUT)/torch.jsonl; st=$$?; \
	echo "bench-gpu: $$(wc -l < $(BENCH_GPU_OUT)/torch.jsonl) PyTorch rows in $(BENCH_GPU_OUT)/torch.jsonl (exit $$st)"; \
	echo "bench-gpu: ours ($(BUILD)/bench_gx_gpu)"; \
	$(BUILD)/bench_gx_gpu > $(BENCH_GPU_OUT)/galaxyd.jsonl; st2=$$?; \
	echo "bench-gpu: $$(wc -l < $(BENCH_GPU_OUT)/galaxyd.jsonl) rows of ours in $(BENCH_GPU_OUT)/galaxyd.jsonl (exit $$st2)"; \
	$(PYTHON) bench/gpu/compare.py $(BENCH_GPU_OUT)/torch.jsonl $(BENCH_GPU_OUT)/galaxyd.jsonl; \
	[ $$st -eq 0 ] && [ $$st2 -eq 0 ]
