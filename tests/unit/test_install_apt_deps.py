"""hack/install-apt-deps.sh installs only what is missing and upgrades nothing it does not have to.

The script runs with a fake apt-get and dpkg-query first on PATH; they log their argv (one JSON list a
line), so the test sees exactly what the script would run on a real machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "install-apt-deps.sh"

FAKE = """#!/usr/bin/env python3
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([name] + sys.argv[1:]) + "\\n")
installed = set(os.environ.get("FAKE_INSTALLED", "").split())
if name == "dpkg-query":
    names = [a for a in sys.argv[1:] if not a.startswith("-")]
    unknown = False
    for n in names:
        if n in installed:
            print(n + " ii ")
        elif n in os.environ.get("FAKE_REMOVED", "").split():
            print(n + " rc ")          # removed, config files left: not installed
        else:
            unknown = True
            sys.stderr.write("dpkg-query: no packages found matching %s\\n" % n)
    sys.exit(1 if unknown else 0)
if name == "apt-get" and "-s" in sys.argv:
    print(os.environ.get("FAKE_SIM", ""))
"""


def script_packages():
    text = SCRIPT.read_text()
    body = re.search(r"^PKGS=\((.*?)^\)", text, re.S | re.M).group(1)
    return [w for line in body.splitlines() for w in line.split("#")[0].split()]


def run(tmp_path, installed=(), removed=(), sim="", extra_env=None):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in ("apt-get", "dpkg-query"):
        f = bindir / name
        f.write_text(FAKE)
        f.chmod(0o755)
    log = tmp_path / "argv.log"
    log.write_text("")
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), FAKE_LOG=str(log),
               FAKE_INSTALLED=" ".join(installed), FAKE_REMOVED=" ".join(removed), FAKE_SIM=sim,
               **(extra_env or {}))
    res = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return res, calls


def apt_calls(calls):
    return [c[1:] for c in calls if c[0] == "apt-get"]


def test_installs_only_the_missing_packages_without_upgrading(tmp_path):
    pkgs = script_packages()
    assert "openssh-server" in pkgs and "openssl" in pkgs and "shellcheck" in pkgs
    have = [p for p in pkgs if p not in ("qemu-system-arm", "shellcheck", "erofs-utils")]
    res, calls = run(tmp_path, installed=have, removed=["erofs-utils"])
    assert res.returncode == 0, res.stderr
    assert calls[0][0] == "dpkg-query"
    apt = apt_calls(calls)
    flags = ["install", "-y", "-qq", "--no-install-recommends", "--no-upgrade"]
    assert apt == [["update", "-qq"],
                   flags + ["-s", "--", "erofs-utils", "qemu-system-arm", "shellcheck"],
                   flags + ["--", "erofs-utils", "qemu-system-arm", "shellcheck"]]
    for c in apt:
        assert "upgrade" not in c and "dist-upgrade" not in c and "full-upgrade" not in c


def test_nothing_missing_runs_no_apt_at_all(tmp_path):
    res, calls = run(tmp_path, installed=script_packages())
    assert res.returncode == 0, res.stderr
    assert apt_calls(calls) == []
    assert "nothing to do" in res.stdout


SIM = """Inst libssl3 [3.0.11-1~deb12u2] (3.0.17-1~deb12u3 Debian:12.12/oldstable [amd64])
Inst shellcheck (0.9.0-1 Debian:12.12/oldstable [amd64])
Conf libssl3 (3.0.17-1~deb12u3 Debian:12.12/oldstable [amd64])"""


def test_dependency_upgrades_are_named_and_can_be_refused(tmp_path):
    pkgs = [p for p in script_packages() if p != "shellcheck"]
    res, calls = run(tmp_path, installed=pkgs, sim=SIM)
    assert res.returncode == 0, res.stderr
    assert "libssl3 3.0.11-1~deb12u2 -> 3.0.17-1~deb12u3" in res.stdout
    assert apt_calls(calls)[-1][-2:] == ["--", "shellcheck"] and "-s" not in apt_calls(calls)[-1]

    res, calls = run(tmp_path, installed=pkgs, sim=SIM, extra_env={"KILN_APT_NO_UPGRADES": "1"})
    assert res.returncode == 1
    assert "libssl3" in res.stdout and "KILN_APT_NO_UPGRADES" in res.stderr
    assert all("-s" in c for c in apt_calls(calls) if c[0] == "install")


@pytest.mark.skipif(not __import__("shutil").which("shellcheck"), reason="shellcheck not installed")
def test_shellcheck_clean():
    res = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout
