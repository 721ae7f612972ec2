# The two commands of the README:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run reset-admin-password install install-dev browser migrate test test-under-load test-sqlite test-postgres lint format clean

run: install migrate
	$(PY) manage.py bootstrap_admin
	@echo "Starting web (http://127.0.0.1:$${WEB_PORT:-8000}/), worker and beat. Ctrl-C stops them."
	@echo "Once web answers, it prints the URL and how to sign in again, and warns if Ollama does not answer."
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho start

# A new generated password for the first admin (ADMIN_EMAIL, or admin@localhost), printed.
reset-admin-password: install
	$(PY) manage.py reset_admin_password

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

browser:
	scripts/install-browser

migrate: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0

test: install-dev browser
	scripts/test

# The whole suite while stress-ng keeps two cores busy: a test that depends on timing fails.
# stress-ng is stopped however the suite ends (Ctrl-C included); --timeout is a backstop only.
test-under-load: install-dev browser
	@command -v stress-ng >/dev/null 2>&1 || { echo "stress-ng is missing: apt-get install stress-ng" >&2; exit 1; }
	@stress-ng --cpu 2 --timeout 4h --quiet & stress=$$!; \
	trap 'kill $$stress 2>/dev/null; wait $$stress 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	echo "== stress-ng --cpu 2 (pid $$stress) holds two cores for the whole run"; \
	scripts/test

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var artifacts .pytest_cache .ruff_cache
