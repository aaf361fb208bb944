"""kiln.flatcar.host_preflight through real ansible-playbook runs: programs, free disk, memory, loop devices, the
aarch64 binfmt_misc registration against a stand-in binfmt_misc directory (a real one is shared by the whole
kernel), and check mode, which must not write anything (the test snapshots the tree and compares)."""

from __future__ import annotations

import os

import pytest

from kiln_testlib import run_module

from ansible_collections.kiln.flatcar.plugins.modules.host_preflight import registration

M = "kiln.flatcar.host_preflight"


def snapshot(root):
    """Every path below root with its type, size, mode, mtime and content: any write shows up."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            data = None
            if os.path.isfile(full):
                with open(full, "rb") as fh:
                    data = fh.read()
            found[os.path.relpath(full, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    st = os.lstat(root)
    found["."] = (st.st_mode, st.st_mtime_ns)
    return found


@pytest.fixture
def binfmt(tmp_path):
    """A stand-in binfmt_misc mount (``register`` present) and an interpreter that exists."""
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    (d / "register").write_bytes(b"")
    interp = tmp_path / "qemu-aarch64-static"
    interp.write_text("#!/bin/sh\n")
    interp.chmod(0o755)
    return d, interp


def test_programs_disk_and_memory(tmp_path):
    res, _run = run_module(M, {"programs": ["sh", "kiln-no-such-program"], "path": str(tmp_path / "not" / "yet"),
                               "min_mem_gb": 0.001})
    assert res.get("failed") and "\n" not in res["msg"]
    assert res["msg"] == "kiln-no-such-program not found on PATH: install it"
    assert res["programs_missing"] == ["kiln-no-such-program"] and "sh" in res["programs_found"]
    # a path that does not exist yet is measured on its nearest existing parent
    assert res["free_path"] == str(tmp_path) and res["free_gb"] > 0 and res["mem_gb"] > 0
    res, _run = run_module(M, {"path": str(tmp_path), "min_free_gb": 10 ** 7, "min_mem_gb": 10 ** 7})
    assert res.get("failed") and "\n" not in res["msg"]
    assert "GiB free on %s, need 10000000 GiB" % tmp_path in res["msg"] and "GiB memory, need 10000000 GiB" in res["msg"]
    res, _run = run_module(M, {"path": str(tmp_path), "min_free_gb": 10 ** 7, "fail_on_problems": False})
    assert not res.get("failed") and not res["changed"] and len(res["problems"]) == 1


def test_binfmt_registration_and_check_mode(tmp_path, binfmt):
    d, interp = binfmt
    args = {"binfmt_aarch64": True, "binfmt_misc_dir": str(d), "binfmt_interpreter": str(interp), "binfmt_required": True,
            "programs": ["sh"], "path": str(tmp_path), "min_free_gb": 0.001}
    before = snapshot(tmp_path)
    res, _run = run_module(M, args, check=True)
    assert not res.get("failed"), res
    assert res["changed"] and res["binfmt"]["state"] == "would register" and res["binfmt"]["ok"]
    assert snapshot(tmp_path) == before, "check mode wrote something"

    res, _run = run_module(M, args)
    assert res["changed"] and res["binfmt"]["state"] == "registered", res
    # exactly one registration line, in the format qemu-binfmt-conf.sh writes (flag F: interpreter opened now)
    written = (d / "register").read_bytes().decode()
    assert written == registration(str(interp))
    assert written.startswith(":qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01") and written.endswith(":%s:F" % interp)

    # the kernel creates the entry: a second run changes nothing, in check mode neither
    (d / "qemu-aarch64").write_text("enabled\ninterpreter %s\nflags: F\n" % interp)
    (d / "register").write_bytes(b"")
    res, _run = run_module(M, args)
    assert not res["changed"] and res["binfmt"]["state"] == "registered"
    assert (d / "register").read_bytes() == b""
    res, _run = run_module(M, args, check=True)
    assert not res["changed"]


def test_binfmt_cannot_be_made(tmp_path, binfmt):
    d, interp = binfmt
    (d / "register").unlink()  # not mounted
    base = {"binfmt_aarch64": True, "binfmt_misc_dir": str(d), "binfmt_interpreter": str(interp), "binfmt_mount": False}
    before = snapshot(tmp_path)
    res, _run = run_module(M, base)
    assert not res.get("failed") and not res["changed"]
    assert res["binfmt"]["state"] == "binfmt_misc not mountable" and not res["binfmt"]["ok"]
    assert res["notices"] and "mount binfmt_misc" in res["notices"][0]
    res, _run = run_module(M, dict(base, binfmt_required=True))
    assert res.get("failed") and "\n" not in res["msg"]
    assert res["msg"].startswith("cannot register qemu-user-static for aarch64 (binfmt_misc not mountable")
    assert snapshot(tmp_path) == before
    (d / "register").write_bytes(b"")
    before = snapshot(tmp_path)
    res, _run = run_module(M, dict(base, binfmt_required=True, binfmt_interpreter=str(tmp_path / "missing")), check=True)
    assert res.get("failed") and "interpreter missing" in res["msg"] and "install qemu-user-static" in res["msg"]
    assert snapshot(tmp_path) == before


def test_not_asked_reports_not_needed(tmp_path):
    res, _run = run_module(M, {"binfmt_misc_dir": str(tmp_path)}, check=True)
    assert not res["changed"] and res["binfmt"]["state"] == "not needed" and res["binfmt"]["ok"]
    res, _run = run_module(M, {"programs": ["/bin/sh"]})
    assert res.get("failed") and "names found on PATH, not paths" in res["msg"]
