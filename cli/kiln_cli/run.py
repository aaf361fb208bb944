"""Run one kiln.flatcar playbook through ansible-runner: live progress from the event stream, a run directory
with the run's record (run.json), the pipeline's summary and the runner's job events, and the exit code."""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone

EXIT_OK, EXIT_FAILED, EXIT_GATE, EXIT_PARTIAL = 0, 1, 2, 3
HOST_EVENTS_FAILED = ("runner_on_failed", "runner_on_unreachable")


def runs_dir(explicit=None):
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "kiln", "runs")


def _fmt(seconds):
    seconds = int(max(0, seconds))
    return "%dm%02ds" % divmod(seconds, 60) if seconds >= 60 else "%ds" % seconds


class Progress:
    """Per host: the current task, elapsed time and an estimate from the previous run of the same command.
    ``mode``: ``tty`` (a block redrawn in place), ``lines`` (a line when a host's task changes), ``json`` (JSON
    lines), ``quiet`` (nothing until the end)."""

    def __init__(self, mode, out, previous=None, clock=time.monotonic):
        self.mode, self.out, self.previous, self.clock = mode, out, previous or {}, clock
        self.t0 = clock()
        self.hosts = {}
        self.failures = []
        self.item_failures = {}
        self.stages = []
        self.drawn = 0

    def handle(self, event):
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host, task = data.get("host"), data.get("task")
        if kind == "runner_on_start" and host:
            state = self.hosts.setdefault(host, {"first": self.clock(), "state": "running"})
            if state.get("task") != task:
                state.update(task=task, since=self.clock())
                self._emit({"event": "task", "host": host, "task": task})
        elif kind in HOST_EVENTS_FAILED and host and not data.get("ignore_errors"):
            msg = "; ".join(self.item_failures.pop((host, task), [])) or _failure_text(data.get("res") or {}, kind)
            self.hosts.setdefault(host, {"first": self.clock()})["state"] = "failed"
            self.failures.append({"host": host, "task": task, "msg": msg, "unreachable": kind == "runner_on_unreachable"})
            self._emit({"event": "failed", "host": host, "task": task, "msg": msg})
        elif kind == "runner_item_on_failed" and host:
            self.item_failures.setdefault((host, task), []).append(_failure_text(data.get("res") or {}, kind))
        elif kind == "runner_on_ok" and host:
            self._stage_result(host, task, data.get("res") or {})
            if host in self.hosts:
                self.hosts[host]["last"] = self.clock()
        return True

    def _stage_result(self, host, task, res):
        """What a stage module said: would run / ran (changed) and why, or current (kiln plan reads these)."""
        formats = res.get("formats")  # vm_image: one stage per format
        found = [v for v in formats.values() if isinstance(v, dict)] if isinstance(formats, dict) else list(res.get("results") or [res])
        for one in found:
            if isinstance(one, dict) and one.get("stage") and "changed" in one:
                self.stages.append({"host": host, "task": task, "stage": one["stage"], "changed": bool(one["changed"]),
                                    "board": one.get("board") or res.get("board"),
                                    "reason": one.get("reason") or ("" if one["changed"] else "current")})
            elif isinstance(one, dict) and one.get("changed") and not one.get("stage"):
                self.stages.append({"host": host, "task": task, "stage": None, "changed": True, "reason": one.get("reason") or ""})

    def durations(self):
        now = self.clock()
        return {h: round(s.get("last", now) - s["first"], 1) for h, s in self.hosts.items()}

    def _estimate(self, host):
        prev = self.previous.get(host)
        if not prev:
            return ""
        left = prev - (self.clock() - self.hosts[host]["first"])
        return " (est. %s left)" % _fmt(left) if left > 0 else " (over the last run's %s)" % _fmt(prev)

    def _line(self, host):
        s = self.hosts[host]
        elapsed = _fmt(self.clock() - s["first"])
        return "%-28s %-7s %7s  %s%s" % (host[:28], s.get("state", ""), elapsed, s.get("task") or "", self._estimate(host))

    def _emit(self, record):
        if self.mode == "json":
            record["elapsed"] = round(self.clock() - self.t0, 1)
            self.out.write(json.dumps(record) + "\n")
        elif self.mode == "lines" and record.get("host") in self.hosts:
            self.out.write("[%7s] %s\n" % (_fmt(self.clock() - self.t0), self._line(record["host"]).rstrip()))
        elif self.mode == "tty":
            if self.drawn:
                self.out.write("\x1b[%dA" % self.drawn)
            lines = [self._line(h) for h in sorted(self.hosts)]
            for line in lines:
                self.out.write("\x1b[2K" + line[:200] + "\n")
            self.drawn = len(lines)
        self.out.flush()


def write_plan(stages, out):
    """Per host: the stages that would run and why, the stages that are current, other tasks that would change."""
    if not any(s["changed"] for s in stages):
        out.write("plan: nothing to do (%d stages current)\n" % sum(1 for s in stages if s["stage"]))
    for host in sorted({s["host"] for s in stages}):
        out.write("%s\n" % host)
        for s in (x for x in stages if x["host"] == host):
            if s["stage"]:
                out.write("    %-22s %s\n" % (s["stage"], ("would run: " + (s["reason"] or "changed")) if s["changed"] else "current"))
            else:
                out.write("    %-22s would change (%s)\n" % ("-", s["task"]))


def _failure_text(res, kind):
    """One line: the task's msg, or for a loop the msgs of the items that failed."""
    items = [i for i in res.get("results") or [] if isinstance(i, dict) and i.get("failed")]
    texts = [str(i.get("msg") or "") for i in items if i.get("msg")] or [str(res.get("msg") or res.get("reason") or kind)]
    return " ".join("; ".join(texts).split())


def exit_code(rc, failures, summary):
    """0 published / succeeded, 1 failed, 2 a gate refused, 3 partial release (docs in kiln --help)."""
    if rc == 0:
        return EXIT_OK
    gate = (summary or {}).get("gate") or {}
    if gate.get("released") and gate.get("missing"):
        return EXIT_PARTIAL
    if any("gate refused" in f["msg"] for f in failures):
        return EXIT_GATE
    if gate.get("passed") and not gate.get("released"):
        return EXIT_GATE
    return EXIT_FAILED


def _load(path, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def _keep_report(run_dir):
    """The run's build records into the run directory and <run dir>/report.html; a report problem never fails the run."""
    try:
        from kiln_cli import report_model, report_html
        report_model.save_records(run_dir)
        text = report_html.render(report_model.build(run_dir), run_dir)
        with open(os.path.join(run_dir, "report.html"), "w", encoding="utf-8") as fh:
            fh.write(text)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        sys.stderr.write("kiln: no report for %s: %s\n" % (run_dir, " ".join(str(exc).split())))


def run_playbook(command, playbook, inventory, ansible_args, output, state_dir=None, out=None):
    """Run ``playbook`` (an FQCN) and return the exit code. ``ansible_args`` go to ansible-playbook as given
    (``-e``, ``--check``, ``--limit``, vault options...); extra vars are never written into the run directory."""
    import ansible_runner  # imported here: `kiln --help` works without it

    out = out or sys.stdout
    root = runs_dir(state_dir)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + command
    run_dir = os.path.join(root, run_id)
    os.makedirs(os.path.join(run_dir, "runner"), mode=0o700)
    history = _load(os.path.join(root, "durations.json"), {})
    progress = Progress(output, out, history.get(command))
    cmdline = list(ansible_args) + ["-e", json.dumps({"kiln_summary_dir": os.path.join(run_dir, "summary")})]
    started = time.time()
    result = ansible_runner.run(
        private_data_dir=os.path.join(run_dir, "runner"), playbook=playbook, inventory=os.path.abspath(inventory),
        cmdline=" ".join(shlex.quote(a) for a in cmdline), quiet=True, suppress_env_files=True,
        event_handler=progress.handle, envvars={"ANSIBLE_NOCOLOR": "1"})
    # the command line (extra vars) must not stay on disk: secrets belong in vault files, but be safe anyway
    shutil.rmtree(os.path.join(run_dir, "runner", "env"), ignore_errors=True)
    for path in glob.glob(os.path.join(run_dir, "runner", "artifacts", "*", "command")):
        os.unlink(path)
    summary = _load(os.path.join(run_dir, "summary", "summary.json"))
    code = exit_code(result.rc, progress.failures, summary)
    record = {"run_id": run_id, "command": command, "playbook": playbook, "inventory": os.path.abspath(inventory),
              "started": datetime.fromtimestamp(started, timezone.utc).isoformat(), "duration_s": round(time.time() - started, 1),
              "rc": result.rc, "status": result.status, "exit_code": code, "failures": progress.failures,
              "hosts": progress.durations(), "summary": summary, "stages": progress.stages}
    _write(os.path.join(run_dir, "run.json"), record)
    _keep_report(run_dir)
    if code == EXIT_OK:
        history[command] = progress.durations()
        _write(os.path.join(root, "durations.json"), history)
    final = {"event": "end", "run_id": run_id, "run_dir": run_dir, "exit_code": code, "rc": result.rc}
    if os.path.isfile(os.path.join(run_dir, "report.html")):
        final["report"] = os.path.join(run_dir, "report.html")
    if command == "plan":
        final["plan"] = progress.stages
        if output != "json":
            write_plan(progress.stages, out)
    if output == "json":
        out.write(json.dumps(final) + "\n")
    else:
        for f in progress.failures:
            out.write("FAILED %s: %s: %s\n" % (f["host"], f["task"], f["msg"]))
        out.write("kiln %s: %s (exit %d) in %s; report: kiln report %s\n"
                  % (command, ("ok", "failed", "gate refused", "partial release")[code], code, _fmt(record["duration_s"]), run_id))
    out.flush()
    return code
