#!/usr/bin/env bash
# Installs redis-server when it is missing (Debian/Ubuntu: apt-get). Everything else tidyq
# needs comes from PyPI into the project's venv.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  echo "tidyq: installing redis-server with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # Debian starts a system redis on :6379 after install; tidyq starts its own on free ports.
else
  echo "tidyq: redis-server is missing and apt-get is not available; install Redis >= 6 yourself" >&2
  exit 1
fi
