"""kiln status: the newest build records on the fleet, per host, board, version and stage (read-only)."""

from __future__ import annotations

import base64
import json
import shlex
import sys

READ_TASK = "Read the newest build records"


def collect(events):
    """Build records from the status playbook's events: [(host, path, record)]."""
    found = []
    for event in events:
        data = event.get("event_data") or {}
        if event.get("event") != "runner_on_ok" or data.get("task") != READ_TASK:
            continue
        for item in (data.get("res") or {}).get("results") or []:
            try:
                record = json.loads(base64.b64decode(item.get("content") or ""))
            except (ValueError, TypeError):
                record = {"error": "unreadable record"}
            found.append((data.get("host"), item.get("source") or item.get("item"), record))
    return found


def rows(found):
    """One row per stage, in the order the stages first ran."""
    out = []
    for host, path, record in found:
        if not isinstance(record, dict) or "stages" not in record:
            out.append({"host": host, "record": path, "stage": None, "status": "unreadable"})
            continue
        version = record.get("version") or {}
        stages = record.get("stages") or {}
        for name in record.get("stage_order") or sorted(stages):
            st = stages.get(name) or {}
            out.append({"host": host, "record": path, "board": record.get("board"),
                        "version": version.get("FLATCAR_VERSION") if isinstance(version, dict) else version,
                        "stage": name, "status": st.get("status"), "duration_s": st.get("duration_s"),
                        "started": st.get("started"), "finished": st.get("finished"), "message": st.get("message")})
    return out


def render(table, out=sys.stdout):
    last = None
    for row in table:
        key = (row["host"], row.get("board"), row.get("version"))
        if key != last:
            out.write("%s  %s  %s\n" % (row["host"], row.get("board") or "?", row.get("version") or row["record"]))
            last = key
        if row["stage"] is None:
            out.write("    (unreadable record %s)\n" % row["record"])
            continue
        dur = "%.1fs" % row["duration_s"] if isinstance(row.get("duration_s"), (int, float)) else "-"
        note = (": " + row["message"]) if row.get("status") == "failed" and row.get("message") else ""
        note = " since %s" % row["started"] if row.get("status") == "running" else note
        out.write("    %-22s %-8s %8s%s\n" % (row["stage"], row["status"], dur, note))


def run_status(inventory, ansible_args, output, out=sys.stdout):
    import ansible_runner

    events = []
    result = ansible_runner.run(playbook="kiln.flatcar.status", inventory=inventory, quiet=True,
                                cmdline=" ".join(shlex.quote(a) for a in ansible_args) or None, event_handler=lambda e: events.append(e) or False,
                                envvars={"ANSIBLE_NOCOLOR": "1"})
    table = rows(collect(events))
    failed = [e for e in events if e.get("event") in ("runner_on_failed", "runner_on_unreachable")]
    if output == "json":
        out.write(json.dumps({"rc": result.rc, "stages": table,
                              "unreachable_or_failed": sorted({(e.get("event_data") or {}).get("host") for e in failed})}) + "\n")
    else:
        render(table, out)
        for e in failed:
            data = e.get("event_data") or {}
            out.write("could not read %s: %s\n" % (data.get("host"), " ".join(str((data.get("res") or {}).get("msg", "")).split())))
    return 0 if result.rc == 0 else 1
