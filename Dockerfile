# The connector image, as Flow runs it: the runtime starts the entrypoint once per stream and
# speaks the materialization protocol (JSON codec) over stdin/stdout.
#
#   docker build -t ghcr.io/<you>/materialize-postgres:dev .
#
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# With every IAM extra: the image serves AWS, GCP and Azure IAM authentication alike.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[aws,gcp,azure]"

FROM python:3.11-slim
LABEL FLOW_RUNTIME_PROTOCOL=materialize
LABEL FLOW_RUNTIME_CODEC=json
LABEL org.opencontainers.image.source="https://github.com/materialize-postgres/materialize-postgres"
COPY --from=build /wheels /wheels
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 connector
USER connector
ENV LOG_FORMAT=json
ENTRYPOINT ["materialize-postgres", "connector"]
