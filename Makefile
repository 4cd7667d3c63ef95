# tradeguard — one command to run, one to test. Needs only python3 (3.11+) and the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data
PAIRS  ?= BTC/USDT ETH/USDT

.PHONY: install run test bench validate lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Until the service exists: assess the tracked pairs on the real data we can get.
run: install
	@if [ -f "$(SHARED)/binance/BTC_USDT-1h.feather" ]; then \
	  echo "make run: market guard on the shared data in $(SHARED), at the close of its newest candle"; \
	  for pair in $(PAIRS); do echo; $(BIN)/tradeguard assess --data-dir "$(SHARED)/binance" \
	    --external-dir "$(SHARED)/external" --pair $$pair --timeframe 1h --at latest --format table || exit 1; done; \
	else \
	  echo "make run: no shared data at $(SHARED); downloading 90 days of 1h candles from Binance into var/data"; \
	  $(BIN)/tradeguard download-data --exchange binance --pairs "$$(echo $(PAIRS) | tr ' ' ',')" \
	    --timeframe 1h --days 90 --data-dir var/data/binance || exit 1; \
	  for pair in $(PAIRS); do echo; $(BIN)/tradeguard assess --data-dir var/data/binance --pair $$pair \
	    --timeframe 1h --format table || exit 1; done; \
	fi

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_market.py

validate: install
	$(BIN)/python scripts/validate.py --data "$(SHARED)" --out docs/validation.md

lint: install
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .benchmarks
