# The two set-up commands of README.md. Each creates .venv and installs what it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: run test install system-deps bench lock

# requirements.lock pins the whole dependency tree to what the tests passed with: a fresh clone
# installs those versions, not whatever the registry serves that day.
$(BIN)/shardvec: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,torch]'
	touch $@

install: $(BIN)/shardvec

run: install
	$(BIN)/shardvec demo --data $(DATA)

# Re-resolve requirements.lock from pyproject.toml alone (the newest versions it allows), in a
# venv of its own; then run `make test` and commit both. torch's local label (+cpu) is dropped,
# so the pin also matches the CUDA build where the CPU wheel is not at hand.
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[test,torch]'
	{ sed -n '1,/^$$/p' requirements.lock; .venv-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

# Debian's chromium renders the Prefect UI in the end-to-end test (installed when root, as in CI).
system-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is missing: the Prefect UI screenshot tests will be skipped"
	@[ -d /usr/share/man/de/man1 ] || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq manpages-de >/dev/null; } || \
		echo "manpages-de is missing: the German corpus tests will be skipped"

# One pytest-xdist worker more than cores: the end-to-end modules spend much of their time
# waiting (servers starting, heartbeats falling silent, task retries), and the third worker
# fills those waits.
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))

test: install system-deps
	$(BIN)/python -m pytest -q -n $(WORKERS)

# The benchmarks of benchmarks/README.md (~25 min). Their corpus is Debian's GCIDE dictionary (dict-gcide).
bench: install
	@test -e /usr/share/dictd/gcide.dict.dz || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dict-gcide >/dev/null; } || \
		{ echo "install Debian's dict-gcide first (the benchmark corpus)"; exit 1; }
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.stages
	$(BIN)/python -m benchmarks.dtypes
