# Test-only callback: every task result as one JSON line in $KILN_TEST_EVENTS.
from __future__ import annotations

DOCUMENTATION = r"""
name: kiln_jsonl
type: notification
short_description: write task results as JSON lines (kiln tests only)
description: Writes every task result and the final stats to the file named by KILN_TEST_EVENTS.
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "kiln_jsonl"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, record):
        path = os.environ.get("KILN_TEST_EVENTS")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def _res(self, event, result):
        res = self._clean(result._result)
        if event == "failed":
            res["failed"] = True
        elif event == "unreachable":
            res["unreachable"] = True
        self._write({"event": event, "host": result._host.get_name(), "task": result._task.get_name(), "result": res})

    @staticmethod
    def _clean(res):
        return json.loads(json.dumps(res, default=str))

    def v2_runner_on_ok(self, result):
        self._res("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._res("failed", result)

    def v2_runner_on_skipped(self, result):
        self._res("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._res("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        self._write({"event": "stats", "stats": dict((h, stats.summarize(h)) for h in hosts)})
