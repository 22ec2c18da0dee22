# Two commands: `make demo` and `make test`. Everything they need is set up here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test bench venv memcached clean lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(VENV)/.dev-installed: setup.py pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev]'
	touch $@

$(VENV)/.demo-installed: setup.py pyproject.toml | $(PY)
	$(PIP) install -q -e '.[demo]'
	touch $@

venv: $(VENV)/.dev-installed

# Debian's memcached, installed when missing and we are root; the tests start
# their own on a free port, so a system service is neither needed nor used.
memcached:
	@if command -v memcached >/dev/null 2>&1 || [ -x /usr/bin/memcached ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing memcached"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null; \
	else \
		echo "memcached is missing: install it (Debian: sudo apt-get install memcached) or tests that need it will skip"; \
	fi

test: $(VENV)/.dev-installed memcached lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.demo-installed
	$(PY) -m gaeservices demo --host 127.0.0.1 --port 8080

bench: $(VENV)/.dev-installed memcached
	$(PY) -m bench all

# ruff for errors that matter; mypy over the package ([tool.mypy] in pyproject.toml)
lint: $(VENV)/.dev-installed
	$(PY) -m ruff check --select F,E9 gaeservices tests bench examples wsgi
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .gaeservices build dist *.egg-info .pytest_cache .mypy_cache
