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
import unicodedata
from urllib.parse import quote, urlparse

from ansible.errors import AnsibleFilterError

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.plugin_utils._filter_guard import guard_filters

PATH = "/etc/flatcar/update.conf"
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:{}-]*\Z")
_ALIAS_RE = re.compile(r"^[^\n\r=]*\Z")
REBOOT_STRATEGIES = ("reboot", "etcd-lock", "off", "best-effort")


def _no_control(key, value):
    """``value`` as text, refused when it holds a control character (CR, LF, NUL, ...) or a Unicode line separator:
    each would start a new key in update.conf or a new line in the Butane YAML."""
    if value is None:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise AnsibleFilterError("update_conf: %s must be a string, not %s" % (key, type(value).__name__))
    value = str(value)
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise AnsibleFilterError("update_conf: %s contains the control character %r: give one line of text"
                                     % (key, char))
    return value


def update_conf(server, group=None, machine_alias=None, download_user=None, download_password=None,
                pcr_policy_server=None, reboot_strategy=None):
    """The text of /etc/flatcar/update.conf."""
    values = {}
    for key, value in (("SERVER", server), ("GROUP", group), ("MACHINE_ALIAS", machine_alias),
                       ("DOWNLOAD_USER", download_user), ("DOWNLOAD_PASSWORD", download_password),
                       ("PCR_POLICY_SERVER", pcr_policy_server), ("REBOOT_STRATEGY", reboot_strategy)):
        values[key] = _no_control(key, value)
    server, group, machine_alias = values["SERVER"], values["GROUP"], values["MACHINE_ALIAS"]
    download_user, download_password = values["DOWNLOAD_USER"], values["DOWNLOAD_PASSWORD"]
    pcr_policy_server, reboot_strategy = values["PCR_POLICY_SERVER"], values["REBOOT_STRATEGY"]
    if not isinstance(server, str) or not server.strip():
        raise AnsibleFilterError("update_conf: give the update server URL (e.g. https://nebraska.example/v1/update/) or 'disabled'")
    server = server.strip()
    if server != "disabled":
        try:
            _validate.url(server, "SERVER")
        except _validate.Invalid as exc:
            raise AnsibleFilterError("update_conf: %s, or 'disabled'" % exc)
        if not urlparse(server).netloc:
            raise AnsibleFilterError("update_conf: SERVER %r is not an http(s) URL or 'disabled'" % server)
    lines = ["SERVER=%s" % server]
    if group is not None:
        group = group.strip()
        if not _GROUP_RE.match(group):
            raise AnsibleFilterError("update_conf: GROUP %r must be a channel name, a group UUID or an alias (no spaces)" % group)
        lines.append("GROUP=%s" % group)
    for key, value in (("MACHINE_ALIAS", machine_alias), ("DOWNLOAD_USER", download_user),
                       ("DOWNLOAD_PASSWORD", download_password), ("PCR_POLICY_SERVER", pcr_policy_server)):
        if value is None:
            continue
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
    if not re.match(r"^3\.[0-9]+\.[0-9]+\Z", str(ignition_version)):
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
    if not re.match(r"^1\.[0-9]+\.[0-9]+\Z", str(butane_version)):
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
        return guard_filters({
            "update_conf": update_conf,
            "update_conf_ignition": update_conf_ignition,
            "update_conf_butane": update_conf_butane,
        })


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(update_conf_ignition("https://example.invalid/v1/update/", "stable"), indent=2))
