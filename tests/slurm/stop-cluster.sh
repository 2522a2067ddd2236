#!/usr/bin/env bash
# Stops the daemons tests/slurm/start-cluster.sh started (a daemon it found already running, such
# as the host's munged, is left alone). --purge also deletes the cluster's state (job records,
# accounting database, logs) and the slurm.conf and slurmdbd.conf it wrote.
set -euo pipefail

STATE=/var/lib/filmclevr-slurm
MARK="# written by filmclevr tests/slurm/start-cluster.sh"

[ "$(id -u)" = 0 ] || { echo "stop-cluster.sh: run as root" >&2; exit 1; }
pids=()
if [ -s "$STATE/started" ]; then
    # One pid file per line, in start order: signal the newest first, then wait for them all.
    while read -r pidfile; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then pids+=("$pid"); fi
    done < <(tac "$STATE/started")
fi
for pid in "${pids[@]}"; do
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop-cluster.sh: process $pid did not stop in 15 s" >&2
        exit 1
    fi
done
rm -f "$STATE/started"
if [ "${1:-}" = --purge ]; then
    rm -rf "$STATE"
    for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
        if grep -qsxF "$MARK" "$conf"; then rm -f "$conf"; fi
    done
fi
