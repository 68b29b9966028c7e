#!/usr/bin/env bash
# ensure-redis.sh: make sure redis-server and redis-sentinel are on PATH, as
# the integration tests need (they never skip when Redis is missing).
#
# Quiet and a no-op when both are present. When one is missing: as root on a
# Debian/Ubuntu machine it installs them with apt-get (without starting the
# packaged service); otherwise it prints the install commands and exits 1.
# Set REDLOCK_APT_UPDATED=1 when apt-get update already ran (as .ci/run does).
set -euo pipefail

missing=()
for bin in redis-server redis-sentinel; do
	command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	cat >&2 <<MSG
ensure-redis: ${missing[*]} not found; the tests run against real Redis servers.
Install Redis, then run the tests again:
  Debian/Ubuntu: sudo apt-get install -y redis-server redis-sentinel
  macOS:         brew install redis
MSG
	exit 1
fi

echo "ensure-redis: installing redis-server and redis-sentinel (missing: ${missing[*]})"
# The packages' maintainer scripts would start redis-server (and sentinel) as
# services on 6379/26379. A policy-rc.d that answers 101 ("action forbidden")
# stops invoke-rc.d and deb-systemd-invoke from starting anything. An existing
# policy-rc.d is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
if [ "${REDLOCK_APT_UPDATED:-}" != 1 ]; then
	apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-sentinel

for bin in redis-server redis-sentinel; do
	if ! command -v "$bin" >/dev/null 2>&1; then
		echo "ensure-redis: $bin still not found after apt-get install" >&2
		exit 1
	fi
done
echo "ensure-redis: $(redis-server --version)"
