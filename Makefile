# Upstream: `make run` starts the product with a demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ./sdk/python -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	@mkdir -p var

# The demo writes alert e-mails to var/mail/ instead of needing an SMTP server.
run: export EMAIL_BACKEND ?= django.core.mail.backends.filebased.EmailBackend
run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_upstream
	$(BIN)/python manage.py demo
	$(BIN)/python manage.py serve --demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var/*.sqlite3* var/spool
