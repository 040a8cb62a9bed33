# Two commands on a fresh machine:  `make demo` (the main job) and `make test`.
# Both create the venv and install what they need (the compiled codec of native/ is
# built with the machine's cargo); Kafka is fetched from Maven Central.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup test test-slow lint codegen demo bench wheel kafka-start kafka-stop clean

setup: $(VENV)/.installed

# Rebuilt when the compiled codec's sources change, too.
$(VENV)/.installed: pyproject.toml native/Cargo.toml native/Cargo.lock native/src/*.rs native/*/Cargo.toml native/*/src/*.rs
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "Java 17+ and Maven are needed to run the local Kafka broker (apt-get install openjdk-17-jre-headless maven)"; exit 1; }
	@command -v cargo >/dev/null || { \
	  echo "Rust's cargo (1.74+) is needed to build the compiled codec in native/ (apt-get install cargo, or rustup)"; exit 1; }
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
# domain and the contracts), generated gRPC code up to date with the .proto, and the Go
# load generator and the Rust crates of native/ formatted, tested and vetted.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m availability_api.codegen --check
	@test -z "$$(gofmt -l benchmarks/loadgen)" || { echo "gofmt: run gofmt -w benchmarks/loadgen"; exit 1; }
	cd benchmarks/loadgen && go vet .
	cd native && cargo fmt --all --check && cargo test --quiet --release --locked -p avro-wire \
	  && PYO3_PYTHON=$(abspath $(BIN))/python cargo clippy --quiet --release --locked --workspace -- -D warnings

# Regenerates availability_api/generated/ from the .proto (never edit those files by hand).
codegen: setup
	$(BIN)/python -m availability_api.codegen

demo: setup
	$(BIN)/availability demo $(ARGS)

# Benchmarks are not part of the product: run from the checkout, e.g. make bench ARGS="drain".
bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

# A wheel of the product with the compiled codec inside (CI builds one to prove it).
wheel: setup
	rm -rf dist
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	$(BIN)/python -c "import sys, zipfile, glob; names = zipfile.ZipFile(glob.glob('dist/*.whl')[0]).namelist(); \
	  missing = [m for m in ('availability_contracts/_avro', 'availability_domain/_core') \
	             if not any(n.startswith(m) and n.endswith('.so') for n in names)]; \
	  sys.exit('the wheel lacks the compiled ' + ', '.join(missing) if missing else 0)"

kafka-start: setup
	$(BIN)/availability kafka start

kafka-stop: setup
	$(BIN)/availability kafka stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist native/target availability_contracts/_avro*.so availability_domain/_core*.so
