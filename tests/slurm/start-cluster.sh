#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests/sweep/test_slurm.py: installs Debian's slurmctld, slurmd and munge
# when missing (root, apt), writes slurm.conf, starts munged, slurmctld and slurmd, and waits until the node is idle.
# Idempotent: a running cluster with the same slurm.conf is left alone. Partition: debug.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: start-cluster.sh needs root (it installs packages and starts daemons)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurmctld, slurmd, munge (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null) \
        || { echo "error: apt-get could not install slurmctld slurmd munge" >&2; exit 1; }
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
# Tuned for tests: no accounting (no slurmdbd); cred_expire=10: SLURM holds a requeued job cred_expire + 1 s
# before it may start again (default 121 s); the scheduler looks at pending jobs every 2 s (default 60 s, so a
# requeued job waited up to a minute more); completed jobs forgotten after a minute; 5 s from SIGTERM to SIGKILL.
new_conf=$(cat <<CONF
ClusterName=trickbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
ReturnToService=2
MinJobAge=60
KillWait=5
InactiveLimit=0
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)

running() { pgrep -x "$1" >/dev/null; }
if [ -f "$conf" ] && [ "$(cat "$conf")" = "$new_conf" ] && running munged && running slurmctld && running slurmd; then
    echo "slurm: already running ($host, partition debug)"
    exit 0
fi
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do  # a changed slurm.conf: restart what runs
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
done
printf '%s\n' "$new_conf" >"$conf"

[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chown munge:munge /etc/munge/munge.key /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
running munged || su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
running slurmctld || slurmctld
running slurmd || slurmd
# ready when a one-second job runs (sinfo alone may show the state saved before a restart)
for _ in $(seq 30); do
    if timeout 20 srun -N1 -n1 -t1 --quiet true 2>/dev/null; then
        echo "slurm: up ($host, $cpus CPUs, partition debug)"
        exit 0
    fi
    sleep 1
done
echo "error: the one-node SLURM cluster does not run jobs; see /var/log/slurm/slurmd.log and slurmctld.log" >&2
exit 1
