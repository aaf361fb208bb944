"""Real update payloads: the REAL flatcar/scripts core_sign_update (copied at run time from
<vendor>/flatcar-scripts) drives the stand-in delta_generator, which lays payloads out like
update_engine's delta_diff_generator.cc (REPLACE/REPLACE_BZ 1 MiB chunks, one legacy noop per kernel
blob, then the signature noop). kiln's reader (_crau), payload_info and update_payload must accept
exactly that - read back to the byte - in the SDK/checkout layout and from a flatcar_production_update.zip
laid out like generate_au_zip.py makes it, and still refuse malformed payloads with one-line errors."""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import subprocess
import zipfile

import pytest

from au_testlib import (AU, au_generator_zip, check_real_layout, checkout_layout, mixed_bytes, op_dict, openssl_pair,
                        pb_encode, run_core_sign_update, sdk_layout, split)
from kiln_testlib import VENV_BIN, run_module

from ansible_collections.kiln.flatcar.plugins.module_utils import _crau

pytestmark = pytest.mark.skipif(subprocess.run(["openssl", "version"], capture_output=True, check=False).returncode != 0,
                                reason="openssl not installed")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {"a": openssl_pair(d, "a"), "b": openssl_pair(d, "b")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    image = mixed_bytes(3 * 1024 * 1024 + 8192, 0)   # 4 chunks, the last one short
    kernel = mixed_bytes(1536 * 1024 + 321, 1)        # 2 kernel blobs -> 2 legacy noops
    (d / "flatcar_production_update.bin").write_bytes(image)
    (d / "flatcar_production_image.vmlinuz").write_bytes(kernel)
    (d / "oem-qemu.raw").write_bytes(mixed_bytes(3 * 4096, 1))
    return {"dir": d, "image": image, "kernel": kernel, "image_path": d / "flatcar_production_update.bin",
            "kernel_path": d / "flatcar_production_image.vmlinuz", "sysext_path": d / "oem-qemu.raw"}


@pytest.fixture(scope="module")
def payloads(tmp_path_factory, keys, inputs):
    """Signed main payloads (kernel) with one and with two keys, by the real script in the SDK layout."""
    d = tmp_path_factory.mktemp("sdk")
    scripts = sdk_layout(d / "trunk")
    job = d / "job"
    job.mkdir()
    out = {}
    for name, ks in (("one", [keys["a"]]), ("two", [keys["a"], keys["b"]])):
        path = d / ("%s.gz" % name)
        run_core_sign_update(os.path.join(scripts, "core_sign_update"), job, inputs["image_path"], path, ks,
                             kernel=inputs["kernel_path"])
        out[name] = str(path)
    assert os.listdir(str(job)) == []  # core_sign_update cleans its work files
    return out


def crau_key(pub):
    with open(pub) as fh:
        return _crau.load_rsa_public_key(fh.read())


def assert_read_exactly(info, exp, inputs, labels):
    assert info["problems"] == [] and info["verified"] and info["verified_keys"] == labels
    assert info["size"] == exp["size"] and info["sha256_hex"] == exp["sha256_hex"]
    assert info["sha1_base64"] == base64.b64encode(exp["sha1"]).decode()
    assert info["sha256_base64"] == base64.b64encode(bytes.fromhex(exp["sha256_hex"])).decode()
    assert info["metadata_size"] == exp["metadata_size"] and info["manifest_size"] == exp["manifest_size"]
    m = info["manifest"]
    assert m["signatures_offset"] == exp["signatures_offset"] and m["signatures_size"] == exp["signatures_size"]
    assert m["block_size"] == 4096 and not m["delta"]
    assert m["partition_operations"]["count"] == len(exp["part_types"]) == 4
    types = {"REPLACE": exp["part_types"].count(0), "REPLACE_BZ": exp["part_types"].count(1)}
    assert m["partition_operations"]["types"] == dict((k, v) for k, v in types.items() if v)
    assert m["partition_operations"]["data_bytes"] == exp["part_bytes"]
    assert m["new_partition_info"] == {"size": len(inputs["image"]), "sha256": hashlib.sha256(inputs["image"]).hexdigest()}
    assert m["has_kernel"] and m["noop_operations"] == exp["kernel_ops"] + 1 == 3
    (proc,) = m["procedures"]
    assert proc["type"] == "KERNEL" and proc["operations"]["count"] == exp["kernel_ops"]
    assert proc["operations"]["data_bytes"] == exp["kernel_bytes"]
    assert proc["new_info"] == {"size": len(inputs["kernel"]), "sha256": hashlib.sha256(inputs["kernel"]).hexdigest()}
    assert [s["version"] for s in info["signatures"]] == exp["versions"]
    assert [s["size"] for s in info["signatures"]] == [256] * len(labels)
    assert [s["verified_by"] for s in info["signatures"]] == labels


@pytest.mark.parametrize("which,names", [("one", ["a"]), ("two", ["a", "b"])])
def test_real_payload_with_kernel_read_exactly(payloads, keys, inputs, tmp_path, which, names):
    pubs = [keys[n][1] for n in names]
    exp = check_real_layout(payloads[which], inputs["image"], inputs["kernel"], pubs, tmp_path)
    assert exp["versions"] == ([2] if which == "one" else [1, 2])
    assert set(exp["part_types"]) == {0, 1}  # both REPLACE and REPLACE_BZ chunks occur
    info = _crau.inspect(payloads[which], [(n, crau_key(keys[n][1])) for n in names])
    assert_read_exactly(info, exp, inputs, names)
    assert _crau.signed_hash_of(payloads[which]) == exp["signed_hash"]


def test_payload_info_module_accepts_real_payloads(payloads, keys, inputs, tmp_path):
    for which, names in (("one", ["a"]), ("two", ["a", "b"])):
        pubs = [keys[n][1] for n in names]
        exp = check_real_layout(payloads[which], inputs["image"], inputs["kernel"], pubs, tmp_path)
        res, _run = run_module("kiln.flatcar.payload_info", {"path": payloads[which], "public_keys": pubs})
        assert not res.get("failed"), res.get("msg")
        assert_read_exactly(res, exp, inputs, pubs)


def test_payload_info_paths_inspects_several_in_one_call(payloads, keys, inputs, tmp_path):
    """paths: one call, one entry per payload in order, each as path would return it; the first invalid one fails
    the call and is named."""
    pubs = [keys["a"][1]]
    res, _run = run_module("kiln.flatcar.payload_info", {"paths": [payloads["two"], payloads["one"]], "public_keys": pubs})
    assert not res.get("failed"), res.get("msg")
    assert [e["path"] for e in res["payloads"]] == [payloads["two"], payloads["one"]]
    for entry, which in zip(res["payloads"], ("two", "one")):
        single, _run = run_module("kiln.flatcar.payload_info", {"path": payloads[which], "public_keys": pubs})
        # (Ansible adds the file's owner, mode etc. to a result whose top level has a path; an entry has only inspect's)
        assert entry == {k: single[k] for k in entry} and len(entry) >= 15
        assert entry["verified"] and entry["problems"] == []
    with open(payloads["one"], "rb") as fh:
        short = tmp_path / "short.gz"
        short.write_bytes(fh.read()[:-1])
    res, _run = run_module("kiln.flatcar.payload_info", {"paths": [payloads["one"], str(short)], "public_keys": pubs})
    assert res.get("failed") and res["msg"].startswith(str(short) + " is not a valid update payload"), res
    res, _run = run_module("kiln.flatcar.payload_info", {"path": payloads["one"], "paths": [payloads["one"]]})
    assert res.get("failed") and "mutually exclusive" in res["msg"], res


def test_real_zip_as_generate_au_zip_makes_it(tmp_path, keys, inputs):
    """Unpacked as is, the real zip cannot run: common.sh sources settings.env (common.sh:6), which
    generate_au_zip.py does not ship. With it added, the real script runs from the unpacked directory
    (./lib/shflags, version.txt beside it) and makes the real layout."""
    zpath = au_generator_zip(tmp_path / "flatcar_production_update.zip")
    au = tmp_path / "au"
    with zipfile.ZipFile(zpath) as zf:
        assert "settings.env" not in zf.namelist()
        for info in zf.infolist():
            zf.extract(info, str(au))
            os.chmod(str(au / info.filename), (info.external_attr >> 16) & 0o777)
    env = dict(os.environ, PATH=os.pathsep.join([str(au), VENV_BIN, os.environ["PATH"]]))
    argv = [str(au / "core_sign_update"), "--image", str(inputs["image_path"]), "--kernel", str(inputs["kernel_path"]),
            "--output", str(tmp_path / "u.gz"), "--private_keys", keys["a"][0], "--public_keys", keys["a"][1]]
    bad = subprocess.run(argv, cwd=str(au), env=env, capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "settings.env" in bad.stderr, bad.stderr
    (au / "settings.env").write_text("")
    subprocess.run(argv, cwd=str(au), env=env, capture_output=True, text=True, check=True)
    exp = check_real_layout(str(tmp_path / "u.gz"), inputs["image"], inputs["kernel"], [keys["a"][1]], tmp_path)
    assert_read_exactly(_crau.inspect(str(tmp_path / "u.gz"), [("a", crau_key(keys["a"][1]))]), exp, inputs, ["a"])


def test_update_payload_module_bundle_and_checkout(tmp_path, keys, inputs, payloads):
    """update_payload runs the real core_sign_update from the zip and from a scripts checkout (delta_generator
    on PATH, as in the SDK); both give the same bytes, equal to the direct run (RSA PKCS#1 v1.5 is deterministic)."""
    build = tmp_path / "build"
    build.mkdir()
    for name in ("flatcar_production_update.bin", "flatcar_production_image.vmlinuz", "oem-qemu.raw"):
        (build / name).write_bytes((inputs["dir"] / name).read_bytes())
    au_generator_zip(build / "flatcar_production_update.zip")
    ks = [keys["a"], keys["b"]]
    args = {"build_dir": str(build), "private_keys": [k for k, _p in ks], "public_keys": [p for _k, p in ks]}
    res, _run = run_module("kiln.flatcar.update_payload", dict(args, log_path=str(tmp_path / "bundle.log")))
    assert res.get("changed") and not res.get("failed"), res.get("msg")
    by = dict((p["name"], p) for p in res["payloads"])
    assert sorted(by) == ["flatcar_production_update.gz", "oem-qemu.gz"]
    main = str(build / "flatcar_production_update.gz")
    exp = check_real_layout(main, inputs["image"], inputs["kernel"], [p for _k, p in ks], tmp_path)
    assert by["flatcar_production_update.gz"]["sha256_hex"] == exp["sha256_hex"]
    assert by["flatcar_production_update.gz"]["size"] == exp["size"]
    assert by["flatcar_production_update.gz"]["signature_count"] == 2
    with open(payloads["two"], "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == exp["sha256_hex"]
    sx = check_real_layout(str(build / "oem-qemu.gz"), inputs["sysext_path"].read_bytes(), None, [p for _k, p in ks], tmp_path)
    assert by["oem-qemu.gz"]["sha256_hex"] == sx["sha256_hex"]
    assert not glob.glob(str(build / ".kiln-payload-*"))
    # idempotent: the real payloads are recognised as current
    again, _run = run_module("kiln.flatcar.update_payload", dict(args, log_path=str(tmp_path / "bundle.log")))
    assert again["changed"] is False, again
    # the checkout layout, delta_generator from PATH
    scripts = checkout_layout(tmp_path / "scripts")
    out = tmp_path / "out"
    env = {"PATH": os.pathsep.join([AU, VENV_BIN, os.environ["PATH"]])}
    dir_args = dict(args, tools="directory", tools_dir=scripts, output_dir=str(out), log_path=str(tmp_path / "dir.log"))
    res2, _run = run_module("kiln.flatcar.update_payload", dir_args, env=env)
    assert res2.get("changed") and not res2.get("failed"), res2.get("msg")
    assert sorted((p["name"], p["sha256_hex"]) for p in res2["payloads"]) == sorted((p["name"], p["sha256_hex"]) for p in res["payloads"])


# -- malformed variants ---------------------------------------------------------------------------

def rebuild(data, key, noops=None, sig_size=None):
    """Re-encode the payload with another noop list, and sign it again with ``key`` (one signature), so only the
    layout is wrong."""
    fields, metadata_size = split(data)
    sig_off = [v for n, _w, v in fields if n == 4][0]
    blobs = data[metadata_size:metadata_size + sig_off]
    old_noops = [v for n, _w, v in fields if n == 2]
    new = [f for f in fields if f[0] != 2]
    new = [f for f in new if f[0] < 2] + [(2, 2, v) for v in (old_noops if noops is None else noops(old_noops))] + \
        [f for f in new if f[0] > 2]
    manifest = pb_encode(new)
    prefix = b"CrAU" + (1).to_bytes(8, "big") + len(manifest).to_bytes(8, "big") + manifest + blobs
    digest = hashlib.sha256(prefix).digest()
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pkcs1",
                          "-inkey", key], input=digest, capture_output=True, check=True).stdout
    return prefix + pb_encode([(1, 2, pb_encode([(1, 0, 2), (2, 2, sig)]))])


def noop_with(buf, **changes):
    d = op_dict(buf)
    d.update(changes)
    ext = b"".join(pb_encode([(6, 2, pb_encode([(1, 0, s), (2, 0, n)]))]) for s, n in d["dst_extents"])
    out = pb_encode([(1, 0, d["type"]), (2, 0, d["data_offset"]), (3, 0, d["data_length"])]) + ext
    if "hash" in d:
        out += pb_encode([(8, 2, d["hash"])])
    return out


MALFORMED = {
    "signature noop missing": (lambda n: n[:-1], "no noop operation covers the signature blob"),
    "signature noop not last": (lambda n: [n[-1]] + n[:-1], "no noop operation covers the signature blob"),
    "signature noop at another offset": (lambda n: n[:-1] + [noop_with(n[-1], data_offset=op_dict(n[-1])["data_offset"] - 1)],
                                         "no noop operation covers the signature blob"),
    "signature noop not into a sparse hole": (lambda n: n[:-1] + [noop_with(n[-1], dst_extents=[(0, 1)])], "sparse hole"),
    "signature noop shorter": (lambda n: n[:-1] + [noop_with(n[-1], data_length=10)], "not offset"),
    "kernel noop missing": (lambda n: n[1:], "manifest has 2 noop operations, the generator writes 3"),
    "kernel noops swapped": (lambda n: [n[1], n[0], n[2]], "noop_operations[0] (noop for procedures[0].operations[0])"),
    "kernel noop hash wrong": (lambda n: [noop_with(n[0], hash=b"\0" * 32)] + n[1:], "data_sha256_hash differs"),
    "kernel noop as REPLACE_BZ": (lambda n: [noop_with(n[0], type=1)] + n[1:], "not the REPLACE old clients expect"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_real_payload_refused(payloads, keys, tmp_path, name):
    change, words = MALFORMED[name]
    with open(payloads["one"], "rb") as fh:
        data = fh.read()
    bad = tmp_path / "bad.gz"
    bad.write_bytes(rebuild(data, keys["a"][0], change))
    info = _crau.inspect(str(bad), [("a", crau_key(keys["a"][1]))])
    assert info["verified"], info["problems"]  # validly signed: only the layout is wrong
    assert len(info["problems"]) == 1 and words in info["problems"][0], info["problems"]
    assert "\n" not in info["problems"][0]
    # control: re-encoding without a change is accepted
    good = tmp_path / "good.gz"
    good.write_bytes(rebuild(data, keys["a"][0]))
    assert _crau.inspect(str(good), [("a", crau_key(keys["a"][1]))])["problems"] == []


def test_malformed_and_truncated_refused_by_modules(payloads, keys, tmp_path):
    with open(payloads["one"], "rb") as fh:
        data = fh.read()
    bad = tmp_path / "bad.gz"
    bad.write_bytes(rebuild(data, keys["a"][0], MALFORMED["signature noop missing"][0]))
    res, _run = run_module("kiln.flatcar.payload_info", {"path": str(bad), "public_keys": [keys["a"][1]]})
    assert res.get("failed") and "\n" not in res["msg"] and "no noop operation covers the signature blob" in res["msg"], res
    short = tmp_path / "short.gz"
    short.write_bytes(data[:-1])
    res, _run = run_module("kiln.flatcar.payload_info", {"path": str(short), "public_keys": [keys["a"][1]]})
    assert res.get("failed") and "\n" not in res["msg"] and "does not match metadata" in res["msg"], res
    with pytest.raises(_crau.PayloadError, match="does not match metadata"):
        _crau.inspect(str(short))
