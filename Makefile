# Two set-up-and-go targets: `make search` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: search test postgresql lint clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,postgres,onnx]'
	touch $(STAMP)

search: $(STAMP)
	$(BIN)/gas search --budget 2.5G

test: $(STAMP) postgresql
	$(BIN)/ruff check .
	# Two test processes: most tests wait on subprocesses and Ray start-up, so two share two cores well.
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

# tests/test_postgres.py starts a throwaway server from Debian's postgresql package (initdb, pg_ctl under
# /usr/lib/postgresql/*/bin). As root with apt (CI), install it when missing; otherwise say what that test needs.
postgresql:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
		else \
			echo "tests/test_postgres.py needs PostgreSQL's server (initdb, pg_ctl): apt-get install postgresql"; \
		fi; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
