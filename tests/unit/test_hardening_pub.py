# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 11, part B: sdk_checkout, nebraska_package and publish refuse bad values and misbehaving peers with one line,
no traceback and nothing written where it does not belong. The modules run in-process (``main()`` with the
arguments Ansible would pass); the peers are a local git repository and tiny HTTP servers on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import subprocess
import threading

import pytest


from module_testlib import call_module
from ansible_collections.kiln.flatcar.plugins.module_utils import _runner, _validate
from ansible_collections.kiln.flatcar.plugins.modules import nebraska_package, publish, sdk_checkout

TAG = "stable-4593.2.5"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost", "GIT_CONFIG_NOSYSTEM": "1"}


# -- running a module in-process ---------------------------------------------------------------------------------
def call(module, args, capsys, check=False, name=None):
    """``module.main()`` with ``args``; the JSON result (failure or success)."""
    return call_module(module, args, capsys, name=name, check=check)


def one_line_failure(res, *words):
    assert res.get("failed"), res
    assert "\n" not in res["msg"] and "exception" not in res and "Traceback" not in json.dumps(res), res
    for word in words:
        assert word in res["msg"], (word, res["msg"])


def tree(root):
    """Every path under ``root`` (relative), directories included."""
    found = []
    for top, dirs, files in os.walk(str(root)):
        found += [os.path.relpath(os.path.join(top, n), str(root)) for n in dirs + files]
    return sorted(found)


# -- sdk_checkout ----------------------------------------------------------------------------------------------
def git(*args, cwd=None):
    return subprocess.run(["git"] + list(args), cwd=cwd, check=True, capture_output=True, text=True,
                          env=dict(os.environ, **GIT_ENV)).stdout.strip()


@pytest.fixture()
def origin(tmp_path, monkeypatch):
    """A scripts-shaped repository (just version.txt) with one release tag; TMPDIR private to the test."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    repo = tmp_path / "origin"
    vfile = repo / "sdk_container" / ".repo" / "manifests" / "version.txt"
    vfile.parent.mkdir(parents=True)
    vfile.write_text("FLATCAR_VERSION=4593.2.5\nFLATCAR_VERSION_ID=4593.2.5\nFLATCAR_BUILD_ID=\"\"\n"
                     "FLATCAR_SDK_VERSION=4593.0.0\n")
    git("init", "-q", "-b", "main", str(repo))
    git("add", "-A", cwd=str(repo))
    git("commit", "-q", "-m", "version", cwd=str(repo))
    git("tag", TAG, cwd=str(repo))
    return "file://" + str(repo), tmp


def test_checkout_dest_that_is_a_file_fails_in_one_line(origin, tmp_path, capsys):
    url, _tmp = origin
    dest = tmp_path / "scripts"
    dest.write_text("not a directory\n")
    for check in (False, True):
        res = call(sdk_checkout, {"scripts_dir": str(dest), "repo": url, "ref": TAG}, capsys, check=check)
        one_line_failure(res, "exists and is not a directory")
    assert dest.read_text() == "not a directory\n"


@pytest.mark.parametrize("args, words", [
    ({"build_id": "../x"}, "malformed build_id"),
    ({"build_id": "kiln-1\n"}, "malformed build_id"),
    ({"build_id": "kiln-2", "official": True}, "official builds have no build id"),
    ({"version": "1.2"}, "malformed version"),
    ({"sdk_version": "abc"}, "malformed SDK version"),
    ({"ref": "main\n"}, "not a tag, branch or commit"),
    ({"ref": "--orphan"}, "not a tag, branch or commit"),
    ({"binhost": "http://x/;touch /tmp/x"}, "cannot go into version.txt"),
    ({"upstream_repo": "--upload-pack=touch /tmp/x"}, "not a git repository"),
    ({"patches": ["/dev/null\u0000x"]}, "not a file path"),
    ({"patches": ["/"]}, "not a regular file"),
])
def test_checkout_validates_every_option_before_touching_the_checkout(origin, tmp_path, capsys, args, words):
    url, _tmp = origin
    dest = tmp_path / "scripts"
    base = {"scripts_dir": str(dest), "repo": url, "ref": TAG, "version": "4593.2.5+kiln-1"}
    res = call(sdk_checkout, base, capsys)
    assert res.get("changed") and not res.get("failed"), res
    local = dest / "build_image"
    local.write_text("a file the reset would remove\n")  # untracked: `git clean -fd` of a reset removes it
    before = (tree(dest), (dest / sdk_checkout.VERSIONFILE).read_text(), git("rev-parse", "HEAD", cwd=str(dest)))
    res = call(sdk_checkout, dict(base, force=True, **args), capsys)
    one_line_failure(res, words)
    assert (tree(dest), (dest / sdk_checkout.VERSIONFILE).read_text(), git("rev-parse", "HEAD", cwd=str(dest))) == before


@pytest.mark.parametrize("value", ["", " ", "/tmp/x\ny"])
def test_checkout_refuses_empty_or_control_scripts_dir(origin, tmp_path, capsys, value, monkeypatch):
    url, _tmp = origin
    monkeypatch.chdir(tmp_path)  # an empty path would be the current directory
    res = call(sdk_checkout, {"scripts_dir": value, "repo": url, "ref": TAG}, capsys)
    one_line_failure(res, "scripts_dir")
    assert tree(tmp_path) == sorted(["origin"] + ["origin/" + p for p in tree(tmp_path / "origin")] + ["tmp"])


def test_failed_clone_leaves_no_log_anywhere(origin, tmp_path, capsys):
    _url, tmp = origin
    parent = tmp_path / "work"
    parent.mkdir()
    res = call(sdk_checkout, {"scripts_dir": str(parent / "scripts"), "repo": "file://" + str(tmp_path / "nothing.git"),
                              "ref": TAG}, capsys)
    one_line_failure(res, "git clone of")
    assert "log_path" not in res and any("nothing.git" in line for line in res["log_tail"]), res
    assert os.listdir(str(parent)) == [] and os.listdir(str(tmp)) == []


def test_clone_log_ends_in_the_state_dir(origin, tmp_path, capsys):
    url, tmp = origin
    dest = tmp_path / "scripts"
    res = call(sdk_checkout, {"scripts_dir": str(dest), "repo": url, "ref": TAG}, capsys)
    assert not res.get("failed"), res
    log = dest / "__build__" / "images" / "kiln" / "logs" / "checkout.log"
    assert res["log_path"] == str(log) and "git clone" in log.read_text() and "rev-parse" not in log.read_text()
    assert sorted(os.listdir(str(tmp_path))) == ["origin", "scripts", "tmp"] and os.listdir(str(tmp)) == []


def test_git_gets_user_values_only_after_double_dash(origin, tmp_path, capsys, monkeypatch):
    url, _tmp = origin
    patch_dir = tmp_path / "p"
    work = tmp_path / "w"
    git("clone", "-q", url, str(work))
    (work / "NEWS").write_text("news\n")
    git("add", "NEWS", cwd=str(work))
    git("commit", "-q", "-m", "news", cwd=str(work))
    git("format-patch", "-q", "-1", "-o", str(patch_dir), cwd=str(work))
    patch = str(next(patch_dir.iterdir()))
    seen = []
    real_run, real_capture = _runner.Runner.run, _runner.Runner.capture

    def run(self, argv, *a, **kw):
        seen.append([str(x) for x in argv])
        return real_run(self, argv, *a, **kw)

    def capture(self, argv, *a, **kw):
        seen.append([str(x) for x in argv])
        return real_capture(self, argv, *a, **kw)

    monkeypatch.setattr(_runner.Runner, "run", run)
    monkeypatch.setattr(_runner.Runner, "capture", capture)
    dest = tmp_path / "scripts"
    res = call(sdk_checkout, {"scripts_dir": str(dest), "repo": url, "upstream_repo": url, "ref": TAG, "patches": [patch]}, capsys)
    assert not res.get("failed") and len(res["patches"]) == 1, res
    users = {url, patch}
    checked = 0
    for argv in seen:
        for i, word in enumerate(argv):
            if word in users:
                checked += 1
                assert "--" in argv[:i], argv
            if TAG in word:  # the ref (validated: never an option) reaches git as a revision after --end-of-options
                checked += 1
                assert "--end-of-options" in argv[:i] or "--" in argv[:i], argv
    assert checked >= 4  # clone, fetch of upstream_repo, am, rev-parse of the ref


def test_validators_refuse_a_trailing_newline():
    for validator, value in ((_validate.git_ref, "main\n"), (_validate.build_id, "kiln-1\n"), (_validate.url, "http://x/\n"),
                             (_validate.host, "mirror\n"), (_validate.group, "stable\n"), (_validate.command, "rsync\n"),
                             (_validate.remote_path, "/srv\n"), (_validate.user, "core\n"), (_validate.container_name, "c\n")):
        with pytest.raises(_validate.Invalid):
            validator(value)


# -- nebraska_package ------------------------------------------------------------------------------------------
class FakeNebraska:
    """A misbehaving Nebraska on 127.0.0.1: ``answer(method, path)`` -> (status, body bytes); requests are counted."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                fake.requests.append((self.command, self.path))
                status, body = fake.answer(self.command, self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _reply

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def empty_list(method, path):
    if method == "GET":
        return 200, json.dumps({"totalCount": 0, "count": 0, "packages": [], "channels": []}).encode()
    return 200, json.dumps({"id": "p1", "version": "4593.2.5"}).encode()


def neb_args(server_url, tmp_path, **extra):
    payload = tmp_path / "flatcar_production_update.gz"
    if not payload.exists():
        payload.write_bytes(b"payload")
    args = {"url": server_url, "version": "4593.2.5+kiln-1", "arch": "amd64", "package_url": "http://127.0.0.1:1/update/",
            "payload_path": str(payload), "timeout": 5}
    args.update(extra)
    return dict((k, v) for k, v in args.items() if v is not None)


def b64(data, algo):
    return base64.b64encode(hashlib.new(algo, data).digest()).decode()


@pytest.mark.parametrize("extra, words", [
    ({"version": "1.2"}, "malformed version"),
    ({"version": "abc"}, "malformed version"),
    ({"version": "../../etc"}, "malformed version"),
    ({"version": "4593.2.5/../../etc"}, "malformed"),
    ({"version": "stable-4593.2.5"}, "not a FLATCAR_VERSION"),
    ({"version": ""}, "version"),
    ({"arch": "x86"}, "arch"),
    ({"arch": ""}, "arch"),
    ({"url": "ftp://127.0.0.1/"}, "url"),
    ({"url": "http://127.0.0.1/\nX: y"}, "url"),
    ({"package_url": "http://x/ ;rm"}, "package_url"),
    ({"filename": "../x.gz"}, "filename"),
    ({"app_id": "../../apps"}, "app_id"),
    ({"channel": "stable\n"}, "channel"),
    ({"token": "abc\r\nX-Evil: 1"}, "token"),
    ({"timeout": 10 ** 12}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"payload_path": "/nonexistent/flatcar_production_update.gz"}, "cannot read payload_path"),
    ({"payload_path": "/"}, "not a regular file"),
    ({"payload_path": "/tmp/x\u0000y"}, ""),  # Ansible itself refuses it (syslog), in one line
    ({"payload_path": None, "payload": {"size": -1, "sha1_b64": b64(b"", "sha1"), "sha256_b64": b64(b"", "sha256")}}, "size"),
    ({"payload_path": None, "payload": {"size": 10 ** 30, "sha1_b64": b64(b"", "sha1"), "sha256_b64": b64(b"", "sha256")}}, "size"),
    ({"payload_path": None, "payload": {"size": 1, "sha1_b64": "!!", "sha256_b64": b64(b"", "sha256")}}, "not base64"),
    ({"payload_path": None, "payload": 0}, "payload must be a dict"),
    ({"payload_path": None, "payload": [1]}, "payload must be a dict"),
    ({"payload_path": None, "payload": True}, "payload must be a dict"),
    ({"extra_files": [{"name": "../oem-x.gz", "size": 1, "sha1_b64": "x", "sha256_hex": "0" * 64}]}, "extra_files name"),
    ({"extra_files": [{"name": "oem-x.gz", "size": 1, "sha1_b64": b64(b"", "sha1"), "sha256_hex": "z"}]}, "sha256_hex"),
    ({"extra_files": [{"name": "oem-x.gz", "size": 1, "sha1_b64": "x", "sha256_hex": "0" * 64}]}, "not base64"),
])
def test_nebraska_refuses_bad_options_before_any_request(tmp_path, capsys, extra, words):
    with FakeNebraska(empty_list) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path, **extra), capsys)
    one_line_failure(res, words)
    assert neb.requests == []


def test_nebraska_version_is_canonical_and_fifo_payload_does_not_hang(tmp_path, capsys):
    fifo = tmp_path / "fifo.gz"
    os.mkfifo(str(fifo))
    with FakeNebraska(empty_list) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path, payload_path=str(fifo)), capsys)
        one_line_failure(res, "not a regular file")
        res = call(nebraska_package, neb_args(neb.url, tmp_path, version=" 4593.2.5+kiln-1 "), capsys)
    assert res.get("changed") and res["package"]["version"] == "4593.2.5", res  # what the fake answered
    assert ("GET", "/api/apps/e96281a6-d1af-4bde-9a0a-97b76e56dc57/packages?searchVersion=4593.2.5%2Bkiln-1&page=1&perpage=100") \
        in neb.requests or any("searchVersion=4593.2.5%2Bkiln-1" in path for _m, path in neb.requests), neb.requests


@pytest.mark.parametrize("answer, words", [
    (lambda m, p: (200, b"[]"), "JSON list instead of an object"),
    (lambda m, p: (200, b'["packages"]'), "JSON list instead of an object"),
    (lambda m, p: (200, b"42"), "JSON int instead of an object"),
    (lambda m, p: (200, b"<html>hello</html>"), "not JSON"),
    (lambda m, p: (500, b"internal error"), "HTTP 500"),
    (lambda m, p: (200, b'{"totalCount": 1, "packages": {"id": 1}}'), "not a list of objects"),
    (lambda m, p: (200, b'{"totalCount": 2, "packages": [1, 2]}'), "not a list of objects"),
    (lambda m, p: (200, b'{"totalCount": 0, "packages": []}') if m == "GET" else (200, b"[]"), "instead of an object"),
    (lambda m, p: (200, b'{"totalCount": 0, "packages": []}') if m == "GET" else (200, b"{}"), "without the new package's id"),
])
def test_nebraska_misbehaving_server_fails_in_one_line(tmp_path, capsys, answer, words):
    with FakeNebraska(answer) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path), capsys)
    one_line_failure(res, words)


def test_nebraska_paging_is_bounded(tmp_path, capsys):
    def never_done(method, path):
        # one package per page of another version, and a totalCount that is never reached
        return 200, json.dumps({"totalCount": 10 ** 9, "count": 1,
                                "packages": [{"id": path, "version": "1.0.0", "arch": "x"}]}).encode()

    with FakeNebraska(never_done) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path), capsys)
    one_line_failure(res, "after %d pages" % nebraska_package.MAX_PAGES)
    assert len(neb.requests) == nebraska_package.MAX_PAGES


def test_nebraska_odd_but_harmless_answers_work(tmp_path, capsys):
    """A totalCount that is not a number ends the paging; an arch that is not a number matches nothing."""
    def odd(method, path):
        if method == "GET":
            return 200, json.dumps({"totalCount": "many", "packages": [{"id": "x", "version": "4593.2.5+kiln-1", "arch": "amd64"}],
                                    "channels": []}).encode()
        return 200, json.dumps({"id": "p1", "version": "4593.2.5+kiln-1"}).encode()

    with FakeNebraska(odd) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path), capsys)
    assert res.get("created") and res["package_id"] == "p1", res


def payload_record(tmp_path, details, outputs=()):
    from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path

    build_root = str(tmp_path / "build")
    d = os.path.join(build_root, "images", "amd64-usr", "x")
    os.makedirs(d, exist_ok=True)
    path = record_path(build_root, "amd64-usr", "4593.2.5+kiln-1")
    for name in outputs:
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(b"payload")
    with BuildRecord.open(path, board="amd64-usr", build_root=build_root, version={"FLATCAR_VERSION": "4593.2.5+kiln-1"}) as rec:
        rec.begin("payload", {}, "sha256:" + "3" * 64)
        rec.finish("payload", [describe_output(build_root, os.path.join(d, n), "update_payload" if n.startswith("flatcar_production")
                                               else "extension_payload") for n in outputs], details)
    return path, d


P = "flatcar_production_update.gz"


@pytest.mark.parametrize("details, words", [
    ({"payloads": "x"}, "lacks details.payloads"),
    ({"payloads": [{"name": P, "size": "big", "sha1_base64": "x", "sha256_base64": "y"}]}, "is not a size"),
    ({"payloads": [{"name": P, "size": 10 ** 30}]}, "is not a size"),
    ({"payloads": [{"name": P, "size": 7}]}, "not base64"),
    ({"payloads": [{"name": P, "size": 7, "sha1_base64": b64(b"p", "sha1"), "sha256_base64": b64(b"p", "sha256")},
                   {"name": "oem-x.gz", "size": 1, "sha1_base64": b64(b"p", "sha1"), "sha256_hex": None}]}, "no valid sha256_hex"),
    ({"payloads": [{"name": P, "size": 7, "sha1_base64": b64(b"p", "sha1"), "sha256_base64": b64(b"p", "sha256")},
                   {"name": "oem-x.gz", "size": -5, "sha1_base64": b64(b"p", "sha1"), "sha256_hex": "0" * 64}]}, "is not a size"),
    ({"size": [], "sha1_b64": "x", "sha256_b64": "y"}, "is not a size"),
])
def test_nebraska_record_details_are_untrusted(tmp_path, capsys, details, words):
    path, _d = payload_record(tmp_path, details)
    with FakeNebraska(empty_list) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path, payload_path=None, record_path=path), capsys)
    one_line_failure(res, words)
    assert neb.requests == []


def test_nebraska_record_paths_are_confined(tmp_path, capsys):
    """An extension payload of the record that resolves outside the build root (a symlink) is refused."""
    from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path

    secret = tmp_path / "host-secret.gz"
    secret.write_bytes(b"secret")
    build_root = str(tmp_path / "build")
    d = os.path.join(build_root, "images", "amd64-usr", "x")
    os.makedirs(d)
    for name in ("flatcar_production_update.gz", "oem-azure.gz"):
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(b"payload")
    path = record_path(build_root, "amd64-usr", "4593.2.5+kiln-1")
    with BuildRecord.open(path, board="amd64-usr", build_root=build_root, version={"FLATCAR_VERSION": "4593.2.5+kiln-1"}) as rec:
        rec.begin("payload", {}, "sha256:" + "3" * 64)
        rec.finish("payload", [describe_output(build_root, os.path.join(d, n), r) for n, r in (
            ("flatcar_production_update.gz", "update_payload"), ("oem-azure.gz", "extension_payload"))],
            {"size": 7, "sha1_b64": b64(b"payload", "sha1"), "sha256_b64": b64(b"payload", "sha256")})
    os.unlink(os.path.join(d, "oem-azure.gz"))
    os.symlink(str(secret), os.path.join(d, "oem-azure.gz"))  # the record is unchanged and valid
    with FakeNebraska(empty_list) as neb:
        res = call(nebraska_package, neb_args(neb.url, tmp_path, payload_path=None, record_path=path), capsys)
    one_line_failure(res, "extension payload path", "outside")
    assert neb.requests == []


# -- publish ---------------------------------------------------------------------------------------------------
PUB_VERSION = "4593.2.5+kiln-1"


def make_record(tmp_path, board="amd64-usr"):
    """A build tree and its record as kiln's stages write it (image + payload), under ``tmp_path/b``."""
    from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output, record_path

    build_root = str(tmp_path / "b" / "build")
    rel_dir = os.path.join("images", board, "developer-%s-a1" % PUB_VERSION)
    d = os.path.join(build_root, rel_dir)
    os.makedirs(d)
    for name, data in (("flatcar_production_image.bin.bz2", b"image"), ("version.txt", b"FLATCAR_VERSION=%s\n" % PUB_VERSION.encode()),
                       ("flatcar_production_update.gz", b"payload")):
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(data)
    path = record_path(build_root, board, PUB_VERSION)
    with BuildRecord.open(path, board=board, build_root=build_root,
                          version={"FLATCAR_VERSION": PUB_VERSION, "FLATCAR_VERSION_ID": "4593.2.5", "FLATCAR_BUILD_ID": "kiln-1",
                                   "FLATCAR_SDK_VERSION": "4593.0.0"}) as rec:
        rec.begin("image", {}, "sha256:" + "1" * 64)
        rec.finish("image", [describe_output(build_root, os.path.join(d, n), r) for n, r in (
            ("flatcar_production_image.bin.bz2", "generic_image"), ("version.txt", "version"))], {})
        rec.begin("payload", {}, "sha256:" + "2" * 64)
        rec.finish("payload", [describe_output(build_root, os.path.join(d, "flatcar_production_update.gz"), "update_payload")], {})
    return path, build_root


def edit_record(path, edit):
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data = edit(data) or data  # (the edits return None, or a whole new record)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)


def first_output(data):
    return data["stages"]["image"]["outputs"][0]


SECRET = "host-secret.txt"
RECORD_EDITS = {
    "output_without_size": lambda d: first_output(d).__delitem__("size"),
    "size_huge": lambda d: first_output(d).update(size=10 ** 30),
    "size_negative": lambda d: first_output(d).update(size=-1),
    "size_string": lambda d: first_output(d).update(size="12"),
    "sha256_list": lambda d: first_output(d).update(sha256=["x"]),
    "stages_null": lambda d: d.update(stages=None),
    "stages_list": lambda d: d.update(stages=[]),
    "stage_null": lambda d: d["stages"].update(image=None),
    "outputs_dict": lambda d: d["stages"]["image"].update(outputs={"path": "x"}),
    "outputs_string": lambda d: d["stages"]["image"].update(outputs="images/a"),
    "output_null": lambda d: d["stages"]["image"]["outputs"].append(None),
    "stage_order_null": lambda d: d.update(stage_order=None),
    "stage_order_numbers": lambda d: d.update(stage_order=[1, 2]),
    "board_dotdot": lambda d: d.update(board="../../x"),
    "board_list": lambda d: d.update(board=["amd64-usr"]),
    "version_dotdot": lambda d: d["version"].update(FLATCAR_VERSION="../../x"),
    "version_null": lambda d: d.update(version=None),
    "version_newline": lambda d: d["version"].update(FLATCAR_VERSION=PUB_VERSION + "\n"),
    "path_dotdot": lambda d: first_output(d).update(path="../../" + SECRET),
    "path_absolute": lambda d: first_output(d).update(path="/" + SECRET),
    "path_nul": lambda d: first_output(d).update(path="images/a\u0000b"),
    "path_empty": lambda d: first_output(d).update(path=""),
    "path_number": lambda d: first_output(d).update(path=7),
    "record_list": lambda d: [d],
    "record_string": lambda d: "hello",
}


@pytest.fixture()
def pub(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    path, build_root = make_record(tmp_path)
    (tmp_path / SECRET).write_text("the builder's secret\n")
    (tmp_path / "b" / SECRET).write_text("the builder's secret\n")
    args = {"record_path": path, "backend": "local", "base": str(tmp_path / "m" / "mirror"), "require_signatures": False,
            "require_boot_check": False}
    return path, args


def stagings(root):
    return [p for p in tree(root) if os.path.basename(p).startswith(".kiln-staging-")]


@pytest.mark.parametrize("case", sorted(RECORD_EDITS))
def test_publish_untrusted_record_fails_in_one_line_and_writes_nothing(pub, tmp_path, capsys, case):
    path, args = pub
    edit_record(path, RECORD_EDITS[case])
    state_dir = os.path.relpath(os.path.dirname(path), str(tmp_path))
    before = tree(tmp_path)
    res = call(publish, args, capsys)
    one_line_failure(res)
    after = tree(tmp_path)
    # nothing new anywhere but the record's own state directory (its log); no mirror at all
    assert [p for p in after if p not in before and not p.startswith(state_dir + "/")] == [], after
    assert not os.path.exists(args["base"]) and os.listdir(str(tmp_path / "tmp")) == []


def test_publish_bad_record_values_refused_by_the_manifest_itself(pub, tmp_path):
    """Defence in depth: _pub_manifest refuses what the schema refuses at load, for a record that skipped it."""
    from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import PublishError, build_manifest, release_of

    path, _args = pub
    build_root = str(tmp_path / "b" / "build")
    with open(path, encoding="utf-8") as fh:
        good = json.load(fh)
    refused = 0
    for case, edit in sorted(RECORD_EDITS.items()):
        data = json.loads(json.dumps(good))
        data = edit(data) or data
        try:
            if not isinstance(data, dict):
                continue  # the loader's business (BuildRecord.open)
            rel = release_of(data, path, build_root)
            build_manifest(rel, ["image", "payload"], ["*"], [], str(tmp_path / "gen" / case))
        except PublishError as exc:
            assert "\n" not in str(exc), (case, str(exc))
            refused += 1
        else:
            raise AssertionError("%s was accepted" % case)
    assert refused == len(RECORD_EDITS) - 2, refused


@pytest.mark.parametrize("extra, words", [
    ({"record_path": "/tmp/x\u0000y"}, ""),
    ({"record_path": ""}, ""),
    ({"base": ""}, "base"),
    ({"base": "relative/mirror"}, "base"),
    ({"base": "/srv/m/../../etc"}, "base"),
    ({"base": "/srv/m\nx"}, "base"),
    ({"update_base": "/srv/u\u0000"}, ""),  # Ansible itself refuses it (syslog), in one line
    ({"update_base": "/srv/u\r"}, "update_base"),
    ({"target_name": "../x"}, "target_name"),
    ({"target_name": ""}, "target_name"),
    ({"version": "1.2"}, "malformed"),
    ({"version": "../../etc"}, "malformed"),
    ({"board": "x86"}, "board"),
    ({"public_url": "http://m/\nx"}, "public_url"),
    ({"update_public_url": "javascript:alert(1)"}, "update_public_url"),
    ({"backend": "dir", "mirror_host": "-oProxyCommand=touch /tmp/x"}, "mirror_host"),
    ({"backend": "dir", "mirror_host": "m", "remote_python": "python3; touch /tmp/x"}, "remote_python"),
])
def test_publish_bad_options_fail_in_one_line(pub, tmp_path, capsys, extra, words):
    _path, args = pub
    before = tree(tmp_path)
    res = call(publish, dict(args, **extra), capsys)
    one_line_failure(res, words)
    assert stagings(tmp_path) == [] and not os.path.exists(args["base"])
    assert [p for p in tree(tmp_path) if p not in before and "/logs" not in p] == []


def test_publish_leaves_no_staging_after_an_exception(pub, tmp_path, capsys, monkeypatch):
    from ansible_collections.kiln.flatcar.plugins.module_utils import _pub_backends

    _path, args = pub

    def boom(*_a, **_kw):
        raise RuntimeError("injected: disk on fire")

    monkeypatch.setattr(_pub_backends.LocalBackend, "transfer", boom)
    res = call(publish, args, capsys)
    one_line_failure(res, "injected: disk on fire")
    assert os.path.isdir(args["base"]) and stagings(args["base"]) == [], tree(args["base"])
    monkeypatch.undo()
    res = call(publish, dict(args, record_path=_path), capsys)
    assert res.get("changed") and stagings(tmp_path) == [], res


# A stand-in for ssh that runs the remote command on this host (the transport, not the mirror, is faked: the mirror
# helper and rsync's server side run for real). Real ssh and sshd: tests/integration/test_publish.py.
FAKE_SSH = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-p|-i|-F|-l) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift  # the host
exec /bin/sh -c "$*"
"""


@pytest.fixture()
def fake_ssh(tmp_path, monkeypatch):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "ssh").write_text(FAKE_SSH)
    os.chmod(str(bindir / "ssh"), 0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    return bindir


def test_dir_backend_leaves_no_staging_after_success_or_failure(pub, tmp_path, capsys, fake_ssh):
    path, args = pub
    args = dict(args, backend="dir", mirror_host="mirror.invalid", remote_python=subprocess.list2cmdline(["python3"]))
    failing = fake_ssh / "rsync-fails"
    failing.write_text("#!/bin/sh\necho 'rsync: connection unexpectedly closed' >&2\nexit 12\n")
    os.chmod(str(failing), 0o755)
    res = call(publish, dict(args, rsync_executable=str(failing)), capsys)
    one_line_failure(res, "rsync of")
    assert stagings(args["base"]) == [], tree(args["base"])  # prepared by inspect, empty: gone again
    res = call(publish, args, capsys)
    assert res.get("changed") and not res.get("failed"), res
    assert stagings(args["base"]) == [] and os.path.islink(os.path.join(args["base"], "amd64-usr", "current")), tree(args["base"])


def test_discard_empty_waits_for_a_receiver_still_in_staging(tmp_path):
    """After a failed remote transfer the rsync receiver may still be saving its partial file: not pulled from under it."""
    import time

    from ansible_collections.kiln.flatcar.plugins.module_utils import _mirror

    board = tmp_path / "amd64-usr"
    staging = board / ".kiln-staging-2.0.0"
    staging.mkdir(parents=True)
    spec = {"board_dir": str(board), "files": [{"name": "a.bin", "area": "release", "size": 1, "sha256": "0" * 64}],
            "areas": {"release": {"final": str(board / "2.0.0"), "staging": str(staging)}}}
    # a stand-in receiver: works in the staging directory, saves a partial file a moment later, then exits
    receiver = subprocess.Popen(["/bin/sh", "-c", "sleep 1; mkdir %s && echo partial > %s/a.bin" % (_mirror.PARTIAL_DIR, _mirror.PARTIAL_DIR)],
                                cwd=str(staging))
    try:
        time.sleep(0.2)
        assert _mirror.run_op("discard_empty", spec) == {"removed": []}
    finally:
        receiver.wait(10)
    assert receiver.returncode == 0 and (staging / _mirror.PARTIAL_DIR / "a.bin").read_text() == "partial\n"
    # once nobody works there any more, an empty staging directory goes at once
    (staging / _mirror.PARTIAL_DIR / "a.bin").unlink()
    start = time.time()
    assert _mirror.run_op("discard_empty", spec) == {"removed": [str(staging)]} and time.time() - start < 1
