#!/bin/sh
# Stop the app server whose pid is in the file $1: SIGTERM, wait until it has exited, SIGKILL
# after 15 s; exit 0 when nothing runs. "Exited" includes a zombie: on this kind of VM the init
# process reaps orphans only every second or two, and start-stop-daemon --stop --retry waits for
# the reaping, which added 1-2 s to every stop (the same on both sides of a benchmark, but no
# real host's systemd makes anyone wait for it).
pidfile=$1
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
running() {
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
if running; then
    kill -TERM "$pid" 2>/dev/null
    tries=0
    while running && [ "$tries" -lt 1500 ]; do
        sleep 0.01
        tries=$((tries + 1))
    done
    if running; then
        kill -KILL "$pid" 2>/dev/null
    fi
fi
rm -f "$pidfile"
