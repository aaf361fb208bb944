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
import hashlib
import json

from ansible_collections.kiln.flatcar.plugins.plugin_utils._filter_guard import guard_filters

STAGES = ("build", "test", "transfer", "sign", "publish")
# Build-record stages behind each summary stage (names, or prefixes ending in ':').
RECORD_STAGES = {
    "build": ("packages", "image", "vm_image:", "sysext:"),
    "test": ("boot_check:",),
    "sign": ("payload", "sign"),
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


def _by_board(results):
    """{board: result} from the results of a loop over boards or over publish results (item.board or item)."""
    out = {}
    for res in results or []:
        if not isinstance(res, dict) or res.get("skipped") or res.get("failed"):
            continue
        item = res.get("item")
        board = item.get("board") if isinstance(item, dict) else item
        if isinstance(board, str):
            out[board] = res
    return out


def release_view(record, published=None, nebraska=None):
    """What a client needs of one released architecture: the update payloads (from the record's payload stage), the
    payload directory's URL (publish) and the Nebraska package id."""
    stage = (record.get("stages") or {}).get("payload") or {}
    details = stage.get("details") if isinstance(stage.get("details"), dict) else {}
    payloads = [{"name": pl.get("name"), "size": pl.get("size"), "sha256": pl.get("sha256_hex"),
                 "sha1_base64": pl.get("sha1_base64")}
                for pl in details.get("payloads") or [] if isinstance(pl, dict)] if stage.get("status") == "passed" else []
    out = {"payloads": payloads, "payload_key_ids": list(details.get("public_keys") or []) if payloads else []}
    if published:
        out["update_path"] = published.get("update_path")
        out["update_url"] = published.get("update_url")
    if nebraska:
        out["nebraska_package_id"] = nebraska.get("package_id")
        out["nebraska_created"] = bool(nebraska.get("created"))
    return out


def kiln_summary_keys(slurped, keys_dir=None, public_url=None):
    """The public keys served on the mirror (C(ansible.builtin.slurp) results of a loop over name -> source items):
    name, sha256 of the served file, path and URL."""
    out = []
    for res in slurped or []:
        if not isinstance(res, dict) or not res.get("content"):
            continue
        item = res.get("item") if isinstance(res.get("item"), dict) else {}
        name = item.get("key") or item.get("name")
        data = base64.b64decode(res["content"])
        entry = {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        if keys_dir:
            entry["path"] = "%s/%s" % (str(keys_dir).rstrip("/"), name)
        if public_url:
            entry["url"] = "%s/keys/%s" % (str(public_url).rstrip("/"), name)
        out.append(entry)
    return sorted(out, key=lambda e: str(e["name"]))


def kiln_summary_rows(rows, hostvars, signer_records=None, started=None, released=None, published=None, nebraska=None):
    published_result, nebraska = _by_board(published), _by_board(nebraska)
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
        is_published = bool(ok and board in released and (summarise(signer_view, RECORD_STAGES["publish"]) or {}).get("result") == "passed")
        if is_published:
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
        if ok:
            row["release"] = release_view(signer.get(board, {}), published_result.get(board) if is_published else None,
                                          nebraska.get(board) if is_published else None)
        row["result"] = ("published" if is_published else "passed" if ok
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
    lines += _release_markdown(summary)
    for row in summary.get("architectures", []):
        for name, st in row["stages"].items():
            if st.get("message"):
                lines.append("- %s %s failed: %s" % (row.get("board"), name, st["message"]))
    return "\n".join(lines) + "\n"


def _release_markdown(summary):
    """Update payloads, Nebraska packages and the public keys on the mirror (only when there are any)."""
    lines = []
    for row in summary.get("architectures", []):
        rel = row.get("release") or {}
        for pl in rel.get("payloads", []):
            where = rel.get("update_url") or rel.get("update_path")
            lines.append("- %s `%s` sha256 `%s` (%s bytes)%s" % (
                row.get("board"), pl["name"], pl["sha256"], pl["size"], " at %s" % where if where else ""))
        if rel.get("payloads") and rel.get("payload_key_ids"):
            lines.append("- %s payload signed with update key id %s" % (row.get("board"), ", ".join(rel["payload_key_ids"])))
        if rel.get("nebraska_package_id"):
            lines.append("- %s Nebraska package `%s` (%s)" % (
                row.get("board"), rel["nebraska_package_id"], "registered now" if rel.get("nebraska_created") else "already registered"))
    for key in summary.get("keys") or []:
        lines.append("- key `%s` sha256 `%s` at %s" % (key.get("name"), key.get("sha256"), key.get("url") or key.get("path")))
    return ["", "## Release (update payloads, Nebraska, keys)", ""] + lines if lines else []


class FilterModule:
    def filters(self):
        return guard_filters({"kiln_summary_rows": kiln_summary_rows, "kiln_summary_markdown": kiln_summary_markdown,
                              "kiln_summary_keys": kiln_summary_keys})
