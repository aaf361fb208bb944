# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""GnuPG through the kiln runner.

* keys are selected by full fingerprint only (``-u`` does substring matching on user ids);
* passphrases go to gpg on stdin (``--pinentry-mode loopback --passphrase-fd 0``), never argv;
* gpg's machine-readable ``--status-file`` (in a private temp dir) decides success, not stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

FPR_RE = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")

# libgpg-error codes seen in "[GNUPG:] FAILURE <where> <code>" (low 16 bits)
ERRORS = {
    11: "bad passphrase",
    17: "no secret key",
    58: "no data",
    67: "no passphrase given",
    99: "cancelled",
    125: "unusable secret key",
    153: "key expired",
    177: "no pinentry",
    32803: "output file exists",
}


class GpgError(Exception):
    """A GnuPG problem; the message is one line."""


def normalize_fingerprint(value):
    fpr = re.sub(r"\s+", "", value or "").upper()
    if fpr.startswith("0X"):
        fpr = fpr[2:]
    if not FPR_RE.match(fpr):
        raise GpgError("key %r is not a full fingerprint: give the 40 hex digits shown by gpg --list-keys "
                       "(short ids and user ids match more than one key)" % value)
    return fpr


def parse_colons(text):
    """Keys from ``gpg --with-colons --fixed-list-mode --list-(secret-)keys``.

    Returns [{"fingerprint", "keyid", "validity", "created", "expires", "caps", "secret", "subkeys": [...]}].
    """
    keys = []
    current = None
    last = None
    for line in (text or "").splitlines():
        f = line.split(":")
        rec = f[0]
        if rec in ("pub", "sec", "sub", "ssb"):
            entry = {
                "type": rec,
                "validity": f[1] if len(f) > 1 else "",
                "algo": f[3] if len(f) > 3 else "",
                "keyid": f[4] if len(f) > 4 else "",
                "created": int(f[5]) if len(f) > 5 and f[5].isdigit() else None,
                "expires": int(f[6]) if len(f) > 6 and f[6].isdigit() else None,
                "caps": f[11] if len(f) > 11 else "",
                "secret": (f[14] if len(f) > 14 else "") if rec in ("sec", "ssb") else "",
                "fingerprint": None,
            }
            if rec in ("pub", "sec"):
                entry["subkeys"] = []
                current = entry
                keys.append(entry)
            elif current is not None:
                current["subkeys"].append(entry)
            last = entry
        elif rec == "fpr" and last is not None and last["fingerprint"] is None:
            last["fingerprint"] = f[9]
        elif rec == "uid" and current is not None:
            current.setdefault("uids", []).append(f[9] if len(f) > 9 else "")
    return keys


def _usable(entry, now):
    if entry["validity"] in ("r", "e", "d", "i", "n"):
        return False
    if entry["expires"] and entry["expires"] <= now:
        return False
    return True


def signing_key_status(key, warn_days, now=None):
    """Decide which key signs and whether it is fit: returns (signing_entry, warnings) or raises GpgError.

    gpg signs with the newest usable signing-capable subkey (or the primary when it can sign);
    kiln checks the same and refuses expired or revoked keys before anything is signed.
    """
    now = int(now if now is not None else time.time())
    fpr = key["fingerprint"]
    day = 86400
    if key["validity"] == "r":
        raise GpgError("signing key %s is revoked: use another key" % fpr)
    if (key["expires"] and key["expires"] <= now) or key["validity"] == "e":
        raise GpgError("signing key %s expired on %s: extend it (gpg --quick-set-expire %s <time>) or use another key"
                       % (fpr, _date(key["expires"]), fpr))
    candidates = []
    expired = []
    for entry in [key] + key.get("subkeys", []):
        if "s" not in entry["caps"]:  # lower case: this (sub)key's own capabilities
            continue
        if entry["type"] in ("sec", "ssb") and entry["secret"] == "#":
            continue  # secret part not here (offline primary)
        if _usable(entry, now):
            candidates.append(entry)
        elif entry["validity"] == "e" or (entry["expires"] and entry["expires"] <= now):
            expired.append(entry)
    if not candidates:
        if expired:
            newest = max(expired, key=lambda e: e["created"] or 0)
            raise GpgError("signing (sub)key %s of %s expired on %s: add or extend a signing subkey "
                           "(gpg --quick-set-expire %s <time> '*')" % (newest["fingerprint"], fpr, _date(newest["expires"]), fpr))
        raise GpgError("key %s has no usable signing (sub)key with its secret part in this GnuPG home" % fpr)
    chosen = max(candidates, key=lambda e: e["created"] or 0)
    warnings = []
    horizon = now + warn_days * day
    for label, entry in (("signing key", key), ("signing subkey", chosen)):
        if entry is key and label == "signing subkey":
            continue
        if entry["expires"] and entry["expires"] <= horizon:
            warnings.append("%s %s expires on %s, in %d days: extend it before it does (gpg --quick-set-expire)"
                            % (label, entry["fingerprint"], _date(entry["expires"]), (entry["expires"] - now) // day))
    return chosen, warnings


def _date(epoch):
    if not epoch:
        return "never"
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def read_status(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        if line.startswith("[GNUPG:] "):
            parts = line[len("[GNUPG:] "):].split(" ")
            out.append(parts)
    return out


def failure_reason(status):
    names = [s[0] for s in status]
    if "BAD_PASSPHRASE" in names:
        return "bad passphrase"
    if "INV_SGNR" in names:
        return "signing key is not usable (expired, revoked or missing)"
    if "NO_SECKEY" in names:
        return "secret key not found"
    for s in status:
        if s[0] in ("FAILURE", "ERROR") and len(s) >= 3 and s[-1].isdigit():
            code = int(s[-1]) & 0xFFFF
            if code in ERRORS:
                return ERRORS[code]
            return "gpg error %s %d" % (s[1], code)
    return None


class Gpg:
    """gpg for one GnuPG home, run through a kiln Runner."""

    def __init__(self, runner, homedir=None, binary="gpg", gpgconf="gpgconf"):
        self.runner = runner
        self.homedir = os.path.abspath(os.path.expanduser(homedir)) if homedir else None
        self.binary = binary
        self.gpgconf = gpgconf
        self.tmp = tempfile.mkdtemp(prefix="kiln-gpg-")
        os.chmod(self.tmp, 0o700)
        self._n = 0

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self):
        return {"GNUPGHOME": self.homedir} if self.homedir else {}

    def base(self):
        argv = [self.binary, "--batch", "--no-tty", "--no-greeting", "--no-auto-key-locate", "--no-auto-key-retrieve"]
        if self.homedir:
            argv += ["--homedir", self.homedir]
        return argv

    def _status_path(self):
        self._n += 1
        path = os.path.join(self.tmp, "status-%d" % self._n)
        if os.path.exists(path):
            os.unlink(path)
        return path

    def list_key(self, fpr, secret=True):
        argv = self.base() + ["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--with-subkey-fingerprint",
                              "--list-secret-keys" if secret else "--list-keys", fpr]
        rc, out, _err = self.runner.capture(argv, env=self.env())
        if rc != 0:
            return None
        keys = [k for k in parse_colons(out) if k["fingerprint"] == fpr
                or any(s["fingerprint"] == fpr for s in k.get("subkeys", []))]
        return keys[0] if keys else None

    def sign_call(self, path, output, clearsign=False, fpr=None, passphrase=None, digest_algo="SHA512"):
        """The runner call that signs ``path`` into ``output`` (for Runner.run_all) and its status file."""
        status = self._status_path()
        argv = self.base() + ["--yes", "--status-file", status, "--local-user", fpr, "--digest-algo", digest_algo,
                              "--pinentry-mode", "loopback"]
        data = None
        if passphrase is not None:
            argv += ["--passphrase-fd", "0"]
            data = passphrase.encode("utf-8") + b"\n"
        argv += ["--output", output, "--clearsign" if clearsign else "--detach-sign", path]
        return {"argv": argv, "env": self.env(), "data": data}, status

    @staticmethod
    def sign_outcome(result, status, passphrase):
        """(ok, info) of a finished sign call: 'fingerprint' from gpg's SIG_CREATED, or the 'reason' it failed."""
        st = read_status(status)
        created = [s for s in st if s[0] == "SIG_CREATED"]
        if result.rc == 0 and created:
            return True, {"fingerprint": created[-1][-1], "result": result}
        reason = failure_reason(st) or "gpg failed with rc=%d" % result.rc
        if reason in ("bad passphrase",) and passphrase is None:
            reason = "key needs a passphrase and none was given (option passphrase)"
        elif any(s[0] == "NEED_PASSPHRASE" for s in st) and passphrase is None:
            reason = "key needs a passphrase and none was given (option passphrase)"
        return False, {"reason": reason, "result": result}

    def verify(self, sig, data=None):
        """Check a signature; returns {'valid', 'fingerprint', 'primary', 'reason', 'expired_key'}."""
        status = self._status_path()
        argv = self.base() + ["--status-file", status, "--verify", sig]
        if data is not None:
            argv.append(data)
        result = self.runner.run(argv, env=self.env(), check=False)
        st = read_status(status)
        info = {"valid": False, "fingerprint": None, "primary": None, "reason": None, "expired_key": False,
                "rc": result.rc}
        names = [s[0] for s in st]
        for s in st:
            if s[0] == "VALIDSIG" and len(s) >= 2:
                info["fingerprint"] = s[1]
                info["primary"] = s[-1] if len(s) >= 11 else s[1]
        if "BADSIG" in names:
            info["reason"] = "BAD signature"
        elif "ERRSIG" in names or "NO_PUBKEY" in names:
            info["reason"] = "signature made by a key that is not the given key"
        elif "NODATA" in names:
            info["reason"] = "not an OpenPGP signature"
        elif info["fingerprint"] and ("GOODSIG" in names or "EXPKEYSIG" in names or "EXPSIG" in names):
            if "EXPSIG" in names:
                info["reason"] = "signature has expired"
            elif "REVKEYSIG" in names:
                info["reason"] = "signing key is revoked"
            else:
                info["valid"] = result.rc == 0 or "EXPKEYSIG" in names
                info["expired_key"] = "EXPKEYSIG" in names
                if not info["valid"]:
                    info["reason"] = "gpg --verify failed with rc=%d" % result.rc
        else:
            info["reason"] = "gpg --verify failed with rc=%d" % result.rc
        return info

    def import_keys(self, path):
        status = self._status_path()
        argv = self.base() + ["--status-file", status, "--import", path]
        result = self.runner.run(argv, env=self.env(), check=False)
        st = read_status(status)
        fprs = [s[2] for s in st if s[0] == "IMPORT_OK" and len(s) >= 3]
        return result.rc == 0 and bool(fprs), fprs

    def kill_agent(self):
        argv = [self.gpgconf]
        if self.homedir:
            argv += ["--homedir", self.homedir]
        self.runner.run(argv + ["--kill", "all"], env=self.env(), check=False)
