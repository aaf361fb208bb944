"""The facts of one `kiln` run, for every report format (HTML, Markdown, JSON): built from the run directory.

Sources, all inside the run directory:

* ``run.json`` (written by kiln_cli.run): command, exit code, per-host durations, failures, and per stage module
  result whether it ran and why (``stages``: input digest changed, output missing, forced...);
* ``summary/summary.json`` (the pipeline's summary, kiln_summary_dir): gate, per architecture results, cache hits;
* ``records/<board>.json``: the build records of the run. kiln_cli.run saves them there after the run from the
  runner's job events (the pipeline slurps the builders' and the signer's records) or from the build root when it
  is on this machine; ``records/<board>.packages.txt`` the image's package list when it could be read.

A ``--previous`` run (or the previous run of the same command) gives the diff: package names and versions from the
image package lists, or artifact digests when a list is missing.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
from datetime import datetime, timezone

RECORD_KIND = "kiln.flatcar/build-record"
PACKAGE_LIST = "flatcar_production_image_packages.txt"
RESULTS = ("ok", "failed", "gate refused", "partial release")
_BOARD = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# build_library/build_image_util.sh write_packages: "sys-apps/systemd-212-r8::coreos", one a line, sorted
_ATOM = re.compile(r"^(?P<name>[A-Za-z0-9+_.-]+/[A-Za-z0-9+_.-]+?)-(?P<version>[0-9][A-Za-z0-9._*]*(?:-r[0-9]+)?)(?:::(?P<repo>\S+))?$")


def load_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def epoch(stamp):
    """Seconds since the epoch of an ISO 8601 UTC time (record ``...Z`` or run.json ``+00:00``), or None."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def is_record(data):
    return isinstance(data, dict) and data.get("kind") == RECORD_KIND and isinstance(data.get("stages"), dict) \
        and isinstance(data.get("board"), str) and bool(_BOARD.match(data["board"]))


def _newer(old, new):
    """Of two records of one board, the one with more stages, then the newer ``updated``."""
    if old is None:
        return new
    return new if _rank(new) >= _rank(old) else old


def _rank(record):
    """Ordering key of one board's record: number of stages, then ``updated``."""
    return (len(record.get("stages") or {}), str(record.get("updated") or ""))


def _decoded(res):
    """Build records in one task result: a slurp result, or a loop of them."""
    found = []
    for one in [res] + [x for x in res.get("results") or [] if isinstance(x, dict)]:
        content = one.get("content")
        if not isinstance(content, str) or one.get("encoding", "base64") != "base64":
            continue
        try:
            data = json.loads(base64.b64decode(content).decode("utf-8"))
        except (ValueError, TypeError):
            continue
        if is_record(data):
            found.append(data)
    return found


def records_from_events(run_dir):
    """{board: record} from the build records the playbook read (slurp) during the run (runner job events)."""
    records = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "runner", "artifacts", "*", "job_events", "*.json"))):
        event = load_json(path, {})
        if not isinstance(event, dict) or event.get("event") != "runner_on_ok":
            continue
        res = (event.get("event_data") or {}).get("res")
        for record in _decoded(res) if isinstance(res, dict) else []:
            records[record["board"]] = _newer(records.get(record["board"]), record)
    return records


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_list_output(record):
    """The image stage's recorded package list output (path, sha256), or None."""
    for out in ((record.get("stages") or {}).get("image") or {}).get("outputs") or []:
        if isinstance(out, dict) and os.path.basename(str(out.get("path"))) == PACKAGE_LIST:
            return out
    return None


def save_records(run_dir):
    """Keep the run's build records (and image package lists, when readable here and matching their recorded
    sha256) in ``run_dir/records``, so a report can be regenerated and diffed after the builders moved on."""
    records = records_from_events(run_dir)
    if not records:
        return {}
    target = os.path.join(run_dir, "records")
    os.makedirs(target, mode=0o755, exist_ok=True)
    for board, record in records.items():
        with open(os.path.join(target, board + ".json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, sort_keys=True)
        out, root = package_list_output(record), record.get("build_root")
        if out and isinstance(root, str) and os.path.isabs(root):
            src = os.path.join(root, str(out["path"]))
            try:
                if os.path.isfile(src) and _sha256(src) == out.get("sha256"):
                    with open(src, encoding="utf-8", errors="replace") as fh, \
                            open(os.path.join(target, board + ".packages.txt"), "w", encoding="utf-8") as dst:
                        dst.write(fh.read())
            except OSError:
                pass
    return records


def load_records(run_dir):
    """{board: record}: ``records/`` of the run (or ``summary/records/``, written by the playbook), else the
    runner's job events."""
    records = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "summary", "records", "*.json")) + glob.glob(os.path.join(run_dir, "records", "*.json"))):
        data = load_json(path)
        if is_record(data):
            records[data["board"]] = _newer(records.get(data["board"]), data)
    return records or records_from_events(run_dir)


def parse_packages(text):
    """{package: version} from an image package list (``cat/name-version[-rN]::repo`` lines)."""
    found = {}
    for line in text.splitlines():
        m = _ATOM.match(line.strip())
        if m:
            found[m.group("name")] = m.group("version")
    return found


def package_list(run_dir, board):
    """{package: version} of the board's image in the run (``records/`` or ``summary/records/``), or None."""
    for where in ("records", os.path.join("summary", "records")):
        try:
            with open(os.path.join(run_dir, where, board + ".packages.txt"), encoding="utf-8", errors="replace") as fh:
                return parse_packages(fh.read())
        except OSError:
            continue
    return None


def previous_run(run_dir, record):
    """The previous run of the same command in the same runs directory: the newest that published (exit 0 or 3),
    else the newest at all; None for the first."""
    root, me = os.path.dirname(os.path.abspath(run_dir)), os.path.basename(os.path.abspath(run_dir))
    older = []
    for name in sorted(os.listdir(root), reverse=True):
        if name >= me:
            continue
        other = load_json(os.path.join(root, name, "run.json"))
        if isinstance(other, dict) and other.get("command") == record.get("command"):
            older.append((name, other))
    best = next((n for n, o in older if o.get("exit_code") in (0, 3)), None) or (older[0][0] if older else None)
    return os.path.join(root, best) if best else None


def _strings(value):
    """A package list as strings: ["cat/pkg-1.0", ...] from strings or {name, version} dicts."""
    out = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict):
            name = item.get("name") or item.get("package") or item.get("atom")
            out.append("%s-%s" % (name, item["version"]) if item.get("version") else str(name))
        else:
            out.append(str(item))
    return out


def _reasons(run):
    """{(board or host, stage): why it ran} from the stage modules' results in run.json."""
    found, seen = {}, {}
    for s in run.get("stages") or []:
        if isinstance(s, dict) and s.get("stage") and s.get("changed"):
            if s.get("board"):
                found.setdefault((s["board"], s["stage"]), s.get("reason") or "changed")
            seen.setdefault((s.get("host"), s["stage"]), []).append(s.get("reason") or "changed")
    # by host only where the host ran that stage once (a signer signs every board)
    found.update(((h, n), r[0]) for (h, n), r in seen.items() if h and len(r) == 1 and (h, n) not in found)
    return found


def _stages(record, row, run, started):
    views = (row or {}).get("record_stages") or {}
    reasons = _reasons(run)
    out = []
    for name in record.get("stage_order") or sorted(record.get("stages") or {}):
        st = (record.get("stages") or {}).get(name)
        if not isinstance(st, dict):
            continue
        begin = epoch(st.get("started"))
        end = epoch(st.get("finished")) or (begin + st["duration_s"] if begin is not None and isinstance(st.get("duration_s"), (int, float)) else None)
        ran = views[name]["ran"] if isinstance(views.get(name), dict) and "ran" in views[name] else \
            (started is None or (begin is not None and begin >= started - 1))
        host = st.get("host") or (row or {}).get("host")
        why = None
        if ran:
            why = reasons.get((record.get("board"), name)) or reasons.get(((row or {}).get("host"), name)) or reasons.get((host, name)) \
                or ("failed" if st.get("status") == "failed" else "ran in this run")
        out.append({"name": name, "status": st.get("status"), "ran": bool(ran), "reason": why, "started": st.get("started"),
                    "finished": st.get("finished"), "duration_s": st.get("duration_s"), "begin": begin, "end": end,
                    "message": st.get("message"), "host": host, "attempts": st.get("attempts"),
                    "input_digest": st.get("input_digest"), "log_path": st.get("log_path")})
    return out


def _artifacts(record):
    stages = record.get("stages") or {}
    sign = (stages.get("sign") or {}).get("details") or {}
    sigs = [str(p) for p in sign.get("signature_files") or []]
    arts = []
    for name in record.get("stage_order") or sorted(stages):
        for out in (stages.get(name) or {}).get("outputs") or []:
            if not isinstance(out, dict) or out.get("role") == "signature":
                continue
            path = str(out.get("path"))
            mine = [s for s in sigs if s.startswith(path + ".") and s[len(path) + 1:] in ("sig", "asc", "DIGESTS", "DIGESTS.asc")]
            arts.append({"stage": name, "path": path, "role": out.get("role"), "size": out.get("size"),
                         "sha256": out.get("sha256"), "signatures": mine})
    return arts, {"signer_fingerprint": sign.get("signer_fingerprint"), "signing_key_fingerprint": sign.get("signing_key_fingerprint"),
                  "key_expires": sign.get("key_expires"), "signature_files": sigs} if sign else None


def _gate(board, record, summary, run):
    stages = record.get("stages") or {}
    boots = [{"stage": n, "verdict": ((s.get("details") or {}).get("verdict") or s.get("status")),
              "boot_time_s": (s.get("details") or {}).get("boot_time_s")}
             for n, s in sorted(stages.items()) if n.startswith("boot_check:") and isinstance(s, dict)]
    gate = (summary or {}).get("gate") or {}
    pub = [s for n, s in sorted(stages.items()) if n.startswith("publish:") and isinstance(s, dict)]
    pub_gate = next(((s.get("details") or {}).get("gate") for s in pub if (s.get("details") or {}).get("gate")), None) or {}
    refused = [f["msg"] for f in run.get("failures") or [] if "gate refused" in str(f.get("msg")) and board in str(f.get("msg"))]
    if gate and board in (gate.get("released") or []):
        verdict = "released"
    elif gate and board in (gate.get("passed") or []):
        verdict = "held back by the release gate"
    elif gate and board in (gate.get("missing") or []):
        verdict = "missing: did not pass"
    elif refused:
        verdict = "refused"
    elif any(s.get("status") == "passed" for s in pub):
        verdict = "released"
    else:
        verdict = "not evaluated"
    detail = refused[0] if refused else ("overridden: %s" % pub_gate.get("reason")) if pub_gate.get("overridden") else ""
    return {"verdict": verdict, "detail": detail, "boot_checks": boots,
            "problems": [str(p) for p in pub_gate.get("problems") or []]}


def _links(run_dir, board):
    links = [{"label": "Ansible output", "path": p} for p in sorted(glob.glob(os.path.join(run_dir, "runner", "artifacts", "*", "stdout")))]
    for label, rel in (("pipeline summary (Markdown)", "summary/summary.md"), ("pipeline summary (JSON)", "summary/summary.json"),
                       ("build record", "records/%s.json" % board), ("image package list", "records/%s.packages.txt" % board)):
        if os.path.isfile(os.path.join(run_dir, rel)):
            links.append({"label": label, "path": os.path.join(run_dir, rel)})
    return links


def _diff(run_dir, prev_dir, board, record, arts):
    if not prev_dir:
        return None
    old_record = load_records(prev_dir).get(board)
    if not old_record:
        return {"basis": "none", "note": "the previous run has no build record of %s" % board}
    now_v, old_v = (record.get("version") or {}).get("FLATCAR_VERSION"), (old_record.get("version") or {}).get("FLATCAR_VERSION")
    new, old = package_list(run_dir, board), package_list(prev_dir, board)
    if new is not None and old is not None:
        basis = "packages"
    else:
        basis = "artifacts"
        new = dict((os.path.basename(a["path"]), a["sha256"]) for a in arts)
        old = dict((os.path.basename(a["path"]), a["sha256"]) for a in _artifacts(old_record)[0])
    return {"basis": basis, "version": {"from": old_v, "to": now_v},
            "added": dict((k, new[k]) for k in sorted(set(new) - set(old))),
            "removed": dict((k, old[k]) for k in sorted(set(old) - set(new))),
            "changed": [{"name": k, "from": old[k], "to": new[k]} for k in sorted(set(new) & set(old)) if new[k] != old[k]],
            "unchanged": sum(1 for k in set(new) & set(old) if new[k] == old[k])}


def _architecture(run_dir, prev_dir, board, record, row, summary, run, started):
    stages = _stages(record, row, run, started)
    arts, signature = _artifacts(record)
    pkg = (((record.get("stages") or {}).get("packages") or {}).get("details")) or {}
    hits = dict((row or {}).get("cache_hits") or {})
    return {"board": board, "host": (row or {}).get("host") or next((s["host"] for s in stages if s["host"]), None),
            "version": (row or {}).get("version") or (record.get("version") or {}).get("FLATCAR_VERSION"),
            "result": (row or {}).get("result") or ("failed" if any(s["status"] == "failed" for s in stages) else "passed"),
            "stages": stages, "rebuilt": [{"stage": s["name"], "reason": s["reason"]} for s in stages if s["ran"]],
            "cache_hits": dict(hits, stages_reused=[s["name"] for s in stages if not s["ran"] and s["status"] == "passed"]),
            "packages": {"built_from_source": _strings(pkg.get("built_from_source")), "binary": _strings(pkg.get("binary")),
                         "rebuilt": dict((str(r.get("package")), str(r.get("reason"))) for r in pkg.get("rebuilt") or []
                                         if isinstance(r, dict) and r.get("package")),
                         "usepkg_exclude": _strings(pkg.get("usepkg_exclude")),
                         "count": pkg.get("count") or pkg.get("package_count")} if pkg else None,
            "release": (row or {}).get("release") if isinstance((row or {}).get("release"), dict) else None,
            "gate": _gate(board, record, summary, run), "artifacts": arts, "signature": signature,
            "pipeline_stages": (row or {}).get("stages") or {},
            "logs": _links(run_dir, board), "diff": _diff(run_dir, prev_dir, board, record, arts)}


def build(run_dir, previous=None):
    """The report model (a JSON-able dict) of the run in ``run_dir``; ``previous``: a run directory to diff
    against (default: the previous run of the same command)."""
    run = load_json(os.path.join(run_dir, "run.json"), {})
    summary = load_json(os.path.join(run_dir, "summary", "summary.json")) or run.get("summary") or {}
    rows = dict((r.get("board"), r) for r in summary.get("architectures") or [] if isinstance(r, dict))
    records = load_records(run_dir)
    prev_dir = previous or previous_run(run_dir, run)
    started = epoch(run.get("started"))
    arches = []
    for board in sorted(set(records) | set(b for b in rows if b)):
        arches.append(_architecture(run_dir, prev_dir, board, records.get(board) or {}, rows.get(board), summary, run, started))
    ran = [s for a in arches for s in a["stages"] if s["begin"] is not None and s["ran"]]
    origin = min((s["begin"] for s in ran), default=started)
    for a in arches:
        for s in a["stages"]:
            s["start_s"] = round(s["begin"] - origin, 1) if s["ran"] and s["begin"] is not None and origin is not None else None
            s["end_s"] = round(s["end"] - origin, 1) if s["start_s"] is not None and s["end"] is not None else None
            del s["begin"], s["end"]
    code = run.get("exit_code")
    prev = load_json(os.path.join(prev_dir, "run.json"), {}) if prev_dir else {}
    return {"kind": "kiln.run-report", "report_version": 1, "run_id": run.get("run_id"), "command": run.get("command"),
            "playbook": run.get("playbook"), "inventory": run.get("inventory"), "started": run.get("started"),
            "duration_s": run.get("duration_s"), "rc": run.get("rc"), "status": run.get("status"), "exit_code": code,
            "result": RESULTS[code] if isinstance(code, int) and 0 <= code < len(RESULTS) else "unknown",
            "hosts": run.get("hosts") or {}, "failures": run.get("failures") or [],
            "gate": summary.get("gate"), "allow_partial_release": summary.get("allow_partial_release"),
            "keys": [k for k in summary.get("keys") or [] if isinstance(k, dict)],
            "previous": {"run_id": prev.get("run_id") or os.path.basename(prev_dir), "path": prev_dir,
                         "exit_code": prev.get("exit_code")} if prev_dir else None,
            "architectures": arches, "run_dir": os.path.abspath(run_dir)}
