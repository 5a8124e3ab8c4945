# One image for every tidyq process: workers (one service per queue), Flower, the MLflow server,
# the metrics exporter and the jobs page (see docker-compose.yml). No secret is baked in:
# everything comes from the environment at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

WORKDIR /app

# Pinned dependencies first (cached layer), then the code.
COPY requirements.lock pyproject.toml README.md ./
RUN pip install -r requirements.lock

COPY shared ./shared
COPY workers ./workers
COPY producers ./producers
COPY deploy ./deploy
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 10001 tidyq \
 && mkdir -p /mlflow && chown tidyq /mlflow

USER tidyq
# Overridden per service in docker-compose.yml.
CMD ["celery", "-A", "workers", "worker", "-E", "--loglevel", "INFO"]
