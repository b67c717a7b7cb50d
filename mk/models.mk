# mk/models.mk — `make models`: retrain the bundled model (about an hour on 2 cores;
# see scripts/make_models.sh and docs/models.md).
.PHONY: models
models: deps all
	@scripts/make_models.sh $(BUILD)
