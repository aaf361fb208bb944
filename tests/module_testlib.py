"""In-process module calls for the unit tests of the stage engine (test_stage.py, test_sdk_stage.py): run a module's
``main()`` with arguments as Ansible would pass them and read its JSON result, inject an exception, and ask whether a
build record's lock is free."""

from __future__ import annotations

import json
import signal
import threading

import pytest

from ansible.module_utils import basic

from ansible_collections.kiln.flatcar.plugins.module_utils import _record

INJECTED = "injected: disk on fire"


def boom(*_args, **_kwargs):
    """Stands in for any function: raises the injected exception."""
    raise RuntimeError(INJECTED)


def lock_is_free(path):
    """Whether another writer could take the record's lock now."""
    try:
        _record.BuildRecord.open(path, create=False).close()
        return True
    except _record.RecordLocked:
        return False


def call_module(mod, args, capsys, name=None, check=False):
    """Run ``mod.main()`` as ``kiln.flatcar.<name>`` (default: the module's own name) with ``args``, in check mode
    with ``check``; its result dict. The signal handlers a module installs (boot_check, ExitCleanup) are restored
    afterwards (only the main thread can install them)."""
    name = name or mod.__name__.rsplit(".", 1)[-1]
    full = name if "." in name else "kiln.flatcar." + name
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_module_name=full,
                                                                  _ansible_check_mode=check)}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    main_thread = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)} if main_thread else {}
    try:
        with pytest.raises(SystemExit):
            mod.main()
    finally:
        basic._ANSIBLE_ARGS = None
        basic._ANSIBLE_PROFILE = None
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])
