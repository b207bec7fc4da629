#!/usr/bin/env bash
# A real LSF-compatible scheduler (OpenLava 4.0dev4, the GPL fork of LSF) on this machine for
# development and CI: one host, lim + res + sbatchd + mbatchd, no systemd. Idempotent.
#
#   scripts/openlava.sh [start]   install build deps if needed, build once, configure, start, wait
#   scripts/openlava.sh source    find and verify the source tarball (sha256), print its path; builds nothing
#   scripts/openlava.sh status    daemons, lsid, bhosts, bqueues
#   scripts/openlava.sh stop      kill our jobs, then our daemons (by the pids of our own binaries)
#   scripts/openlava.sh clean     stop, remove the command wrappers and delete all state
#
# The OpenLava source (GPL-2.0, not linked into xvhpc) is in third_party/openlava/ with its
# licence and SHA256SUMS; XVHPC_OPENLAVA_TARBALL names another copy of the same tarball. Either is
# checked against third_party/openlava/SHA256SUMS before use (XVHPC_OPENLAVA_SHA256 accepts a
# different tarball by its own checksum).
# Build deps (apt, installed when missing): gcc make autoconf automake libtool bison flex
# tcl-dev libncurses-dev libtirpc-dev procps. Runs as root.
#
# Environment: XVHPC_OPENLAVA_ROOT (/tmp/xvhpc-openlava), XVHPC_OPENLAVA_PORT (14322; uses 4
# ports: LIM, RES, MBD, SBD -- away from Slurm's 6817-6819/17001+ and xvhpc's MASTER_PORTs
# 15000-34999), XVHPC_OPENLAVA_SLOTS (job slots, 8), XVHPC_OPENLAVA_BINDIR (/usr/local/bin:
# wrappers for bsub, bjobs, ... that set LSF_ENVDIR, so every shell and every job finds the
# cluster). Queues: normal (default), batch, requeue75 (REQUEUE_EXIT_VALUES = 75).
# Root may submit (LSF_ROOT_REX=local); jobs run as the submitting user.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${XVHPC_OPENLAVA_ROOT:-/tmp/xvhpc-openlava}
PORT=${XVHPC_OPENLAVA_PORT:-14322}
SLOTS=${XVHPC_OPENLAVA_SLOTS:-8}
BINDIR=${XVHPC_OPENLAVA_BINDIR:-/usr/local/bin}
TARBALL=${XVHPC_OPENLAVA_TARBALL:-$REPO/third_party/openlava/openlava-4.0dev4-69891d86.tar.gz}
SUMS=$REPO/third_party/openlava/SHA256SUMS
CLUSTER=xvhpc
ADMIN=lsfadmin
PREFIX=$ROOT/install
ETC=$PREFIX/etc
HOST=$(hostname)
COMMANDS="bsub bjobs bkill brequeue bhist bpeek bmod bstop bresume bswitch btop bbot bqueues bhosts
  bparams busers bjdep badmin lsid lsload lshosts lsadmin"
WRAPPER_MARK="# xvhpc scripts/openlava.sh wrapper"
export DEBIAN_FRONTEND=noninteractive

say() { echo "[openlava.sh] $*"; }

# the source tarball, found and its sha256 checked (a truncated or swapped file is never built)
verified_source() {
  [[ -f $TARBALL ]] || { say "no OpenLava source tarball at $TARBALL (set XVHPC_OPENLAVA_TARBALL)"; return 1; }
  local want got
  want=${XVHPC_OPENLAVA_SHA256:-$(awk -v f="$(basename "$TARBALL")" '$2 == f {print $1}' "$SUMS" 2>/dev/null)}
  [[ -n $want ]] || { say "no sha256 for $(basename "$TARBALL") in $SUMS (set XVHPC_OPENLAVA_SHA256)"; return 1; }
  got=$(sha256sum "$TARBALL" | awk '{print $1}')
  [[ $got == "$want" ]] || { say "sha256 mismatch for $TARBALL: $got, expected $want"; return 1; }
}

# pids (and names) of processes running one of *our* daemon binaries: matched on
# /proc/PID/exe against the install prefix, so nothing else on the machine is touched
our_daemons() {
  local pid exe
  for pid in $(ps -eo pid=); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    case $exe in
      "$PREFIX"/sbin/lim | "$PREFIX"/sbin/pim | "$PREFIX"/sbin/res | "$PREFIX"/sbin/sbatchd | "$PREFIX"/sbin/mbatchd)
        echo "$pid ${exe##*/}" ;;
    esac
  done
}

# pids of job processes of this cluster: LSB_JOBID and our LSF_ENVDIR in their environment
our_job_pids() {
  local pid env
  for pid in $(ps -eo pid=); do
    [[ $pid == "$$" ]] && continue
    env=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ") || continue
    grep -qx "LSF_ENVDIR=$ETC" <<<"$env" && grep -q '^LSB_JOBID=' <<<"$env" && echo "$pid"
  done
  return 0
}

lsf() { LSF_ENVDIR=$ETC timeout 20 "$PREFIX/bin/$1" "${@:2}"; }

stop_all() {
  if our_daemons | grep -q ' mbatchd$'; then
    lsf bkill -u all 0 >/dev/null 2>&1 || true
    for _ in $(seq 15); do
      lsf bjobs -u all -r -noheader 2>/dev/null | grep -q . || break
      sleep 1
    done
  fi
  local name pid
  for name in sbatchd mbatchd res lim pim; do
    for pid in $(our_daemons | awk -v n="$name" '$2 == n {print $1}'); do
      kill "$pid" 2>/dev/null && say "stopped $name ($pid)"
    done
  done
  for _ in $(seq 25); do [[ -z $(our_daemons) ]] && break; sleep 0.2; done
  for pid in $(our_daemons | awk '{print $1}'); do kill -9 "$pid" 2>/dev/null || true; done
  for pid in $(our_job_pids); do kill -9 "$pid" 2>/dev/null && say "killed leftover job process $pid"; done
  return 0
}

remove_wrappers() {
  local c
  for c in $COMMANDS; do
    grep -qs "^$WRAPPER_MARK" "$BINDIR/$c" && rm -f "$BINDIR/$c"
  done
  return 0
}

case ${1:-start} in
  start) ;;
  source) verified_source && echo "$TARBALL"; exit ;;
  stop) stop_all; exit 0 ;;
  clean) stop_all; remove_wrappers; rm -rf "$ROOT"; exit 0 ;;
  status)
    our_daemons
    for c in lsid bhosts bqueues; do lsf "$c" 2>&1 || true; done
    exit 0 ;;
  *) echo "usage: $0 [start|source|status|stop|clean]" >&2; exit 2 ;;
esac

# 1. build (once per tarball and bind mode): the daemons bind 127.0.0.1 when this host's name
# resolves to 127.x (a dev box), else every address (a CI container whose name maps to its IP)
if ! getent hosts "$HOST" >/dev/null; then  # LIM looks the host up by name
  [[ ${CI:-} == true ]] || { say "$HOST does not resolve; add '127.0.0.1 $HOST' to /etc/hosts"; exit 1; }
  echo "127.0.0.1 $HOST" >>/etc/hosts && say "CI: added '127.0.0.1 $HOST' to /etc/hosts"
fi
loopback=0
getent hosts "$HOST" | grep -q '^127\.' && loopback=1
stamp="tarball=$(basename "$TARBALL") loopback=$loopback"
if [[ ! -x $PREFIX/sbin/mbatchd || "$(cat "$ROOT/build.stamp" 2>/dev/null)" != "$stamp" ]]; then
  verified_source || exit 1
  need=()
  for p in gcc make autoconf automake libtool bison flex tcl-dev libncurses-dev libtirpc-dev procps; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if ((${#need[@]})); then
    say "installing ${need[*]}"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  stop_all
  t0=$SECONDS
  rm -rf "$ROOT/src" "$PREFIX"
  mkdir -p "$ROOT/src" "$ROOT/log"
  tar -xzf "$TARBALL" -C "$ROOT/src" --strip-components=1
  cd "$ROOT/src"
  if ((loopback)); then  # no lsf.conf knob for the bind address: INADDR_ANY is hard-coded
    sed -i 's/htonl(INADDR_ANY)/htonl(INADDR_LOOPBACK)/' lsf/lib/lib.channel.c lsf/lib/lib.sock.c
    sed -i 's/\.s_addr = INADDR_ANY;/.s_addr = htonl(INADDR_LOOPBACK);/' lsf/res/res.init.c lsf/res/res.handler.c
  fi
  # Debian 12 (gcc 12, glibc 2.36): Sun RPC/XDR moved to libtirpc; lim.h defines variables in a
  # header (gcc >= 10 defaults to -fno-common); gcc >= 14 also needs -fpermissive -std=gnu17
  cflags="-O1 -fcommon"
  (($(gcc -dumpversion | cut -d. -f1) >= 14)) && cflags+=" -fpermissive -std=gnu17"
  say "building OpenLava from $(basename "$TARBALL") (loopback=$loopback, ~2-3 min)"
  build_log=$ROOT/log/build.log
  {
    ./bootstrap.sh
    ./configure --prefix="$PREFIX" openlavaadmin="$ADMIN" openlavacluster="$CLUSTER" \
      CPPFLAGS="-I/usr/include/tirpc" LIBS="-ltirpc" CFLAGS="$cflags"
    make -j"$(nproc)"
    make install
  } >"$build_log" 2>&1 || { tail -n 40 "$build_log"; say "build failed (log: $build_log)"; exit 1; }
  cd "$REPO"
  echo "$stamp" >"$ROOT/build.stamp"
  say "built into $PREFIX in $((SECONDS - t0)) s"
fi

# 2. configuration (rewritten only when it changes; a change restarts the daemons)
id "$ADMIN" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$ADMIN"
mkdir -p "$ETC" "$ROOT/log" "$ROOT/work/logdir"
# mbatchd runs as the admin and segfaults unless it owns LSB_SHAREDIR/logdir
chown -R "$ADMIN" "$ROOT/work"
chmod 1777 "$ROOT/log"
declare -A files
files[lsf.conf]="LSF_SERVERDIR=$PREFIX/sbin
LSF_BINDIR=$PREFIX/bin
LSF_LIBDIR=$PREFIX/lib
LSF_ENVDIR=$ETC
LSF_CONFDIR=$ETC
LSB_CONFDIR=$ETC
LSB_SHAREDIR=$ROOT/work
LSF_LOGDIR=$ROOT/log
LSF_LOG_MASK=LOG_WARNING
LSF_LIM_PORT=$PORT
LSF_RES_PORT=$((PORT + 1))
LSB_MBD_PORT=$((PORT + 2))
LSB_SBD_PORT=$((PORT + 3))
LSF_AUTH=eauth
LSB_MAILTO=!U
# root may submit (mbatchd rejects uid 0 otherwise) and RES may run root tasks from this host
LSF_ROOT_REX=local
# -o/-e files are written while the job runs, not copied at its end
LSB_STDOUT_DIRECT=Y"
files[lsf.cluster.$CLUSTER]="Begin ClusterAdmins
Administrators = $ADMIN
End ClusterAdmins

Begin Host
HOSTNAME  model    type   server  r1m  RESOURCES
$HOST     IntelI5  linux  1       -    (cs)
End Host

Begin ResourceMap
RESOURCENAME  LOCATION
End ResourceMap"
files[lsb.hosts]="Begin Host
HOST_NAME  MXJ     JL/U  r1m  pg  ls  tmp  DISPATCH_WINDOW
default    $SLOTS  ()    ()   ()  ()  ()   ()
End Host"
files[lsb.params]="Begin Parameters
DEFAULT_QUEUE = normal
MBD_SLEEP_TIME = 2
SBD_SLEEP_TIME = 2
JOB_ACCEPT_INTERVAL = 0
End Parameters"
files[lsb.queues]="Begin Queue
QUEUE_NAME = normal
PRIORITY = 30
DESCRIPTION = default queue
End Queue

Begin Queue
QUEUE_NAME = batch
PRIORITY = 30
DESCRIPTION = same name as the Summit production queue
End Queue

Begin Queue
QUEUE_NAME = requeue75
PRIORITY = 30
REQUEUE_EXIT_VALUES = 75
RERUNNABLE = yes
DESCRIPTION = requeues a job that exits 75 (queue level: bsub -Q is not in OpenLava)
End Queue"
changed=0
for f in "${!files[@]}"; do
  if [[ "$(cat "$ETC/$f" 2>/dev/null)" != "${files[$f]}" ]]; then
    printf '%s\n' "${files[$f]}" >"$ETC/$f"
    changed=1
  fi
done
for f in lsf.shared lsf.task lsb.users lsb.resources; do
  [[ -e $ETC/$f ]] || { cp "$ROOT/src/config/$f" "$ETC/$f"; changed=1; }
done
sed -i "s/^openlava$/$CLUSTER/" "$ETC/lsf.shared"
if ((changed)) && [[ -n $(our_daemons) ]]; then
  say "configuration changed: restarting the daemons"
  stop_all
fi

# 3. command wrappers on PATH (never over a file that is not ours)
mkdir -p "$BINDIR"
for c in $COMMANDS; do
  [[ -x $PREFIX/bin/$c || -x $PREFIX/sbin/$c ]] || continue
  real=$PREFIX/bin/$c
  [[ -x $real ]] || real=$PREFIX/sbin/$c
  text="#!/bin/sh
$WRAPPER_MARK: the OpenLava under $ROOT
LSF_ENVDIR=$ETC exec $real \"\$@\""
  if [[ -e $BINDIR/$c ]] && ! grep -qs "^$WRAPPER_MARK" "$BINDIR/$c"; then
    say "warning: $BINDIR/$c exists and is not ours; left alone"
    continue
  fi
  [[ "$(cat "$BINDIR/$c" 2>/dev/null)" == "$text" ]] || { printf '%s\n' "$text" >"$BINDIR/$c"; chmod 755 "$BINDIR/$c"; }
done

# 4. daemons (they fork into the background; sbatchd on the master host starts mbatchd)
if [[ -z $(our_daemons) ]]; then
  say "starting lim, res, sbatchd (ports $PORT-$((PORT + 3)))"
  export LSF_ENVDIR=$ETC
  "$PREFIX/sbin/lim"
  "$PREFIX/sbin/res"
  "$PREFIX/sbin/sbatchd"
fi

# 5. wait until the host takes jobs and mbatchd answers
for _ in $(seq 120); do
  if lsf bhosts 2>/dev/null | awk -v h="$HOST" '$1 == h && $2 == "ok" {f = 1} END {exit !f}' &&
    lsf bqueues normal >/dev/null 2>&1; then
    lsf bhosts
    say "up: host $HOST, $SLOTS slots, queues normal/batch/requeue75; daemons: $(our_daemons | awk '{printf "%s(%s) ", $2, $1}')"
    exit 0
  fi
  sleep 0.5
done
say "the cluster did not come up"; our_daemons; lsf bhosts 2>&1 || true
tail -n 20 "$ROOT"/log/*.log* 2>/dev/null || true
exit 1
