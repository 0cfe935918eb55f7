# The production image: `docker build -t mlink-bridge:0.1.0 .`
# Two stages: the builder (full Debian Python, with a C compiler for the Avro encoder's C
# extension) makes a wheel and installs it with its dependencies into a venv; the final stage is
# the slim image of the same Python with that venv copied in and nothing else (no compiler, no
# pip cache, no sources, no tests). It runs as a fixed non-root UID/GID so Kubernetes can
# check runAsNonRoot, and has no HEALTHCHECK: Kubernetes probes /livez and /readyz.

FROM python:3.11-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY transforms ./transforms

# Every dependency ships a manylinux wheel; only the bridge's own extensions are compiled. The
# import check fails the build if one was not (the install would fall back to Python silently).
RUN python -m venv /opt/venv \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-cache-dir /dist/*.whl \
    && /opt/venv/bin/python -c "import bridge.sink._avro_native, bridge.mlink._framing_native" \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="mlink-bridge" \
      org.opencontainers.image.description="SpiderRock MLink live data into compacted Kafka topics as Avro" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 mlink \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mlink

# Owned by root and read-only for the bridge's user.
COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /tmp

# BRIDGE_HTTP_PORT: /livez, /readyz, /metrics.
EXPOSE 8080

# Exec form: the bridge is PID 1 and gets SIGTERM itself, then flushes within
# BRIDGE_FLUSH_TIMEOUT.
ENTRYPOINT ["mlink-bridge"]
CMD ["run"]
