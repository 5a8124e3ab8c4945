"""Flower settings for tidyq: `celery -A workers flower --conf=deploy/flower/flowerconfig.py`.

Flower reads FLOWER_* environment variables first (FLOWER_BASIC_AUTH=user:password[,user2:pw2],
FLOWER_PORT, ...), then this file. This file refuses to start Flower without authentication:
every shipped way of running it (Procfile, docker-compose.yml) requires a password.

Flower's /metrics (Prometheus) and /healthcheck stay OPEN even with auth (by Flower's design),
so Flower listens on loopback by default; expose it only through an authenticating proxy.
"""

import os

if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")):
    raise SystemExit("flower: refusing to start without authentication; set FLOWER_BASIC_AUTH=user:password "
                     "(make up writes one into .env) or FLOWER_AUTH with OAuth settings")

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")  # Flower's own default is every interface
port = int(os.environ.get("FLOWER_PORT", "5555"))
max_tasks = 10000  # tasks kept in memory for the UI
purge_offline_workers = 600  # seconds before a dead worker leaves the UI
