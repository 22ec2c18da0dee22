# Two commands: `make demo` and `make test`. Everything they need is set up here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=
# Django 5.2 LTS beside the default Python; Django 6.1 on Python 3.13 in a second
# virtualenv. Both pinned: Django's contract tests are fetched for these releases
# (tests/django_source.py pins their hashes).
DJANGO_LTS ?= Django==5.2.19
DJANGO_NEW ?= Django==6.1.3
VENV2 ?= .venv313
PY2 := $(VENV2)/bin/python

.PHONY: demo test bench venv venv2 memcached web-servers clean lint django-tests

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(VENV)/.dev-installed: setup.py pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev]' '$(DJANGO_LTS)'
	touch $@

# The second virtualenv: the newest Python 3.13 that pyenv has (never a fixed path).
# Where there is none, `make test` says so and runs the first pass only; with
# CI=true that is a failure.
$(VENV2)/.dev-installed: setup.py pyproject.toml
	@py=$$(bash .ci/find-python 3.13) || exit 0; \
	  [ -x $(PY2) ] || $$py -m venv $(VENV2); \
	  $(PY2) -m pip --disable-pip-version-check install -q --upgrade pip setuptools wheel && \
	  $(PY2) -m pip --disable-pip-version-check install -q -e '.[dev]' '$(DJANGO_NEW)' && touch $@

venv2: $(VENV2)/.dev-installed

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

# Django's own cache and session contract tests, from each pinned release's sdist.
django-tests: $(VENV)/.dev-installed
	$(PY) tests/django_source.py
	@if [ -x $(PY2) ]; then $(PY2) tests/django_source.py; fi

# Two passes at once (2 CPUs): the default Python with Django 5.2, and Python 3.13
# with Django 6.1. The second one's output follows the first's; either failing fails.
# Debian's nginx, Apache with mod_xsendfile, Chromium and ChromeDriver for the
# front-server and browser tests, installed together (one apt-get update) when
# missing and we are root. The tests start their own servers on free ports; no
# system service is started here (policy-rc.d refuses it during the install).
WEB_PACKAGES := nginx:/usr/sbin/nginx apache2:/usr/sbin/apache2 \
	libapache2-mod-xsendfile:/usr/lib/apache2/modules/mod_xsendfile.so \
	chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver
web-servers:
	@missing=""; for pair in $(WEB_PACKAGES); do [ -e "$${pair#*:}" ] || missing="$$missing $${pair%%:*}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing"; \
		own_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod +x /usr/sbin/policy-rc.d; own_policy=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; status=$$?; \
		[ -z "$$own_policy" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; \
	else \
		echo "missing:$$missing (Debian: sudo apt-get install$$missing); the tests that need them will skip"; \
	fi

test: $(VENV)/.dev-installed $(VENV2)/.dev-installed memcached web-servers lint django-tests
	@if [ -x $(PY2) ]; then \
	  GAESERVICES_TEST_REDIS_DB=14 $(PY2) -m pytest -p no:cacheprovider $(PYTEST_ARGS) > .test-py313.log 2>&1 & second=$$!; \
	else \
	  second=; bash .ci/find-python 3.13 >/dev/null; [ $$? -ne 1 ] || exit 1; \
	fi; \
	$(PY) -m pytest $(PYTEST_ARGS); first=$$?; \
	status=0; \
	if [ -n "$$second" ]; then \
	  wait $$second; status=$$?; \
	  echo "=== the same suite on $$($(PY2) -c 'import sys, django; print("Python", sys.version.split()[0], "and Django", django.__version__)') ==="; \
	  cat .test-py313.log; \
	fi; \
	[ $$first -eq 0 ] && [ $$status -eq 0 ]

demo: $(VENV)/.demo-installed
	$(PY) -m gaeservices demo --host 127.0.0.1 --port 8080

bench: $(VENV)/.dev-installed memcached
	$(PY) -m bench all

# ruff for errors that matter; mypy over the package ([tool.mypy] in pyproject.toml)
lint: $(VENV)/.dev-installed
	$(PY) -m ruff check --select F,E9 gaeservices tests bench examples wsgi
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(VENV2) test-artifacts .gaeservices .django-tests .test-py313.log build dist *.egg-info .pytest_cache .mypy_cache
