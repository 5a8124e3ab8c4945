"""tidyq: a job queue for DSPy programs (Celery workers on Redis, MLflow registry and tracking)."""

__version__ = "0.1.0"
