# mk/uda_bench.mk — `make bench-uda`: DeepAstroUDA with the ResNet-18
# backbone at 64x64 on the engine beside tests/models/uda_ref.py's PyTorch
# modules (scripts/bench_uda.sh): predict images/s at batch 1 and 32 and a
# training step at 36 source + 36 target images. Part of `make bench`.
.PHONY: bench-uda

$(BUILD)/bench_uda: $(OBJ32)/bench/uda/bench_uda.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-uda: $(BUILD)/bench_uda
	@scripts/bench_uda.sh $(BUILD)
