# arus: `make` lists the targets. The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Spark binds to loopback: everything here runs on one machine.
export SPARK_LOCAL_IP ?= 127.0.0.1
SETUP_STAMP := $(VENV)/.arus-setup
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## --- the two commands -------------------------------------------------------

.PHONY: demo
demo: setup kafka-up ## Set everything up, produce IoT readings, run the whole pipeline once, print what it wrote and grade it
	arus produce iot --count 3000 --ledger data/iot-ledger.jsonl
	arus pipeline --available-now --show
	@# Fails the demo when the pipeline missed an injected fault (exit 1, each one listed).
	arus scorecard --ledger data/iot-ledger.jsonl

.PHONY: test
test: setup ## Run the unit and integration tests (against the real broker, which it starts)
	$(PY) -m pytest tests/unit tests/integration --durations=15 $(PYTEST_ARGS)

.PHONY: test-faults
test-faults: setup ## Kill jobs and brokers, feed bad input, try bad logins: the reliability suite (own brokers, ~10 min)
	$(PY) -m pytest tests/faults -m faults --durations=0 $(PYTEST_ARGS)

## --- setup --------------------------------------------------------------------

.PHONY: setup
setup: $(SETUP_STAMP) ## Create .venv with pinned packages and fetch the Kafka and Spark jars

$(SETUP_STAMP): requirements.txt constraints.txt pyproject.toml jvm/kafka/pom.xml jvm/spark/pom.xml scripts/fetch-jars.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	PYTHON=$(PY) scripts/fetch-jars.sh
	touch $@

.PHONY: lock
lock: ## Re-pin constraints.txt after editing requirements.txt
	$(PY) -m pip install -q -r requirements.txt
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^arus'; } > constraints.new
	mv constraints.new constraints.txt

## --- the local Kafka broker -----------------------------------------------------

.PHONY: kafka-up
kafka-up: setup ## Start the local broker on 127.0.0.1:9092 and create the topics in conf/
	arus broker up

.PHONY: kafka-down
kafka-down: ## Stop the local broker
	arus broker down

.PHONY: kafka-reset
kafka-reset: ## Stop the local broker and wipe its data
	arus broker reset

.PHONY: kafka-status
kafka-status: ## Is the local broker running?
	arus broker status

.PHONY: kafka-up-sasl
kafka-up-sasl: setup ## Start a second broker on 9094 that demands SASL/SCRAM logins and checks ACLs (passwords from env)
	arus broker up --sasl

.PHONY: kafka-down-sasl
kafka-down-sasl: ## Stop the SASL broker
	arus broker down --sasl

.PHONY: kafka-cluster-up
kafka-cluster-up: setup ## Start a 3-broker cluster on 19091-19096 (replication factor 3, min ISR 2)
	arus broker up --cluster 3

.PHONY: kafka-cluster-down
kafka-cluster-down: ## Stop the 3-broker cluster
	arus broker down --cluster 3

## --- producers and jobs ----------------------------------------------------------

.PHONY: produce-iot
produce-iot: kafka-up ## Simulate the IoT fleet (a demo run that stops by itself)
	arus produce iot --count 3000

FILE ?= samples/weather_stations.csv
.PHONY: produce-csv
produce-csv: kafka-up ## Replay a CSV file: make produce-csv FILE=x.csv ARGS="--time-column ts --key-column id"
	arus produce csv $(FILE) $(ARGS)

.PHONY: produce-api
produce-api: kafka-up ## Poll the USGS earthquake feed each minute until Ctrl-C (ARGS="--polls 1": once)
	arus produce api $(ARGS)

.PHONY: aggregate
aggregate: kafka-up ## Run the main job (catch up, then stop) and show its output
	spark-submit jobs/aggregate.py --show

.PHONY: pipeline
pipeline: kafka-up ## The multi-topic pipeline, live (every stage at once) until Ctrl-C; docs/pipeline.md
	arus pipeline $(ARGS)

.PHONY: pipeline-once
pipeline-once: kafka-up ## The pipeline's catch-up run: each stage to the end of its input, then gold and alerts
	arus pipeline --available-now --show $(ARGS)

.PHONY: alerts
alerts: kafka-up ## Apply the alert rules to the clean topic (catch up, then stop) and show the alerts
	arus alerts --show $(ARGS)

.PHONY: package
package: setup ## Build the wheel a cluster needs (dist/arus-*.whl: every module, jobs, default config) for --py-files
	rm -f dist/arus-*.whl
	$(PY) -m pip wheel -q --no-deps -w dist .
	@ls dist/arus-*.whl

## --- looking inside (docs/operations.md) -------------------------------------------------

.PHONY: topics
topics: kafka-up ## Topics with partitions, replication, retention and messages (ARGS="describe iot.readings")
	arus topics $(ARGS)

.PHONY: tail
tail: kafka-up ## Print a topic's records: make tail T=iot.deadletter ARGS="--from-beginning"
	arus tail $(T) $(ARGS)

.PHONY: lag
lag: kafka-up ## Lag of every consumer group and every Spark checkpoint (ARGS="--watch")
	arus lag $(ARGS)

.PHONY: dashboard
dashboard: kafka-up ## A live page on http://127.0.0.1:8050/: lag, rates, late, dead letters, gold windows (ARGS="--port 9000")
	arus dashboard $(ARGS)

## --- batch side and notebooks (docs/batch.md) ------------------------------------------

TABLE ?= gold_aggregates

.PHONY: backfill
backfill: setup ## Recompute silver and gold from bronze with the streaming stages, idempotently (ARGS: see docs/batch.md)
	arus backfill $(ARGS)

.PHONY: reconcile
reconcile: setup ## Compare the streaming gold table with a batch recompute; fails on differences late data does not explain
	arus reconcile $(ARGS)

.PHONY: maintain
maintain: setup ## OPTIMIZE + VACUUM every table in the lake (safe retention), file counts before and after
	arus maintain $(ARGS)

.PHONY: history
history: setup ## A Delta table's history; ARGS="--version 3" or "--timestamp 2026-03-01T12:00Z" reads it as it was (TABLE=...)
	arus history $(TABLE) $(ARGS)

.PHONY: notebook
notebook: setup ## Open Jupyter Lab on notebooks/ (overview, IoT, data quality; they read [paths] lake or ARUS_LAKE_DIR)
	ARUS_HOME=$(CURDIR) jupyter lab --ServerApp.root_dir=notebooks

.PHONY: notebooks-run
notebooks-run: setup ## Run every notebook headless against the lake (IMAGES=docs/img also saves each one's figure)
	arus notebooks $(if $(IMAGES),--images $(IMAGES))

CONSUME_ARGS ?= --until-idle 10
.PHONY: consume
consume: kafka-up ## The main job's aggregates without Spark (kafka-python); stops 10 s after catching up (CONSUME_ARGS= : live)
	arus consume $(CONSUME_ARGS)

.PHONY: spark-cluster-up
spark-cluster-up: setup ## Start a Spark standalone master and 2 workers on 127.0.0.1:7077 (jobs: --master spark://...)
	arus cluster up

.PHONY: spark-cluster-down
spark-cluster-down: ## Stop the Spark standalone cluster
	arus cluster down

.PHONY: aggregate-on-cluster
aggregate-on-cluster: kafka-up spark-cluster-up ## Run the main job on the standalone cluster (catch up, then stop)
	spark-submit --master spark://127.0.0.1:7077 --conf spark.executor.memory=512m --conf spark.cores.max=2 jobs/aggregate.py --show

## --- benchmarks --------------------------------------------------------------------

.PHONY: bench
bench: setup ## Benchmarks, quick profile (about 25 min on an idle 2-core box, own broker on 29092): bench/results/*.json, docs/benchmarks.md
	arus bench run --profile quick
	arus bench report

.PHONY: bench-full
bench-full: setup ## Benchmarks, full profile (larger sizes, 10^7 events and gold rows, a 30-min soak; hours)
	arus bench run --profile full
	arus bench report

.PHONY: bench-report
bench-report: ## Re-render docs/benchmarks.md and its plots from the newest bench/results/*.json (the pipeline section from its re-run when that run has none)
	arus bench report --pipeline bench/results/quick-pipeline-rerun.json

## --- quality -----------------------------------------------------------------------

.PHONY: lint
lint: setup ## ruff (lint + format check) and mypy
	ruff check .
	ruff format --check .
	mypy

.PHONY: format
format: setup ## Format the code with ruff
	ruff format .
	ruff check --fix .

.PHONY: clean
clean: ## Remove local tables and checkpoints (data/); the broker's data stays (kafka-reset)
	rm -rf data spark-warehouse
