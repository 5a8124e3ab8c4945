#!/bin/sh
# Writes .env for the local stack (`make up`, honcho) when it is missing: random passwords,
# loopback ports. .env is git-ignored; nothing secret is committed. An existing .env is kept.
#   scripts/dev-env.sh [PATH]   (default .env)
set -eu
target=${1:-.env}
if [ -f "$target" ]; then exit 0; fi
rand() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
redis_pw=$(rand 24)
flower_pw=$(rand 12)
ui_pw=$(rand 12)
kek=$(rand 24)
umask 077
cat > "$target" <<ENV
# Written by scripts/dev-env.sh for the local stack (make up). Private: git-ignored, keep it so.
# docker compose reads this file too (its services override the host names and ports).
TIDYQ_REDIS_PASSWORD=$redis_pw
TIDYQ_REDIS_PORT=6390
TIDYQ_REDIS_URL=redis://:$redis_pw@127.0.0.1:6390/0
FLOWER_BASIC_AUTH=tidyq:$flower_pw
FLOWER_PORT=5555
MLFLOW_PORT=5000
MLFLOW_CRYPTO_KEK_PASSPHRASE=$kek
TIDYQ_MLFLOW_TRACKING_URI=http://127.0.0.1:5000
TIDYQ_METRICS_PORT=9808
TIDYQ_UI_AUTH=tidyq:$ui_pw
TIDYQ_UI_PORT=8780
LITELLM_LOCAL_MODEL_COST_MAP=True
# Providers (workers read these; see .env.example):
# TIDYQ_GATEWAY_URL=http://127.0.0.1:5000
# TIDYQ_MODEL=openai/gpt-4o-mini
# OPENAI_API_KEY=
# AWS_DEFAULT_REGION=us-east-1
ENV
echo "tidyq: wrote $target (Flower login: tidyq / $flower_pw; jobs page login: tidyq / $ui_pw)" >&2
