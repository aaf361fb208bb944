"""The pure-Python CrAU payload reader and RSA verifier, against payloads made by the real flatcar/scripts
core_sign_update (from the vendored scripts, at run time) driving the stand-in delta_generator, which lays
payloads out like update_engine's generator (both use openssl for RSA)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import subprocess

import pytest

from au_testlib import AU, run_core_sign_update, sdk_layout

from ansible_collections.kiln.flatcar.plugins.module_utils import _crau


def openssl_key(directory, name, pkcs1=False):
    key = os.path.join(directory, name + ".key.pem")
    pub = os.path.join(directory, name + ".pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    args = ["-RSAPublicKey_out"] if pkcs1 else ["-pubout"]
    subprocess.run(["openssl", "rsa", "-in", key] + args + ["-out", pub], check=True, capture_output=True)
    return key, pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("keys"))
    return {"a": openssl_key(d, "a"), "b": openssl_key(d, "b"), "c": openssl_key(d, "c", pkcs1=True)}


@pytest.fixture(scope="module")
def core_sign_update(tmp_path_factory):
    """The real core_sign_update in the SDK layout (<root>/src/scripts); skips without the vendored scripts."""
    return os.path.join(sdk_layout(tmp_path_factory.mktemp("sdk") / "trunk"), "core_sign_update")


@pytest.fixture(scope="module")
def payload(tmp_path_factory, keys, core_sign_update):
    d = tmp_path_factory.mktemp("payload")
    image = d / "flatcar_production_update.bin"
    image.write_bytes(os.urandom(3 * 1024 * 1024 + 8192))
    kernel = d / "flatcar_production_image.vmlinuz"
    kernel.write_bytes(os.urandom(54321))
    out = d / "flatcar_production_update.gz"
    run_core_sign_update(core_sign_update, d, image, out, [keys["a"]], kernel=kernel)
    return {"path": str(out), "image": image.read_bytes(), "kernel": kernel.read_bytes(), "dir": d}


def load(path):
    with open(path) as fh:
        return _crau.load_rsa_public_key(fh.read())


def test_varint_roundtrip():
    for v in (0, 1, 127, 128, 300, 2 ** 32, 2 ** 64 - 1):
        enc = _crau.encode_varint(v)
        assert _crau.read_varint(enc, 0) == (v, len(enc))
    msg = _crau.field_varint(1, 5) + _crau.field_bytes(2, b"abc")
    assert list(_crau.iter_fields(msg)) == [(1, 0, 5), (2, 2, b"abc")]


def test_signatures_message_roundtrip():
    blob = _crau.encode_signatures([(1, b"x" * 3), (2, b"y")])
    assert _crau.decode_signatures(blob)["signatures"] == [{"version": 1, "data": b"xxx"}, {"version": 2, "data": b"y"}]


def test_public_key_formats(keys):
    n1, e1 = load(keys["a"][1])
    assert n1.bit_length() == 2048 and e1 == 65537
    n3, _unused = load(keys["c"][1])  # PKCS#1 "RSA PUBLIC KEY"
    assert n3.bit_length() == 2048
    with pytest.raises(_crau.PayloadError):
        load(keys["a"][0])  # private key refused


def test_inspect_valid(payload, keys):
    info = _crau.inspect(payload["path"], [("a", load(keys["a"][1]))])
    data = open(payload["path"], "rb").read()
    assert info["verified"] and info["problems"] == []
    assert info["size"] == len(data)
    assert info["sha256_hex"] == hashlib.sha256(data).hexdigest()
    assert info["sha256_base64"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert info["sha1_base64"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
    m = info["manifest"]
    assert m["new_partition_info"] == {"size": len(payload["image"]), "sha256": hashlib.sha256(payload["image"]).hexdigest()}
    assert m["procedures"][0]["type"] == "KERNEL"
    assert m["procedures"][0]["new_info"]["sha256"] == hashlib.sha256(payload["kernel"]).hexdigest()
    assert m["partition_operations"]["types"] == {"REPLACE": 4}  # random data: bzip2 does not shrink it
    assert m["noop_operations"] == 2  # the kernel blob, then the signature (delta_diff_generator.cc)
    assert info["signature_count"] == 1 and info["signatures"][0]["version"] == 2
    assert info["signatures"][0]["size"] == 256
    assert data[:4] == b"CrAU" and struct.unpack(">Q", data[4:12])[0] == 1


def test_signed_hash_is_what_was_signed(payload, keys):
    """Independent check: openssl recovers sha256(everything before the signature blob)."""
    info = _crau.inspect(payload["path"])
    data = open(payload["path"], "rb").read()
    end = info["metadata_size"] + info["manifest"]["signatures_offset"]
    sig = _crau.decode_signatures(data[end:])["signatures"][0]["data"]
    sigfile = payload["dir"] / "sig.bin"
    sigfile.write_bytes(sig)
    rec = subprocess.run(["openssl", "rsautl", "-verify", "-pubin", "-inkey", keys["a"][1], "-in", str(sigfile)],
                         check=True, capture_output=True).stdout
    assert rec[-32:] == hashlib.sha256(data[:end]).digest() == _crau.signed_hash_of(payload["path"])


def test_wrong_key_does_not_verify(payload, keys):
    info = _crau.inspect(payload["path"], [("b", load(keys["b"][1]))])
    assert not info["verified"]
    assert info["problems"] == ["no signature verifies with public key b"]


def tampered(payload, tmp_path, offset_from, delta=1):
    data = bytearray(open(payload["path"], "rb").read())
    info = _crau.inspect(payload["path"])
    if offset_from == "blob":
        pos = info["metadata_size"] + 5000
    elif offset_from == "signature":
        pos = len(data) - 10
    else:
        pos = offset_from
    data[pos] ^= delta
    out = tmp_path / "tampered.gz"
    out.write_bytes(bytes(data))
    return str(out)


def test_tampered_blob_fails(payload, keys, tmp_path):
    info = _crau.inspect(tampered(payload, tmp_path, "blob"), [("a", load(keys["a"][1]))])
    assert not info["verified"]
    assert any("data_sha256_hash" in p for p in info["problems"])


def test_tampered_signature_fails(payload, keys, tmp_path):
    info = _crau.inspect(tampered(payload, tmp_path, "signature"), [("a", load(keys["a"][1]))])
    assert not info["verified"] and info["signatures"][0]["verified_by"] is None


def test_bad_magic_and_truncation(payload, tmp_path):
    with pytest.raises(_crau.PayloadError, match="magic"):
        _crau.inspect(tampered(payload, tmp_path, 0, 0x20))
    data = open(payload["path"], "rb").read()
    short = tmp_path / "short.gz"
    short.write_bytes(data[:-1])
    with pytest.raises(_crau.PayloadError, match="does not match"):
        _crau.inspect(str(short))
    tiny = tmp_path / "tiny.gz"
    tiny.write_bytes(b"CrAU")
    with pytest.raises(_crau.PayloadError, match="too short"):
        _crau.inspect(str(tiny))


def test_two_keys_versions(tmp_path, keys, core_sign_update):
    image = tmp_path / "oem-azure.raw"
    image.write_bytes(os.urandom(8192))
    out = tmp_path / "oem-azure.gz"
    run_core_sign_update(core_sign_update, tmp_path, image, out, [keys["a"], keys["b"]], sep="+")
    info = _crau.inspect(str(out), [("a", load(keys["a"][1])), ("b", load(keys["b"][1]))])
    assert info["verified"], info["problems"]
    assert [s["version"] for s in info["signatures"]] == [1, 2]
    assert info["manifest"]["procedures"] == []  # sysext payloads carry no kernel


def test_core_sign_update_rejects_wrong_key(tmp_path, keys, core_sign_update):
    """core_sign_update's final delta_generator check refuses a public key that does not match."""
    image = tmp_path / "u.bin"
    image.write_bytes(os.urandom(4096))
    proc = run_core_sign_update(core_sign_update, tmp_path, image, tmp_path / "o.gz", [(keys["a"][0], keys["b"][1])],
                                check=False)
    assert proc.returncode != 0 and "VerifySignedPayload" in proc.stderr and not (tmp_path / "o.gz").exists()


def test_unsigned_payload(tmp_path):
    image = tmp_path / "u.bin"
    image.write_bytes(os.urandom(4096))
    out = tmp_path / "unsigned.gz"
    subprocess.run([shutil.which("python3"), os.path.join(AU, "delta_generator"), "-new_image", str(image),
                    "-out_file", str(out)], check=True, capture_output=True)
    info = _crau.inspect(str(out))
    assert not info["signed"] and info["signature_count"] == 0


def test_generator_private_key_and_unsigned_kernel(tmp_path, keys):
    """delta_generator -private_key (how build_image makes flatcar_test_update.gz) signs in one go: kernel
    noop, then the signature noop; unsigned with a kernel: only the kernel noop, and that is accepted."""
    image = tmp_path / "u.bin"
    image.write_bytes(os.urandom(8192))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(5000))
    signed, unsigned = tmp_path / "signed.gz", tmp_path / "unsigned.gz"
    gen = [shutil.which("python3"), os.path.join(AU, "delta_generator"), "-new_image", str(image), "-new_kernel", str(kernel)]
    subprocess.run(gen + ["-out_file", str(signed), "-private_key", keys["a"][0]], check=True, capture_output=True)
    subprocess.run(gen + ["-out_file", str(unsigned)], check=True, capture_output=True)
    info = _crau.inspect(str(signed), [("a", load(keys["a"][1]))])
    assert info["verified"] and info["problems"] == [] and info["manifest"]["noop_operations"] == 2
    assert [s["version"] for s in info["signatures"]] == [2]
    info = _crau.inspect(str(unsigned))
    assert not info["signed"] and info["problems"] == [] and info["manifest"]["noop_operations"] == 1
