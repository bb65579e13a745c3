"""A health poller: is an application down while a deploy runs, and were hosts down together?

    with Poller({"app1": "http://127.0.0.1:8001/health/", ...}, expect="ok") as poll:
        run the deploy
    poll.result.failed()    -> {host: [failed requests]}     ({} when none failed)
    poll.result.overlaps()  -> [{"from", "to", "hosts"}]       (when 2+ hosts were down at once)

Every ``interval`` (100 ms) it sends each host a GET of its URL - a new connection each time, as a
load balancer's health check does - and records each request: when it started (epoch seconds),
how long it took, ok or failed and why (connection refused, reset, timeout, HTTP status, a body
without ``expect``) and, for a failed one, which other hosts were failing at that moment.

Precise and cheap: the polling runs in a child process of its own (the test process's threads -
the argv sampler of the field harness - do not hold it up through the GIL), one thread per host
on an absolute schedule (a slow answer delays only that host's next request; the ticks it
covered are counted as ``late``), at a real-time priority when allowed (root), below the argv
sampler's. A request costs one connection and a few hundred bytes; the child writes its
records as JSON when it is told to stop.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

INTERVAL = 0.1  # seconds between two requests to a host
# Seconds a request may take (connect + answer) before it counts as failed, as a load balancer's
# would give up. Not less: right after a HUP gunicorn's old workers are gone before the new ones
# have imported the project (Django: 0.5 s on an idle core), and meanwhile the requests wait in
# the listen queue - measured 1.3-3.6 s on 2 cores at load 6.
TIMEOUT = 10.0
PRIORITY = 5  # SCHED_FIFO priority of the child (the field harness's argv sampler runs at 10)


class Request:
    """One request: ``at`` (epoch seconds it started), ``ms`` (how long it took), ``ok``,
    ``reason`` (why it failed), ``status`` (HTTP status, if any answer came), ``down_with``
    (the other hosts whose latest request had failed when this one failed)."""

    __slots__ = ("at", "ms", "ok", "reason", "status", "down_with")

    def __init__(self, at, ms, ok, reason=None, status=None, down_with=()):
        self.at, self.ms, self.ok, self.reason, self.status = at, ms, ok, reason, status
        self.down_with = list(down_with)

    @property
    def end(self):
        return self.at + self.ms / 1000.0

    def __repr__(self):
        return "<%s %s%s at %s, %.0f ms%s>" % (
            "ok" if self.ok else "FAILED", self.status or "", "" if self.ok else " (%s)" % self.reason,
            _clock(self.at), self.ms, " while down: %s" % ",".join(self.down_with) if self.down_with else "")


def _clock(epoch):
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + ("%.3f" % (epoch % 1))[1:]


class PollResult:
    """What the poller saw, per host (``requests``: {host: [Request, ...]} in order)."""

    def __init__(self, data):
        self.interval = data["interval"]
        self.timeout = data["timeout"]
        self.realtime = data["realtime"]
        self.started = data["started"]
        self.stopped = data["stopped"]
        self.late = data["late"]
        self.requests = dict((host, [Request(*row) for row in rows]) for host, rows in data["requests"].items())

    def failed(self):
        """{host: [failed Request, ...]} of the hosts that had a failed request."""
        return dict((host, [r for r in rows if not r.ok]) for host, rows in self.requests.items()
                    if any(not r.ok for r in rows))

    def down_intervals(self, host):
        """[(from, to), ...]: the host counts as down from the start of a failed request until
        the start of the next request that succeeded (or the end of the last failed one)."""
        intervals = []
        begin = last_end = None
        for request in self.requests[host]:
            if not request.ok:
                if begin is None:
                    begin = request.at
                last_end = request.end
            elif begin is not None:
                intervals.append((begin, request.at))
                begin = None
        if begin is not None:
            intervals.append((begin, last_end))
        return intervals

    def overlaps(self):
        """[{"from", "to", "seconds", "hosts"}]: the stretches during which two or more hosts
        were down at the same time (a sweep over every host's down intervals)."""
        events = []
        for host in self.requests:
            for begin, end in self.down_intervals(host):
                events.append((begin, 1, host))
                events.append((end, 0, host))  # at equal times an end comes before a begin
        events.sort()
        down, found, since = set(), [], None
        for moment, kind, host in events:
            if len(down) >= 2 and since is not None and moment > since:
                found.append({"from": since, "to": moment, "seconds": round(moment - since, 3),
                              "hosts": sorted(down)})
            if kind:
                down.add(host)
            else:
                down.discard(host)
            since = moment
        return found

    def counts(self):
        """{host: {"requests", "failed", "max_ms", "max_gap_ms", "late"}}: ``max_gap_ms`` is the
        longest time between the starts of two requests to the host."""
        result = {}
        for host, rows in self.requests.items():
            gaps = [b.at - a.at for a, b in zip(rows, rows[1:])]
            result[host] = {"requests": len(rows), "failed": sum(1 for r in rows if not r.ok),
                            "max_ms": round(max([r.ms for r in rows] or [0]), 1),
                            "max_gap_ms": round(max(gaps or [0]) * 1000, 1), "late": self.late.get(host, 0)}
        return result

    def describe(self, limit=5):
        """A few lines for an assertion message: the counts, the first failures of each host,
        the overlaps."""
        lines = ["poller: %.1f s, every %.0f ms, timeout %.1f s%s" % (
            self.stopped - self.started, self.interval * 1000, self.timeout, ", real-time" if self.realtime else "")]
        for host, figures in sorted(self.counts().items()):
            lines.append("  %s: %s" % (host, figures))
        for host, rows in sorted(self.failed().items()):
            lines.append("  %s failed %d time(s), first: %s" % (host, len(rows), rows[:limit]))
        for overlap in self.overlaps()[:limit]:
            lines.append("  down together %s - %s (%.3f s): %s" % (
                _clock(overlap["from"]), _clock(overlap["to"]), overlap["seconds"], ", ".join(overlap["hosts"])))
        return "\n".join(lines)


class Poller:
    """Polls ``urls`` ({host: url}) from a child process between start() and stop() (or as a
    context manager); ``result`` is the PollResult afterwards. ``expect``: text a good answer's
    body must contain (None: any body of a 200)."""

    def __init__(self, urls, interval=INTERVAL, timeout=TIMEOUT, expect=None, realtime=True):
        self.config = {"urls": dict(urls), "interval": interval, "timeout": timeout, "expect": expect,
                       "realtime": realtime}
        self.child = None
        self.result = None

    def start(self):
        self.child = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        self.child.stdin.write(json.dumps(self.config) + "\n")
        self.child.stdin.flush()
        ready = self.child.stdout.readline()
        if ready.strip() != "polling":
            self.child.kill()
            self.child.wait()
            raise AssertionError("the poller did not start: %r" % ready)
        return self

    def stop(self):
        """Stop polling; returns the PollResult (also kept as ``result``)."""
        if self.child is None:
            return self.result
        output, unused = self.child.communicate("stop\n", timeout=self.config["timeout"] + 30)
        self.child = None
        self.result = PollResult(json.loads(output))
        return self.result

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        if exc_info[0] is None:
            self.stop()
        elif self.child is not None:
            try:
                self.stop()
            except Exception:  # noqa: B902 - the test's own error is the one to see
                self.child.kill()
                self.child.wait()
        return False


# --- the child --------------------------------------------------------------------------------


def request(url, timeout, expect):
    """GET ``url`` on a new connection: (ok, reason, status)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path + ("?" + parts.query if parts.query else ""),
                           headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read(65536).decode("utf-8", "replace")
    except socket.timeout:
        return False, "timeout after %.1f s" % timeout, None
    except ConnectionRefusedError:
        return False, "connection refused", None
    except http.client.RemoteDisconnected:  # a ConnectionResetError too: first
        return False, "closed without an answer", None
    except ConnectionResetError:
        return False, "connection reset", None
    except (OSError, http.client.HTTPException) as error:
        return False, "%s: %s" % (type(error).__name__, error), None
    finally:
        connection.close()
    if response.status != 200:
        return False, "HTTP %d" % response.status, response.status
    if expect is not None and expect not in body:
        return False, "HTTP 200 without %r: %r" % (expect, body[:80]), response.status
    return True, None, response.status


def poll_host(host, url, config, stop, state, lock, rows, late):
    interval = config["interval"]
    next_at = time.monotonic()
    while not stop.is_set():
        began, at = time.monotonic(), time.time()
        ok, reason, status = request(url, config["timeout"], config["expect"])
        ms = (time.monotonic() - began) * 1000
        with lock:
            state[host] = ok
            down_with = [] if ok else sorted(other for other, up in state.items() if other != host and up is False)
        rows.append([round(at, 4), round(ms, 1), ok, reason, status, down_with])
        next_at += interval
        now = time.monotonic()
        if next_at < now:  # the answer took longer than the interval: go on at once
            late[host] = late.get(host, 0) + int((now - next_at) / interval) + 1
            next_at = now
        stop.wait(next_at - now)


def child_main():
    config = json.loads(sys.stdin.readline())
    realtime = False
    if config["realtime"]:
        try:  # threads made afterwards inherit it
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
            realtime = True
        except (OSError, AttributeError):
            pass
    stop, lock = threading.Event(), threading.Lock()
    state, late = {}, {}
    requests = dict((host, []) for host in config["urls"])
    threads = [threading.Thread(target=poll_host, args=(host, url, config, stop, state, lock, requests[host], late),
                                daemon=True) for host, url in config["urls"].items()]
    started = time.time()
    for thread in threads:
        thread.start()
    sys.stdout.write("polling\n")
    sys.stdout.flush()
    sys.stdin.readline()  # "stop", or EOF when the parent went away
    stop.set()
    for thread in threads:
        thread.join()
    json.dump({"interval": config["interval"], "timeout": config["timeout"], "realtime": realtime,
               "started": started, "stopped": time.time(), "late": late, "requests": requests}, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    child_main()
