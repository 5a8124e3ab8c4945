"""tidyq workers: ``celery -A workers worker [-Q predict.mock,...]``.

``app`` is built from the TIDYQ_* environment when this package is imported (Celery's -A needs a
module attribute); producers never import this package: they send tasks by name through
:func:`shared.celery_config.celery_app`.
"""

from workers.celery_app import make_app

app = make_app()

# after ``app`` exists: worker boot (logging, readiness, per-process caches), metrics to Redis and heartbeats
from workers import metrics_publisher, signals  # noqa: E402,F401

__all__ = ["app", "make_app"]
