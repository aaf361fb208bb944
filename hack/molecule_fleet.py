#!/usr/bin/env python
"""Run the roles' molecule scenarios (molecule/<role>/) against real hosts: for each scenario a fresh
network-namespace host with its own sshd (tests/fleet/harness.py), `molecule test -s <role>` run inside the
fleet's controller namespace (the only namespace that reaches the host), then the fleet torn down.

  hack/molecule_fleet.py [ROLE ...]     default: builder cache signer tester mirror

Needs root (network namespaces) and the project venv (molecule, ansible-core). Exit status: 0 when every
scenario passed. The hosts share this machine's filesystem: every scenario keeps the role's files under the
host's own root (kiln_host_root), and the teardown kills everything started in the host's namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.harness import Fleet, cleanup_stale, skip_reason  # noqa: E402
from tests.kiln_testlib import ensure_collection_path  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

ROLES = ("builder", "cache", "signer", "tester", "mirror")
GROUPS = {"builder": ["builders", "builders_arm64"], "cache": ["caches"], "signer": ["signers"],
          "tester": ["builders"], "mirror": ["mirrors"]}
BIN = Path(sys.executable).parent


def signer_key(work):
    """A throwaway signing key (no passphrase): (fingerprint, armored secret key file)."""
    gh = work / "keygen"
    gh.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(gh)]
    subprocess.run(gpg + ["--passphrase", "", "--quick-gen-key", "kiln molecule <molecule@example.invalid>",
                          "ed25519", "sign", "1d"], check=True, capture_output=True)
    out = subprocess.run(gpg + ["--with-colons", "--list-secret-keys"], check=True, capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    keyfile = work / "signer-key.asc"
    with open(os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(subprocess.run(gpg + ["--armor", "--export-secret-keys", fpr], check=True, capture_output=True,
                               text=True).stdout)
    subprocess.run(["gpgconf", "--homedir", str(gh), "--kill", "all"], capture_output=True, check=False)
    return fpr, keyfile


def run_scenario(role, timeout=1800):
    # short: socket paths (gpg-agent, ssh ControlPath) live below it
    work = Path(tempfile.mkdtemp(prefix="kmol-", dir="/tmp"))
    push_user = "kiln-cache-m%d" % (os.getpid() % 100000)      # the cache role's push account, removed below
    t0 = time.monotonic()
    try:
        env = {"ANSIBLE_COLLECTIONS_PATH": ensure_collection_path(), "ANSIBLE_NOCOLOR": "1",
               "PATH": "%s:%s" % (BIN, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")),
               "MOLECULE_EPHEMERAL_DIRECTORY": str(work / "molecule"), "HOME": os.environ.get("HOME", "/root")}
        if role == "cache":
            env["KILN_MOLECULE_PUSH_USER"] = push_user
        if role == "signer":
            fpr, keyfile = signer_key(work)
            env.update(KILN_MOLECULE_SIGNER_FPR=fpr, KILN_MOLECULE_SIGNER_KEY_FILE=str(keyfile))
        with Fleet("kmol", hosts={"instance": {"groups": GROUPS[role]}}, workdir=work / "fleet",
                   ansible_bin=BIN) as fleet:
            env["KILN_MOLECULE_INVENTORY"] = str(fleet.inventory)
            res = fleet.run_controller([BIN / "molecule", "test", "-s", role], env=env, cwd=REPO, timeout=timeout)
            if role == "signer":
                subprocess.run(["gpgconf", "--homedir", str(fleet.host_root("instance") / "gnupg"), "--kill", "all"],
                               capture_output=True, check=False)
        return res, round(time.monotonic() - t0, 1)
    finally:
        if role == "cache":
            subprocess.run(["userdel", "--", push_user], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(work)], check=False)


def main(argv):
    roles = argv or list(ROLES)
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise SystemExit("unknown scenario(s) %s; known: %s" % (", ".join(bad), ", ".join(ROLES)))
    reason = skip_reason()
    if reason:
        raise SystemExit("molecule needs a netns fleet: %s" % reason)
    if "builder" in roles and not sdk.dockerd_start():
        raise SystemExit("the builder scenario needs a working docker (tests/standin_sdk/dockerd.sh start)")
    cleanup_stale("kmol")
    failed = []
    for role in roles:
        res, secs = run_scenario(role)
        ok = res.returncode == 0
        print("== molecule %s: %s in %.0f s" % (role, "passed" if ok else "FAILED (rc=%d)" % res.returncode, secs),
              flush=True)
        if not ok or os.environ.get("KILN_MOLECULE_VERBOSE"):
            print(res.stdout[-20000:])
            print(res.stderr[-20000:], file=sys.stderr)
        if not ok:
            failed.append(role)
    if failed:
        raise SystemExit("molecule failed: %s" % ", ".join(failed))


if __name__ == "__main__":
    main(sys.argv[1:])
