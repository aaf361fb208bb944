# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This doc fragment is PRIVATE to kiln.flatcar. Do not use it from other collections.

from __future__ import annotations


class ModuleDocFragment:
    # The one set of ssh option names (plugins/module_utils/_argspec.py ssh_args), after Ansible's connection
    # variables ansible_user, ansible_port, ansible_ssh_private_key_file and ansible_ssh_extra_args.

    DOCUMENTATION = r"""
options:
  ssh_user:
    description:
      - Login on the other host (Ansible's C(ansible_user)). Default the user of C(ssh) (or O(ssh_config)).
    type: str
  ssh_port:
    description: SSH port of the other host (Ansible's C(ansible_port)). Default C(22) or what O(ssh_config) says.
    type: int
  ssh_private_key_file:
    description:
      - Private key B(file) on the host the module runs on (C(ssh -i); Ansible's C(ansible_ssh_private_key_file)).
    type: path
    aliases: [ssh_key]
  ssh_private_key:
    description:
      - Private key B(text). It never touches the disk - it goes on stdin into a private C(ssh-agent) started for this
        run (socket in a 0700 temporary directory), which is killed on every exit path. Needs C(ssh-agent) and
        C(ssh-add). Mutually exclusive with O(ssh_private_key_file).
    type: str
  ssh_config:
    description: ssh client config file on the host the module runs on (C(ssh -F)).
    type: path
  ssh_extra_args:
    description:
      - Extra arguments for C(ssh), one argv word per item (e.g. V(-o) and V(ProxyJump=bastion) as two items;
        Ansible's C(ansible_ssh_extra_args)).
    type: list
    elements: str
    default: []
  ssh_known_hosts_file:
    description: Known-hosts file for the other host's key (C(UserKnownHostsFile)).
    type: path
  ssh_host_key_checking:
    description: C(StrictHostKeyChecking) for the connection. Default what C(ssh) (or O(ssh_config)) says.
    type: str
    choices: ["yes", "accept-new", "no"]
"""

    # the deprecated list of -o values (artifact_transfer, binpkg_cache); publish never had it
    LEGACY = r"""
options:
  ssh_options:
    description:
      - B(Deprecated), will be removed in 2.0.0; use O(ssh_extra_args). Values for C(ssh -o) (each item becomes
        C(-o <item>)).
    type: list
    elements: str
"""

    REMOTE = r"""
options:
  rsync_path:
    description:
      - rsync on the other host (C(rsync --rsync-path)); plain words only (e.g. V(sudo rsync)), no shell syntax.
    type: str
    default: rsync
  remote_python:
    description: Python 3 interpreter on the other host (plain words only).
    type: str
    default: python3
"""
