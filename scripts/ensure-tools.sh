#!/usr/bin/env bash
# Installs the test-time tools that do not come from PyPI when they are missing:
# promtool (Debian's prometheus package) checks the shipped alert rules and scrape config.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  echo "tidyq: installing promtool (prometheus) with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
else
  echo "tidyq: promtool is missing and apt-get is not available; install Prometheus' promtool yourself" >&2
  exit 1
fi
