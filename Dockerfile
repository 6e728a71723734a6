# The image every compose service runs; the command picks the role (worker, beat, migrate, flower, sandbox).
# Runtime dependencies and Flower only, every version and hash from requirements/image.lock (requirements/README.md);
# no development tool. It runs as the unprivileged `wavesync` user: /app and the installed code are root's and
# read-only to it, and the one writable place is WAVESYNC_DATA_DIR (compose mounts a volume there).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WAVESYNC_DATA_DIR=/var/lib/wavesync

# A fixed uid/gid (10001) so that volumes and `user:` in compose or Kubernetes agree with the image.
RUN groupadd --system --gid 10001 wavesync \
    && useradd --system --uid 10001 --gid wavesync --home-dir /var/lib/wavesync --no-create-home \
        --shell /usr/sbin/nologin wavesync \
    && install -d -o wavesync -g wavesync -m 0750 /var/lib/wavesync
ENV HOME=/var/lib/wavesync

WORKDIR /app
# The lock alone first, so the dependency layer is rebuilt only when the lock changes.
COPY requirements/image.lock requirements/image.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/image.lock

COPY pyproject.toml README.md ./
COPY shared shared
COPY producers producers
COPY workers workers
COPY sandboxes sandboxes
COPY wavesync wavesync
# The build backend comes from the lock too (no build isolation: nothing unhashed is fetched); the in-tree build
# leftovers go, so /app holds only the copied sources.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info

# Numeric, so that a runtime can tell it is not root without reading /etc/passwd (Kubernetes runAsNonRoot).
USER 10001:10001
CMD ["wavesync", "--help"]
