# mk/uda_bench.mk — `make bench-uda`: DeepAstroUDA with the ResNet-18
# backbone at 64x64 on the engine beside tests/models/uda_ref.py's PyTorch
# modules (scripts/bench_uda.sh): predict images/s at batch 1 and 32 and a
# training step at 36 source + 36 target images. Part of `make bench`.
#
# `make bench-uda-ingest`: survey-scale ingest with the bundled uda model
# (scripts/bench_uda_ingest.sh, issue 7): offline scoring (galaxy-train score)
# images/s at 1 and 2 threads with peak RSS, a resumed run, beside the pure
# predict (bench/uda/bench_uda_score.c) and PyTorch's (bench/uda/ref_uda_score.py);
# then POST /v1/anomaly/batch on galaxyd (galaxy-loadgen --seq) at 1, 16 and
# 64 images per request, with the rows stored checked against the images sent.
# Also part of `make bench` (a prerequisite of it, so it runs before the other
# benchmarks). Knobs: the script's environment variables (BENCH_UDA_N, ...;
# see its header), e.g. `make bench-uda-ingest BENCH_UDA_N=1000`.
.PHONY: bench-uda bench-uda-ingest

$(BUILD)/bench_uda: $(OBJ32)/bench/uda/bench_uda.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-uda: $(BUILD)/bench_uda
	@scripts/bench_uda.sh $(BUILD)

$(BUILD)/bench_uda_score: $(OBJ32)/bench/uda/bench_uda_score.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-uda-ingest: $(BUILD)/bench_uda_score $(BUILD)/galaxyd $(BUILD)/galaxy-loadgen $(BUILD)/galaxy-train \
                  $(BUILD)/galaxy-synth
	@scripts/bench_uda_ingest.sh $(BUILD)

bench: bench-uda-ingest
