#!/usr/bin/env bash
# Throw-away single-node SLURM for tests and local experiments.
#
#   tests/infra/testslurm.sh start    # munged + slurmctld + slurmd, waits for the node to be idle
#   tests/infra/testslurm.sh status   # sinfo / squeue
#   tests/infra/testslurm.sh stop     # cancels jobs, stops the daemons by their recorded PIDs
#
# Everything (munge key and socket, slurm.conf, state, spool, logs, PID files)
# lives in one private state directory, ${TESTSLURM_DIR:-/tmp/snr-moe-testslurm}.
# Nothing under /etc, /run or /var is touched, so it does not interfere with a
# system SLURM/munge (as long as the ports below are free).
#
# After `start`, point the client tools at it with
#   source "$TESTSLURM_DIR/env"        # exports SLURM_CONF
# (`start` also prints the export line.)
#
# Environment knobs:
#   TESTSLURM_DIR            state directory        [/tmp/snr-moe-testslurm]
#   TESTSLURM_CLUSTER        ClusterName            [snrmoetest]
#   TESTSLURM_CTLD_PORT      SlurmctldPort          [6817]
#   TESTSLURM_SLURMD_PORT    SlurmdPort             [6818]
#   TESTSLURM_MEM_MARGIN_MB  memory kept back from the node's RealMemory [1024]
#   TESTSLURM_TIMEOUT        seconds to wait for the node to become idle [60]
#   TESTSLURM_EXTRA_CONF     extra slurm.conf lines (newline-separated); a later
#                            line overrides an earlier setting of the same key
#
# Needs: slurmctld, slurmd, sinfo/squeue/scancel (Debian: slurm-wlm), munged
# (Debian: munge); see .ci/install-system.sh. Written for, and tested with,
# Debian 12's slurm 22.05 running as root in a container without systemd.
set -euo pipefail

STATE=$(realpath -m -- "${TESTSLURM_DIR:-/tmp/snr-moe-testslurm}")
CLUSTER="${TESTSLURM_CLUSTER:-snrmoetest}"
CTLD_PORT="${TESTSLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${TESTSLURM_SLURMD_PORT:-6818}"
MEM_MARGIN_MB="${TESTSLURM_MEM_MARGIN_MB:-1024}"
TIMEOUT="${TESTSLURM_TIMEOUT:-60}"

CONF="$STATE/slurm.conf"
MUNGE_SOCKET="$STATE/munge/munge.socket"
DAEMONS=(slurmd slurmctld munged)   # stop order

log() { echo "testslurm: $*" >&2; }
STARTING=0
die() {
    log "ERROR: $*"
    if [ "$STARTING" = 1 ]; then   # do not leave half a cluster running
        STARTING=0
        cmd_stop || true
    fi
    exit 1
}

# --------------------------------------------------------------------------
# PID bookkeeping. We only ever signal PIDs we recorded ourselves, and only
# while /proc/PID/cmdline still mentions our state directory (every daemon is
# started with paths inside it), which guards against PID reuse after a crash
# or a reboot. Never by process name.
# --------------------------------------------------------------------------
pidfile() { echo "$STATE/pids/$1.pid"; }

pid_alive() {  # pid -> true if it exists and is not a zombie
    local st
    [ -r "/proc/$1/stat" ] || return 1
    st=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

recorded_pid() {  # name -> pid on stdout if recorded, alive and still ours
    local f pid
    f=$(pidfile "$1")
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"$STATE/"* ]] || return 1
    echo "$pid"
}

is_running() { recorded_pid "$1" >/dev/null; }

started_alive() {  # name -> true while the process we just launched lives
    # (right after the fork it may still be bash/setsid, before its exec)
    local f
    f=$(pidfile "$1")
    [ -s "$f" ] && pid_alive "$(cat "$f")"
}

start_daemon() {  # name logfile cmd...  (cmd must stay in the foreground)
    local name=$1 out=$2
    shift 2
    # setsid: own session so the daemon survives the caller's terminal/process
    # group; in a non-interactive script the background child is not a group
    # leader, so setsid execs in place and $! is the daemon's PID.
    setsid "$@" </dev/null >>"$out" 2>&1 &
    echo $! >"$(pidfile "$name")"
}

stop_daemon() {  # name
    local name=$1 pid i
    if ! pid=$(recorded_pid "$name"); then
        rm -f "$(pidfile "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do   # 10 s grace
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
    fi
    if pid_alive "$pid"; then log "WARNING: $name (pid $pid) still present"; fi
    rm -f "$(pidfile "$name")"
}

# Job steps left behind when slurmctld could not cancel them (it had died):
# slurmstepd outlives slurmd with proctrack/linuxproc. Ours are recognised by
# an open descriptor on this instance's slurmd log (not by process name); they
# and their child processes (the job's own) get TERM, then KILL.
sweep_steps() {
    local p pid fd target steps=() kids=() all=() i
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = "$$" ] && continue
        for fd in "$p"/fd/*; do
            target=$(readlink "$fd" 2>/dev/null) || continue
            if [ "$target" = "$STATE/log/slurmd.log" ]; then
                steps+=("$pid")
                break
            fi
        done
    done
    [ ${#steps[@]} -gt 0 ] || return 0
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        for i in "${steps[@]}"; do
            if [ "$(awk '/^PPid:/ {print $2}' "$p/status" 2>/dev/null)" = "$i" ]; then
                kids+=("$pid")
            fi
        done
    done
    all=("${kids[@]}" "${steps[@]}")
    log "killing leftover job steps ${steps[*]} and their processes ${kids[*]:-}"
    kill -TERM "${all[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        local left=0
        for pid in "${all[@]}"; do pid_alive "$pid" && left=1; done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    kill -KILL "${all[@]}" 2>/dev/null || true
}

# --------------------------------------------------------------------------
require() {
    local missing=()
    for c in munged slurmctld slurmd sinfo squeue scancel; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] ||
        die "missing ${missing[*]}; install with .ci/install-system.sh (apt-get install slurm-wlm munge)"
}

write_conf() {
    local host cpus mem_kb mem_mb
    host=$(hostname -s)
    # nproc honours OMP_NUM_THREADS / OMP_THREAD_LIMIT (often 1 on HPC and in
    # any process that started a Dask LocalCluster); count the usable CPUs.
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$((mem_kb / 1024 - MEM_MARGIN_MB))
    [ "$mem_mb" -ge 512 ] || mem_mb=512

    cat >"$CONF" <<EOF
# Generated by tests/infra/testslurm.sh -- throw-away single-node test cluster.
ClusterName=$CLUSTER
# NodeAddr/ctld address pinned to loopback: works without DNS for the hostname
# and keeps all traffic on this machine.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# We run as root in a container; the daemons run as root too.
SlurmUser=root
SlurmdUser=root

AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET

StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups in the container: plain /proc process tracking, no task plugin,
# no accounting daemons.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true

# Share the node between jobs by core and memory.
SchedulerType=sched/backfill
# Start jobs as soon as they are submitted (default batch_sched_delay=3 s).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A node that was DOWN comes back as soon as slurmd registers with a valid config.
ReturnToService=2
# Small, snappy test cluster.
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=60
KillWait=5
Waittime=0

# Extra lines from TESTSLURM_EXTRA_CONF:
${TESTSLURM_EXTRA_CONF:-}

# Only CPUs= (no Sockets/Cores/Threads): slurm then treats every logical CPU
# as a core, so with CR_Core_Memory two 1-CPU jobs share a 2-CPU node even on
# hyper-threaded hardware (slurmd logs "Node reconfigured socket/core
# boundaries", which is harmless).
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    printf 'export SLURM_CONF=%q\n' "$CONF" >"$STATE/env"
}

node_state() {
    SLURM_CONF="$CONF" sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true
}

cmd_start() {
    require
    if is_running slurmctld || is_running slurmd || is_running munged; then
        log "already running (state dir $STATE); use '$0 stop' first"
        printf 'export SLURM_CONF=%q\n' "$CONF"
        return 0
    fi

    STARTING=1
    umask 022
    mkdir -p "$STATE"/{munge,ctld,slurmd,run,log,pids}
    # munged insists on a socket dir that is not writable by others (0755).
    chmod 755 "$STATE/munge"
    chmod 755 "$STATE"  # munge clients (slurm daemons, jobs) must reach the socket
    rm -f "$STATE"/run/*.pid "$STATE"/pids/*.pid "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"

    # --- munge ---------------------------------------------------------------
    local key="$STATE/munge/munge.key"
    if [ ! -s "$key" ]; then
        (umask 077 && dd if=/dev/urandom of="$key" bs=1 count=1024 status=none)
    fi
    chown "$(id -u):$(id -g)" "$key"
    chmod 400 "$key"
    # --force: munged refuses /tmp paths (world-writable, sticky parents) and
    # running as root without it.
    start_daemon munged "$STATE/log/munged.out" \
        munged --foreground --force \
        --socket="$MUNGE_SOCKET" \
        --key-file="$key" \
        --pid-file="$STATE/run/munged.pid" \
        --seed-file="$STATE/munge/munged.seed" \
        --log-file="$STATE/log/munged.log" \
        --num-threads=2
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$MUNGE_SOCKET" ] && break
        started_alive munged || { cat "$STATE/log/munged.out" "$STATE/log/munged.log" >&2 2>/dev/null || true; die "munged exited"; }
        sleep 0.1
    done
    [ -S "$MUNGE_SOCKET" ] || die "munge socket $MUNGE_SOCKET did not appear"
    if command -v munge >/dev/null 2>&1; then
        munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null ||
            die "munge round trip failed (see $STATE/log/munged.log)"
    fi

    # --- slurm ---------------------------------------------------------------
    write_conf
    # -D: stay in the foreground so $! is the daemon; -i: ignore stale state
    # from a previous run (this cluster is throw-away); -c: clear saved jobs.
    start_daemon slurmctld "$STATE/log/slurmctld.out" \
        slurmctld -D -c -i -f "$CONF"
    # Wait for the controller to answer before starting slurmd.
    for ((i = 0; i < TIMEOUT * 5; i++)); do
        SLURM_CONF="$CONF" scontrol ping 2>/dev/null | grep -q 'is UP' && break
        started_alive slurmctld || { tail -n 30 "$STATE/log/slurmctld.log" "$STATE/log/slurmctld.out" >&2 2>/dev/null || true; die "slurmctld exited"; }
        sleep 0.2
    done
    start_daemon slurmd "$STATE/log/slurmd.out" \
        slurmd -D -f "$CONF" -N "$(hostname -s)"

    local st=""
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        st=$(node_state)
        case "$st" in
            idle | mix | alloc) break ;;
        esac
        started_alive slurmctld || { tail -n 30 "$STATE/log/slurmctld.log" >&2 || true; die "slurmctld exited"; }
        started_alive slurmd || { tail -n 30 "$STATE/log/slurmd.log" "$STATE/log/slurmd.out" >&2 2>/dev/null || true; die "slurmd exited"; }
        sleep 0.5
    done
    case "$st" in
        idle | mix | alloc) ;;
        *)
            SLURM_CONF="$CONF" sinfo -N -l >&2 || true
            tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
            die "node not idle after ${TIMEOUT}s (state '$st'); logs in $STATE/log"
            ;;
    esac
    STARTING=0
    log "up: node $(hostname -s) $st; munged $(recorded_pid munged), slurmctld $(recorded_pid slurmctld), slurmd $(recorded_pid slurmd)"
    printf 'export SLURM_CONF=%q\n' "$CONF"
}

cmd_stop() {
    if [ ! -d "$STATE/pids" ]; then
        log "nothing to stop (no $STATE/pids)"
        return 0
    fi
    # Cancel jobs first so slurmd can tear down their steps (with
    # proctrack/linuxproc, job processes would otherwise outlive slurmd).
    if is_running slurmctld; then
        local ids=() i
        mapfile -t ids < <(SLURM_CONF="$CONF" squeue -h -o '%i' 2>/dev/null || true)
        if [ ${#ids[@]} -gt 0 ]; then
            log "cancelling jobs: ${ids[*]}"
            SLURM_CONF="$CONF" scancel "${ids[@]}" 2>/dev/null || true
            for ((i = 0; i < 60; i++)); do   # up to 15 s
                [ -z "$(SLURM_CONF="$CONF" squeue -h -o '%i' 2>/dev/null)" ] && break
                sleep 0.25
            done
        fi
    fi
    local d
    for d in "${DAEMONS[@]}"; do
        stop_daemon "$d"
    done
    sweep_steps
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    log "stopped (state left in $STATE)"
}

cmd_status() {
    local d pid rc=0
    for d in munged slurmctld slurmd; do
        if pid=$(recorded_pid "$d"); then
            echo "$d: running (pid $pid)"
        else
            echo "$d: not running"
            rc=1
        fi
    done
    if is_running slurmctld; then
        echo "--- sinfo"
        SLURM_CONF="$CONF" sinfo -N -l || rc=1
        echo "--- squeue"
        SLURM_CONF="$CONF" squeue || rc=1
    fi
    echo "SLURM_CONF=$CONF"
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *)
        echo "usage: $0 start|stop|status|restart" >&2
        exit 2
        ;;
esac
