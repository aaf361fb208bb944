"""kiln report RUN: the record of one `kiln` run (Markdown or JSON), from its run directory."""

from __future__ import annotations

import json
import os
import sys

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
    return path


def markdown(record, summary_md=None):
    lines = ["# kiln %s — run %s" % (record["command"], record["run_id"]), "",
             "- playbook: `%s`, inventory: `%s`" % (record["playbook"], record["inventory"]),
             "- started %s, %.1f s, exit code %d (%s)" % (record["started"], record["duration_s"], record["exit_code"], record["status"]), "",
             "| host | time on host (s) |", "|---|---|"]
    lines += ["| %s | %.1f |" % (h, d) for h, d in sorted(record.get("hosts", {}).items())]
    if record.get("failures"):
        lines += ["", "## Failures", ""] + ["- **%s** `%s`: %s" % (f["host"], f["task"], f["msg"]) for f in record["failures"]]
    if summary_md:
        lines += ["", summary_md.rstrip()]
    return "\n".join(lines) + "\n"


def run_report(run, fmt="md", state_dir=None, out=sys.stdout):
    path = find_run(run, state_dir)
    with open(os.path.join(path, "run.json"), encoding="utf-8") as fh:
        record = json.load(fh)
    if fmt == "json":
        out.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return 0
    summary_md = None
    try:
        with open(os.path.join(path, "summary", "summary.md"), encoding="utf-8") as fh:
            summary_md = fh.read()
    except OSError:
        pass
    out.write(markdown(record, summary_md))
    return 0
