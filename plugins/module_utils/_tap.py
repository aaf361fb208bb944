# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""TAP as kola writes it (``--tapfile``), merged across retries, and JUnit XML.

kola's TAP (flatcar/scripts ``ci-automation/tapfile_helper_lib.sh``)::

    1..2
    ok - cl.basic
    not ok - cl.filesystem
      ---
      Error: "cluster.go:125: ..."
      ...

Test numbers (``ok 3 - name``), ``# SKIP``/``# TODO`` directives and comment lines are accepted
as well. Retry semantics follow ``ci-automation/test.sh``: a test passes when it passed in at
least one run; it is *flaky* when it failed in an earlier run and passed later.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from ansible_collections.kiln.flatcar.plugins.module_utils._version import atomic_write

_TEST_RX = re.compile(r"^(not ok|ok)\b(?:\s+(\d+))?\s*(?:-\s*)?(.*?)\s*$")
_PLAN_RX = re.compile(r"^(\d+)\.\.(\d+)")
_DIRECTIVE_RX = re.compile(r"\s+#\s*(SKIP|TODO)\b\s*(.*)$", re.IGNORECASE)


class TapError(Exception):
    """A TAP stream kiln cannot use; the message is one line."""


class TapResult:
    """One test line of one TAP run."""

    __slots__ = ("name", "ok", "number", "directive", "reason", "diagnostic")

    def __init__(self, name, ok, number=None, directive=None, reason=None, diagnostic=None):
        self.name = name
        self.ok = ok
        self.number = number
        self.directive = directive
        self.reason = reason
        self.diagnostic = diagnostic

    @property
    def skipped(self):
        return self.directive == "skip"

    def as_dict(self):
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped, "diagnostic": self.diagnostic}


def parse(text):
    """Parse TAP text; return ``(results, plan)`` where plan is the announced count or None."""
    results = []
    plan = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        stripped = line.strip()
        m = _PLAN_RX.match(stripped)
        if m and not line.startswith(" "):
            plan = int(m.group(2)) - int(m.group(1)) + 1 if int(m.group(2)) >= int(m.group(1)) else 0
            i += 1
            continue
        m = _TEST_RX.match(line)
        if m:
            ok = m.group(1) == "ok"
            rest = m.group(3)
            directive = reason = None
            d = _DIRECTIVE_RX.search(rest)
            if d:
                directive = d.group(1).lower()
                reason = d.group(2).strip() or None
                rest = rest[: d.start()]
            name = rest.strip() or ("test %s" % (m.group(2) or len(results) + 1))
            i += 1
            diag = None
            # optional YAML block:   ---  ...  ...
            if i < len(lines) and lines[i].strip() == "---" and lines[i].startswith(" "):
                indent = len(lines[i]) - len(lines[i].lstrip())
                block = []
                i += 1
                while i < len(lines) and lines[i].strip() != "...":
                    body = lines[i]
                    block.append(body[indent:] if body[:indent].strip() == "" else body.strip())
                    i += 1
                i += 1  # the closing '...'
                diag = "\n".join(block).rstrip()
            results.append(TapResult(name, ok, int(m.group(2)) if m.group(2) else None, directive, reason, diag))
            continue
        i += 1
    return results, plan


def parse_file(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return parse(fh.read())
    except OSError as exc:
        raise TapError("cannot read TAP file %s: %s" % (path, exc.strerror or exc))


class MergedTest:
    """A test across every run: its attempts and the final verdict."""

    __slots__ = ("name", "attempts")

    def __init__(self, name):
        self.name = name
        self.attempts = []  # dicts: run, ok, skipped, diagnostic

    @property
    def passed(self):
        return any(a["ok"] for a in self.attempts)

    @property
    def skipped(self):
        return bool(self.attempts) and all(a["skipped"] for a in self.attempts)

    @property
    def flaky(self):
        """Failed in some run, then passed in a later one."""
        seen_fail = False
        for a in self.attempts:
            if not a["ok"]:
                seen_fail = True
            elif seen_fail:
                return True
        return False

    @property
    def status(self):
        if self.skipped:
            return "skipped"
        if self.flaky:
            return "flaky"
        return "passed" if self.passed else "failed"

    def last_failure(self):
        for a in reversed(self.attempts):
            if not a["ok"]:
                return a.get("diagnostic") or ""
        return None

    def as_dict(self):
        return {
            "name": self.name,
            "status": self.status,
            "passed": self.passed,
            "flaky": self.flaky,
            "attempts": len(self.attempts),
            "runs": [dict(a) for a in self.attempts],
        }


class Merged:
    """Results of several kola runs of the same suite, retries included."""

    def __init__(self):
        self.tests = {}
        self.order = []
        self.runs = 0

    def add_run(self, results, run=None):
        """Add one run's TapResults (``run`` is its 1-based number)."""
        self.runs += 1
        run = run or self.runs
        for r in results:
            t = self.tests.get(r.name)
            if t is None:
                t = self.tests[r.name] = MergedTest(r.name)
                self.order.append(r.name)
            t.attempts.append({"run": run, "ok": bool(r.ok), "skipped": r.skipped, "diagnostic": r.diagnostic})
        return self

    def add_missing(self, names, run, reason):
        """Tests asked for but absent from a run's TAP count as failed attempts."""
        for name in names:
            t = self.tests.get(name)
            if t is None:
                t = self.tests[name] = MergedTest(name)
                self.order.append(name)
            t.attempts.append({"run": run, "ok": False, "skipped": False, "diagnostic": reason})

    def __iter__(self):
        return (self.tests[n] for n in self.order)

    def failed(self):
        return [t.name for t in self if not t.passed]

    def flaky(self):
        return [t.name for t in self if t.flaky]

    def passed(self):
        return [t.name for t in self if t.passed]

    @property
    def success(self):
        return bool(self.tests) and not self.failed()

    def as_list(self):
        return [t.as_dict() for t in self]


def _yaml_scalar(text):
    text = "" if text is None else str(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_tap(merged):
    """The merged verdicts as TAP in kola's style, one line per test, attempts in the YAML block."""
    out = ["1..%d" % len(merged.order)]
    for t in merged:
        line = ("ok - %s" if t.passed else "not ok - %s") % t.name
        if t.skipped:
            line += " # SKIP"
        out.append(line)
        if t.flaky or not t.passed or len(t.attempts) > 1:
            out.append("  ---")
            out.append("  attempts: %d" % len(t.attempts))
            out.append("  status: %s" % t.status)
            failure = t.last_failure()
            if failure:
                if re.match(r"^[A-Za-z_][A-Za-z0-9_ -]*:", failure):
                    # kola's own YAML diagnostic of the last failed attempt, kept as it was
                    out.extend("  " + line for line in failure.splitlines())
                else:
                    out.append("  Error: %s" % _yaml_scalar(failure))
            out.append("  ...")
    return "\n".join(out) + "\n"


def write_tap(merged, path):
    atomic_write(path, render_tap(merged))
    return path


def _xml_safe(text):
    # XML 1.0 cannot carry most control characters; console output often has them.
    return re.sub(u"[\x00-\x08\x0b\x0c\x0e-\x1f]", "?", "" if text is None else str(text))


def render_junit(merged, suite="kola", properties=None, durations=None):
    """JUnit XML (surefire flavour: ``flakyFailure`` for tests that passed on a retry)."""
    durations = durations or {}
    tests = list(merged)
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(tests)),
        failures=str(sum(1 for t in tests if not t.passed)),
        errors="0",
        skipped=str(sum(1 for t in tests if t.skipped)),
        time="%.3f" % sum(durations.values()) if durations else "0",
    )
    if properties:
        props = ET.SubElement(ts, "properties")
        for key in sorted(properties):
            ET.SubElement(props, "property", name=str(key), value=_xml_safe(properties[key]))
    for t in tests:
        classname, _dot, _rest = t.name.partition(".")
        tc = ET.SubElement(ts, "testcase", classname=classname or suite, name=t.name,
                           time="%.3f" % durations.get(t.name, 0.0))
        if t.skipped:
            ET.SubElement(tc, "skipped")
            continue
        if not t.passed:
            failure = ET.SubElement(tc, "failure", message="failed in all %d attempts" % len(t.attempts), type="kola")
            failure.text = _xml_safe(t.last_failure())
            for a in t.attempts[:-1]:
                rerun = ET.SubElement(tc, "rerunFailure", message="attempt %d failed" % a["run"], type="kola")
                rerun.text = _xml_safe(a.get("diagnostic"))
        elif t.flaky:
            for a in t.attempts:
                if not a["ok"]:
                    flaky = ET.SubElement(tc, "flakyFailure", message="attempt %d failed" % a["run"], type="kola")
                    flaky.text = _xml_safe(a.get("diagnostic"))
        out = ET.SubElement(tc, "system-out")
        out.text = "attempts: %s" % ", ".join("%d:%s" % (a["run"], "ok" if a["ok"] else "not ok") for a in t.attempts)
    _indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(merged, path, suite="kola", properties=None, durations=None):
    atomic_write(path, render_junit(merged, suite, properties, durations))
    return path


def _indent(elem, level=0):
    # ElementTree.indent exists only from Python 3.9 on the controller side; targets may be older tools.
    pad = "\n" + "  " * level
    if len(elem):
        if not (elem.text or "").strip():
            elem.text = pad + "  "
        for child in elem:
            _indent(child, level + 1)
        if not (child.tail or "").strip():  # pylint: disable=undefined-loop-variable
            child.tail = pad  # pylint: disable=undefined-loop-variable
    if level and not (elem.tail or "").strip():
        elem.tail = pad


def ensure_dir(path):
    if path and not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
