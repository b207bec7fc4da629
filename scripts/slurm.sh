#!/usr/bin/env bash
# A real Slurm on this machine for development and CI: munge + slurmctld + slurmdbd (MariaDB,
# so sacct works) + NNODES slurmd processes emulating nodes n1..nN on localhost. Idempotent.
#
#   scripts/slurm.sh [start]   install if needed, configure, start, wait for idle nodes
#   scripts/slurm.sh status    daemons and sinfo
#   scripts/slurm.sh stop      stop what this script started (by pid file, never by name)
#   scripts/slurm.sh clean     stop and delete all state
#
# Environment: XVHPC_SLURM_ROOT (/tmp/xvhpc-slurm), XVHPC_SLURM_NODES (2),
# XVHPC_SLURM_CPUS (cpus per node, default nproc; more than nproc is allowed),
# XVHPC_SLURM_GPUS (fake GPUs per node, default 4: GRES backed by dummy device files, so
# --gpus-per-node/--gres requests are accepted and CUDA_VISIBLE_DEVICES is set; no CUDA).
set -euo pipefail

ROOT=${XVHPC_SLURM_ROOT:-/tmp/xvhpc-slurm}
NODES=${XVHPC_SLURM_NODES:-2}
CPUS=${XVHPC_SLURM_CPUS:-$(nproc)}
GPUS=${XVHPC_SLURM_GPUS:-4}
DB_PORT=3307
HOST=$(hostname -s)
export DEBIAN_FRONTEND=noninteractive

say() { echo "[slurm.sh] $*"; }

pid_alive() {
  [[ -s $1 ]] || return 1
  local pid state
  pid=$(cat "$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  state=$(ps -o stat= -p "$pid" 2>/dev/null | tr -d ' ') || return 1
  [[ -n $state && $state != Z* ]]
}

stop_by_pidfile() {
  local file=$1 i
  if pid_alive "$file"; then
    kill "$(cat "$file")" 2>/dev/null || true
    for i in $(seq 50); do pid_alive "$file" || break; sleep 0.2; done
    pid_alive "$file" && kill -9 "$(cat "$file")" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop_all() {
  local f
  for f in "$ROOT"/slurmd-*.pid; do [[ -e $f ]] && stop_by_pidfile "$f"; done
  for f in slurmctld slurmdbd mysql; do stop_by_pidfile "$ROOT/$f.pid"; done
}

case ${1:-start} in
  start) ;;
  stop) stop_all; exit 0 ;;
  clean) stop_all; rm -rf "$ROOT"; exit 0 ;;
  status)
    for f in "$ROOT"/*.pid; do [[ -e $f ]] && { pid_alive "$f" && echo "up   $(basename "$f" .pid)" || echo "down $(basename "$f" .pid)"; }; done
    sinfo || true; exit 0 ;;
  *) echo "usage: $0 [start|status|stop|clean]" >&2; exit 2 ;;
esac

# 1. packages
need=()
for p in slurm-wlm slurmctld slurmd slurm-client slurmdbd munge libpmix-dev mariadb-server; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. munge
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey -c -f -k /etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# 3. configuration (rewritten only when it changes)
mkdir -p "$ROOT"/{state,log,dev} /etc/slurm
for ((g = 0; g < GPUS; g++)); do
  [[ -e $ROOT/dev/nvidia$g ]] || mknod "$ROOT/dev/nvidia$g" c 195 "$g" 2>/dev/null || touch "$ROOT/dev/nvidia$g"
done
for i in $(seq "$NODES"); do mkdir -p "$ROOT/spool/n$i" "$ROOT/tmp/n$i"; done
mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
conf="# written by xvhpc scripts/slurm.sh
ClusterName=xvhpc
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job becomes eligible after cred_expire + 1 s (default 120): keep requeue tests quick
AuthInfo=cred_expire=10
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/%n
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd-%n.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
TmpFS=$ROOT/tmp/%n
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=10
MinJobAge=600
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
AccountingStorageTRES=gres/gpu
GresTypes=gpu
SlurmdParameters=config_overrides"
for i in $(seq "$NODES"); do
  conf+=$'\n'"NodeName=n$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$mem ${GPUS:+Gres=gpu:$GPUS} State=UNKNOWN"
done
conf+=$'\n'"PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
dbd="AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$ROOT/log/slurmdbd.log
PidFile=$ROOT/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=xvhpc
StorageLoc=slurm_acct_db"
if [[ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]]; then
  printf '%s\n' "$conf" >/etc/slurm/slurm.conf
  say "slurm.conf changed: restarting slurm daemons"
  for f in "$ROOT"/slurmd-*.pid; do [[ -e $f ]] && stop_by_pidfile "$f"; done
  stop_by_pidfile "$ROOT/slurmctld.pid"
fi
gres="AutoDetect=off"
((GPUS > 0)) && gres+=$'\n'"NodeName=n[1-$NODES] Name=gpu File=$ROOT/dev/nvidia[0-$((GPUS - 1))]"
if [[ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$gres" ]]; then
  printf '%s\n' "$gres" >/etc/slurm/gres.conf
  for f in "$ROOT"/slurmd-*.pid; do [[ -e $f ]] && stop_by_pidfile "$f"; done
  stop_by_pidfile "$ROOT/slurmctld.pid"
fi
if [[ "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" != "$dbd" ]]; then
  printf '%s\n' "$dbd" >/etc/slurm/slurmdbd.conf
  stop_by_pidfile "$ROOT/slurmdbd.pid"
fi
chmod 600 /etc/slurm/slurmdbd.conf

# 4. accounting: a private MariaDB and slurmdbd
if ! pid_alive "$ROOT/mysql.pid"; then
  if [[ ! -d $ROOT/mysql/mysql ]]; then
    mkdir -p "$ROOT/mysql"
    mariadb-install-db --user=root --datadir="$ROOT/mysql" --auth-root-authentication-method=normal \
      --skip-test-db >"$ROOT/log/mysql-install.log" 2>&1
  fi
  say "starting mariadbd on 127.0.0.1:$DB_PORT"
  nohup mariadbd --user=root --datadir="$ROOT/mysql" --socket="$ROOT/mysql.sock" --pid-file="$ROOT/mysql.pid" \
    --bind-address=127.0.0.1 --port=$DB_PORT --log-error="$ROOT/log/mysql.err" --innodb-buffer-pool-size=64M \
    >/dev/null 2>&1 &
  for _ in $(seq 150); do mariadb -S "$ROOT/mysql.sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb -S "$ROOT/mysql.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'xvhpc';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'xvhpc';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    FLUSH PRIVILEGES;"
fi
if ! pid_alive "$ROOT/slurmdbd.pid"; then say "starting slurmdbd"; slurmdbd; fi
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.2; done

# 5. controller and nodes
if ! pid_alive "$ROOT/slurmctld.pid"; then say "starting slurmctld"; slurmctld; fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
for i in $(seq "$NODES"); do
  pid_alive "$ROOT/slurmd-n$i.pid" || { say "starting slurmd -N n$i"; slurmd -N "n$i"; }
done

# 6. wait until every node is usable
for _ in $(seq 150); do
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null || true)
  if [[ -n $states ]] && ! grep -qvE ' (idle|mixed|allocated|completing)$' <<<"$states"; then
    sinfo; say "up: $NODES nodes x $CPUS CPUs, accounting via slurmdbd"; exit 0
  fi
  for n in $(awk '/ (drained|down|drain|draining)$/ {print $1}' <<<"$states"); do
    scontrol update nodename="$n" state=resume 2>/dev/null || true
  done
  sleep 0.2
done
say "nodes did not become idle"; sinfo -N -l; tail -n 20 "$ROOT"/log/*.log; exit 1
