# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Per-task, per-host timings of a playbook run, as JSON (bench/bench_pipeline.py --profile).

Like ansible.posix.profile_tasks, without needing that collection: every task's wall time (first host
started to last host finished), and each host's own time in it. Enabled by the bench only:
ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=kiln_profile KILN_PROFILE_OUT=file.json
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kiln_profile
type: aggregate
short_description: per-task and per-host timings as JSON (benchmarks only)
description:
  - Writes every task's wall time and each host's time in it to the file named by KILN_PROFILE_OUT.
requirements:
  - enable in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kiln_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.t0 = time.monotonic()
        self.play = ""
        self.tasks = []          # [{play, task, action, start, end, hosts: {host: [start, end, status]}}]
        self.by_uuid = {}

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name().strip()

    def _task(self, task):
        row = self.by_uuid.get(task._uuid)
        if row is None:
            now = time.monotonic() - self.t0
            row = {"play": self.play, "task": task.get_name().strip(), "action": task.action, "start": now, "end": now,
                   "hosts": {}}
            self.by_uuid[task._uuid] = row
            self.tasks.append(row)
        return row

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task(task)

    def v2_runner_on_start(self, host, task):
        row = self._task(task)
        row["hosts"].setdefault(host.get_name(), [time.monotonic() - self.t0, None, "running"])

    def _done(self, result, status):
        row = self._task(result._task)
        now = time.monotonic() - self.t0
        slot = row["hosts"].setdefault(result._host.get_name(), [now, None, status])
        slot[1], slot[2] = now, status
        row["end"] = max(row["end"], now)

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._done(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._done(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        out = os.environ.get("KILN_PROFILE_OUT")
        if not out:
            return
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"wall_s": time.monotonic() - self.t0, "tasks": self.tasks}, fh)
