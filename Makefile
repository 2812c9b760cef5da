# Setup is part of every target: a fresh machine needs only Python 3.11+.
# Recursive '=' so the path is looked up after the 'uv' target has run.
UV = $(shell command -v uv 2>/dev/null || { test -x $(HOME)/.local/bin/uv && echo $(HOME)/.local/bin/uv; } || echo python3 -m uv)
DATA ?=
# pytest's arguments of `make test`: two pytest-xdist workers (the suite's budget is
# 10 minutes on 2 cores; much of it is waiting on subprocesses, servers and kills).
# PYTEST_ARGS= runs it in one process; PYTEST_ARGS="-n 0 -x tests/engine" and the like.
PYTEST_ARGS ?= -n 2

.PHONY: uv sync demo test lint format bench

uv:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv || python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv

# Bytecode compiled once: the tests start trimtab in many subprocesses, and where
# PYTHONDONTWRITEBYTECODE is set each would compile every module it imports again.
sync: uv
	@$(UV) sync --quiet --extra test --compile-bytecode
	@$(UV) run --quiet python -m compileall -q src > /dev/null

demo: sync
	@$(UV) run trimtab demo $(if $(DATA),--data $(DATA),)

test: sync
	@$(UV) run ruff check src tests bench
	@$(UV) run lint-imports --no-cache --no-logo
	@$(UV) run pytest $(PYTEST_ARGS)

lint: sync
	@$(UV) run ruff check src tests bench
	@$(UV) run ruff format --check src tests bench

format: sync
	@$(UV) run ruff format src tests bench
	@$(UV) run ruff check --fix src tests bench

bench: uv
	@$(UV) sync --quiet --extra test --extra bench
	@$(UV) run python bench/bench_backtest.py
