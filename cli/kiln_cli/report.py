"""kiln report RUN: the report of one `kiln` run as HTML (one self-contained file), Markdown or JSON, from its run
directory (kiln_cli.report_model gathers the facts; all three formats hold the same ones)."""

from __future__ import annotations

import json
import os
import sys

from kiln_cli import report_model
from kiln_cli.run import runs_dir


def find_run(run, state_dir=None):
    """A run id under the runs directory, ``latest``, or a run directory path."""
    root = runs_dir(state_dir)
    if run == "latest":
        ids = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "run.json"))) if os.path.isdir(root) else []
        if not ids:
            raise SystemExit("kiln report: no runs under %s yet" % root)
        run = ids[-1]
    path = run if os.path.isdir(run) else os.path.join(root, os.path.basename(run))
    if not os.path.isfile(os.path.join(path, "run.json")):
        raise SystemExit("kiln report: no run %r (runs are under %s; use an id from `ls %s` or latest)" % (run, root, root))
    return os.path.abspath(path)


def md(value):
    """One Markdown-inert line: no table breaks, no raw HTML, no links or code spans from the value."""
    text = " ".join(("" if value is None else str(value)).split())
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("`", "\\`"), ("[", "\\["), ("]", "\\]")):
        text = text.replace(a, b)
    return text


def _md_arch(a, base, previous):
    g = a["gate"]
    lines = ["", "## %s — %s — %s" % (md(a["board"]), md(a["version"]), md(a["result"])), "",
             "Gate: **%s**%s" % (md(g["verdict"]), (" — " + md(g["detail"])) if g["detail"] else "")]
    lines += ["- %s: %s%s" % (md(b["stage"]), md(b["verdict"]), " in %ss" % md(b["boot_time_s"]) if b["boot_time_s"] is not None else "")
              for b in g["boot_checks"]]
    lines += ["", "| stage | status | start (s) | end (s) | seconds | ran because | message |", "|---|---|---|---|---|---|---|"]
    lines += ["| %s | %s | %s | %s | %s | %s | %s |" % (
        md(s["name"]), md(s["status"]), md(s["start_s"]), md(s["end_s"]), md(s["duration_s"]),
        md(s["reason"] if s["ran"] else "reused (current)"), md(s["message"])) for s in a["stages"]]
    hits = a["cache_hits"]
    lines += ["", "Cache hits: SDK image %s, binary packages %s; stages reused: %s" % (
        md(hits.get("sdk_image", "n/a")), "hit" if hits.get("binpkgs") else "miss" if "binpkgs" in hits else "n/a",
        md(", ".join(hits["stages_reused"])) or "none")]
    lines += ["- rebuilt %s: %s" % (md(r["stage"]), md(r["reason"])) for r in a["rebuilt"]]
    pkg = a.get("packages") or {}
    from kiln_cli.report_html import href, package_notes
    for key, label in (("built_from_source", "Built from source"), ("binary", "From binary packages")):
        if pkg.get(key):
            lines.append("- %s (%d): %s" % (label, len(pkg[key]), md(", ".join(package_notes(pkg, key)))))
    if pkg.get("usepkg_exclude"):
        lines.append("- kept out of binary packages: %s" % md(", ".join(pkg["usepkg_exclude"])))
    lines += ["", "| artifact | role | bytes | sha256 | signatures |", "|---|---|---|---|---|"]
    lines += ["| %s | %s | %s | %s | %s |" % (md(x["path"]), md(x["role"]), md(x["size"]), md(x["sha256"]),
                                              md(", ".join(os.path.basename(s) for s in x["signatures"])) or "none") for x in a["artifacts"]]
    sig = a.get("signature")
    if sig:
        lines += ["", "Signed by %s (signing key %s)" % (md(sig["signer_fingerprint"]), md(sig["signing_key_fingerprint"]))]
    rel = a.get("release") or {}
    released = ["- update payload %s, %s bytes, sha256 %s" % (md(p.get("name")), md(p.get("size")), md(p.get("sha256")))
                for p in rel.get("payloads") or [] if isinstance(p, dict)]
    released += ["- %s: %s" % (k, md(rel[k])) for k in ("update_url", "update_path", "nebraska_package_id") if rel.get(k)]
    lines += (["", "Release:"] + released) if released else []
    lines += ["", "Logs:"] + ["- [%s](%s)" % (md(x["label"]), href(x["path"], base)) for x in a["logs"]]
    lines += ["- %s log on %s: %s" % (md(s["name"]), md(s["host"]), md(s["log_path"])) for s in a["stages"] if s["log_path"]]
    d = a["diff"]
    if not d:
        lines += ["", "Diff: no previous run to compare with"]
    elif d["basis"] == "none":
        lines += ["", "Diff against %s: %s" % (md(previous["run_id"]), md(d["note"]))]
    else:
        lines += ["", "Diff against %s (%s): version %s → %s, %d unchanged" % (
            md(previous["run_id"]), d["basis"], md(d["version"]["from"]), md(d["version"]["to"]), d["unchanged"])]
        lines += ["- added %s %s" % (md(k), md(v)) for k, v in d["added"].items()]
        lines += ["- removed %s %s" % (md(k), md(v)) for k, v in d["removed"].items()]
        lines += ["- changed %s %s → %s" % (md(c["name"]), md(c["from"]), md(c["to"])) for c in d["changed"]]
    return lines


def markdown(model, base):
    lines = ["# kiln %s — run %s" % (md(model["command"]), md(model["run_id"])), "",
             "- playbook: %s, inventory: %s" % (md(model["playbook"]), md(model["inventory"])),
             "- started %s, %s s, exit code %s (%s): %s" % (
                 md(model["started"]), md(model["duration_s"]), md(model["exit_code"]), md(model["status"]), md(model["result"]))]
    gate = model.get("gate")
    if gate:
        lines.append("- gate: passed %s; missing %s; released %s" % tuple(
            md(", ".join(gate.get(k) or [])) or "none" for k in ("passed", "missing", "released")))
    if model["previous"]:
        lines.append("- previous run: %s" % md(model["previous"]["run_id"]))
    lines += ["", "| host | time on host (s) |", "|---|---|"]
    lines += ["| %s | %s |" % (md(h), md(d)) for h, d in sorted(model["hosts"].items())]
    if model["failures"]:
        lines += ["", "## Failures", ""] + ["- **%s** %s: %s" % (md(f.get("host")), md(f.get("task")), md(f.get("msg"))) for f in model["failures"]]
    lines += ["- public key %s sha256 %s %s" % (md(k.get("name")), md(k.get("sha256")), md(k.get("url") or k.get("path"))) for k in model["keys"]]
    for a in model["architectures"]:
        lines += _md_arch(a, base, model["previous"])
    return "\n".join(lines) + "\n"


def render(model, fmt, base):
    if fmt == "json":
        return json.dumps(model, indent=2, sort_keys=True) + "\n"
    if fmt == "html":
        from kiln_cli.report_html import render as html
        return html(model, base)
    return markdown(model, base)


def run_report(run, fmt="md", state_dir=None, out=None, output=None, previous=None):
    """Write the report of ``run``: to ``output``, else HTML to <run dir>/report.html and the others to ``out``.
    Links are relative to the file's directory (to the run directory on standard output)."""
    out = out or sys.stdout
    path = find_run(run, state_dir)
    prev = find_run(previous, state_dir) if previous else None
    if prev == path:
        raise SystemExit("kiln report: --previous is the run itself")
    model = report_model.build(path, prev)
    if fmt == "html" and not output:
        output = os.path.join(path, "report.html")
    if output in (None, "-"):
        out.write(render(model, fmt, path))
        return 0
    output = os.path.abspath(output)
    text = render(model, fmt, os.path.dirname(output))
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, output)
    out.write("%s\n" % output)
    return 0
