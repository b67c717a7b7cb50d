# mk/morph.mk — `make bench-morph`: morph/ beside statmorph on the same 64x64
# cutouts (scripts/bench_morph.sh). statmorph lives in its own environment
# (MORPH_PYTHON, default build-morph/venv/bin/python; see
# tests/morph/gen_morph_fixtures.py): it needs numpy 2, which Debian's torch
# does not, so CI and `make deps` never install it.
.PHONY: bench-morph
MORPH_PYTHON ?= build-morph/venv/bin/python

$(BUILD)/bench_morph: $(OBJ32)/bench/morph/bench_morph.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-morph: $(BUILD)/bench_morph $(BUILD)/galaxy-synth
	@scripts/bench_morph.sh $(BUILD) $(MORPH_PYTHON)
