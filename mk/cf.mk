# mk/cf.mk — `make bench-cf`: the CF-INN (default config, 64x64) on the engine
# beside tests/models/cfinn_ref.py's PyTorch modules (scripts/bench_cf.sh):
# classify images/s at batch 1 and 32, a training step at batch 32, and the
# latency of a 10-class counterfactual grid (p50/p99), with a phase profile.
# Part of `make bench`.
.PHONY: bench-cf

$(BUILD)/bench_cf: $(OBJ32)/bench/cf/bench_cf.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-cf: $(BUILD)/bench_cf
	@scripts/bench_cf.sh $(BUILD)
