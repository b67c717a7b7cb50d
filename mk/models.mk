# mk/models.mk — `make models`: retrain the bundled models, WaveletMamba, CF-INN and
# DeepAstroUDA (about two hours on 2 cores;
# see scripts/make_models.sh and docs/models.md).
.PHONY: models
models: deps all
	@scripts/make_models.sh $(BUILD)
