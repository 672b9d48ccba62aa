# syntax=docker/dockerfile:1
# flashsale: two stages. The builder installs the dependencies and the package into a virtualenv;
# the final image copies only that virtualenv onto a clean slim Python (no compilers, no pip cache),
# runs as a non-root user and works with a read-only root filesystem: the only paths it writes are
# /tmp and the Prometheus multiprocess directory, both meant to be emptyDirs in Kubernetes.
#
#   docker build -t flashsale:dev .
#   docker run --rm -p 8080:8080 -e REDIS_URL=... -e DATABASE_URL=... --read-only \
#     --tmpfs /tmp --tmpfs /run/flashsale/metrics:uid=10001,gid=10001 flashsale:dev

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/flashsale
ENV PATH=/opt/flashsale/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so code changes reuse this layer. Wheels where
# they exist; the builder has no compiler either, so only pure-Python sdists (psycogreen) build.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --prefer-binary -r /tmp/requirements.txt

# Then the package itself (pure Python; the migrations ship inside it as package data).
COPY README.md ./
COPY migrations/ migrations/
COPY service/ service/
RUN pip install --no-deps . \
 && python -m compileall -q /opt/flashsale/lib \
 && flashsale --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="flashsale" \
      org.opencontainers.image.description="Flash-sale service: exactly N items every period, never oversold."
RUN groupadd --system --gid 10001 flashsale \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin flashsale \
 && mkdir -p /run/flashsale/metrics \
 && chown -R 10001:10001 /run/flashsale
COPY --from=builder /opt/flashsale /opt/flashsale
ENV PATH=/opt/flashsale/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    PROMETHEUS_MULTIPROC_DIR=/run/flashsale/metrics
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["flashsale"]
CMD ["serve"]
