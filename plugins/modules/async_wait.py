#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: async_wait
short_description: Wait for an async job with short, growing poll intervals (async_status inside one call)
version_added: 0.3.0
description:
  - Polls the job that a task with C(async) and C(poll=0) started, like M(ansible.builtin.async_status), but keeps
    polling inside one call for up to O(wait) seconds, with intervals that grow from 0.25 s to O(interval).
  - A job that is done in a second (a stage that is skipped on a rerun) is seen at once, not after a fixed C(delay).
  - Returns what M(ansible.builtin.async_status) returns, so C(until=result.finished) loops keep working; use them
    with C(delay=0) and C(retries) of at least the job's timeout divided by O(wait).
  - Runs as an action plugin on the controller; every poll is one M(ansible.builtin.async_status) call on the host.
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
options:
  jid:
    description:
      - Job id returned by the task that started the job (C(ansible_job_id)); letters, digits, C(.), C(_), C(-) only
        (it names a file in the async directory, which O(cleanup) removes).
    type: str
    required: true
  wait:
    description: Longest time this call keeps polling, in seconds (0 polls once).
    type: float
    default: 30
  interval:
    description: Longest pause between two polls, in seconds.
    type: float
    default: 5
  cleanup:
    description: Remove the job's status file once the job has finished (as M(ansible.builtin.async_status) C(mode=cleanup)).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Only reads the job's status file.
  diff_mode:
    support: none
  idempotent:
    support: full
  action:
    support: full
    description: Runs as an action plugin on the controller.
notes:
  - The async directory is the shell option C(async_dir) (default C(~/.ansible_async)), as for M(ansible.builtin.async_status).
seealso:
  - module: ansible.builtin.async_status
"""

EXAMPLES = r"""
- name: Build packages as a background job
  kiln.flatcar.packages:
    scripts_dir: /srv/kiln/scripts
    board: amd64-usr
  async: 21600
  poll: 0
  register: packages_job

- name: Wait for packages (seen within a quarter of a second of finishing when it was skipped)
  kiln.flatcar.async_wait:
    jid: "{{ packages_job.ansible_job_id }}"
    wait: 60
    interval: 5
  register: packages
  until: packages.finished
  retries: 361
  delay: 0
"""

RETURN = r"""
finished:
  description: Whether the job has finished.
  returned: always
  type: bool
started:
  description: Whether the job has started.
  returned: always
  type: bool
ansible_job_id:
  description: The job id.
  returned: always
  type: str
results_file:
  description: The job's status file on the host.
  returned: always
  type: str
cleaned:
  description: Whether the job's status file was removed (O(cleanup=true) and the job finished).
  returned: when O(cleanup=true) and the job finished
  type: bool
polls:
  description: How many times this call read the job's status.
  returned: always
  type: int
  sample: 3
"""
