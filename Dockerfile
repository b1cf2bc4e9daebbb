# Session Sidecar image: the `sidecar` console script on python:3.11-slim-bookworm, run as a
# non-root user. Build it with `make image` (docker or buildah, whichever is installed), or:
#
#   docker build -t example.com/session-sidecar:0.1.0 .
#   docker run --rm -v "$PWD/config.yaml:/etc/sidecar/config.yaml:ro" -p 8080:8080 \
#       example.com/session-sidecar:0.1.0
#
# Reproducible: the base is pinned by digest (the multi-platform index of
# python:3.11-slim-bookworm; update both FROM lines together), and every dependency is installed
# from requirements.lock, pinned and checked by hash (`make lock` regenerates it). The build stage
# installs into a virtual environment; the runtime stage copies only that environment.

FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first: this layer is reused as long as the lock does not change.
COPY requirements.lock ./
RUN python -m venv /opt/sidecar \
    && /opt/sidecar/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY sidecar ./sidecar
# The package alone: its dependencies and its build backend came from the lock above.
RUN /opt/sidecar/bin/pip install --no-deps --no-build-isolation .


FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

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
