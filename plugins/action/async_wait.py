# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""kiln.flatcar.async_wait: ansible.builtin.async_status that waits inside one task call.

A stage launched with ``async``/``poll: 0`` that is skipped (a no-op rerun) finishes in about a second; polled with
``async_status``, ``until`` and ``delay: 5`` the first poll comes too early and the next one five seconds later.
This action polls the same job file with growing intervals (0.25 s, 0.5 s, 1 s, ... up to O(interval)) for at most
O(wait) seconds and returns exactly what async_status returns, so ``until: result.finished`` loops stay as they were
(with ``delay: 0``) and a finished job is seen within a quarter of a second to a few seconds of finishing."""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.plugins.action.async_status import ActionModule as AsyncStatusAction
from ansible.utils.vars import merge_hash

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate


class ActionModule(AsyncStatusAction):
    """async_status's own async directory lookup (``_get_async_dir``: the shell option async_dir); its run() is
    replaced, not extended: it validates only jid and mode."""

    _requires_connection = True

    def _job(self, task_vars, jid, async_dir, mode):
        return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                    module_args={"jid": jid, "mode": mode, "_async_dir": async_dir})

    def run(self, tmp=None, task_vars=None):
        results = ActionBase.run(self, tmp, task_vars)
        validation_result, args = self.validate_argument_spec(argument_spec={
            "jid": {"type": "str", "required": True},
            "wait": {"type": "float", "default": 30.0},
            "interval": {"type": "float", "default": 5.0},
            "cleanup": {"type": "bool", "default": False},
        })
        # the job id names a file under the async directory that cleanup removes: an Ansible job id (j<digits>.<pid>)
        # or refused, never a path
        try:
            _validate.identifier(args["jid"], "jid")
        except _validate.Invalid as exc:
            return dict(results, failed=True, msg=str(exc))
        if not 0 <= args["wait"] <= 3600:
            return dict(results, failed=True, msg="wait %s is not between 0 and 3600 seconds" % args["wait"])
        if not 0.25 <= args["interval"] <= 600:
            return dict(results, failed=True, msg="interval %s is not between 0.25 and 600 seconds" % args["interval"])
        jid = args["jid"]
        async_dir = self._get_async_dir()
        # what async_status's action returns around its module's result
        base = {"started": True, "finished": False, "stdout": "", "stderr": "", "stdout_lines": [], "stderr_lines": [],
                "ansible_job_id": jid, "results_file": self._connection._shell.join_path(async_dir, jid)}
        deadline = time.monotonic() + args["wait"]
        pause = 0.25
        polls = 0
        while True:
            polls += 1
            res = merge_hash(base, self._job(task_vars, jid, async_dir, "status"))
            for key in ("started", "finished"):
                res[key] = bool(res.get(key))
            left = deadline - time.monotonic()
            if res["finished"] or res.get("failed") or res.get("unreachable") or left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 2, args["interval"])
        res["polls"] = polls
        if args["cleanup"] and res["finished"]:
            # the job's status file goes in the same task (async_status mode=cleanup), not in a loop of its own later
            res["cleaned"] = not self._job(task_vars, jid, async_dir, "cleanup").get("failed")
        return merge_hash(results, res)
