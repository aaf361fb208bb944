# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup, UnsafePath, component, confine


def test_confine_accepts_paths_inside(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    assert confine(str(tmp_path), "a/b/f") == os.path.realpath(str(tmp_path / "a" / "b" / "f"))
    assert confine(str(tmp_path), "a/./b") == os.path.realpath(str(tmp_path / "a" / "b"))
    assert confine(str(tmp_path), "missing/later") == os.path.realpath(str(tmp_path)) + "/missing/later"
    os.symlink("b/f", str(tmp_path / "a" / "inner"))
    assert confine(str(tmp_path), "a/inner") == os.path.realpath(str(tmp_path / "a" / "b" / "f"))


@pytest.mark.parametrize("rel, words", [
    ("../x", "'..'"), ("a/../../x", "'..'"), ("a/..", "'..'"), ("/etc/passwd", "absolute"), ("", "not a relative"),
    (None, "not a relative"), (5, "not a relative"), ("a\0b", "NUL"), ("a\\..\\..\\x", "'..'"),
])
def test_confine_refuses(tmp_path, rel, words):
    with pytest.raises(UnsafePath) as exc:
        confine(str(tmp_path), rel, "output path")
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_confine_refuses_symlink_escape(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink(str(tmp_path / "secret"), str(root / "link"))
    os.symlink(str(tmp_path), str(root / "dirlink"))
    with pytest.raises(UnsafePath, match="outside"):
        confine(str(root), "link")
    with pytest.raises(UnsafePath, match="outside"):
        confine(str(root), "dirlink/secret")
    # a sibling whose name starts like the root is outside too
    (tmp_path / "root2").mkdir()
    os.symlink(str(tmp_path / "root2"), str(root / "sib"))
    with pytest.raises(UnsafePath, match="outside"):
        confine(str(root), "sib")


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", None])
def test_component_refuses(name):
    with pytest.raises(UnsafePath):
        component(name)


def test_component_accepts():
    assert component("4593.2.5+kiln-1") == "4593.2.5+kiln-1"
    assert component("amd64-usr") == "amd64-usr"


def test_exit_cleanup_runs_on_exit_and_systemexit():
    calls = []
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        with ExitCleanup() as cleanup:
            cleanup.add(lambda: calls.append("a"))
            cleanup.add(lambda: calls.append("b"))
            cleanup.add(lambda: 1 / 0)  # a failing callback does not stop the others
            raise SystemExit(1)
    assert calls == ["b", "a"]
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored


def test_exit_cleanup_on_sigterm_cleans_and_dies_of_sigterm(tmp_path):
    marker = tmp_path / "secret"
    code = textwrap.dedent("""
        import os, sys, time
        sys.path[:0] = %r
        from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup
        path = %r
        with ExitCleanup() as cleanup:
            open(path, "w").write("key")
            cleanup.add(lambda: os.unlink(path))
            print("ready", flush=True)
            time.sleep(60)
        """) % (sys.path, str(marker))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert marker.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not marker.exists()
