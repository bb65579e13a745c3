"""report.py: the deploy report tells the truth per host, from the modules' results."""
from ansible_collections.dbsafe.django.plugins.module_utils.report import (
    build_report,
    render_markdown,
)

PREFLIGHT = {"revision_before": "aaa", "revision_wanted": "bbb", "plan": [], "code_switch": True}


def window(stopped=None, started=None, steps=()):
    return {"stopped_at": stopped, "started_at": started, "steps": list(steps),
            "left_stopped": False}


def ok(step):
    return {"step": step, "rc": 0, "seconds": 0.1}


MIGRATED = {"changed": True, "msg": "applied 1 step(s)", "applied": [
    {"migration": "books.0006_x", "action": "applying", "ok": True, "seconds": 0.01}],
    "plan": [{"migration": "books.0006_x", "backwards": False}],
    "backup": {"path": "/b/x.zst", "sha256": "f" * 64, "size": 10},
    "downtime": window(100.0, 103.0, [ok("stop"), ok("code"), ok("start")])}


def test_a_fleet_deploy_reports_each_host_and_the_downtime_from_first_stop_to_last_start():
    entries = [
        {"host": "app1", "preflight": PREFLIGHT, "migrate": MIGRATED},
        {"host": "app2", "preflight": PREFLIGHT,
         "down": {"window": window(99.0, None, [ok("stop"), ok("code")])},
         "up": {"window": window(None, 104.5, [ok("start")])}},
    ]

    report = build_report("deploy", entries, finished=105.0)

    assert report["result"] == "succeeded" and report["message"] == "applied 1 step(s)"
    assert report["downtime_seconds"] == 5.5
    app1, app2 = report["hosts"]
    assert app1["service"] == app2["service"] == "stopped, started again"
    assert app1["migrated_here"] and not app2["migrated_here"]
    assert app1["revision_after"] == app2["revision_after"] == "bbb"
    assert app2["downtime_seconds"] == 5.5
    assert report["migrations"][0]["host"] == "app1"
    assert "| app2 | stopped, started again | aaa | bbb |" in render_markdown(report)


def test_a_host_unreachable_before_the_downtime_is_never_stopped_and_fails_the_report():
    entries = [
        {"host": "app1", "preflight": PREFLIGHT, "failure": "app3 could not be taken down"},
        {"host": "app2", "preflight": PREFLIGHT,
         "down": {"window": window(99.0, None, [ok("stop"), ok("code")])},
         "up": {"window": window(None, 99.8, [ok("code_back"), ok("start")])},
         "failure": "app3 could not be taken down"},
        {"host": "app3", "preflight": PREFLIGHT, "down": {"unreachable": True, "msg": "ssh"}},
    ]

    report = build_report("deploy", entries, finished=100.0)

    assert report["result"] == "failed"
    assert report["unreachable"] == ["app3"]
    services = dict((h["host"], h["service"]) for h in report["hosts"])
    assert services == {"app1": "never stopped", "app2": "stopped, started again",
                        "app3": "unreachable"}
    assert report["hosts"][1]["revision_after"] == "aaa"  # the code was put back
    assert report["message"] == "app3 could not be taken down"


def test_a_failed_restore_reports_the_host_left_stopped():
    failed = dict(MIGRATED, failed=True, changed=True, msg="THE RESTORE ALSO FAILED",
                  downtime=dict(window(100.0, None, [ok("stop"), ok("code")]), left_stopped=True))
    report = build_report("deploy", [{"host": "app1", "preflight": PREFLIGHT, "migrate": failed}],
                          finished=101.0)

    assert report["result"] == "failed"
    assert report["hosts"][0]["service"] == "LEFT STOPPED"
    assert report["downtime_seconds"] == "not started"
    assert "THE RESTORE ALSO FAILED" in report["message"]


def test_nothing_to_do_stops_nothing():
    report = build_report("deploy", [{"host": "app1", "preflight": dict(PREFLIGHT, code_switch=False),
                                      "migrate": None}], finished=1.0)

    assert report["result"] == "nothing to do" and report["downtime_seconds"] is None
    assert report["hosts"][0]["service"] == "never stopped"


def test_a_failed_migration_reports_its_plan_by_name():
    failed = dict(MIGRATED, failed=True, restored=True, plan=["books.0006_x", "books.0007_y"],
                  msg="migration books.0007_y failed. The backup was restored")
    report = build_report("deploy", [{"host": "app1", "preflight": PREFLIGHT, "migrate": failed}],
                          finished=104.0)

    assert report["migrations"][0]["plan"] == ["books.0006_x", "books.0007_y"]
    assert report["migrations"][0]["restored"] is True


def test_row_changes_are_in_the_report_and_its_markdown():
    migrated = dict(MIGRATED, row_changes=[
        {"table": "authors_author", "before": 100, "after": 60, "change": -40}])
    report = build_report("deploy", [{"host": "app1", "preflight": PREFLIGHT,
                                      "migrate": migrated}], finished=105.0)

    assert report["migrations"][0]["row_changes"][0]["change"] == -40
    text = render_markdown(report)
    assert "| table | rows before | rows after | change |" in text
    assert "| authors_author | 100 | 60 | -40 |" in text


def test_lock_waits_and_the_lock_holder_are_in_the_report():
    waited = dict(MIGRATED, lock_waits=[
        {"migration": "books.0006_x", "attempt": 1, "error": "canceling statement due to lock timeout",
         "retry_in": 1.2}])
    failed = dict(MIGRATED, changed=False, failed=True, applied=[], msg="gave up waiting",
                  lock_holders="pid 4242 (user shop, application report, idle in transaction since x: SELECT 1)")
    text = render_markdown(build_report("deploy", [
        {"host": "app1", "preflight": PREFLIGHT, "migrate": waited}], finished=105.0))
    assert "- books.0006_x: try 1 ended with canceling statement due to lock timeout; tried again after 1.2 s" in text
    assert "Gave up waiting" not in text
    text = render_markdown(build_report("deploy", [
        {"host": "app1", "preflight": PREFLIGHT, "migrate": failed}], finished=105.0))
    assert "Gave up waiting for a lock held by: pid 4242 (user shop, application report" in text


ONLINE = dict(PREFLIGHT, mode="online", mode_reasons=[])
MIGRATED_ONLINE = dict(MIGRATED, downtime=None)


def test_an_online_deploy_reports_hosts_reloaded_never_stopped_and_the_mode():
    entries = [
        {"host": "app1", "preflight": ONLINE, "migrate": MIGRATED_ONLINE,
         "rollout": {"window": window(steps=[ok("code"), ok("reload")])}},
        {"host": "app2", "preflight": ONLINE,
         "rollout": {"window": window(steps=[ok("code"), ok("reload")])}},
    ]
    report = build_report("deploy", entries, finished=105.0)

    assert report["result"] == "succeeded" and report["mode"] == "online" and report["mode_reasons"] == []
    assert report["downtime_seconds"] is None
    assert [h["service"] for h in report["hosts"]] == ["reloaded, never stopped"] * 2
    assert [h["revision_after"] for h in report["hosts"]] == ["bbb", "bbb"]
    assert "| mode | online: migrated while the application served" in render_markdown(report)


def test_a_rollout_put_back_reports_the_previous_revision_and_a_stop_window_names_its_reasons():
    stop = dict(PREFLIGHT, mode="stop", mode_reasons=["books.0007 Remove field x from book on books_book is data_loss"])
    entries = [
        {"host": "app1", "preflight": ONLINE,
         "rollout": {"window": window(steps=[ok("code"), ok("reload")])},
         "rollout_back": {"window": window(steps=[ok("code_back"), ok("reload")])}},
        {"host": "app2", "preflight": stop, "migrate": MIGRATED},
    ]
    report = build_report("deploy", entries, finished=105.0)

    assert report["hosts"][0]["revision_after"] == "aaa"  # put back
    assert report["mode"] == "online and stop"
    assert report["mode_reasons"] == stop["mode_reasons"]
    assert "the stop window was required by books.0007 Remove field x" in render_markdown(report)


def test_a_deploy_that_only_rolled_code_out_succeeded():
    entries = [{"host": "app1", "preflight": ONLINE,
                "rollout": {"window": window(10.0, 11.0, [ok("stop"), ok("code"), ok("start")])}}]
    report = build_report("deploy", entries, finished=12.0)
    assert report["result"] == "succeeded"
    assert report["hosts"][0]["service"] == "stopped, started again"
    assert report["hosts"][0]["downtime_seconds"] == 1.0


def test_a_failed_online_migrate_reports_what_was_undone_and_the_rows_kept():
    failed = {"failed": True, "changed": True, "online": True, "restored": False,
              "msg": "migration books.0007_x failed: ... undone by Django's reverse operations",
              "plan": ["books.0006_a", "books.0007_x"], "undone": ["books.0007_x (1 of 2 operations)", "books.0006_a"],
              "rows_written_meanwhile": {"books_book": 42}, "backup": {"path": "/b/x", "sha256": "f" * 64, "size": 1}}
    report = build_report("deploy", [{"host": "app1", "preflight": ONLINE, "migrate": failed,
                                      "failure": failed["msg"]}], finished=1.0)
    assert report["result"] == "failed" and report["hosts"][0]["service"] == "never stopped"
    assert report["migrations"][0]["online"] and report["migrations"][0]["undone"] == failed["undone"]
    text = render_markdown(report)
    assert ("Undone by Django's reverse operations (online, the application kept running): "
            "books.0007_x (1 of 2 operations), books.0006_a; rows the application wrote meanwhile, kept: "
            "books_book +42.") in text
