# Two commands on a fresh machine:  `make demo` (the main job) and `make test`.
# Both create the venv and install what they need; Kafka is fetched from Maven Central.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup test test-slow lint codegen demo bench kafka-start kafka-stop clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "Java 17+ and Maven are needed to run the local Kafka broker (apt-get install openjdk-17-jre-headless maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Starts the local Kafka, runs the suite, always stops Kafka; "no tests collected" fails.
test: setup
	$(BIN)/availability kafka start
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/availability kafka stop; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status

test-slow: setup
	$(BIN)/availability kafka start
	$(BIN)/pytest -m slow $(PYTEST_ARGS); status=$$?; $(BIN)/availability kafka stop; \
	  if [ $$status -eq 5 ]; then echo "no test is marked slow"; exit 0; fi; exit $$status

# Style, the layer contract (pyproject.toml [tool.importlinter]), types (strict for the
# domain and the contracts), and generated gRPC code up to date with the .proto.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m availability_api.codegen --check
	@test -z "$$(gofmt -l benchmarks/loadgen)" || { echo "gofmt: run gofmt -w benchmarks/loadgen"; exit 1; }
	cd benchmarks/loadgen && go vet .

# Regenerates availability_api/generated/ from the .proto (never edit those files by hand).
codegen: setup
	$(BIN)/python -m availability_api.codegen

demo: setup
	$(BIN)/availability demo $(ARGS)

# Benchmarks are not part of the product: run from the checkout, e.g. make bench ARGS="drain".
bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

kafka-start: setup
	$(BIN)/availability kafka start

kafka-stop: setup
	$(BIN)/availability kafka stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis build
