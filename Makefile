# Two commands that work on a fresh machine:
#   make run   set up and serve the hub on http://127.0.0.1:8000 (SQLite, local artifacts, Celery without a broker server)
#   make test  set up and run the whole test suite (DATABASE_URL may point at PostgreSQL)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Test processes side by side (pytest-xdist, one module per process at a time): most of the
# suite waits on engines, browsers and servers rather than on the CPU.
TEST_PROCESSES ?= 2

.PHONY: run test venv static template-env bench-serve clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# htmx comes from the npm registry, pinned by package-lock.json; the hub serves it itself (air-gapped sites have no CDN).
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

static: node_modules/.package-lock.json

# The fixture templates' own environment (torch, the MiniLM weights, ...), kept apart from the hub's.
template-env: venv
	$(PY) tests/template_env.py

run: venv static
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py seed_catalog
	DEBUG=1 PORT=$(PORT) $(VENV)/bin/celery -A hub_site worker -B --schedule var/celerybeat-schedule --pool=solo --loglevel=warning & \
	  trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	  DEBUG=1 PORT=$(PORT) $(PY) manage.py serve --host $(HOST) --port $(PORT)

test: venv static template-env
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile

# Harness vs LitServe serving MiniLM; LitServe goes into the template env only, never into a hub.yaml.
bench-serve: template-env
	var/template-env/bin/pip install --quiet litserve==0.2.19
	var/template-env/bin/python bench/serve.py

clean:
	rm -rf $(VENV) node_modules var
