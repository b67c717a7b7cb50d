# mk/anomaly.mk — `make bench-anomaly`: the anomaly store at survey scale
# (bench/anomaly/bench_anomaly.c): 1 million scores through
# gx_anomaly_put_many into a temporary database, then p50/p99 of the
# GET /v1/anomalies queries (min_score=0.9&limit=100, the same with a survey,
# and a page at a cursor half-way down). Not part of `make test`.
# BENCH_ANOMALY_ARGS passes options (--rows N, --reps R, --db PATH, --keep).
.PHONY: bench-anomaly
BENCH_ANOMALY_ARGS ?=

$(BUILD)/bench_anomaly: $(OBJ32)/bench/anomaly/bench_anomaly.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-anomaly: $(BUILD)/bench_anomaly
	@$(BUILD)/bench_anomaly $(BENCH_ANOMALY_ARGS)
