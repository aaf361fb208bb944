"""Issue 14 item 1: every role's molecule scenario (molecule/<role>/: syntax, converge, idempotence, verify)
passes on a real host, a network-namespace host with its own sshd (hack/molecule_fleet.py, also `make
molecule`). Root only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fleet.harness import skip_reason  # noqa: E402

ROLES = ["builder", "cache", "signer", "tester", "mirror"]
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.skipif(not (BIN / "molecule").exists(), reason="molecule not in the venv (make venv)"),
]


def test_every_role_has_a_scenario():
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir() and p.name != "build")
    assert roles == sorted(ROLES)
    for role in ROLES:
        for f in ("molecule.yml", "converge.yml", "verify.yml"):
            assert (REPO / "molecule" / role / f).is_file(), (role, f)


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(role):
    res = subprocess.run([sys.executable, str(REPO / "hack" / "molecule_fleet.py"), role],
                         capture_output=True, text=True, check=False, timeout=2400, cwd=REPO,
                         env=dict(os.environ, KILN_MOLECULE_VERBOSE="1"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    assert "== molecule %s: passed" % role in out
    # molecule's own recap: every action of the sequence ran and succeeded (idempotence included)
    assert "%s > idempotence: Executed: Successful" % role in out, out[-8000:]
    assert "%s > verify: Executed: Successful" % role in out, out[-8000:]
