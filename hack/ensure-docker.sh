#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock, for the pods
# `slipway start` runs: starts the system's dockerd when none is running.
# Its log goes to $1/dockerd.log.
set -euo pipefail
data=${1:-slipway.local}
if docker info >/dev/null 2>&1; then exit 0; fi
if command -v systemctl >/dev/null 2>&1 && systemctl start docker 2>/dev/null && docker info >/dev/null 2>&1; then exit 0; fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
mkdir -p "$data"
echo "starting dockerd (log: $data/dockerd.log)" >&2
$sudo nohup dockerd >"$data/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not start; see $data/dockerd.log. Slipway starts anyway, without running pods." >&2
