# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""kiln.flatcar.query: a JMESPath query over module results and build records, on the controller.

Jinja chains like ``x | dict2items | selectattr('value.lost') | map(attribute='value.host') | list`` become
``x | kiln.flatcar.query('values(@)[?lost].host')``. Unlike community.general.json_query it needs no other
collection, and a bad expression fails with one line naming it."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    import jmespath
    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - jmespath is a controller requirement (requirements-dev.txt, meta)
    jmespath = None
    HAS_JMESPATH = False


def _plain(value):
    """Ansible's lazy/tagged containers as plain dicts and lists, which jmespath understands."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def query(data, expression):
    if not HAS_JMESPATH:
        raise AnsibleFilterError("kiln.flatcar.query needs the jmespath Python library on the controller: pip install jmespath")
    if not isinstance(expression, str) or not expression.strip():
        raise AnsibleFilterError("kiln.flatcar.query: the expression must be a non-empty string")
    try:
        return jmespath.search(expression, _plain(data))
    except jmespath.exceptions.JMESPathError as exc:
        raise AnsibleFilterError("kiln.flatcar.query: bad JMESPath expression %r: %s" % (expression, " ".join(str(exc).split())))


class FilterModule:
    def filters(self):
        return {"query": query}
