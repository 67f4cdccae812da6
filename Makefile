# Two commands on a fresh Debian 12 machine, as root:
#   make run    install what is missing, build images, start every process
#   make test   the same set-up, then the whole test suite
SHELL := /bin/bash
PORT ?= 8000
PY := .venv/bin/python
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

.PHONY: run test setup preflight deps venv images db bench-cluster bench-recording bench-saves bench-class

run: setup
	@if curl -fsS -o /dev/null "http://127.0.0.1:$(PORT)/" 2>/dev/null; then \
	    echo "The lab is already running at http://127.0.0.1:$(PORT)/"; exit 0; fi; \
	echo "Starting the lab: http://127.0.0.1:$(PORT)/  (Ctrl-C stops every process)"; \
	LAB_PORT=$(PORT) exec .venv/bin/honcho start -f Procfile

test: setup
	.venv/bin/pytest

# The site and three sandbox hosts on this machine, 30 learners, one host killed.
bench-cluster: setup
	$(PY) -m bench.cluster

bench-recording: setup
	$(PY) -m bench.recording

bench-saves: setup
	$(PY) -m bench.saves

# A class of 40 through the join link, with and without the schedule-sized pool.
bench-class: setup
	$(PY) -m bench.classstart

setup: preflight deps venv images db

preflight:
	@scripts/preflight.sh

deps:
	@scripts/install-deps.sh

# Debian's python3 (scripts/venv.sh says why); PYTHON=... picks another.
venv:
	@scripts/venv.sh

images: venv
	$(PY) -m runtime images build

db: venv
	@mkdir -p var
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py sync_lessons
