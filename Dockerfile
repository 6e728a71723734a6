# The image every compose service runs; the command picks the role (worker, beat, migrate, flower, sandbox).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY producers producers
COPY workers workers
COPY sandboxes sandboxes
COPY wavesync wavesync
RUN pip install --no-cache-dir ".[dev]" && useradd --system wavesync
USER wavesync
CMD ["wavesync", "--help"]
