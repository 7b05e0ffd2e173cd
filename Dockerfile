# The campaign engine: one image, `api` or `worker` as the command (docker-compose.yml).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Not root: the processes need no privileges.
RUN useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first, exactly the locked set (uv.lock exported with hashes: every package pinned and
# hash-checked, nothing resolved at build time), so code edits reuse this layer.
COPY requirements/app.txt ./requirements/app.txt
RUN pip install --require-hashes -r requirements/app.txt

COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY worker ./worker
COPY campaign_engine ./campaign_engine
COPY entrypoints ./entrypoints
COPY inbound ./inbound
COPY pyproject.toml README.md ./
RUN pip install --no-deps .

USER app
ENV CAMPAIGN_ENGINE_STATE_DIR=/home/app/var
ENTRYPOINT ["campaign-engine"]
CMD ["api"]
