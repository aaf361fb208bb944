# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that turn a pipeline run's facts into the per-architecture run summary (playbooks/pipeline.yml)."""

from __future__ import annotations


STAGES = ("build", "test", "transfer", "sign", "publish")


def _get(hv, host, name, default=None):
    try:
        value = hv[host][name]
    except Exception:  # pylint: disable=broad-except
        return default
    return default if value is None else value


def kiln_summary_rows(rows, hostvars, signer):
    out = []
    sign = _get(hostvars, signer, "kiln_sign_outcome", {}) or {}
    publish = _get(hostvars, signer, "kiln_publish_outcome", {}) or {}
    for row in sorted(rows, key=lambda r: r.get("board", "")):
        row = dict(row)
        host = row.get("host")
        stages = dict(_get(hostvars, host, "kiln_stages", {}) or {})
        if row.get("lost"):
            stages.setdefault(row.get("reached_stage") or "build", {"result": "host lost (unreachable)"})
        board = row.get("board")
        if board in sign:
            stages["sign"] = {"result": "passed", "ran": bool(sign[board])}
        elif row.get("ok"):
            stages["sign"] = {"result": "not run"}
        if board in publish:
            stages["publish"] = {"result": "passed", "ran": bool(publish[board])}
        else:
            stages["publish"] = {"result": "held back by the gate" if row.get("ok") else "not run"}
        row["stages"] = dict((k, dict(v)) for k, v in stages.items())
        row["cache_hits"] = dict(_get(hostvars, host, "kiln_cache_hits", {}) or {})
        row["artifacts"] = [{"path": a.get("path"), "sha256": a.get("sha256"), "size": a.get("size")}
                            for a in (_get(hostvars, host, "kiln_artifacts", []) or [])]
        row["result"] = ("published" if board in publish else "passed" if row.get("ok")
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
            if st.get("duration_s") is not None:
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
        return {"kiln_summary_rows": kiln_summary_rows, "kiln_summary_markdown": kiln_summary_markdown}
