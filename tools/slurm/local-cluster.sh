#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the `infomax submit --slurm` test (CI runs it).
#
#   tools/slurm/local-cluster.sh install     # Debian's slurmctld, slurmd, slurm-client, munge (as root)
#   tools/slurm/local-cluster.sh start DIR   # config, state and logs under DIR; prints SLURM_CONF=…
#   tools/slurm/local-cluster.sh stop DIR
#
# No systemd and no accounting: munged, slurmctld and slurmd are started by hand, the node is
# 127.0.0.1 with the CPUs and memory `slurmd -C` reads off the machine. Needs root (munged's key
# and slurmd's job launch). Credentials live 10 s instead of 120 (`AuthInfo=cred_expire=10`):
# that is also how long Slurm holds a requeued job back, so the requeue test waits 11 s. The main
# scheduling loop runs every 2 s instead of 60 (`sched_interval=2`): a job whose hold has ended
# starts at its next pass, as nothing else wakes the scheduler.
set -euo pipefail

die() { echo "local-cluster: $*" >&2; exit 1; }
sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

start() {
    local dir="$1"
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        die "a slurmctld or slurmd already runs here; stop it first (tools/slurm/local-cluster.sh stop ITS_DIR), or point SLURM_CONF at its slurm.conf"
    fi
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    dir="$(cd "$dir" && pwd)"
    local node cpus mem
    node="$(hostname -s)"
    cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)"
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)"
    [ -n "$cpus" ] && [ -n "$mem" ] || die "slurmd -C did not print CPUs and RealMemory"
    cat >"$dir/slurm.conf" <<EOF
ClusterName=infomax-local
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerParameters=defer_batch,sched_interval=2
KillWait=10
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    # munged: Debian's package made /etc/munge/munge.key; the socket folder is not made without systemd.
    $sudo_ mkdir -p /run/munge
    $sudo_ chown munge:munge /run/munge
    if ! pgrep -x munged >/dev/null; then
        $sudo_ runuser -u munge -- /usr/sbin/munged
    fi
    $sudo_ slurmctld -f "$dir/slurm.conf"
    $sudo_ slurmd -f "$dir/slurm.conf"
    export SLURM_CONF="$dir/slurm.conf"
    for _ in $(seq 1 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
            echo "SLURM_CONF=$dir/slurm.conf"
            return
        fi
        sleep 1
    done
    sinfo >&2 || true
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    die "the node did not come up idle within 60 s (logs above, in $dir/log)"
}

stop() {
    local dir="$1"
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        if [ -f "$pidfile" ]; then
            $sudo_ kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 1 50); do
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0
        sleep 0.1
    done
}

case "${1:-}" in
    install) install ;;
    start) [ $# -eq 2 ] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
