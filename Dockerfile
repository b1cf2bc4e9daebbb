# Session Sidecar image: the `sidecar` console script on python:3.11-slim, run as a non-root user.
#
#   docker build -t example.com/session-sidecar:0.1.0 .
#   docker run --rm -v "$PWD/config.yaml:/etc/sidecar/config.yaml:ro" -p 8080:8080 \
#       example.com/session-sidecar:0.1.0
#
# The build stage installs the package into a virtual environment; the runtime stage copies only
# that environment, so pip's caches and the source tree stay out of the final image.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml ./
COPY sidecar ./sidecar
RUN python -m venv /opt/sidecar \
    && /opt/sidecar/bin/pip install .


FROM python:3.11-slim

ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without a user lookup.
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin sidecar \
    && mkdir -p /etc/sidecar /var/lib/sidecar \
    && chown 10001:10001 /var/lib/sidecar

COPY --from=build /opt/sidecar /opt/sidecar

# The writer's journal (writer.journal_path) defaults to a relative path: keep the working
# directory writable. In Kubernetes an emptyDir is mounted here.
WORKDIR /var/lib/sidecar
USER 10001:10001

EXPOSE 8080

ENTRYPOINT ["sidecar"]
CMD ["serve", "-c", "/etc/sidecar/config.yaml"]
