# syntax=docker/dockerfile:1
# DHO service image. Build: `docker build -t dho .`; run: see docker-compose.yml.
# The image runs `dho serve` by default; schema migrations are a separate, explicit step:
#   docker run --rm --env-file prod.env dho db upgrade

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the dho wheel (adapters/, fhir/ and config/ are packaged inside it as data) plus
# --- wheels for all dependencies, so the runtime stage installs offline.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dho ./dho
COPY adapters ./adapters
COPY fhir ./fhir
COPY config ./config
RUN pip wheel --wheel-dir /wheels .

# --- runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN groupadd --system --gid 10001 dho \
 && useradd --system --uid 10001 --gid dho --home-dir /app --shell /usr/sbin/nologin dho
# Bind-mount the wheels instead of COPYing them, so they do not stay in an image layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels dho
WORKDIR /app
RUN chown dho:dho /app
USER 10001:10001

# Listen on all interfaces inside the container (the settings default is 127.0.0.1).
ENV DHO_HTTP_HOST=0.0.0.0 \
    DHO_HTTP_PORT=8080
EXPOSE 8080

# Liveness only (process up and serving HTTP); docker-compose.yml checks /readyz instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DHO_HTTP_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["dho"]
CMD ["serve"]
