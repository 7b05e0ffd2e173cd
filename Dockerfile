# The campaign engine: one image, `api` or `worker` as the command (docker-compose.yml).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Not root: the processes need no privileges.
RUN useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code edits reuse this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p workflows activities api worker campaign_engine entrypoints inbound \
    && touch workflows/__init__.py activities/__init__.py api/__init__.py worker/__init__.py \
        campaign_engine/__init__.py entrypoints/__init__.py inbound/__init__.py \
    && pip install . \
    && pip uninstall -y campaign-engine

COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY worker ./worker
COPY campaign_engine ./campaign_engine
COPY entrypoints ./entrypoints
COPY inbound ./inbound
RUN pip install --no-deps .

USER app
ENV CAMPAIGN_ENGINE_STATE_DIR=/home/app/var
ENTRYPOINT ["campaign-engine"]
CMD ["api"]
