#!/usr/bin/env bash
# A real single-node SLURM cluster on this host, for tests/test_slurm.py and for anyone who wants
# to try the cluster path on one Debian or Ubuntu machine. It starts, as root and without
# systemd: munged, a MariaDB server of its own (socket only, under the state folder) for
# slurmdbd, so that `sacct` lists jobs as on a real cluster, then slurmdbd, slurmctld and slurmd.
# One partition, `local`, over this host's CPUs and memory; one account, `filmclevr`.
# Idempotent: run again with the cluster up, it starts only what is not running and waits for
# the node. tests/slurm/stop-cluster.sh stops what it started. The packages it needs:
#   apt-get install -y --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge \
#       mariadb-server
set -euo pipefail

STATE=/var/lib/filmclevr-slurm   # every file of this cluster: state, database, logs, pid files
MARK="# written by filmclevr tests/slurm/start-cluster.sh"
CLUSTER=filmclevr
PARTITION=local
ACCOUNT=filmclevr
# slurmdbd reaches the database through this socket (libmariadb reads MYSQL_UNIX_PORT), as root
# by MariaDB's unix_socket authentication: no TCP port to collide with a host's MariaDB, and no
# password to keep.
export MYSQL_UNIX_PORT=$STATE/db/mariadbd.sock

fail() { echo "start-cluster.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root"
for tool in munged slurmdbd slurmctld slurmd sinfo sacctmgr mariadbd mariadb-install-db; do
    command -v "$tool" >/dev/null || fail "$tool not found; install the packages listed at the top"
done

# A configuration file from this script's text (with MARK on top); never one it did not write,
# such as a real cluster's. Rewritten only when it changes, so a second start leaves it alone.
write_conf() {
    local path=$1 mode=$2
    if [ -e "$path" ] && ! grep -qxF "$MARK" "$path"; then
        fail "$path exists and was not written by this script; not touching it"
    fi
    { echo "$MARK"; cat; } > "$path.new"
    chmod "$mode" "$path.new"
    if cmp -s "$path.new" "$path"; then rm "$path.new"; else mv "$path.new" "$path"; fi
}

# Starts a daemon unless its pid file names a live process; records the pid file (in start
# order) for stop-cluster.sh, which stops only what this script started.
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
start() {
    local pidfile=$1; shift
    running "$pidfile" && return
    # Its output to a log: a daemon holding this script's stdout open would keep a caller that
    # reads it to the end (a test, CI) waiting.
    "$@" < /dev/null >> "$STATE/log/daemons.log" 2>&1
    for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
    [ -s "$pidfile" ] || fail "$1 wrote no $pidfile; its log is in $STATE/log"
    grep -qxF "$pidfile" "$STATE/started" 2>/dev/null || echo "$pidfile" >> "$STATE/started"
}
wait_for() {  # wait_for <what> <command...>: up to 30 s
    local what=$1; shift
    for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return; sleep 0.2; done
    fail "$what not ready after 30 s; logs in $STATE/log"
}

mkdir -p "$STATE"/{ctld,spool,log,db} /run/munge
chown munge:munge /run/munge
chown mysql:mysql "$STATE/db"
# Debian's munge package makes the key when it is installed; make one where it did not.
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force
    chown munge:munge /etc/munge/munge.key
fi

# This host as slurmd sees it (CPUs, sockets, cores, threads, memory), under SLURM's name for it.
NODE=$(hostname -s)
NODE_LINE=$(slurmd -C | head -n 1)
mkdir -p /etc/slurm
write_conf /etc/slurm/slurm.conf 644 <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups: containers and CI runners rarely delegate them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# sacct shows each job's --comment, where Snakemake's SLURM executor names the rule.
AccountingStoreFlags=job_comment
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
write_conf /etc/slurm/slurmdbd.conf 600 <<CONF
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
CONF

start /run/munge/munged.pid runuser -u munge -- munged

if [ ! -d "$STATE/db/data/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/db/data" --skip-test-db \
        --auth-root-authentication-method=socket > "$STATE/log/mariadb-install-db.log" 2>&1 \
        || fail "mariadb-install-db failed; see $STATE/log/mariadb-install-db.log"
fi
# --no-defaults: none of the host's my.cnf (its port, socket, data folder). Its log is in db/,
# the one folder the mysql user may write.
start "$STATE/db/mariadbd.pid" setsid -f mariadbd --no-defaults --user=mysql \
    --datadir="$STATE/db/data" --socket="$MYSQL_UNIX_PORT" --skip-networking \
    --pid-file="$STATE/db/mariadbd.pid" --log-error="$STATE/db/mariadbd.log" \
    --innodb-lock-wait-timeout=900
wait_for MariaDB mariadb-admin --socket="$MYSQL_UNIX_PORT" ping

start "$STATE/slurmdbd.pid" slurmdbd
wait_for slurmdbd sacctmgr -n list cluster
if [ -z "$(sacctmgr -n list cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i add cluster "$CLUSTER" > /dev/null
fi
if [ -z "$(sacctmgr -n list account "$ACCOUNT" format=account)" ]; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
        description="filmclevr tests" organization=filmclevr > /dev/null
fi
# root (CI) and whoever ran this through sudo may submit under the account.
for user in root ${SUDO_USER:-}; do
    if [ -z "$(sacctmgr -n list assoc user="$user" account="$ACCOUNT" format=user)" ]; then
        sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" > /dev/null
    fi
done

start "$STATE/slurmctld.pid" slurmctld
start "$STATE/slurmd.pid" slurmd

for _ in $(seq 60); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
    case "$state" in
        idle | mix | alloc) sinfo; exit 0 ;;
    esac
    sleep 1
done
fail "node $NODE not idle after 60 s (state: ${state:-none}); logs in $STATE/log"
