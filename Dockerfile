# syntax=docker/dockerfile:1
#
# The `availability` console script in a small Python 3.11 image.
#
#   docker build -t availability-engine .
#   docker run --rm availability-engine --help
#   docker run --rm availability-engine engine --help
#
# Two stages: the first installs the project and its dependencies (they ship manylinux
# wheels for CPython 3.11; the project's compiled codec, native/, is built there with
# Debian's cargo) into /opt/venv; the second copies only that venv onto a fresh slim
# base, without the compiler, and runs as an unprivileged user.
# docker-compose.yml runs `topics create`, the engine and the gRPC API from this image
# (next to the official Kafka and Prometheus images).

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends cargo \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.md* : pyproject names README.md as the long description; the wildcard keeps
# the build working while it is absent.
COPY pyproject.toml README.md* ./
# The packages of [tool.setuptools] packages (tests/test_docker_compose.py
# checks this list against pyproject.toml). Avro schemas ship as package data.
COPY availability/ availability/
COPY availability_api/ availability_api/
COPY availability_contracts/ availability_contracts/
COPY availability_domain/ availability_domain/
COPY availability_kafka/ availability_kafka/
COPY dataflows/ dataflows/
COPY schemas/ schemas/
COPY native/ native/
# The pip cache lives in a BuildKit cache mount, not in a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
    && availability --help >/dev/null


FROM python:3.11-slim

LABEL org.opencontainers.image.title="availability-engine" \
      org.opencontainers.image.description="Inventory availability engine: Kafka events folded by Bytewax into available-to-sell" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Unprivileged user; /var/lib/availability is its home and the state volume (engine
# recovery snapshots, or an API replica's RocksDB: one volume per container). A named
# volume mounted there starts out owned by this user.
RUN groupadd --system --gid 10001 availability \
    && useradd --system --uid 10001 --gid availability \
       --home-dir /var/lib/availability --shell /usr/sbin/nologin availability \
    && install -d -o availability -g availability -m 0750 /var/lib/availability

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/availability
VOLUME ["/var/lib/availability"]
# gRPC API (`api --port`), engine and API Prometheus metrics (`--metrics-port` defaults;
# engine process i serves 9108 + i).
EXPOSE 50051 9108 9109

ENTRYPOINT ["availability"]
CMD ["--help"]
