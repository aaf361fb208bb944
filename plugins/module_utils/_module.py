# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""The AnsibleModule every kiln module uses: its failures are always one line.

Ansible's own argument checks quote the offending value (``value of board must be one of: ..., got: a<NEWLINE>b``),
so a hostile value with a newline would make a second line; kiln's own messages go through the same collapse."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule


class KilnModule(AnsibleModule):
    def fail_json(self, msg, **kwargs):  # pylint: disable=arguments-differ
        super().fail_json(msg=" ".join(str(msg).split()), **kwargs)
