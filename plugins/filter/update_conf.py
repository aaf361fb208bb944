# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Client side of a kiln mirror: /etc/flatcar/update.conf as text, Ignition v3 config or Butane snippet.

Flatcar reads /etc/flatcar/update.conf over /usr/share/flatcar/update.conf (flatcar-sdk.md §5.4, §7.3);
without it a custom image keeps asking the public Flatcar server and either loses its customization
(official key) or rejects every payload (dev key).
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlparse

from ansible.errors import AnsibleFilterError

PATH = "/etc/flatcar/update.conf"
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:{}-]*$")
_ALIAS_RE = re.compile(r"^[^\n\r=]*$")
REBOOT_STRATEGIES = ("reboot", "etcd-lock", "off", "best-effort")


def update_conf(server, group=None, machine_alias=None, download_user=None, download_password=None,
                pcr_policy_server=None, reboot_strategy=None):
    """The text of /etc/flatcar/update.conf."""
    if not isinstance(server, str) or not server.strip():
        raise AnsibleFilterError("update_conf: give the update server URL (e.g. https://nebraska.example/v1/update/) or 'disabled'")
    server = server.strip()
    if server != "disabled":
        url = urlparse(server)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise AnsibleFilterError("update_conf: SERVER %r is not an http(s) URL or 'disabled'" % server)
    lines = ["SERVER=%s" % server]
    if group is not None:
        group = str(group).strip()
        if not _GROUP_RE.match(group):
            raise AnsibleFilterError("update_conf: GROUP %r must be a channel name, a group UUID or an alias (no spaces)" % group)
        lines.append("GROUP=%s" % group)
    for key, value in (("MACHINE_ALIAS", machine_alias), ("DOWNLOAD_USER", download_user),
                       ("DOWNLOAD_PASSWORD", download_password), ("PCR_POLICY_SERVER", pcr_policy_server)):
        if value is None:
            continue
        value = str(value)
        if not _ALIAS_RE.match(value):
            raise AnsibleFilterError("update_conf: %s must be one line without '='" % key)
        lines.append("%s=%s" % (key, value))
    if reboot_strategy is not None:
        if reboot_strategy not in REBOOT_STRATEGIES:
            raise AnsibleFilterError("update_conf: REBOOT_STRATEGY must be one of %s" % ", ".join(REBOOT_STRATEGIES))
        lines.append("REBOOT_STRATEGY=%s" % reboot_strategy)
    return "\n".join(lines) + "\n"


def update_conf_ignition(server, group=None, ignition_version="3.3.0", **kwargs):
    """An Ignition v3 config (dict) that writes /etc/flatcar/update.conf."""
    if not re.match(r"^3\.[0-9]+\.[0-9]+$", str(ignition_version)):
        raise AnsibleFilterError("update_conf_ignition: ignition_version must be a 3.x.y spec version")
    text = update_conf(server, group, **kwargs)
    return {
        "ignition": {"version": str(ignition_version)},
        "storage": {"files": [{
            "path": PATH,
            "mode": 0o644,
            "overwrite": True,
            "contents": {"source": "data:," + quote(text, safe="")},
        }]},
    }


def update_conf_butane(server, group=None, butane_version="1.0.0", **kwargs):
    """A Butane (variant flatcar) config as YAML text that writes /etc/flatcar/update.conf."""
    if not re.match(r"^1\.[0-9]+\.[0-9]+$", str(butane_version)):
        raise AnsibleFilterError("update_conf_butane: butane_version must be a 1.x.y flatcar variant version")
    text = update_conf(server, group, **kwargs)
    body = "".join("          %s\n" % line for line in text.splitlines())
    return (
        "variant: flatcar\n"
        "version: %s\n"
        "storage:\n"
        "  files:\n"
        "    - path: %s\n"
        "      overwrite: true\n"
        "      mode: 0644\n"
        "      contents:\n"
        "        inline: |\n"
        "%s" % (butane_version, PATH, body)
    )


class FilterModule:
    def filters(self):
        return {
            "update_conf": update_conf,
            "update_conf_ignition": update_conf_ignition,
            "update_conf_butane": update_conf_butane,
        }


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(update_conf_ignition("https://example.invalid/v1/update/", "stable"), indent=2))
