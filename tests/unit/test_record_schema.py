# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The build record schema at load (issue 11): kiln's own validator (_schema) agrees with the jsonschema library on a
corpus of valid and invalid records, the embedded schema is docs/build-record.schema.json, and a record that fails
gives one line naming the file and the first failing JSON path."""
import copy
import json
import os

import jsonschema
import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _record as r
from ansible_collections.kiln.flatcar.plugins.module_utils import _schema

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "build-record.schema.json")
VERSION = {"FLATCAR_VERSION": "4593.2.5+kiln-1", "FLATCAR_VERSION_ID": "4593.2.5", "FLATCAR_BUILD_ID": "kiln-1",
           "FLATCAR_SDK_VERSION": "4593.2.5", "channel": "developer", "official": False}
HEX = "ab" * 32
TS = "2026-11-30T20:00:00.123456Z"


def good_record():
    """A record as kiln writes it (same shape as test_build's real ones)."""
    stage = {"status": "passed", "started": TS, "finished": TS, "duration_s": 1.5, "host": "builder-1",
             "input_digest": "sha256:" + HEX, "inputs": {"flags": ["--board=amd64-usr"], "weird": {"any": [1, None]}},
             "outputs": [{"path": "images/amd64-usr/developer-4593.2.5+kiln-1-a1/flatcar_production_image.bin.bz2",
                          "role": "generic_image", "size": 123, "sha256": HEX}],
             "attempts": 1, "log_path": "/b/kiln/amd64-usr/4593.2.5+kiln-1/logs/image.log", "message": None, "details": {}}
    return {"schema_version": 1, "kind": r.KIND, "board": "amd64-usr", "arch": "amd64", "version": dict(VERSION),
            "build_root": "/srv/scripts/__build__/images", "build_dir": "images/amd64-usr/developer-4593.2.5+kiln-1-a1",
            "group": "developer", "source": {"repo": "https://github.com/flatcar/scripts.git"}, "created": TS, "updated": TS,
            "stage_order": ["image", "vm_image:qemu_uefi", "publish:mirror"],
            "stages": {"image": stage, "vm_image:qemu_uefi": dict(stage, outputs=[], finished=None, input_digest=None),
                       "publish:mirror": dict(stage, status="failed", message="one line")}}


def out0(d):
    return d["stages"]["image"]["outputs"][0]


def drop(obj, key):
    del obj[key]


# (name, edit) -> the record after edit; edit returns a replacement or edits in place
EDITS = {
    "valid": lambda d: None,
    "valid_minimal": lambda d: {"schema_version": 1, "kind": r.KIND, "board": "arm64-usr", "version": {"FLATCAR_VERSION": "1.2.3"},
                                "stage_order": [], "stages": {}},
    "valid_size_float_integer": lambda d: out0(d).update(size=12.0),
    "valid_null_build_dir": lambda d: d.update(build_dir=None),
    "board_dotdot": lambda d: d.update(board="../../x"),
    "board_list": lambda d: d.update(board=["amd64-usr"]),
    "arch_wrong_type": lambda d: d.update(arch=1),
    "schema_version_true": lambda d: d.update(schema_version=True),
    "extra_top_key": lambda d: d.update(evil=1),
    "version_null": lambda d: d.update(version=None),
    "version_missing": lambda d: drop(d, "version"),
    "version_dotdot": lambda d: d["version"].update(FLATCAR_VERSION="../../x"),
    "version_newline": lambda d: d["version"].update(FLATCAR_VERSION="4593.2.5\n"),
    "version_shell": lambda d: d["version"].update(FLATCAR_VERSION="4593.2.5;touch /tmp/x"),
    "version_prefixed": lambda d: d["version"].update(FLATCAR_VERSION="stable-4593.2.5"),
    "version_huge": lambda d: d["version"].update(FLATCAR_VERSION="1" * 5000 + ".1.1"),
    "version_id_bad": lambda d: d["version"].update(FLATCAR_VERSION_ID="4593.2"),
    "build_id_slash": lambda d: d["version"].update(FLATCAR_BUILD_ID="a/../b"),
    "channel_bad": lambda d: d["version"].update(channel="nightly"),
    "official_string": lambda d: d["version"].update(official="yes"),
    "version_extra_key": lambda d: d["version"].update(PATH="/evil"),
    "build_root_relative": lambda d: d.update(build_root="relative"),
    "build_root_newline": lambda d: d.update(build_root="/a\nb"),
    "build_dir_dotdot": lambda d: d.update(build_dir="images/../../etc"),
    "build_dir_absolute": lambda d: d.update(build_dir="/etc"),
    "group_shell": lambda d: d.update(group="dev;rm -rf /"),
    "created_bad": lambda d: d.update(created="yesterday"),
    "stage_order_null": lambda d: d.update(stage_order=None),
    "stage_order_numbers": lambda d: d.update(stage_order=[1, 2]),
    "stage_order_path": lambda d: d.update(stage_order=["../x"]),
    "stages_null": lambda d: d.update(stages=None),
    "stages_list": lambda d: d.update(stages=[]),
    "stage_name_path": lambda d: d["stages"].update({"../../x": d["stages"]["image"]}),
    "stage_name_newline": lambda d: d["stages"].update({"image\n": d["stages"]["image"]}),
    "stage_null": lambda d: d["stages"].update(image=None),
    "stage_no_status": lambda d: drop(d["stages"]["image"], "status"),
    "stage_status_bad": lambda d: d["stages"]["image"].update(status="ok"),
    "stage_attempts_zero": lambda d: d["stages"]["image"].update(attempts=0),
    "stage_attempts_bool": lambda d: d["stages"]["image"].update(attempts=True),
    "stage_digest_bad": lambda d: d["stages"]["image"].update(input_digest="sha256:xyz"),
    "stage_finished_bad": lambda d: d["stages"]["image"].update(finished=5),
    "outputs_dict": lambda d: d["stages"]["image"].update(outputs={"path": "x"}),
    "outputs_string": lambda d: d["stages"]["image"].update(outputs="images/a"),
    "output_null": lambda d: d["stages"]["image"]["outputs"].append(None),
    "output_without_size": lambda d: drop(out0(d), "size"),
    "size_negative": lambda d: out0(d).update(size=-1),
    "size_huge": lambda d: out0(d).update(size=10 ** 30),
    "size_string": lambda d: out0(d).update(size="12"),
    "size_bool": lambda d: out0(d).update(size=True),
    "size_fraction": lambda d: out0(d).update(size=1.5),
    "sha256_list": lambda d: out0(d).update(sha256=["x"]),
    "sha256_upper": lambda d: out0(d).update(sha256=HEX.upper()),
    "path_dotdot": lambda d: out0(d).update(path="../../host-secret.txt"),
    "path_inner_dotdot": lambda d: out0(d).update(path="images/../../host-secret.txt"),
    "path_trailing_dotdot": lambda d: out0(d).update(path="images/.."),
    "path_absolute": lambda d: out0(d).update(path="/etc/shadow"),
    "path_nul": lambda d: out0(d).update(path="images/a\u0000b"),
    "path_newline": lambda d: out0(d).update(path="images/a\nb"),
    "path_shell": lambda d: out0(d).update(path="images/$(id)"),
    "path_empty": lambda d: out0(d).update(path=""),
    "path_number": lambda d: out0(d).update(path=7),
    "valid_path_dots_in_name": lambda d: out0(d).update(path="images/a..b/..c"),
    "role_shell": lambda d: out0(d).update(role="x;y"),
    "record_list": lambda d: [d],
    "record_string": lambda d: "hello",
}


def edited(name):
    data = good_record()
    return EDITS[name](data) or data


def jsonschema_paths(data, schema):
    return [list(e.absolute_path) for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]


def test_embedded_schema_is_the_documented_one():
    with open(DOC, encoding="utf-8") as fh:
        assert r.RECORD_SCHEMA == json.load(fh)
    jsonschema.Draft202012Validator.check_schema(r.RECORD_SCHEMA)


@pytest.mark.parametrize("name", sorted(EDITS))
def test_own_validator_agrees_with_jsonschema(name):
    data = edited(name)
    theirs = jsonschema_paths(data, r.RECORD_SCHEMA)
    mine = list(_schema.iter_errors(data, r.RECORD_SCHEMA))
    assert bool(theirs) == bool(mine), (name, theirs, mine)
    assert name.startswith("valid") == (not mine), (name, mine)
    for parts, _message in mine:
        # the same place, or (additionalProperties/propertyNames: kiln names the key) its parent object
        assert parts in theirs or parts[:-1] in theirs, (name, parts, theirs)


@pytest.mark.parametrize("name", sorted(n for n in EDITS if not n.startswith("valid")))
def test_loader_refuses_with_one_line_naming_file_and_path(tmp_path, name):
    path = tmp_path / "kiln" / "amd64-usr" / "4593.2.5+kiln-1" / "build-record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(edited(name)))
    with pytest.raises(r.RecordError) as exc:
        r.BuildRecord.open(str(path), create=False, read_only=True)
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg and "\0" not in msg
    assert str(path) in msg
    if name not in ("record_list", "record_string", "schema_version_true"):
        first = _schema.first_error(edited(name), r.RECORD_SCHEMA)
        assert first is not None and ("invalid at %s:" % first[0]) in msg, (msg, first)


@pytest.mark.parametrize("name", sorted(n for n in EDITS if n.startswith("valid")))
def test_loader_accepts_valid_records(tmp_path, name):
    path = tmp_path / "build-record.json"
    path.write_text(json.dumps(edited(name)))
    with r.BuildRecord.open(str(path), create=False, read_only=True) as rec:
        assert rec.data == edited(name)


def test_first_error_names_the_json_path():
    assert _schema.first_error(edited("path_dotdot"), r.RECORD_SCHEMA)[0] == "$.stages.image.outputs[0].path"
    assert _schema.first_error(edited("stage_name_path"), r.RECORD_SCHEMA)[0] == "$.stages['../../x']"
    assert _schema.first_error(edited("board_dotdot"), r.RECORD_SCHEMA)[0] == "$.board"
    assert _schema.first_error(edited("valid"), r.RECORD_SCHEMA) is None


def test_arch_must_match_board(tmp_path):
    path = tmp_path / "build-record.json"
    path.write_text(json.dumps(dict(good_record(), arch="arm64")))
    with pytest.raises(r.RecordError, match=r"invalid at \$\.arch: 'arm64' is not the arch of board amd64-usr"):
        r.BuildRecord.open(str(path), create=False, read_only=True)


@pytest.mark.parametrize("content, words", [
    (b"", "unreadable"),
    (json.dumps(good_record()).encode()[:200], "unreadable"),
    (b"\xff\xfe garbage", "unreadable"),
    (b"[" * 200000, "unreadable"),
    (b'{"a": ' * 100000, "unreadable"),
])
def test_loader_survives_broken_bytes(tmp_path, content, words):
    path = tmp_path / "build-record.json"
    path.write_bytes(content)
    with pytest.raises(r.RecordError) as exc:
        r.BuildRecord.open(str(path), create=False, read_only=True)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_loader_refuses_a_fifo_without_hanging(tmp_path):
    path = tmp_path / "build-record.json"
    os.mkfifo(str(path))
    with pytest.raises(r.RecordError, match="not a regular file"):
        r.BuildRecord.open(str(path), read_only=True)


def test_loader_refuses_a_directory(tmp_path):
    path = tmp_path / "build-record.json"
    path.mkdir()
    with pytest.raises(r.RecordError):
        r.BuildRecord.open(str(path), read_only=True)


def test_verify_outputs_confines_recorded_paths(tmp_path):
    """A record edited after load (or a symlink in the tree) cannot make kiln stat or hash a file outside the root."""
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("s")
    (root / "images" / "link").symlink_to(secret)
    rec = r.BuildRecord(str(root / "rec.json"), good_record(), read_only=True)
    out0(rec.data).update(path="images/link", size=1)
    problems = rec.verify_outputs("image", build_root=str(root))
    assert len(problems) == 1 and "outside" in problems[0]


def test_validator_refuses_unknown_keywords():
    with pytest.raises(_schema.SchemaError):
        list(_schema.iter_errors({}, {"oneOf": [{"type": "object"}]}))
    with pytest.raises(_schema.SchemaError):
        list(_schema.iter_errors({}, {"$ref": "https://example.com/s.json"}))


SUBSET_CASES = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", None]),
    ({"type": "number", "minimum": 0, "maximum": 10}, [0, 10, 10.5, -1, False]),
    ({"enum": [1, "a", None, True]}, [1, 1.0, True, "a", None, 0, False]),
    ({"const": 0}, [0, 0.0, False, None]),
    ({"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a"}, ["a", "ab", "abcd", "ba", "abc", "\u00e9\u00e9"]),
    ({"type": "array", "maxItems": 2, "items": {"type": "string"}}, [[], ["a"], ["a", 1], ["a", "b", "c"], {}]),
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "null"}}, "additionalProperties": {"type": "boolean"}},
     [{"a": None}, {}, {"a": None, "b": True}, {"a": None, "b": 1}, {"a": 1}]),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, [{"ab": 1}, {"A": 1}, {}, "x"]),
    ({"type": ["string", "null"], "pattern": "^x"}, ["x", "y", None, 1]),
]


@pytest.mark.parametrize("schema, values", SUBSET_CASES)
def test_subset_keywords_agree_with_jsonschema(schema, values):
    for value in values:
        theirs = jsonschema.Draft202012Validator(schema).is_valid(value)
        mine = _schema.first_error(value, copy.deepcopy(schema)) is None
        assert theirs == mine, (schema, value, theirs, mine)
