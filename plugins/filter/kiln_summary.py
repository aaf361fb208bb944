# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that turn a pipeline run into the per-architecture run summary (playbooks/pipeline.yml).

Stage results, durations and whether a stage ran in this run come from the build records (docs/build-record.md):
the builder's record (packages, image, vm_image:*, sysext:*, boot_check:*) and the signer's (sign, publish:*).
What no record holds comes from the modules' own results: the transfer (kiln.flatcar.artifact_transfer), the cache
hits (kiln.flatcar.sdk_image, kiln.flatcar.binpkg_cache) and the step that failed.
"""

from __future__ import annotations

import base64
import datetime
import json

from ansible_collections.kiln.flatcar.plugins.plugin_utils._filter_guard import guard_filters

STAGES = ("build", "test", "transfer", "sign", "publish")
# Build-record stages behind each summary stage (names, or prefixes ending in ':').
RECORD_STAGES = {
    "build": ("packages", "image", "vm_image:", "sysext:"),
    "test": ("boot_check:",),
    "sign": ("sign",),
    "publish": ("publish:",),
}
ARTIFACT_ROLES = ("generic_image", "update_image", "kernel")
# The summary stage a failed step belongs to, by the step's action (everything else is the build).
FAILED_ACTION_STAGE = {"boot_check": "test", "artifact_transfer": "transfer"}


def _get(hv, host, name, default=None):
    try:
        value = hv[host][name]
    except Exception:  # pylint: disable=broad-except
        return default
    return default if value is None else value


def _epoch(stamp):
    if not stamp:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(stamp, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()
        except (TypeError, ValueError):
            continue
    return None


def decode_record(slurped):
    """A build record from an ansible.builtin.slurp result (or an already decoded dict); {} when unusable."""
    if not isinstance(slurped, dict):
        return {}
    if "stages" in slurped:
        return slurped
    content = slurped.get("content")
    if not content or slurped.get("failed"):
        return {}
    try:
        data = json.loads(base64.b64decode(content).decode("utf-8"))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _matches(name, patterns):
    return any(name.startswith(p) if p.endswith(":") else name == p for p in patterns)


def record_view(record, started):
    """Every record stage as {status, duration_s, started, ran, message}; ran: started during this run."""
    out = {}
    for name in record.get("stage_order", []) or sorted(record.get("stages", {})):
        st = (record.get("stages") or {}).get(name)
        if not isinstance(st, dict):
            continue
        begun = _epoch(st.get("started"))
        out[name] = {
            "status": st.get("status"),
            "duration_s": st.get("duration_s"),
            "started": st.get("started"),
            "ran": bool(started is not None and begun is not None and begun >= float(started)),
            "message": st.get("message"),
        }
    return out


def summarise(view, patterns):
    """One summary stage from its record stages: failed if any failed, passed when all passed."""
    picked = dict((n, s) for n, s in view.items() if _matches(n, patterns))
    if not picked:
        return None
    statuses = [s["status"] for s in picked.values()]
    failed = [(n, s) for n, s in picked.items() if s["status"] == "failed"]
    result = "failed" if failed else "passed" if all(x == "passed" for x in statuses) else "running"
    ran = any(s["ran"] for s in picked.values())
    durations = [s["duration_s"] for s in picked.values() if s["ran"] and s["duration_s"] is not None]
    entry = {"result": result, "ran": ran, "stages": sorted(picked),
             "duration_s": round(sum(durations), 1) if durations else None}
    if failed:
        entry["message"] = "%s: %s" % (failed[0][0], failed[0][1].get("message") or "failed")
    return entry


def _failed_stage(failure):
    action = str((failure or {}).get("action") or "")
    for suffix, stage in FAILED_ACTION_STAGE.items():
        if action == suffix or action.endswith("." + suffix):
            return stage
    return "build"


def kiln_summary_rows(rows, hostvars, signer_records=None, started=None, released=None):
    signer = {}
    for res in signer_records or []:
        item = res.get("item") if isinstance(res, dict) else None
        board = item.get("key") if isinstance(item, dict) else item
        if board:
            signer[board] = decode_record(res)
    released = list(released or [])
    out = []
    for row in sorted(rows, key=lambda r: r.get("board", "")):
        row = dict(row)
        host = row.get("host")
        board = row.get("board")
        ok = bool(row.get("ok"))
        builder_view = record_view(decode_record(_get(hostvars, host, "kiln_build_record", {})), started)
        signer_view = record_view(signer.get(board, {}), started) if ok else {}
        stages = {}
        for name in ("build", "test"):
            entry = summarise(builder_view, RECORD_STAGES[name])
            if entry:
                stages[name] = entry
        transfer = _get(hostvars, host, "kiln_transfer", {}) or {}
        if ok:
            stages["transfer"] = {"result": "passed", "ran": bool(transfer.get("changed")),
                                  "bytes": transfer.get("bytes_sent", 0), "duration_s": transfer.get("duration_s")}
        failure = _get(hostvars, host, "kiln_build_failure")
        if failure:
            where = _failed_stage(failure)
            entry = stages.get(where) or {}
            if entry.get("result") != "failed":
                entry = dict(entry, result="failed")
                entry["message"] = failure.get("msg") or "failed"
            entry["task"] = failure.get("task", "")
            stages[where] = entry
        if row.get("lost"):
            lost = next((n for n in ("build", "test", "transfer") if (stages.get(n) or {}).get("result") != "passed"), "build")
            stages[lost] = dict(stages.get(lost) or {}, result="host lost (unreachable)")
        if ok:
            stages["sign"] = summarise(signer_view, RECORD_STAGES["sign"]) or {"result": "not run"}
        published = bool(ok and board in released and (summarise(signer_view, RECORD_STAGES["publish"]) or {}).get("result") == "passed")
        if published:
            stages["publish"] = summarise(signer_view, RECORD_STAGES["publish"])
        elif ok and board not in released:
            stages["publish"] = {"result": "held back by the gate"}
        else:
            stages["publish"] = (summarise(signer_view, RECORD_STAGES["publish"]) if ok else None) or {"result": "not run"}
        row["stages"] = dict((k, dict(v)) for k, v in stages.items())
        row["record_stages"] = dict(builder_view, **signer_view)
        row["cache_hits"] = {
            "sdk_image": (_get(hostvars, host, "build_sdk", {}) or {}).get("source", "n/a"),
            "binpkgs": bool((_get(hostvars, host, "build_binpkg_pull", {}) or {}).get("hit", False)),
            "binpkgs_pushed": bool((_get(hostvars, host, "build_binpkg_push", {}) or {}).get("changed", False)),
        } if _get(hostvars, host, "build_sdk") is not None else {}
        image = (decode_record(_get(hostvars, host, "kiln_build_record", {})).get("stages") or {}).get("image") or {}
        row["artifacts"] = [{"path": a.get("path"), "sha256": a.get("sha256"), "size": a.get("size")}
                            for a in image.get("outputs", []) if a.get("role") in ARTIFACT_ROLES]
        row["result"] = ("published" if published else "passed" if ok
                         else "host lost" if row.get("lost") else "failed")
        out.append(row)
    return out


def kiln_summary_markdown(summary):
    lines = ["# kiln pipeline run %s" % summary.get("run_id"), "",
             "Started %s, took %ss. Gate: passed %s, missing %s, released %s%s." % (
                 summary.get("started"), summary.get("duration_s"), ", ".join(summary["gate"]["passed"]) or "none",
                 ", ".join(summary["gate"]["missing"]) or "none", ", ".join(summary["gate"]["released"]) or "nothing",
                 " (partial releases allowed)" if summary.get("allow_partial_release") else ""), "",
             "| arch | host | version | result | " + " | ".join(STAGES) + " | SDK image | binpkgs |",
             "|---|---|---|---|" + "---|" * len(STAGES) + "---|---|"]
    for row in summary.get("architectures", []):
        cells = []
        for name in STAGES:
            st = row["stages"].get(name)
            if not st:
                cells.append("-")
                continue
            text = st.get("result", "?")
            if st.get("result") == "passed" and st.get("ran") is False:
                text = "passed (skipped, current)"
            elif st.get("duration_s") is not None:
                text += " %ss" % st["duration_s"]
            cells.append(text)
        hits = row.get("cache_hits", {})
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            row.get("board"), row.get("host"), row.get("version") or "-", row.get("result"), " | ".join(cells),
            hits.get("sdk_image", "-"),
            ("hit" if hits.get("binpkgs") else "miss") + (", pushed" if hits.get("binpkgs_pushed") else "") if hits else "-"))
    lines += ["", "## Artifact digests", ""]
    for row in summary.get("architectures", []):
        for art in row.get("artifacts", []):
            lines.append("- `%s` sha256 `%s` (%s bytes)" % (art["path"], art["sha256"], art["size"]))
    for row in summary.get("architectures", []):
        for name, st in row["stages"].items():
            if st.get("message"):
                lines.append("- %s %s failed: %s" % (row.get("board"), name, st["message"]))
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return guard_filters({"kiln_summary_rows": kiln_summary_rows, "kiln_summary_markdown": kiln_summary_markdown})
