#!/usr/bin/env bash
# System packages the tests use beyond pip's: wrk (HTTP load, Debian),
# chromium (the dashboard's browser test), postgresql (the Django test
# under the gunicorn worker starts its own server from these binaries) and
# redis-server (the Celery worker test's broker, started by its fixture).
# Playwright drives the system
# chromium; its own browser download ("playwright install") is not used.
#
# Best effort and idempotent: without root or apt-get, nothing is installed
# and the tests that need these skip with a message saying what is missing.
set -uo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null \
        && apt-get install -y -qq "${missing[@]}" >/dev/null \
        || echo "system-deps: could not install ${missing[*]}; tests needing them will skip" >&2
else
    echo "system-deps: missing ${missing[*]} and no root apt-get; tests needing them will skip" >&2
fi
exit 0
