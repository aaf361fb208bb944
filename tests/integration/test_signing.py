"""Signing with real GnuPG through real ansible-playbook runs: DIGESTS, .sig, .DIGESTS.asc, the build
record, refusals (changed artifact, wrong key, expired key, wrong passphrase), secrets hygiene, and
update payloads made by the real core_sign_update (vendored flatcar/scripts, at run time) from a
flatcar_production_update.zip laid out like generate_au_zip.py makes it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from au_testlib import au_generator_zip, checkout_layout
from kiln_testlib import REPO, VENV_BIN, run_module, run_playbook

from ansible_collections.kiln.flatcar.plugins.module_utils._record import BuildRecord, describe_output

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")

PASSPHRASE = "kiln-Test-passphrase-7f3a9c"
BOARD = "amd64-usr"
VERSION = "4593.2.5"
AU = os.path.join(REPO, "tests", "standin_sdk", "au")

CREATE_DIGESTS = r'''
file="$1"; df="$2"; fbn=$(basename "${file}")
: > "${df}"
for hash_type in md5 sha1 sha512; do
    echo "# ${hash_type} HASH" | tr "a-z" "A-Z" >>"${df}"
    output=$("${hash_type}sum" "${file}")
    echo "${output%% *}  ${fbn}" >>"${df}"
done
'''


def gpg(home, *args, data=None, check=True):
    proc = subprocess.run(["gpg", "--batch", "--homedir", home] + list(args), input=data, capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr.decode())
    return proc


def kill_agent(home):
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)


def new_home():
    home = tempfile.mkdtemp(prefix="kg-")  # short: the agent socket path must fit
    os.chmod(home, 0o700)
    with open(os.path.join(home, "gpg-agent.conf"), "w") as fh:
        fh.write("default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n")
    return home


def fingerprint(home, uid):
    out = gpg(home, "--with-colons", "--list-secret-keys", uid).stdout.decode()
    return [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")][0]


def gen_key(home, uid, algo="ed25519", passphrase=None, expire="0", faked=None):
    args = []
    if faked:
        args += ["--faked-system-time", faked]
    args += ["--pinentry-mode", "loopback", "--passphrase", passphrase or ""]
    args += ["--quick-generate-key", uid, algo, "sign", expire]
    gpg(home, *args)
    return fingerprint(home, uid)


@pytest.fixture(scope="module")
def keys():
    homes = []
    k = {}
    h = new_home()
    homes.append(h)
    k["ed"] = (h, gen_key(h, "Kiln Ed <ed@example.invalid>"))
    h = new_home()
    homes.append(h)
    k["rsa"] = (h, gen_key(h, "Kiln RSA <rsa@example.invalid>", algo="rsa2048", passphrase=PASSPHRASE))
    h = new_home()
    homes.append(h)
    k["other"] = (h, gen_key(h, "Kiln Other <other@example.invalid>"))
    h = new_home()
    homes.append(h)
    k["expired"] = (h, gen_key(h, "Kiln Old <old@example.invalid>", expire="1y", faked="20200101T000000!"))
    h = new_home()
    homes.append(h)
    k["soon"] = (h, gen_key(h, "Kiln Soon <soon@example.invalid>", expire="5d"))
    for name, (home, fpr) in k.items():
        pub = os.path.join(home, "pub.asc")
        with open(pub, "wb") as fh:
            fh.write(gpg(home, "--armor", "--export", fpr).stdout)
    yield k
    for h in homes:
        kill_agent(h)
        shutil.rmtree(h, ignore_errors=True)


def pub(keys, name):
    return os.path.join(keys[name][0], "pub.asc")


def make_build(tmp_path, record=True, files=None):
    root = tmp_path / "images"
    build = root / "images" / BOARD / ("developer-%s-a1" % VERSION)
    build.mkdir(parents=True)
    files = files or {
        "flatcar_production_image.bin.bz2": os.urandom(2 * 1024 * 1024 + 11),
        "flatcar_production_image.vmlinuz": os.urandom(300000),
        "flatcar_production_update.bin": os.urandom(1024 * 1024),
        "oem-qemu.raw": os.urandom(3 * 4096),
        "version.txt": b"FLATCAR_VERSION=%s\n" % VERSION.encode(),
    }
    for name, data in files.items():
        (build / name).write_bytes(data)
    rec_path = root / "kiln" / BOARD / VERSION / "build-record.json"
    if record:
        with BuildRecord.open(str(rec_path), board=BOARD, version={"FLATCAR_VERSION": VERSION}, build_root=str(root)) as rec:
            rec.set("build_dir", os.path.relpath(str(build), str(root)))
            rec.begin("image", {"x": 1}, "sha256:" + "0" * 64)
            rec.finish("image", [describe_output(str(root), str(build / n), "other") for n in sorted(files)])
    return root, build, rec_path


def listing(directory):
    return sorted(os.path.relpath(p, directory) for p in glob.glob(os.path.join(directory, "**"), recursive=True))


def fixture_digests(path, tmp_path):
    out = tmp_path / ("fixture-%s.DIGESTS" % os.path.basename(path))
    subprocess.run(["bash", "-c", CREATE_DIGESTS, "create_digests", str(path), str(out)], check=True)
    return out.read_bytes()


def verify_with(pubkey, sig, data=None):
    home = new_home()
    try:
        gpg(home, "--import", pubkey)
        args = ["--verify", sig] + ([data] if data else [])
        return gpg(home, *args, check=False).returncode == 0
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def one_line(res):
    assert res.get("failed"), res
    assert "\n" not in res["msg"], res["msg"]
    return res["msg"]


# -- tests -----------------------------------------------------------------------------------------

def test_sign_with_record_ed25519(tmp_path, keys):
    home, fpr = keys["ed"]
    root, build, rec_path = make_build(tmp_path)
    res, run = run_module("kiln.flatcar.artifact_sign", {"record_path": str(rec_path), "key_fingerprint": fpr,
                                                         "gnupghome": home})
    assert res.get("changed") and not res.get("failed"), res
    assert len(res["signed"]) == 5 and res["signer_fingerprint"] == fpr
    for f in res["signed"]:
        assert open(f + ".DIGESTS", "rb").read() == fixture_digests(f, tmp_path)
        assert verify_with(pub(keys, "ed"), f + ".sig", f)
        assert verify_with(pub(keys, "ed"), f + ".DIGESTS.asc")
        assert verify_with(pub(keys, "ed"), f + ".DIGESTS.sig", f + ".DIGESTS")
        assert not verify_with(pub(keys, "other"), f + ".sig", f)
    # the record knows the signer and the signature files
    data = json.load(open(rec_path))
    sign = data["stages"]["sign"]
    assert sign["status"] == "passed" and sign["details"]["signer_fingerprint"] == fpr
    assert len(sign["outputs"]) == 20 and all(o["role"] == "signature" for o in sign["outputs"])
    assert data["stages"]["image"]["status"] == "passed"
    # idempotent, also in check mode
    again, _unused = run_module("kiln.flatcar.artifact_sign", {"record_path": str(rec_path), "key_fingerprint": fpr,
                                                               "gnupghome": home})
    assert again["changed"] is False and len(again["unchanged"]) == 5, again
    check, _unused = run_module("kiln.flatcar.artifact_sign", {"record_path": str(rec_path), "key_fingerprint": fpr,
                                                               "gnupghome": home}, check=True)
    assert check["changed"] is False, check
    # a user verifies with only the public key
    ver, _unused = run_module("kiln.flatcar.artifact_verify", {"directory": str(build), "public_key": pub(keys, "ed"),
                                                               "key_fingerprint": fpr})
    assert not ver.get("failed") and len(ver["verified"]) == 5, ver


def test_changed_file_is_resigned_and_others_kept(tmp_path, keys):
    home, fpr = keys["ed"]
    _root, build, _rec = make_build(tmp_path, record=False)
    args = {"directory": str(build), "key_fingerprint": fpr, "gnupghome": home}
    first, _unused = run_module("kiln.flatcar.artifact_sign", args)
    assert first["changed"] and len(first["signed"]) == 5, first
    target = build / "oem-qemu.raw"
    target.write_bytes(os.urandom(4096))
    check, _unused = run_module("kiln.flatcar.artifact_sign", args, check=True)
    assert check["changed"] and check["signed"] == [str(target)], check
    second, _unused = run_module("kiln.flatcar.artifact_sign", args)
    assert second["signed"] == [str(target)] and len(second["unchanged"]) == 4, second
    assert open(str(target) + ".DIGESTS", "rb").read() == fixture_digests(target, tmp_path)
    assert verify_with(pub(keys, "ed"), str(target) + ".sig", str(target))


def test_record_mismatch_refuses_and_signs_nothing(tmp_path, keys):
    home, fpr = keys["ed"]
    _root, build, rec_path = make_build(tmp_path)
    bad = build / "flatcar_production_image.vmlinuz"
    bad.write_bytes(b"tampered" + bad.read_bytes()[8:])
    before = listing(str(build))
    res, _unused = run_module("kiln.flatcar.artifact_sign", {"record_path": str(rec_path), "key_fingerprint": fpr,
                                                             "gnupghome": home})
    msg = one_line(res)
    assert str(bad) in msg and "build record" in msg and "nothing was signed" in msg
    assert listing(str(build)) == before
    assert json.load(open(rec_path))["stages"]["sign"]["status"] == "failed"


def test_unknown_key_and_short_id_refused(tmp_path, keys):
    home, fpr = keys["ed"]
    _root, build, _rec = make_build(tmp_path, record=False)
    before = listing(str(build))
    res, _unused = run_module("kiln.flatcar.artifact_sign", {"directory": str(build), "key_fingerprint": keys["other"][1],
                                                             "gnupghome": home})
    assert keys["other"][1] in one_line(res) and "not in the GnuPG home" in res["msg"]
    res, _unused = run_module("kiln.flatcar.artifact_sign", {"directory": str(build), "key_fingerprint": fpr[-16:],
                                                             "gnupghome": home})
    assert "full fingerprint" in one_line(res)
    assert listing(str(build)) == before


def test_expired_key_fails_and_soon_warns(tmp_path, keys):
    _root, build, _rec = make_build(tmp_path, record=False)
    before = listing(str(build))
    home, fpr = keys["expired"]
    res, _unused = run_module("kiln.flatcar.artifact_sign", {"directory": str(build), "key_fingerprint": fpr, "gnupghome": home})
    msg = one_line(res)
    assert "expired on 20" in msg and "nothing was signed" in msg
    assert listing(str(build)) == before
    home, fpr = keys["soon"]
    res, _unused = run_module("kiln.flatcar.artifact_sign", {"directory": str(build), "key_fingerprint": fpr, "gnupghome": home,
                                                             "expire_warn_days": 30})
    assert res["changed"] and any("expires on" in w for w in res.get("warnings", [])), res


def test_wrong_key_verification_names_first_bad_file(tmp_path, keys):
    home, fpr = keys["ed"]
    _root, build, _rec = make_build(tmp_path, record=False)
    run_module("kiln.flatcar.artifact_sign", {"directory": str(build), "key_fingerprint": fpr, "gnupghome": home})
    first = sorted(p for p in glob.glob(str(build / "*")) if not p.endswith((".sig", ".asc", ".DIGESTS")))[0]
    res, _unused = run_module("kiln.flatcar.artifact_verify", {"directory": str(build), "public_key": pub(keys, "other")})
    msg = one_line(res)
    assert msg.startswith(first + ":") and res["bad_file"] == first, msg
    # a corrupted artifact
    target = build / "oem-qemu.raw"
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    res, _unused = run_module("kiln.flatcar.artifact_verify", {"directory": str(build), "public_key": pub(keys, "ed")})
    assert one_line(res).startswith(str(target) + ": DIGESTS check failed"), res["msg"]


def test_passphrase_key_and_secrets_stay_secret(tmp_path, keys):
    """RSA key with a passphrase imported by the signer role from an ansible-vault file into a fresh home;
    wrong passphrase refused with nothing signed; the passphrase and key material appear nowhere."""
    src_home, fpr = keys["rsa"]
    secret = gpg(src_home, "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE, "--armor",
                 "--export-secret-keys", fpr).stdout.decode()
    public = open(pub(keys, "rsa")).read()
    # base64 lines only the secret export has (the public half is legitimately public)
    key_lines = [l for l in secret.splitlines() if len(l) >= 60 and l not in public]
    assert len(key_lines) >= 5
    vault_pw = tmp_path / "vault-pass"
    vault_pw.write_text("vault-test-password\n")
    vars_file = tmp_path / "secrets.yml"
    vars_file.write_text(json.dumps({"signer_private_key": secret, "kiln_sign_passphrase": PASSPHRASE}))
    subprocess.run([os.path.join(VENV_BIN, "ansible-vault"), "encrypt", "--vault-password-file", str(vault_pw), str(vars_file)],
                   check=True, capture_output=True)
    assert PASSPHRASE not in vars_file.read_text()
    root, build, rec_path = make_build(tmp_path)
    signer_home = tempfile.mkdtemp(prefix="kgs-")
    os.rmdir(signer_home)
    playbook = os.path.join(REPO, "playbooks", "sign.yml")
    common = ["--vault-password-file", str(vault_pw), "-e", "@" + str(vars_file), "-v"]
    try:
        ev = {"kiln_signer_group": "localhost", "signer_gnupghome": signer_home, "signer_key_fingerprint": fpr,
              "kiln_sign_record": str(rec_path)}
        # wrong passphrase first (fresh agent, cache TTL 0): refused, nothing signed
        before = listing(str(build))
        bad = run_playbook(playbook, extra_vars=ev,
                           args=common + ["-e", json.dumps({"kiln_sign_passphrase": "not-the-passphrase"})])
        assert bad.rc != 0
        res = bad.result("Write DIGESTS and GnuPG signatures", "localhost")
        assert "bad passphrase" in one_line(res) and "nothing was signed" in res["msg"], res["msg"]
        assert listing(str(build)) == before
        kill_agent(signer_home)
        good = run_playbook(playbook, extra_vars=ev, args=common)
        assert good.rc == 0, good.stdout[-3000:]
        res = good.result("Write DIGESTS and GnuPG signatures", "localhost")
        assert res["changed"] and len(res["signed"]) == 5
        assert not good.result("Verify what was signed, as a user would", "localhost").get("failed")
        for f in res["signed"]:
            assert verify_with(pub(keys, "rsa"), f + ".sig", f)
        # nowhere: playbook output, events, logs, record, build tree
        haystacks = {"stdout": good.stdout + bad.stdout, "stderr": good.stderr + bad.stderr,
                     "events": json.dumps(good.events) + json.dumps(bad.events)}
        for path in glob.glob(str(root) + "/**", recursive=True) + glob.glob(os.path.expanduser("~/.ansible/tmp") + "/**", recursive=True):
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    haystacks[path] = fh.read().decode("utf-8", "replace")
        logdir = os.path.join(tempfile.gettempdir(), "kiln-%d" % os.getuid())
        for path in glob.glob(logdir + "/*"):
            with open(path, "rb") as fh:
                haystacks[path] = fh.read().decode("utf-8", "replace")
        assert any(p.endswith("sign.log") for p in haystacks)  # the stage log was searched
        for where, text in haystacks.items():
            assert PASSPHRASE not in text, where
            for line in key_lines:
                assert line not in text, where
            assert "PRIVATE KEY BLOCK" not in text, where
    finally:
        kill_agent(signer_home)
        shutil.rmtree(signer_home, ignore_errors=True)


# -- update payloads -------------------------------------------------------------------------------

def openssl_pair(directory, name):
    key = os.path.join(directory, name + ".key.pem")
    pubk = os.path.join(directory, name + ".pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-out", pubk], check=True, capture_output=True)
    return key, pubk


def bundle(build):
    """flatcar_production_update.zip with the real core_sign_update, common.sh and lib/shflags and the stand-in
    delta_generator, as build_library/generate_au_zip.py packs them (skips without the vendored scripts)."""
    au_generator_zip(build / "flatcar_production_update.zip")


def test_update_payloads_from_bundle(tmp_path):
    root, build, rec_path = make_build(tmp_path)
    bundle(build)
    key, pubk = openssl_pair(str(tmp_path), "au")
    args = {"record_path": str(rec_path), "private_keys": [key], "public_keys": [pubk]}
    res, _unused = run_module("kiln.flatcar.update_payload", args)
    assert res.get("changed") and not res.get("failed"), res
    names = sorted(p["name"] for p in res["payloads"])
    assert names == ["flatcar_production_update.gz", "oem-qemu.gz"]
    main = [p for p in res["payloads"] if p["name"] == "flatcar_production_update.gz"][0]
    info, _unused = run_module("kiln.flatcar.payload_info", {"path": main["path"], "public_keys": [pubk]})
    assert info["verified"] and info["manifest"]["has_kernel"] and info["signature_count"] == 1, info
    assert info["sha256_hex"] == main["sha256_hex"] and info["sha1_base64"] == main["sha1_base64"]
    stage = json.load(open(rec_path))["stages"]["payload"]
    assert stage["status"] == "passed" and len(stage["outputs"]) == 2
    assert {d["sha256_base64"] for d in stage["details"]["payloads"]} >= {main["sha256_base64"]}
    assert not glob.glob(str(build / ".kiln-payload-*"))
    again, _unused = run_module("kiln.flatcar.update_payload", args)
    assert again["changed"] is False, again
    _other_key, other_pub = openssl_pair(str(tmp_path), "other")
    bad, _unused = run_module("kiln.flatcar.payload_info", {"path": main["path"], "public_keys": [other_pub]})
    assert "no signature verifies" in one_line(bad)


def test_payload_failing_verification_is_not_published(tmp_path):
    _root, build, _rec = make_build(tmp_path, record=False)
    tools = checkout_layout(tmp_path / "tools")
    shutil.copy(os.path.join(AU, "delta_generator"), tools)
    # the real core_sign_update, made to "succeed" but corrupt one blob byte after signing
    with open(os.path.join(tools, "core_sign_update"), "a") as fh:
        fh.write("printf '\\x00' | dd of=\"${FLAGS_output}\" bs=1 seek=600 conv=notrunc status=none\n")
    key, pubk = openssl_pair(str(tmp_path), "au")
    res, _unused = run_module("kiln.flatcar.update_payload", {"build_dir": str(build), "tools": "directory", "tools_dir": tools,
                                                              "extensions": [], "private_keys": [key], "public_keys": [pubk]})
    msg = one_line(res)
    assert "failed verification" in msg and "not published" in msg, msg
    assert not (build / "flatcar_production_update.gz").exists()
    assert not glob.glob(str(build / ".kiln-payload-*")) and not glob.glob(str(build / "*.kiln-tmp-*"))


def test_payload_refuses_changed_input(tmp_path):
    _root, build, rec_path = make_build(tmp_path)
    bundle(build)
    (build / "flatcar_production_update.bin").write_bytes(os.urandom(4096))
    key, pubk = openssl_pair(str(tmp_path), "au")
    res, _unused = run_module("kiln.flatcar.update_payload", {"record_path": str(rec_path), "private_keys": [key], "public_keys": [pubk]})
    assert "flatcar_production_update.bin no longer matches the build record" in one_line(res)
    assert not (build / "flatcar_production_update.gz").exists()
