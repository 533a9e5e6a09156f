#!/usr/bin/env bash
# System packages the tests use beyond pip's: wrk (HTTP load, Debian) and
# chromium (the dashboard's browser test). Playwright drives the system
# chromium; its own browser download ("playwright install") is not used.
#
# Best effort and idempotent: without root or apt-get, nothing is installed
# and the tests that need these skip with a message saying what is missing.
set -uo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
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
