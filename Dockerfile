# Worker image: `llm-fleet worker` by default; the same image runs migrate and mock-provider.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY providers providers
COPY workers workers
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[otel]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 fleet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY migrations /app/migrations
ENV FLEET_MIGRATIONS_DIR=/app/migrations \
    PYTHONUNBUFFERED=1
USER fleet
EXPOSE 9004
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:9004/healthz/')"
ENTRYPOINT ["llm-fleet"]
CMD ["worker"]
