#!/bin/sh
# Reload the app server whose master's pid is in the file $1 gracefully: send it SIGHUP and exit 0
# once the signal has been sent. gunicorn's master (started without preload_app) then forks new
# workers, which import the code now on disk, and stops the old ones after their current request;
# the listening socket stays open in the master, so no connection is refused meanwhile.
# A reload that cannot happen must not look like one that did: no pid file, no pid in it or no
# process running with it (a zombie counts as gone) -> a message on stderr and exit 1.
pidfile=$1
if [ ! -f "$pidfile" ]; then
    echo "reload_pidfile.sh: no pid file $pidfile: nothing runs to reload" >&2
    exit 1
fi
pid=$(cat "$pidfile")
case $pid in
    '' | *[!0-9]*)
        echo "reload_pidfile.sh: $pidfile holds no pid" >&2
        exit 1
        ;;
esac
state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
if [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]; then
    echo "reload_pidfile.sh: process $pid (from $pidfile) is not running" >&2
    exit 1
fi
if ! kill -HUP "$pid"; then
    echo "reload_pidfile.sh: could not signal process $pid (from $pidfile)" >&2
    exit 1
fi
