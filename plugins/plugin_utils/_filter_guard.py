# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This plugin util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""The filters' exception guard: the module-level guard (``module_utils/_stage.guarded``) for filter plugins.

A bad value given to a kiln filter ends in an ``AnsibleFilterError`` with one line naming the filter, never in a
traceback; Ansible's own errors (an undefined variable, a filter's own AnsibleFilterError) pass through, made one
line."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleError, AnsibleFilterError

from ansible_collections.kiln.flatcar.plugins.module_utils._stage import describe_exception, one_line


def guarded_filter(fn, name=None):
    """``fn`` wrapped so that any unexpected exception becomes ``AnsibleFilterError("<name>: unexpected <Exc>: ...")``."""
    label = name or fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnsibleFilterError as exc:
            text = str(getattr(exc, "message", exc))
            if "\n" in text or "\r" in text:
                raise AnsibleFilterError(one_line(text)) from None
            raise
        except AnsibleError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            raise AnsibleFilterError("%s: unexpected %s" % (label, describe_exception(type(exc), exc))) from None
    return wrapper


def guard_filters(filters):
    """A ``FilterModule.filters()`` mapping with every filter guarded."""
    return {name: guarded_filter(fn, name) for name, fn in filters.items()}
