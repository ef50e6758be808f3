# syntax=docker/dockerfile:1
#
# One image for every role: `falrelay serve` by default; `api`, `worker`, `migrate`,
# `keys create NAME` and `fakefal` by changing the command (`docker run IMAGE worker`, or
# `args: ["worker"]` in Kubernetes). Build from the repository root:
#   docker build -t falrelay .

# Both stages use the same base, so the venv's interpreter symlinks resolve in the runtime stage.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in a layer of their own, exactly as requirements.lock pins them, every file
# checked against its hash: two builds of one commit install the same bytes, and the layer is
# rebuilt only when the lock changes. The lock holds the runtime dependencies and the `otel`
# extra, nothing for tests or lint; deploy/README.md says how to refresh it.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# Then falrelay itself, resolving nothing: the SDK (sdk/, which owns the `falrelay` command) and
# the server (the root, which adds its commands to it). Regular installs, not editable: the
# runtime stage gets /opt/venv alone, no source tree. `pip check` fails the build when either
# pyproject.toml asks for something the lock does not hold.
COPY pyproject.toml README.md ./
COPY sdk ./sdk
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps ./sdk . \
    && pip check \
    && falrelay --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="falrelay" \
      org.opencontainers.image.description="A durable jobs API in front of fal.ai's queue" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A numeric user, so Kubernetes can check `runAsNonRoot` against the image itself.
RUN groupadd --system --gid 10001 falrelay \
    && useradd --system --uid 10001 --gid falrelay --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin falrelay

# Owned by root and read-only to the process: the app never writes to its own install.
COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
EXPOSE 8000

# Liveness for `serve` and `api` (Docker and Compose; Kubernetes uses its own probes). Python's
# stdlib, since slim images carry no curl. Roles without an HTTP port (`worker`, `migrate`)
# turn it off: `healthcheck: {disable: true}` in Compose, `--no-healthcheck` with docker run.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# On SIGTERM falrelay stops taking work and drains for FALRELAY_SHUTDOWN_TIMEOUT_SECONDS
# (default 20 s) before it exits: give `docker stop` more than that (`-t 30`).
ENTRYPOINT ["falrelay"]
CMD ["serve"]
