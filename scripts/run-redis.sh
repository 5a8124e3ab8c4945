#!/bin/sh
# Starts redis-server with deploy/redis.conf (AOF on) and a password from TIDYQ_REDIS_PASSWORD.
# The password goes into a 0600 include file, not onto the command line where `ps` shows it.
# Used by the Procfile (`make up`) and by docker-compose.yml.
#   TIDYQ_REDIS_PASSWORD  required
#   TIDYQ_REDIS_PORT      default 6390 (not 6379: Debian's packaged redis often runs there)
#   TIDYQ_REDIS_BIND      default "127.0.0.1 -::1"
#   TIDYQ_REDIS_DIR       data directory, default var/redis
#   TIDYQ_REDIS_CONF      default deploy/redis.conf next to this script
set -eu
if [ -z "${TIDYQ_REDIS_PASSWORD:-}" ]; then
  echo "run-redis: TIDYQ_REDIS_PASSWORD is not set (make up writes one into .env; compose reads .env)" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
conf=${TIDYQ_REDIS_CONF:-$here/../deploy/redis.conf}
dir=${TIDYQ_REDIS_DIR:-var/redis}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
old_umask=$(umask)
umask 077
printf 'requirepass "%s"\n' "$TIDYQ_REDIS_PASSWORD" > "$dir/secret.conf"
umask "$old_umask"
# shellcheck disable=SC2086  # the bind list is space separated on purpose
exec redis-server "$conf" --port "${TIDYQ_REDIS_PORT:-6390}" --bind ${TIDYQ_REDIS_BIND:-127.0.0.1 -::1} \
  --dir "$dir" --include "$dir/secret.conf"
