# The README's two commands are `make demo` and `make test`; both set up .venv first when it is
# missing or older than pyproject.toml. Everything else is a convenience.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-stamp
CONFIG ?= conf/local.yaml
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYSPARK_PYTHON := $(CURDIR)/$(VENV)/bin/python
export SPARK_LOCAL_IP := 127.0.0.1
export SPARK_CONF_DIR := $(CURDIR)/dmf_features/infra/spark_conf

.PHONY: demo test setup bench ui airflow lake clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "dmf-features needs Python 3.11, found " + sys.version'
	@command -v java >/dev/null || { echo "dmf-features needs Java 17 (java not found on PATH)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --editable '.[dev,airflow]'
	touch $(STAMP)

## demo: the whole pipeline on the real MovieLens-posters data: ingest, quality gates, embeddings, features,
## training DMF (tracked in MLflow); it ends with the model's test AUC and how to open the MLflow UI
demo: $(STAMP)
	dmf run --config $(CONFIG)

## test: the whole test suite (unit and end-to-end on tiny data), on two pytest-xdist workers (each test
## module stays on one worker, so its shared lake is built once; tests/conftest.py orders the work), the 25
## slowest steps listed at the end; pytest's "no tests" counts as success. Inner loop: README, "Testing".
test: $(STAMP)
	python -m pytest -n 2 --dist loadscope --no-loadscope-reorder --durations=25; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

## bench: every benchmark, small (--quick, results in bench/results/NAME.quick.json); full size: `python -m bench.NAME`
bench: $(STAMP)
	for b in bench/[a-z]*.py; do n=$$(basename $$b .py); case $$n in common) continue;; esac; \
	  if [ $$n = model_quality ] && [ ! -d lake/samples ]; then echo "model_quality: skipped (needs the lake: make demo)"; continue; fi; \
	  python -m bench.$$n --quick || exit 1; done

## ui: browse MLflow runs (SQLite backend in the project folder)
ui: $(STAMP)
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

## airflow: Airflow 3 (API server + UI, scheduler, DAG processor, triggerer) on 127.0.0.1:8080 with the DAGs in dags/,
## AIRFLOW_HOME in airflow-home/; prints the login; Ctrl-C stops it. Another shell: eval "$$(.venv/bin/dmf airflow env)"
airflow: $(STAMP)
	dmf airflow start --config $(CONFIG)

## lake: list the lake's tables with versions, files and rows
lake: $(STAMP)
	dmf lake list --config $(CONFIG)

clean:
	rm -rf lake reports data mlflow.db mlruns spark-warehouse airflow-home
