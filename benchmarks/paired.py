"""What deploy.py and facts.py share: paired runs in rotating order, medians of per-pair ratios,
a Markdown table, and the import paths of the collection and of the integration-test helpers
(the demo project, the release repository and the app hosts are built by the same code the
tests use: tests/integration/{demo,databases,test_playbooks}.py).

A measurement is a pair (or a group) of sides run one right after the other; the order rotates
every repetition so that a warm cache or a noisy neighbour does not always favour one side.
The claim is the median of the per-pair ratios, never one absolute time.
"""

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests", "integration")
for path in (os.path.join(REPO, ".collections"), TESTS, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from backup import log, run_command  # noqa: E402  (the runner double benchmarks share)


def rotated(names, index):
    """``names`` rotated by ``index``: pair 0 runs a, b; pair 1 b, a; ..."""
    shift = index % len(names)
    return list(names[shift:]) + list(names[:shift])


def run_pairs(sides, repeat, setup=None, label=""):
    """Run every side of ``sides`` ({name: callable(context) -> dict or None}) ``repeat`` times,
    interleaved in rotating order; ``setup(name)`` (untimed) gives each run a fresh context.

    Returns a list of pairs: {name: {"seconds": s, **whatever the side returned}}.
    """
    names = list(sides)
    pairs = []
    for index in range(repeat):
        pair = {}
        for name in rotated(names, index):
            context = setup(name) if setup else None
            started = time.perf_counter()
            extra = sides[name](context) or {}
            seconds = time.perf_counter() - started
            pair[name] = dict(extra, seconds=round(extra.pop("seconds", seconds), 4))
            log("%s pair %d/%d %s: %.3f s" % (label, index + 1, repeat, name, pair[name]["seconds"]))
        pairs.append(pair)
    return pairs


def summary(pairs, ours, baseline, metric="seconds"):
    """Medians of both sides and the median of the per-pair ratios ours/baseline."""
    ratios = [p[ours][metric] / p[baseline][metric] for p in pairs if p[baseline][metric]]
    return {
        "ours": ours, "baseline": baseline, "metric": metric,
        "median_ours": statistics.median(p[ours][metric] for p in pairs),
        "median_baseline": statistics.median(p[baseline][metric] for p in pairs),
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
    }


def verdict(ratio, target, lower_is_better=True):
    if ratio is None:
        return "n/a"
    met = ratio <= target if lower_is_better else ratio >= target
    if met:
        return "met (target %s)" % target
    return "missed by %.0f %% (target %s)" % (abs(ratio / target - 1) * 100, target)


def table(headers, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def machine():
    """What the numbers were measured on."""
    try:
        load = " ".join("%.2f" % v for v in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "django": subprocess.run(
            [sys.executable, "-c", "import django; print(django.get_version())"],
            capture_output=True, text=True, check=False).stdout.strip(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path, data):
    if path:
        with open(path, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        log("raw results written to %s" % path)


__all__ = ["REPO", "TESTS", "log", "run_command", "rotated", "run_pairs", "summary", "verdict",
           "table", "machine", "write_json"]


def rendered(args, render):
    """``--render FILE``: print the tables of a results file and run nothing (True then)."""
    if not args.render:
        return False
    with open(args.render) as handle:
        render(json.load(handle))
    return True


def stop_on_signals():
    """SIGTERM and SIGHUP end a run as Ctrl-C does, so its cleanup (servers, databases) runs."""
    def interrupted(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
