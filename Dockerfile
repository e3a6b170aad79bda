# flowyml-lite as a service: `serve` with the HTTP API, the dashboard and /metrics on port 8080.
#
#   docker build -t flowyml-lite .                                     # the core: standard library only
#   docker build -t flowyml-lite:fleet --build-arg EXTRAS=postgres,redis .   # several hosts (compose.yaml)
#   docker run -d -p 127.0.0.1:8080:8080 -v flowyml-data:/data \
#       -e FLOWYML_SCHEDULER_API_TOKEN=... my-image-with-myjobs myjobs:scheduler
#
# The argument after the image is the app, module:attribute of your PipelineScheduler, imported
# from /app (copy your module there, or mount it). Without one, `serve` shows the store's schedules.
# Walk-through: docs/container.md.
#
# BASE: any Debian-like image with python3 (3.9+) and its venv module; the default is the official
# slim Python image. EXTRAS: comma-separated extras of flowyml-lite (postgres, redis, tzdata, ...).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ARG EXTRAS=""
LABEL io.flowyml-lite.stage="build"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
# The dependencies first, from the project's metadata and an empty package: this layer is built
# again only when pyproject.toml or EXTRAS change, not at every change of the code.
COPY pyproject.toml /src/
RUN python3 -m venv /opt/flowyml \
    && mkdir -p /src/flowyml_lite && touch /src/README.md /src/flowyml_lite/__init__.py \
    && /opt/flowyml/bin/python -m pip install "setuptools>=64" wheel "/src${EXTRAS:+[$EXTRAS]}" \
    && /opt/flowyml/bin/python -m pip uninstall -y flowyml-lite \
    && rm -rf /src
COPY pyproject.toml README.md /src/
COPY flowyml_lite /src/flowyml_lite
COPY flowyml_lite_ext /src/flowyml_lite_ext
RUN /opt/flowyml/bin/python -m pip install --no-deps --no-build-isolation /src \
    && /opt/flowyml/bin/flowyml-lite --version

FROM ${BASE}
ARG EXTRAS=""
LABEL org.opencontainers.image.title="flowyml-lite" \
      org.opencontainers.image.description="flowyml-lite pipeline scheduler: serve with the HTTP API and dashboard" \
      io.flowyml-lite.extras="${EXTRAS}"
# A fixed numeric user, so orchestrators can check it is not root (runAsNonRoot).
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin flowyml \
    && mkdir -p /app /data \
    && chown 10001:10001 /data
COPY --from=build /opt/flowyml /opt/flowyml
ENV PATH=/opt/flowyml/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLOWYML_SCHEDULER_DB_PATH=/data/flowyml_scheduler.db
# The SQLite store (and its lock files) live here: mount a volume to keep them.
VOLUME ["/data"]
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Liveness of the scheduler through the API, with the standard library (no curl in the image).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request as u; r = u.urlopen(u.Request('http://127.0.0.1:8080/api/health', headers={'Host': 'localhost'}), timeout=4); sys.exit(r.status != 200)"]
# Off loopback a token is required: FLOWYML_SCHEDULER_API_TOKEN. Clients reaching the server by
# another name than localhost/127.0.0.1 need it allowed: append --allow-host NAME after the app.
ENTRYPOINT ["flowyml-lite", "serve", "--host", "0.0.0.0", "--port", "8080", \
            "--allow-host", "localhost", "--allow-host", "127.0.0.1"]
CMD []
