# tradeguard — one command to run, one to test. Needs only python3 (3.11+) and the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data

.PHONY: install run demo test bench validate lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The service: live public Binance data for BTC/USDT and ETH/USDT on http://127.0.0.1:8000, SQLite under ./var.
# The first start prints an admin API key once. Offline, it keeps running and reports its sources unreachable.
run: install
	$(BIN)/tradeguard serve

# The same service on the built-in simulator (synthetic data; no network needed).
demo: install
	$(BIN)/tradeguard demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_market.py
	$(BIN)/python bench/bench_scheduler.py
	$(BIN)/python bench/bench_http.py

validate: install
	$(BIN)/python scripts/validate.py --data "$(SHARED)" --out docs/validation.md

lint: install
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .benchmarks
