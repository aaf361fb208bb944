# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every play of every shipped playbook targets hosts of the shipped example inventory by default.

A play whose default group is misspelt (sign.yml once targeted `signer` while the inventories name the
group `signers`) silently runs on no host: ansible-playbook says "skipping: no hosts matched" and exits 0.
"""

import os
import re
import subprocess
import sys

import pytest
from kiln_testlib import ansible_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOKS = sorted(f for f in os.listdir(os.path.join(REPO, "playbooks")) if f.endswith(".yml"))
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_play_matches_a_host_of_the_example_inventory(playbook):
    if not os.path.exists(ANSIBLE_PLAYBOOK):
        pytest.skip("ansible-playbook is not installed beside %s: run make deps" % sys.executable)
    res = subprocess.run([ANSIBLE_PLAYBOOK, "-i", os.path.join(REPO, "inventories", "example"),
                          os.path.join(REPO, "playbooks", playbook), "--list-hosts"],
                         capture_output=True, text=True, cwd=REPO, env=ansible_env(), check=False)
    assert res.returncode == 0, res.stderr
    plays = re.findall(r"play #\d+ \((.*?)\): (.*?)\tTAGS.*?\n\s+pattern: .*?\n\s+hosts \((\d+)\)", res.stdout)
    assert plays, res.stdout
    for pattern, name, count in plays:
        assert int(count) > 0, "%s: play %r (hosts %s) matches no host of inventories/example" % (playbook, name, pattern)
