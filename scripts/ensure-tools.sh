#!/usr/bin/env bash
# Installs the test-time tools that do not come from PyPI when they are missing:
# - promtool (Debian's prometheus package) checks the shipped alert rules and scrape config;
# - chromium and chromedriver (Debian's chromium, chromium-driver) render the jobs page of
#   `tidyq serve` in the browser tests (tests/integration/test_serve_browser.py).
set -euo pipefail
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || packages+=(chromium chromium-driver)
if [ ${#packages[@]} -eq 0 ]; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  echo "tidyq: installing ${packages[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
else
  echo "tidyq: ${packages[*]} missing and apt-get is not available; install them yourself" >&2
  exit 1
fi
