#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1 for tests and CI (Debian's slurm-wlm and munge, no
# accounting database, no cgroups). Needs root.
#   slurm_cluster.sh install   apt-get install slurm-wlm and munge if missing
#   slurm_cluster.sh start     write the config, start munged, slurmctld and slurmd, wait until
#                              a job runs (installs first if needed)
#   slurm_cluster.sh stop      stop the daemons this script started (by their PID files)
# The node offers this machine's CPUs and 3/4 of its memory; the partition is "debug".
set -euo pipefail

CONF=/etc/slurm/slurm.conf
RUN=/run/slurm

install_packages() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return 0; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
  install -d -o slurm -g slurm $RUN /var/lib/slurm/slurmctld /var/log/slurm
  install -d /var/spool/slurmd /etc/slurm
  cat > $CONF <<CONF
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_packages
  write_conf
  install -d -o munge -g munge /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  running /run/munge/munged.pid || runuser -u munge -- munged
  running $RUN/slurmctld.pid || slurmctld
  running $RUN/slurmd.pid || slurmd -N localhost
  for _ in $(seq 60); do
    if timeout 10 srun -t 1 true 2>/dev/null; then echo "slurm cluster up: $(sinfo -h -o '%P %D %c %m %T')"; return 0; fi
    sleep 1
  done
  echo "slurm cluster did not start; see /var/log/slurm/" >&2
  return 1
}

stop() {
  local f pid
  for f in $RUN/slurmd.pid $RUN/slurmctld.pid /run/munge/munged.pid; do
    if running "$f"; then
      pid=$(cat "$f")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
  done
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
