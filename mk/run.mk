# mk/run.mk — `make run`: install what is missing, build, and serve the bundled
# model(s) on http://127.0.0.1:8080 (RUN_HOST, RUN_PORT, RUN_MODELS, RUN_DB and
# RUN_ARGS override; Ctrl-C drains and stops).
RUN_HOST   ?= 127.0.0.1
RUN_PORT   ?= 8080
RUN_MODELS ?= models/default
RUN_DB     ?= galaxyd.sqlite
RUN_ARGS   ?=

.PHONY: run
run: deps
	@$(MAKE) --no-print-directory $(BUILD)/galaxyd
	@echo "galaxyd: serving $(RUN_MODELS) on http://$(RUN_HOST):$(RUN_PORT)/ (Ctrl-C stops)"
	@exec $(BUILD)/galaxyd --host $(RUN_HOST) --port $(RUN_PORT) --models $(RUN_MODELS) --db $(RUN_DB) $(RUN_ARGS)
