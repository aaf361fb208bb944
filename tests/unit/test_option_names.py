"""One name per concept (issue 10): every module's argument_spec, collected by calling its main() with a stand-in
AnsibleModule, uses the shared names of _argspec; old names live on only as documented, deprecated aliases."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

from kiln_testlib import REPO, ensure_collection_path

ensure_collection_path()

from ansible_collections.kiln.flatcar.plugins.module_utils import _argspec, _validate  # noqa: E402
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BOARDS  # noqa: E402

# a module that is only the documentation of an action plugin (kiln.flatcar.async_wait) has no main(): its options are
# checked by the action plugin's own validate_argument_spec
MODULES = sorted(n for n in (os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")))
                 if not os.path.exists(os.path.join(REPO, "plugins", "action", n + ".py")))


class _Captured(Exception):
    pass


def argument_spec(name):
    mod = importlib.import_module("ansible_collections.kiln.flatcar.plugins.modules." + name)
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise _Captured()

    original = mod.AnsibleModule
    mod.AnsibleModule = fake
    try:
        with pytest.raises(_Captured):
            mod.main()
    finally:
        mod.AnsibleModule = original
    return seen["argument_spec"]


SPECS = {name: argument_spec(name) for name in MODULES}


def walk(spec, prefix=""):
    for key, opt in spec.items():
        yield prefix + key, key, opt
        if opt.get("options"):
            yield from walk(opt["options"], prefix + key + ".")


@pytest.mark.parametrize("module", MODULES)
def test_no_deprecated_name_is_primary(module):
    for path, key, opt in walk(SPECS[module]):
        if opt.get("removed_in_version"):
            assert opt["removed_in_version"] == _argspec.DEPRECATION_VERSION and opt.get("removed_from_collection") == "kiln.flatcar"
            continue
        if key == "rsync_executable":
            continue  # the local rsync: a concept of its own
        assert key not in _argspec.RENAMED, "%s: option %s is an old name, use %s" % (module, path, _argspec.RENAMED[key])


@pytest.mark.parametrize("module", MODULES)
def test_old_names_are_deprecated_aliases(module):
    for path, _key, opt in walk(SPECS[module]):
        deprecated = {d["name"]: d for d in opt.get("deprecated_aliases", [])}
        for alias in opt.get("aliases", []):
            if alias in _argspec.RENAMED:
                assert alias in deprecated, "%s: alias %s of %s is not deprecated" % (module, alias, path)
        for name, entry in deprecated.items():
            assert name in opt.get("aliases", []), "%s: deprecated alias %s of %s is not an alias" % (module, name, path)
            assert entry["version"] == "2.0.0" and entry["collection_name"] == "kiln.flatcar"


@pytest.mark.parametrize("module", MODULES)
def test_board_choices_are_the_boards(module):
    for path, key, opt in walk(SPECS[module]):
        if key == "board":
            assert opt.get("choices") == sorted(BOARDS), "%s: %s must have choices sorted(_record.BOARDS)" % (module, path)


@pytest.mark.parametrize("module", MODULES)
def test_engine_and_ssh_names(module):
    for path, key, opt in walk(SPECS[module]):
        if key == "engine":
            assert opt.get("choices") == list(_argspec.ENGINES) and opt.get("default") == "auto", "%s: %s" % (module, path)
        if key.startswith("ssh_") and not opt.get("removed_in_version"):
            assert key in _argspec.SSH_NAMES, "%s: %s is not one of the ssh names %s" % (module, path, _argspec.SSH_NAMES)
        if key in _argspec.SSH_NAMES and "private_key" in key and not key.endswith("_file"):
            assert opt.get("no_log") is True, "%s: %s holds a secret: no_log" % (module, path)


def test_remote_names_have_one_meaning():
    for module, spec in SPECS.items():
        for path, key, opt in walk(spec):
            if key in ("rsync_path", "remote_python"):
                assert opt["type"] == "str" and opt.get("default") == _argspec.remote_args()[key]["default"], (module, path)


@pytest.mark.parametrize("value", ["4593.2.6;touch${IFS}/tmp/x;true", "../../../victim", "stable-4593.2.5", "4593.2.5/..",
                                   "-4593.2.5", "4593.2.5+a b"])
def test_canonical_version_refuses_path_and_shell_syntax(value):
    with pytest.raises(_validate.Invalid) as exc:
        _validate.version(value, canonical=True)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kind,value", [
    (_validate.git_repo, "--upload-pack=touch /tmp/x;true"), (_validate.git_repo, "ext::sh -c touch% /tmp/x"),
    (_validate.git_repo, "relative/path"), (_validate.git_ref, "-x"), (_validate.git_ref, "a..b"), (_validate.git_ref, "HEAD@{1}"),
    (_validate.remote_path, "/tmp/x; touch /tmp/y"), (_validate.remote_path, "/srv/../etc"), (_validate.remote_path, "srv"),
    (_validate.host, "-oProxyCommand=x"), (_validate.user, "root;id"), (_validate.command, "rsync; id"),
    (_validate.build_id, "kiln 1"), (_validate.build_id, "-x"), (_validate.container_name, "a/b"), (_validate.group, ".x"),
    (_validate.url, "file:///etc/passwd"), (_validate.url, "http://x/$(id)"), (_validate.file_name, ".."), (_validate.channel, "main"),
    (_validate.ssh_option, "-oProxyCommand=x"),
])
def test_validators_refuse_with_one_line(kind, value):
    with pytest.raises(_validate.Invalid) as exc:
        kind(value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kind,value", [
    (_validate.git_repo, "https://github.com/flatcar/scripts.git"), (_validate.git_repo, "file:///srv/scripts"),
    (_validate.git_repo, "git@github.com:flatcar/scripts.git"), (_validate.git_repo, "/srv/scripts"),
    (_validate.git_ref, "stable-4593.2.5"), (_validate.git_ref, "flatcar-4593"), (_validate.remote_path, "/srv/kiln-cache"),
    (_validate.host, "127.0.0.2"), (_validate.host, "[::1]"), (_validate.user, "kiln-cache"), (_validate.command, "sudo rsync"),
    (_validate.build_id, "kiln-20260101-1200"), (_validate.container_name, "flatcar-sdk-all-4593.2.5_os-4593.2.5-kiln-1"),
    (_validate.group, "developer"), (_validate.url, "http://cache.example:8080"), (_validate.file_name, "x.raw"),
    (_validate.channel, "stable"), (_validate.ssh_option, "StrictHostKeyChecking=yes"), (_validate.board, "arm64-usr"),
])
def test_validators_accept(kind, value):
    assert kind(value)


def test_one_engine_probe():
    """detect_engine lives once (in _argspec); _sdk re-exports it for the SDK stages."""
    from ansible_collections.kiln.flatcar.plugins.module_utils import _sdk
    assert _sdk.detect_engine is _argspec.detect_engine
    for path in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        assert 'get_bin_path("podman")' not in text and "get_bin_path(p[\"engine\"]" not in text, path
