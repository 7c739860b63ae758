#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock, for the pods
# `slipway start` runs: starts the system's dockerd when none is running.
# Its log goes to $1/dockerd.log.
#
# Pods reach addresses beyond this machine (other nodes, the outside) only
# through IPv4 forwarding, which a machine that just booted has off
# (net.ipv4.ip_forward = 0: Debian's /etc/sysctl.conf leaves it commented
# out). Slipway's pod network needs it, so this makes sure it is on and says
# so. The engine is started first: when dockerd turns forwarding on itself,
# it also sets the FORWARD chain's policy to DROP, so the machine forwards
# only what the engine's rules allow. Traffic between pods on this machine,
# and from it to them, needs no forwarding.
set -euo pipefail
data=${1:-slipway.local}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
forwarding() { cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo unknown; }
before=$(forwarding)

engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && $sudo systemctl start docker 2>/dev/null && docker info >/dev/null 2>&1; then return 0; fi
  mkdir -p "$data"
  echo "slipway: starting dockerd (log: $data/dockerd.log)" >&2
  $sudo nohup dockerd >"$data/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "slipway: dockerd did not start; see $data/dockerd.log. Slipway starts anyway, without running pods." >&2
}
engine

after=$(forwarding)
if [ "$before" = 0 ] && [ "$after" = 1 ]; then
  echo "slipway: IPv4 forwarding is now on (net.ipv4.ip_forward=1, turned on by dockerd, FORWARD policy DROP): pods reach other nodes and the outside through it" >&2
elif [ "$after" = 0 ]; then
  echo "slipway: enabling IPv4 forwarding (sysctl net.ipv4.ip_forward=1): pods reach other nodes and the outside through it; it was off, as on a machine that just booted" >&2
  $sudo sysctl -q -w net.ipv4.ip_forward=1 || echo "slipway: could not enable IPv4 forwarding; pods will reach only this machine" >&2
fi
