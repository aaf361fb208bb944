# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Property-based tests (hypothesis) of the validation layer and the build record loader (issue 11).

For every validator in _validate (and _safety.confine / component): it raises nothing but its documented error type,
an accepted value never carries shell syntax, a newline, NUL or a '..' path part, and validating an accepted value
again gives the same value. For the record loader: random mutations of a valid record either load (and then satisfy
the schema) or fail with RecordError in one line -- never another exception."""
import json
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r
from ansible_collections.kiln.flatcar.plugins.module_utils import _schema
from ansible_collections.kiln.flatcar.plugins.module_utils import _validate as v
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import UnsafePath, component, confine

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# characters a POSIX shell gives a meaning to (outside the ones URLs need: ? # [ ] ~ ! are allowed in URLs)
SHELL = set(";|&$`<>()'\"\\*{} \t\n\r\0")
CONTROL = set(chr(c) for c in range(32)) | {"\x7f"}
HOSTILE = ["4593.2.5;touch${IFS}/tmp/x;true", "$(id)", "`id`", "a|b", "a&b", "a\nb", "a\rb", "a\0b", "../../etc", "/etc/passwd",
           "-oProxyCommand=id", "--upload-pack=touch /tmp/x", "", " ", "x" * 100000, "\u202eevil", "caf\u00e9", "\uff0e\uff0e/x",
           "a b", "http://h/$(id)", "http://h/\nGROUP=x", "ext::sh -c id", "1.2", "abc", "4593.2.5\n"]
# text biased towards the characters that matter
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.ascii_letters + string.digits + "._-+/:@%=,~", max_size=40),
    st.text(alphabet=st.sampled_from(sorted(SHELL | set("./-:+@") | set("az09"))), max_size=20),
    st.sampled_from(HOSTILE),
    st.builds(lambda a, b: a + b, st.sampled_from(["4593.2.5", "stable-4593.2.5", "https://h.example/", "amd64-usr", "/srv/x/"]),
              st.text(max_size=12)),
)
ANY = st.one_of(TEXT, st.none(), st.booleans(), st.integers(), st.floats(), st.lists(TEXT, max_size=3),
                st.dictionaries(TEXT, TEXT, max_size=2))


def _version(value):
    return v.version(value).version


def _version_canonical(value):
    return v.version(value, canonical=True).text


# (name, function returning the value to use, characters an accepted value may never hold)
VALIDATORS = [
    ("version", _version, SHELL | CONTROL | {"/"}),
    ("version_canonical", _version_canonical, SHELL | CONTROL | {"/"}),
    ("board", v.board, SHELL | CONTROL | {"/"}),
    ("channel", v.channel, SHELL | CONTROL | {"/"}),
    ("group", v.group, SHELL | CONTROL | {"/"}),
    ("identifier", v.identifier, SHELL | CONTROL | {"/"}),
    ("container_name", v.container_name, SHELL | CONTROL | {"/"}),
    ("host", v.host, SHELL | CONTROL | {"/"}),
    ("user", v.user, SHELL | CONTROL | {"/"}),
    ("build_id", v.build_id, SHELL | CONTROL | {"/"}),
    ("url", v.url, SHELL | CONTROL),
    ("file_name", v.file_name, CONTROL | {"/", "\\"}),
    ("remote_path", v.remote_path, SHELL | CONTROL),
    ("command", v.command, (SHELL - {" "}) | CONTROL),
    ("ssh_option", v.ssh_option, CONTROL),
    ("git_ref", v.git_ref, SHELL | CONTROL),
    ("git_repo", v.git_repo, {"\n", "\r", "\0"}),
    ("registry", v.registry, SHELL | CONTROL),
    ("package_atom", v.package_atom, (SHELL - {"*"}) | CONTROL),    # =cat/pkg-1.2* is an atom
    ("package_target", v.package_target, (SHELL - {"*"}) | CONTROL),
]
VALIDATORS += [(name, getattr(v, name), SHELL | CONTROL) for name in sorted(set(dir(v)) - set(n for n, _f, _b in VALIDATORS))
               if name.endswith("_name") and callable(getattr(v, name)) and name not in ("file_name", "container_name")]


@pytest.mark.parametrize("name, func, banned", VALIDATORS, ids=[x[0] for x in VALIDATORS])
@SETTINGS
@given(value=ANY)
def test_validator_properties(name, func, banned, value):
    try:
        out = func(value)
    except v.Invalid as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc), (name, str(exc))
        return
    text = str(out)
    assert not (set(text) & banned), (name, value, out)
    assert ".." not in text.split("/") and not text.startswith("-"), (name, value, out)
    assert func(out) == out, (name, "not stable", value, out)


@SETTINGS
@given(value=ANY)
def test_version_round_trip(value):
    try:
        parsed = v.version(value)
    except v.Invalid:
        return
    again = v.version(parsed.version, canonical=True)
    assert again.version == parsed.version and again.version_id == parsed.version_id and again.build_id == parsed.build_id
    assert v.version(parsed.text).as_dict() == parsed.as_dict()


@SETTINGS
@given(rel=ANY)
def test_confine_properties(tmp_path, rel):
    root = str(tmp_path)
    try:
        full = confine(root, rel)
    except UnsafePath as exc:
        assert "\n" not in str(exc)
        return
    real_root = os.path.realpath(root)
    assert full == real_root or full.startswith(real_root + os.sep)
    assert not (set(rel) & CONTROL) and ".." not in rel.split("/") and not rel.startswith("/")
    assert confine(root, os.path.relpath(full, real_root)) == full if full != real_root else True


@SETTINGS
@given(name=ANY)
def test_component_properties(name):
    try:
        out = component(name)
    except UnsafePath:
        return
    assert out == name and "/" not in out and not (set(out) & CONTROL) and out not in (".", "..") and not out.startswith(".")


# -- the record loader ---------------------------------------------------------------------------------------------

TS = "2026-11-30T20:00:00.123456Z"


def good_record():
    stage = {"status": "passed", "started": TS, "finished": TS, "duration_s": 1.0, "host": "b1", "input_digest": "sha256:" + "0" * 64,
             "inputs": {"a": [1]}, "outputs": [{"path": "images/amd64-usr/x/flatcar_production_image.bin", "role": "generic_image",
                                                "size": 3, "sha256": "a" * 64}], "attempts": 1, "log_path": None, "message": None,
             "details": {}}
    return {"schema_version": 1, "kind": r.KIND, "board": "amd64-usr", "arch": "amd64",
            "version": {"FLATCAR_VERSION": "4593.2.5+kiln-1", "FLATCAR_VERSION_ID": "4593.2.5", "FLATCAR_BUILD_ID": "kiln-1",
                        "FLATCAR_SDK_VERSION": "4593.2.5", "channel": "developer", "official": False},
            "build_root": "/b", "build_dir": "images/amd64-usr/x", "created": TS, "updated": TS,
            "stage_order": ["image", "sign"], "stages": {"image": stage, "sign": dict(stage, outputs=[])}}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, prefix + (i,))


REPLACEMENTS = st.one_of(ANY, st.sampled_from(["../../host-secret.txt", "/etc/shadow", "images/a\nb", "x" * 5000, 10 ** 30, -1,
                                               1.5, float("nan"), [], {}, None, True]))


@st.composite
def mutated_records(draw):
    data = good_record()
    for _round in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        target = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "drop", "nest", "add"]))
        if not target:
            data = [data] if op == "nest" else draw(REPLACEMENTS)
            break
        parent = data
        for part in target[:-1]:
            parent = parent[part]
        key = target[-1]
        if op == "replace":
            parent[key] = draw(REPLACEMENTS)
        elif op == "drop":
            del parent[key]
        elif op == "nest":
            parent[key] = {"x": parent[key]} if draw(st.booleans()) else [parent[key]]
        elif isinstance(parent, dict):
            parent[draw(TEXT)] = draw(REPLACEMENTS)
    return data


def _load(tmp_path, content):
    path = tmp_path / "kiln" / "amd64-usr" / "4593.2.5+kiln-1" / "build-record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    try:
        with r.BuildRecord.open(str(path), create=False, read_only=True) as rec:
            return rec.data, None
    except r.RecordError as exc:
        return None, str(exc)


@SETTINGS
@given(data=mutated_records())
def test_loader_mutated_records(tmp_path, data):
    loaded, error = _load(tmp_path, json.dumps(data).encode())
    if error is not None:
        assert "\n" not in error and "\r" not in error and "\0" not in error
    else:
        assert _schema.first_error(loaded, r.RECORD_SCHEMA) is None
        for stage in loaded["stages"].values():
            for out in stage["outputs"]:
                assert not out["path"].startswith("/") and ".." not in out["path"].split("/")


@SETTINGS
@given(cut=st.integers(0, 2000), junk=st.binary(max_size=8))
def test_loader_truncated_bytes(tmp_path, cut, junk):
    content = json.dumps(good_record()).encode()
    content = content[:cut % (len(content) + 1)] + junk
    loaded, error = _load(tmp_path, content)
    assert (loaded is None) != (error is None)
    if error is not None:
        assert "\n" not in error


@pytest.mark.parametrize("value, ok", [("@system", True), ("coreos-devel/board-packages", True), (">=app-misc/jq-1.7", True),
                                       ("@", False), ("@-x", False), ("--usepkg", False), ("jq", False), ("@sys tem", False)])
def test_package_target_takes_atoms_and_sets(value, ok):
    """What kiln.flatcar.packages passes build_packages as targets: atoms and sets (the build role adds @system)."""
    if ok:
        assert v.package_target(value) == value
    else:
        with pytest.raises(v.Invalid) as exc:
            v.package_target(value)
        assert "is not a package atom or a set" in str(exc.value)
