#!/usr/bin/env bash
# Installs what a profile needs on a Debian machine, and nothing that is
# already there. Profiles: build (make build/start), test (make test),
# bench (make bench).
set -euo pipefail
profile=${1:-build}

need_go() {
  if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then return; fi
  echo "Go is missing: install Go 1.26 (https://go.dev/dl/) into /usr/local/go and re-run." >&2
  exit 1
}

# Debian packages per profile. Later features add to these lists.
# Builds run their RUN steps on BuildKit's CNI bridge, in a network
# namespace of their own, with iptables rules that keep them off the host:
# containernetworking-plugins (bridge, host-local, loopback, firewall in
# /usr/lib/cni) and iptables.
build_pkgs=(ca-certificates git runc containernetworking-plugins iptables)
# start runs pods on Docker; the proxy needs iproute2 only for diagnosis.
start_pkgs=("${build_pkgs[@]}" docker.io iproute2)
# The console's browser tests drive Debian's chromium (e2e/console_test.go).
test_pkgs=("${start_pkgs[@]}" skopeo busybox-static chromium)
# make bench counts fsyncs per push with strace, runs HAProxy as the
# router's reference and pins processes to cores with taskset.
bench_pkgs=("${test_pkgs[@]}" strace haproxy util-linux)

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The web console (console/web) is built with npm at `make build` and
# embedded in the binary; nothing needs Node at run time. Any Node 18 or
# later will do: Debian's, or one already on the PATH.
need_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then return; fi
  apt_install nodejs npm
}

need_go
case "$profile" in
  build) apt_install "${build_pkgs[@]}" ;;
  start) apt_install "${start_pkgs[@]}" ;;
  test)  apt_install "${test_pkgs[@]}" ;;
  bench) apt_install "${bench_pkgs[@]}" ;;
  *) echo "unknown profile $profile" >&2; exit 2 ;;
esac
need_node
