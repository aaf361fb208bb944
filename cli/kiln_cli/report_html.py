"""The run report as ONE self-contained HTML file: inline CSS and SVG, no script, no external URL (a
Content-Security-Policy forbids fetching anything), every value escaped. Links are relative file links."""

from __future__ import annotations

import html
import os
from urllib.parse import quote

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "running": "#f9a825", "reused": "#9e9e9e"}
CSS = """
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:16px 24px;color:#212121;background:#fff;font-size:14px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:24px 0 6px;border-bottom:1px solid #ccc}h3{font-size:15px;margin:14px 0 4px}
table{border-collapse:collapse;margin:4px 0 8px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}code,.mono{font-family:'DejaVu Sans Mono',monospace;font-size:12px;word-break:break-all}
.passed,.released,.ok{color:#2e7d32}.failed,.refused,.missing{color:#c62828;font-weight:bold}.held{color:#ef6c00}
.muted{color:#757575}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
svg.timeline{display:block;margin:2px 0 10px}ul{margin:2px 0 8px}
"""


def e(value):
    return html.escape("" if value is None else str(value), quote=True)


def href(path, base):
    """A relative file link from ``base`` (a directory) to ``path``: percent-encoded, so never a scheme or ``//``."""
    rel = os.path.relpath(path, base) if os.path.isabs(path) else path
    return quote(os.path.normpath(rel).replace(os.sep, "/").lstrip("/"), safe="/._-~")


def _colour(stage):
    return COLOURS["reused"] if not stage["ran"] else COLOURS.get(stage["status"], COLOURS["running"])


def timeline(arch, total, width=1000, label_w=190, row_h=22):
    """An SVG timeline of the architecture's stages on a shared time axis of ``total`` seconds."""
    stages = arch["stages"]
    plot = width - label_w - 20
    height = 28 + row_h * max(1, len(stages))
    scale = plot / total if total else 0
    parts = ['<svg class="timeline" width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
             'aria-label="%s timeline">' % (width, height, width, height, e(arch["board"]))]
    parts.append('<rect x="0" y="0" width="%d" height="%d" fill="#fafafa"/>' % (width, height))
    for i in range(6):
        x = label_w + plot * i / 5
        parts.append('<line x1="%.1f" y1="14" x2="%.1f" y2="%d" stroke="#e0e0e0"/>' % (x, x, height))
        parts.append('<text x="%.1f" y="11" font-size="10" text-anchor="middle" fill="#616161">%s s</text>' % (x, e(round(total * i / 5, 1))))
    for n, st in enumerate(stages):
        y = 18 + n * row_h
        parts.append('<text x="4" y="%d" font-size="12" fill="#212121">%s</text>' % (y + 13, e(st["name"][:28])))
        if st["start_s"] is not None:
            x, w = label_w + st["start_s"] * scale, max(3.0, ((st["end_s"] if st["end_s"] is not None else total) - st["start_s"]) * scale)
            tip = "%s %s %ss" % (st["name"], st["status"], st["duration_s"])
        else:
            x, w, tip = label_w, 10.0, "%s reused from an earlier run (%s)" % (st["name"], st["status"])
        parts.append('<rect class="bar %s" data-stage="%s" x="%.1f" y="%d" width="%.1f" height="%d" rx="2" fill="%s"><title>%s</title></rect>'
                     % (e(st["status"] if st["ran"] else "reused"), e(st["name"]), x, y + 2, w, row_h - 6, _colour(st), e(tip)))
        note = ("%ss" % st["duration_s"]) if st["ran"] and st["duration_s"] is not None else ("" if st["ran"] else "reused")
        right = x + w + 4 <= width - 48  # the label after the bar, or before it at the right edge
        parts.append('<text x="%.1f" y="%d" font-size="10" fill="#424242" text-anchor="%s">%s</text>'
                     % (x + w + 4 if right else x - 4, y + 13, "start" if right else "end", e(note)))
    parts.append("</svg>")
    return "".join(parts)


def _table(head, rows):
    out = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % e(h) for h in head)]
    out += ["<tr>%s</tr>" % "".join("<td>%s</td>" % c for c in row) for row in rows]
    return "".join(out) + "</table>"


def _section_stages(a):
    rows = [[e(s["name"]), '<span class="%s">%s</span>' % (e(s["status"]), e(s["status"])), e(s["started"]), e(s["duration_s"]),
             e(s["reason"] if s["ran"] else "reused (current)"), e(s["host"]), e(s["message"])] for s in a["stages"]]
    return "<h3>Stages</h3>" + _table(["stage", "status", "started", "seconds", "ran because", "host", "message"], rows)


def _section_builds(a):
    hits = a["cache_hits"]
    out = ["<h3>Cache hits and rebuilds</h3><ul>"]
    if "sdk_image" in hits:
        out.append("<li>SDK image: %s; binary packages: %s%s</li>" % (e(hits.get("sdk_image")), "hit" if hits.get("binpkgs") else "miss",
                                                                      ", pushed to the cache" if hits.get("binpkgs_pushed") else ""))
    out.append("<li>stages reused (current): %s</li>" % (e(", ".join(hits["stages_reused"])) or "none"))
    out += ["<li>rebuilt <b>%s</b>: %s</li>" % (e(r["stage"]), e(r["reason"])) for r in a["rebuilt"]]
    out.append("</ul>")
    pkg = a.get("packages")
    if pkg:
        for key, label in (("built_from_source", "Built from source"), ("binary", "From binary packages")):
            if pkg[key]:
                out.append("<p><b>%s (%d):</b> <span class=\"mono\">%s</span></p>" % (label, len(pkg[key]), e(", ".join(package_notes(pkg, key)))))
        if pkg.get("usepkg_exclude"):
            out.append("<p>kept out of binary packages: <span class=\"mono\">%s</span></p>" % e(", ".join(pkg["usepkg_exclude"])))
    return "".join(out)


def package_notes(pkg, key):
    """Package strings, each built from source with the reason the packages stage gives (mod, excluded, dependency)."""
    notes = pkg.get("rebuilt") or {} if key == "built_from_source" else {}
    return ["%s (%s)" % (p, notes[p]) if p in notes else p for p in pkg[key]]


def _section_release(a):
    rel = a.get("release") or {}
    items = ["<li>update payload <code>%s</code>, %s bytes, sha256 <code>%s</code></li>" % (e(p.get("name")), e(p.get("size")), e(p.get("sha256")))
             for p in rel.get("payloads") or [] if isinstance(p, dict)]
    items += ["<li>%s: <code>%s</code></li>" % (e(k), e(rel[k])) for k in ("update_url", "update_path", "nebraska_package_id") if rel.get(k)]
    return "<h3>Release</h3><ul>%s</ul>" % "".join(items) if items else ""


def _section_gate(a):
    g = a["gate"]
    cls = "released" if g["verdict"] == "released" else "held" if g["verdict"].startswith("held") else "refused"
    out = ['<h3>Gate</h3><p>verdict: <span class="%s">%s</span>%s</p>' % (cls, e(g["verdict"]), (" &mdash; " + e(g["detail"])) if g["detail"] else "")]
    if g["boot_checks"]:
        out.append("<ul>%s</ul>" % "".join(
            "<li>%s: %s%s</li>" % (e(b["stage"]), e(b["verdict"]), (" in %ss" % e(b["boot_time_s"])) if b["boot_time_s"] is not None else "")
            for b in g["boot_checks"]))
    if g["problems"]:
        out.append("<p>gate problems: %s</p>" % e("; ".join(g["problems"])))
    return "".join(out)


def _section_artifacts(a):
    rows = [["<code>%s</code>" % e(x["path"]), e(x["role"]), e(x["size"]), "<code>%s</code>" % e(x["sha256"]),
             e(", ".join(os.path.basename(s) for s in x["signatures"])) or '<span class="muted">none</span>'] for x in a["artifacts"]]
    out = ["<h3>Artifacts</h3>", _table(["path", "role", "bytes", "sha256", "signatures"], rows) if rows else "<p class=\"muted\">none recorded</p>"]
    sig = a.get("signature")
    if sig:
        out.append("<p>signed by <code>%s</code> (signing key <code>%s</code>, expires %s)</p>"
                   % (e(sig["signer_fingerprint"]), e(sig["signing_key_fingerprint"]), e(sig["key_expires"] or "never")))
    return "".join(out)


def _section_logs(a, base):
    items = ['<li><a href="%s">%s</a></li>' % (e(href(x["path"], base)), e(x["label"])) for x in a["logs"]]
    items += ["<li>%s log on %s: <code>%s</code></li>" % (e(s["name"]), e(s["host"]), e(s["log_path"])) for s in a["stages"] if s["log_path"]]
    return "<h3>Logs</h3><ul>%s</ul>" % "".join(items)


def _section_diff(a, previous):
    d = a["diff"]
    if not d:
        return "<h3>Diff</h3><p class=\"muted\">no previous run to compare with</p>"
    if d["basis"] == "none":
        return "<h3>Diff against %s</h3><p class=\"muted\">%s</p>" % (e(previous["run_id"]), e(d["note"]))
    what = "packages" if d["basis"] == "packages" else "artifact digests"
    out = ["<h3>Diff against %s (%s)</h3><p>version %s &rarr; %s; %d unchanged</p>"
           % (e(previous["run_id"]), what, e(d["version"]["from"]), e(d["version"]["to"]), d["unchanged"])]
    rows = [["added", "<code>%s</code>" % e(k), "", "<code>%s</code>" % e(v)] for k, v in d["added"].items()]
    rows += [["removed", "<code>%s</code>" % e(k), "<code>%s</code>" % e(v), ""] for k, v in d["removed"].items()]
    rows += [["changed", "<code>%s</code>" % e(c["name"]), "<code>%s</code>" % e(c["from"]), "<code>%s</code>" % e(c["to"])] for c in d["changed"]]
    out.append(_table(["", "name", "before", "now"], rows) if rows else "<p>no differences</p>")
    return "".join(out)


def render(model, base):
    """The HTML document; ``base``: the directory the file will be in (for the relative links)."""
    title = "kiln %s — run %s" % (model["command"], model["run_id"])
    ends = [s["end_s"] for a in model["architectures"] for s in a["stages"] if s["end_s"] is not None]
    total = max(ends + [1.0])
    gate = model.get("gate") or {}
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="%s">' % e(CSP),
           '<meta name="referrer" content="no-referrer"><title>%s</title><style>%s</style></head><body>' % (e(title), CSS),
           "<h1>%s</h1>" % e(title),
           '<p>playbook <code>%s</code>, started %s, %ss, exit code %s: <span class="%s">%s</span></p>'
           % (e(model["playbook"]), e(model["started"]), e(model["duration_s"]), e(model["exit_code"]),
              "ok" if model["exit_code"] == 0 else "failed", e(model["result"]))]
    if gate:
        out.append("<p>gate: passed %s; missing %s; released %s</p>" % tuple(
            e(", ".join(gate.get(k) or []) or "none") for k in ("passed", "missing", "released")))
    if model.get("keys"):
        out.append("<p>public keys on the mirror:</p><ul>%s</ul>" % "".join(
            "<li>%s sha256 <code>%s</code> <code>%s</code></li>" % (e(k.get("name")), e(k.get("sha256")), e(k.get("url") or k.get("path")))
            for k in model["keys"]))
    if model["architectures"]:
        out.append('<h2>Timeline</h2><p class="legend">%s</p>' % "".join('<span style="background:%s"></span>%s' % (c, n) for n, c in COLOURS.items()))
        out += ["<h3>%s</h3>%s" % (e(a["board"]), timeline(a, total)) for a in model["architectures"]]
    if model["failures"]:
        out.append("<h2>Failures</h2><ul>%s</ul>" % "".join(
            "<li><b>%s</b> %s: %s</li>" % (e(f.get("host")), e(f.get("task")), e(f.get("msg"))) for f in model["failures"]))
    for a in model["architectures"]:
        verdict = (str(a["result"] or "unknown").split() or ["unknown"])[0]
        out.append('<h2>%s &mdash; %s &mdash; <span class="%s">%s</span></h2>' % (e(a["board"]), e(a["version"]), e(verdict), e(a["result"])))
        out += [_section_gate(a), _section_stages(a), _section_builds(a), _section_artifacts(a), _section_release(a),
                _section_logs(a, base),
                _section_diff(a, model["previous"])]
    out.append("<h2>Hosts</h2>" + _table(["host", "time on host (s)"], [[e(h), e(d)] for h, d in sorted(model["hosts"].items())]))
    out.append('<p class="muted">kiln run report %s, run directory <code>%s</code></p></body></html>' % (e(model["report_version"]), e(model["run_dir"])))
    return "\n".join(out) + "\n"
