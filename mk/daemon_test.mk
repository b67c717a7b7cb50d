# mk/daemon_test.mk — galaxyd's black-box tests and its serving benchmark
# (included by the root Makefile).
#
#   make test-daemon   build galaxyd, galaxy-synth and galaxy-train in $(BUILD), then
#                      run tests/daemon (pytest, Debian's python3) against them; the
#                      last line is "test-daemon: PASS (...)" or "test-daemon: FAIL (...)"
#   make bench-serve   serving throughput and p50/p99 at 1, 16 and 64 connections,
#                      the same model's raw batched forward in the same run, serving
#                      efficiency, and overload at 2x capacity (scripts/bench_serve.sh)
#
# With BUILD=build-asan SAN=1 the same tests drive a sanitizer build of galaxyd.

.PHONY: test-daemon bench-serve

DAEMON_TEST_BINS := $(BUILD)/galaxyd $(BUILD)/galaxy-synth $(BUILD)/galaxy-train

test-daemon: $(DAEMON_TEST_BINS)
	@log=$$(mktemp); \
	{ GALAXYD_BUILD=$(BUILD) $(PYTHON) -m pytest -q -p no:cacheprovider tests/daemon; echo $$? > "$$log.rc"; } 2>&1 \
	  | tee "$$log"; \
	rc=$$(cat "$$log.rc"); summary=$$(grep -E '[0-9]+ (passed|failed|errors?)' "$$log" | tail -n 1 | tr -d '='); \
	rm -f "$$log" "$$log.rc"; \
	if [ "$$rc" -eq 0 ]; then echo "test-daemon: PASS ($$summary)"; \
	else echo "test-daemon: FAIL (pytest exit $$rc:$$summary)"; fi; exit $$rc

# The raw forward side of the benchmark: a program of its own under bench/serve/
# (bench/*.c at the top level belong to bench_kernels).
$(BUILD)/bench_serve_fwd: $(OBJ32)/bench/serve/bench_serve_fwd.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-serve: $(DAEMON_TEST_BINS) $(BUILD)/galaxy-loadgen $(BUILD)/bench_serve_fwd
	@scripts/bench_serve.sh $(BUILD)
