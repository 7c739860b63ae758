#!/usr/bin/env bash
# The README's two commands, checked from nothing.
#
# Builds a clean Debian bookworm root with debootstrap (minbase plus git,
# make, curl, gcc and ca-certificates), copies in Go from /usr/local/go and
# this machine's CA certificates, clones this repository's HEAD into it and
# then, inside that root, runs
#
#   make test      RUNS times in a row (default 1; every run must pass)
#   make start     until https://127.0.0.1:8443/readyz answers
#
# Everything runs in namespaces of its own: a network namespace (no bridges,
# default iptables, net.ipv4.ip_forward set to 0 before anything starts, as
# on a machine that just booted), a mount namespace and a PID namespace. The
# namespace reaches Debian's mirror and the Go module proxy through
# slirp4netns, in user space, so the host's own network and sysctls are not
# touched. At the end it stops `make start` and the dockerd that started,
# and then ends the PID namespace, which ends every process it started and
# nothing else.
#
# Usage (as root):
#   hack/fresh-machine.sh                 # one make test, then make start
#   RUNS=3 hack/fresh-machine.sh          # three make tests in a row
#   KEEP=1 hack/fresh-machine.sh          # keep the root for a look afterwards
#   WARM_GO=1 hack/fresh-machine.sh       # start with this machine's Go caches
#                                         # (faster; a new user's first build is not)
#
# The clean base root is cached in $CACHE (default /var/cache/slipway-fresh)
# as a tarball, so later runs skip debootstrap; delete it to start over.
# Logs: $WORK/fresh.log (WORK defaults to a new directory in /var/tmp).
set -euo pipefail

RUNS=${RUNS:-1}
KEEP=${KEEP:-0}
CACHE=${CACHE:-/var/cache/slipway-fresh}
SUITE=bookworm
repo=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}

[ "$(id -u)" -eq 0 ] || { echo "fresh-machine: run as root (debootstrap, namespaces)" >&2; exit 2; }
[ -x /usr/local/go/bin/go ] || { echo "fresh-machine: Go is not in /usr/local/go" >&2; exit 2; }

need=()
for tool in debootstrap:debootstrap slirp4netns:slirp4netns curl:curl unshare:util-linux; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "fresh-machine: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

WORK=${WORK:-$(mktemp -d /var/tmp/slipway-fresh.XXXXXX)}
root=$WORK/root
log=$WORK/fresh.log
mkdir -p "$root" "$CACHE"
exec > >(tee -a "$log") 2>&1
say() { echo "fresh-machine $(date -u +%H:%M:%S): $*"; }

# The host's mirror, as apt on this machine uses it.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

base=$CACHE/$SUITE-minbase.tar.gz
if [ ! -s "$base" ]; then
  say "debootstrap $SUITE (minbase + git make curl gcc ca-certificates) from $mirror"
  debootstrap --variant=minbase --include=git,make,curl,gcc,libc6-dev,ca-certificates \
    "$SUITE" "$root" "$mirror" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$root" -czf "$base.tmp" . && mv "$base.tmp" "$base"
else
  say "clean $SUITE root from $base"
  tar -C "$root" -xzf "$base"
fi

say "copying Go, CA certificates and apt settings into the root"
cp -a /usr/local/go "$root/usr/local/go"
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list.d/debian.sources ] && rm -f "$root/etc/apt/sources.list"
cp /etc/apt/apt.conf.d/99artifact-registry "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf" # slirp4netns's DNS
echo fresh >"$root/etc/hostname"
chmod 1777 "$root/tmp"

if [ "${WARM_GO:-0}" = 1 ]; then
  # Faster, and not what a new user meets: their first build downloads
  # and compiles every module. The caches hold only content-addressed
  # results, so what the tests check is the same.
  say "WARM_GO=1: copying this machine's Go module and build caches into the root"
  # Hard links where the root is on the same filesystem: both caches
  # only ever get new files (written aside and renamed), so sharing the
  # inodes is safe, and a copy of a large build cache filled the disk.
  mkdir -p "$root/root/go/pkg" "$root/root/.cache"
  warm() {
    cp -al "$1" "$2" 2>/dev/null || { rm -rf "$2"; cp -a "$1" "$2"; }
  }
  warm "$(/usr/local/go/bin/go env GOMODCACHE)" "$root/root/go/pkg/mod"
  warm "$(/usr/local/go/bin/go env GOCACHE)" "$root/root/.cache/go-build"
fi

say "cloning $(git -C "$repo" rev-parse --short HEAD) into /root/slipway"
git clone -q "$repo" "$root/root/slipway"

# The namespaces. Their init (PID 1) mounts what a booted machine has
# under the new root and then makes it the root of the mount namespace
# with pivot_root, as a machine's / is: not a chroot. (Under a chroot,
# runc's exec joins the container's mount namespace but lands in the
# chroot's root: `docker exec` then runs the root's dash instead of the
# container's shell, "sh: 1: busybox: not found", and sees the wrong
# /tmp.) It ends as a sleep; when it goes, the kernel ends everything
# else in there.
unshare --net --mount --pid --fork --propagation private /bin/sh -c '
  set -e
  root=$1
  echo 0 >/proc/sys/net/ipv4/ip_forward
  ip link set lo up
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
  mount -t tmpfs tmpfs "$root/dev/shm"
  mkdir -p "$root/.oldroot"
  cd "$root"
  pivot_root . .oldroot
  cd /
  umount -l /.oldroot
  rmdir /.oldroot
  exec sleep infinity
' sh "$root" &
holder=$!
nsinit=""
for _ in $(seq 1 100); do
  nsinit=$(pgrep -P "$holder" -x sleep || true)
  [ -n "$nsinit" ] && break
  kill -0 "$holder" 2>/dev/null || break
  sleep 0.1
done
[ -n "$nsinit" ] || { echo "fresh-machine: the namespaces did not start" >&2; exit 1; }
cgroups_before=$WORK/cgroups.before
find /sys/fs/cgroup -mindepth 2 -type d 2>/dev/null | sort >"$cgroups_before" || true

inside() { nsenter -t "$nsinit" -n -m -p -- "$@"; }

slirp4netns --configure --mtu=65520 --disable-host-loopback "$nsinit" tap0 >"$WORK/slirp.log" 2>&1 &
slirp=$!

# ns_pids NAME: the PIDs (as the host sees them) of processes called NAME
# in the PID namespace.
ns_pids() {
  local ns pid
  ns=$(readlink "/proc/$nsinit/ns/pid") || return 0
  for pid in $(pgrep -x "$1"); do
    [ "$(readlink "/proc/$pid/ns/pid" 2>/dev/null)" = "$ns" ] && echo "$pid"
  done
  return 0
}
# stop NAME: SIGTERM, then up to 30 s for them to go.
stop() {
  local pids
  pids=$(ns_pids "$1")
  [ -n "$pids" ] || return 0
  kill -TERM $pids 2>/dev/null
  for _ in $(seq 1 30); do [ -n "$(ns_pids "$1")" ] || return 0; sleep 1; done
  say "$1 did not stop within 30 s"
}

cleanup() {
  set +e
  say "stopping what this script started"
  stop slipway
  # The dockerd that make start started, gracefully: it stops its containers.
  stop dockerd
  kill -KILL "$nsinit" 2>/dev/null
  wait "$holder" 2>/dev/null
  kill "$slirp" 2>/dev/null
  wait "$slirp" 2>/dev/null
  # Empty cgroups left by engines that were killed.
  find /sys/fs/cgroup -mindepth 2 -type d 2>/dev/null | sort | comm -13 "$cgroups_before" - | sort -r | xargs -r rmdir 2>/dev/null
  if [ "$KEEP" = 1 ]; then
    say "kept $WORK"
  else
    rm -rf "$root"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM # then cleanup; waits below are interruptible

# slirp4netns configures tap0 (10.0.2.100/24) and then says so.
for _ in $(seq 1 100); do grep -q "sent tapfd" "$WORK/slirp.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
say "inside: ip_forward=$(inside cat /proc/sys/net/ipv4/ip_forward), links: $(inside ls /sys/class/net | tr '\n' ' '), root: $(inside ls / | tr '\n' ' ')"

in_root() {
  inside /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin \
    /bin/bash -c "cd /root/slipway && $1"
}

status=0
for run in $(seq 1 "$RUNS"); do
  say "make test, run $run of $RUNS"
  t0=$(date +%s)
  in_root "make test" >"$WORK/make-test-$run.log" 2>&1 &
  if wait $!; then
    say "make test run $run passed in $(($(date +%s) - t0)) s"
    grep -E '^(ok|FAIL|---)' "$WORK/make-test-$run.log" | tail -40
  else
    status=1
    say "make test run $run FAILED after $(($(date +%s) - t0)) s; the failures:"
    grep -E '^(--- FAIL|FAIL|panic:)|_test.go:[0-9]+:' "$WORK/make-test-$run.log" | head -60
    say "whole log: $WORK/make-test-$run.log"
  fi
  # What the run left behind: private dockerds' directories and mounts,
  # links (bridges, dummies, veths), routes, FORWARD rules. A clean run
  # leaves nothing.
  left=$(
    ls -d "$root"/tmp/slipway-* 2>/dev/null | sed 's/^/directory: /'
    # os.CreateTemp("", "") names (tarball.LayerFromReader made one per
    # layer, and never removed it).
    n=$(find "$root/tmp" -maxdepth 1 -type f -regex '.*/[0-9]+' | wc -l)
    [ "$n" = 0 ] || echo "temporary files: $n in /tmp named by number only"
    inside awk 'index($5, "/tmp/") == 1 {print "mount: " $5}' /proc/self/mountinfo
    inside ip -o link | awk -F': ' '$2 != "lo" && $2 != "tap0" {print "link: " $2}'
    inside ip -o route show table all | grep -v -E 'dev (lo|tap0)( |$)' | sed 's/^/route: /' || true
    # Every table: rules and chains the project made (CNI's own shared
    # chains, CNI-FORWARD and the like, are the plugins' and stay).
    for tool in iptables ip6tables; do
      inside $tool-save 2>/dev/null | grep -E '^(-A|:)' | grep -v -E '^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' |
        grep -v -E '^:CNI-(FORWARD|ADMIN|ISOLATION-STAGE-[12]) |^-A FORWARD .*-j CNI-(FORWARD|ISOLATION-STAGE-1)$|^-A CNI-(FORWARD|ADMIN|ISOLATION-STAGE-[12]) ' |
        sed "s/^/$tool: /" || true
    done
    true # an empty list is the good case, not a failure
  )
  if [ -n "$left" ]; then
    status=1
    say "make test run $run left this behind:"
    echo "$left" | head -40
  else
    say "make test run $run left nothing behind (no directories, temporary files, mounts, bridges or FORWARD rules)"
  fi
done

say "make start"
in_root "make start >/root/make-start.log 2>&1" &
startpid=$!
ready=0
for _ in $(seq 1 600); do
  if inside curl -fsk --max-time 2 https://127.0.0.1:8443/readyz >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$startpid" 2>/dev/null || break
  sleep 1
done
cp "$root/root/make-start.log" "$WORK/make-start.log" 2>/dev/null || true
if [ "$ready" = 1 ]; then
  say "make start is ready: /readyz answered $(inside curl -sk https://127.0.0.1:8443/readyz)"
  grep -iE 'forward|docker|login' "$WORK/make-start.log" | head -10
else
  status=1
  say "make start did not become ready; the end of its log:"
  tail -30 "$WORK/make-start.log"
fi

if [ "$status" = 0 ]; then say "PASS: make test ($RUNS run(s)) and make start from a clean root"; else say "FAIL (logs in $WORK)"; fi
exit "$status"
