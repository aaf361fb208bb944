"""Test helpers for update payloads made by the REAL flatcar/scripts core_sign_update (from
<vendor>/flatcar-scripts, copied into temp dirs at run time) with the stand-in delta_generator
(tests/standin_sdk/au) on PATH, and an independent reading of what the real generator writes
(update_engine delta_diff_generator.cc / full_update_generator.cc / payload_signer.cc)."""

from __future__ import annotations

import bz2
import hashlib
import os
import shutil
import struct
import subprocess
import zipfile

import pytest

from kiln_testlib import REPO, VENDOR_SKIP, VENV_BIN, flatcar_scripts_dir

AU = os.path.join(REPO, "tests", "standin_sdk", "au")
DELTA_GENERATOR = os.path.join(AU, "delta_generator")
SPARSE_HOLE = (1 << 64) - 1
CHUNK = 1024 * 1024
BLOCK = 4096


def real_scripts():
    """The real flatcar/scripts tree, or skip (one line naming KILN_VENDOR_DIR)."""
    found = flatcar_scripts_dir()
    if not found or not os.path.isfile(os.path.join(found, "core_sign_update")):
        pytest.skip(VENDOR_SKIP)
    return found


def openssl_pair(directory, name):
    key = os.path.join(str(directory), name + ".key.pem")
    pub = os.path.join(str(directory), name + ".pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
    return key, pub


def sdk_layout(root):
    """A scripts checkout where the SDK has it: <root>/src/scripts with the real core_sign_update, common.sh
    and lib/shflags, <root>/.repo/manifests/version.txt (run_sdk_container mounts sdk_container/ there).
    settings.env: a real checkout has one, the vendored subset does not; an empty one is written (common.sh
    reads only SETTING_BINPKG_SERVER_* from it). Returns the scripts directory."""
    src = real_scripts()
    scripts = os.path.join(str(root), "src", "scripts")
    os.makedirs(os.path.join(scripts, "lib"))
    for name in ("core_sign_update", "common.sh"):
        shutil.copyfile(os.path.join(src, name), os.path.join(scripts, name))
    os.chmod(os.path.join(scripts, "core_sign_update"), 0o755)
    shutil.copytree(os.path.join(src, "lib", "shflags"), os.path.join(scripts, "lib", "shflags"))
    with open(os.path.join(scripts, "settings.env"), "w") as fh:
        fh.write("# test: stands for the checkout's settings.env\n")
    manifests = os.path.join(str(root), ".repo", "manifests")
    os.makedirs(manifests)
    shutil.copyfile(os.path.join(src, "sdk_container", ".repo", "manifests", "version.txt"),
                    os.path.join(manifests, "version.txt"))
    return scripts


def checkout_layout(dest):
    """A flatcar/scripts checkout (not at the SDK's src/scripts): core_sign_update beside common.sh, settings.env,
    lib/shflags and sdk_container/.repo/manifests/version.txt. Returns dest."""
    src = real_scripts()
    dest = str(dest)
    os.makedirs(os.path.join(dest, "lib"))
    for name in ("core_sign_update", "common.sh"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
    os.chmod(os.path.join(dest, "core_sign_update"), 0o755)
    shutil.copytree(os.path.join(src, "lib", "shflags"), os.path.join(dest, "lib", "shflags"))
    with open(os.path.join(dest, "settings.env"), "w") as fh:
        fh.write("# test: stands for the checkout's settings.env\n")
    shutil.copytree(os.path.join(src, "sdk_container"), os.path.join(dest, "sdk_container"))
    for d, _dirs, files in os.walk(dest):
        os.chmod(d, 0o755)
        for f in files:
            if not os.path.islink(os.path.join(d, f)):
                os.chmod(os.path.join(d, f), 0o755 if f == "core_sign_update" else 0o644)
    return dest


def au_generator_zip(path, delta_generator=DELTA_GENERATOR):
    """flatcar_production_update.zip as build_library/generate_au_zip.py makes it: version.txt, common.sh,
    core_sign_update (STATIC_FILES), <exe> wrapper (0733) + <exe>.bin for each DYNAMIC_EXECUTABLE, lib.so/
    with the loader, lib/shflags (RECURSE_DIRS); no settings.env. Stand-in parts: delta_generator.bin is the
    stand-in script, lib.so/ld-linux-x86-64.so.2 a loader that execs its program, the other tools placeholders."""
    src = real_scripts()
    members = []

    def add(name, data, mode):
        members.append((name, data, mode))

    with open(os.path.join(src, "sdk_container", ".repo", "manifests", "version.txt"), "rb") as fh:
        add("version.txt", fh.read(), 0o644)
    for name, mode in (("common.sh", 0o644), ("core_sign_update", 0o755)):
        with open(os.path.join(src, name), "rb") as fh:
            add(name, fh.read(), mode)
    ld = "ld-linux-x86-64.so.2"
    add("lib.so/" + ld, b'#!/bin/sh\n[ "$1" = --library-path ] && shift 2\nexec "$@"\n', 0o755)
    for exe in ("delta_generator", "updateservicectl", "bsdiff", "bspatch"):
        if exe == "delta_generator":
            with open(delta_generator, "rb") as fh:
                add(exe + ".bin", fh.read(), 0o755)
        else:
            add(exe + ".bin", b"#!/bin/sh\necho placeholder >&2\nexit 1\n", 0o755)
        # WrapExecutableFiles, generate_au_zip.py:199-223
        add(exe, ('#!/bin/sh\n# Auto-generated wrapper script\nthisdir="$(dirname "$0")"\nLD_LIBRARY_PATH=\n'
                  'exec "$thisdir/%s/%s" --library-path "$thisdir/%s" "$thisdir/%s.bin" "$@"\n'
                  % ("lib.so", ld, "lib.so", exe)).encode(), 0o733)
    for f in sorted(os.listdir(os.path.join(src, "lib", "shflags"))):
        with open(os.path.join(src, "lib", "shflags", f), "rb") as fh:
            add("lib/shflags/" + f, fh.read(), 0o644)
    with zipfile.ZipFile(str(path), "w", zipfile.ZIP_DEFLATED) as zf:
        for d in ("lib/", "lib/shflags/", "lib.so/"):
            info = zipfile.ZipInfo(d)
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return str(path)


def run_core_sign_update(script, cwd, image, output, keys, kernel=None, sep=":", check=True):
    """The real core_sign_update with the stand-in delta_generator first on PATH."""
    argv = [script, "--image", str(image)]
    if kernel:
        argv += ["--kernel", str(kernel)]
    argv += ["--output", str(output), "--private_keys", sep.join(k for k, _p in keys),
             "--public_keys", sep.join(p for _k, p in keys), "--keys_separator", sep]
    env = dict(os.environ, PATH=os.pathsep.join([AU, VENV_BIN, os.environ.get("PATH", "")]))  # VENV_BIN: `python`
    env.pop("FLATCAR_BUILD_ID", None)
    return subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True, check=check)


def mixed_bytes(size, seed):
    """Alternating 1 MiB chunks of random and compressible data, so both REPLACE and REPLACE_BZ chunks occur."""
    out = bytearray()
    i = 0
    while len(out) < size:
        block = os.urandom(BLOCK) if (i // 256 + seed) % 2 else (b"kiln %d " % (i % 7)) * 512
        out += block[:BLOCK]
        i += 1
    return bytes(out[:size])


# -- an independent reading of the payload -----------------------------------------------------------

def _varint(buf, pos):
    r = s = 0
    while True:
        b = buf[pos]
        pos += 1
        r |= (b & 0x7F) << s
        if not b & 0x80:
            return r, pos
        s += 7


def pb_fields(buf):
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        n, w = key >> 3, key & 7
        if w == 0:
            v, pos = _varint(buf, pos)
        elif w == 2:
            ln, pos = _varint(buf, pos)
            v, pos = bytes(buf[pos:pos + ln]), pos + ln
        else:
            raise AssertionError("wire type %d" % w)
        out.append((n, w, v))
    return out


def pb_enc_varint(v):
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_encode(fields):
    out = b""
    for n, w, v in fields:
        out += pb_enc_varint((n << 3) | w) + (pb_enc_varint(v) if w == 0 else pb_enc_varint(len(v)) + v)
    return out


def op_dict(buf):
    d = {"dst_extents": []}
    for n, _w, v in pb_fields(buf):
        if n == 6:
            d["dst_extents"].append(tuple(x for _n, _w2, x in pb_fields(v)))
        else:
            d[{1: "type", 2: "data_offset", 3: "data_length", 8: "hash", 5: "src_length", 7: "dst_length"}.get(n, n)] = v
    return d


def split(data):
    """(manifest fields, metadata_size) read straight from the bytes."""
    assert data[:4] == b"CrAU" and struct.unpack(">Q", data[4:12])[0] == 1
    msize = struct.unpack(">Q", data[12:20])[0]
    return pb_fields(data[20:20 + msize]), 20 + msize


def expected_ops(data, base):
    """FullUpdateGenerator::Add: 1 MiB chunks, REPLACE_BZ when bzip2 -9 shrinks it, else REPLACE; dst extent
    {offset/4096, 256}. Returns ([(type, data_offset, data_length, sha256, start_block, num_blocks)], blobs)."""
    ops, blobs = [], b""
    for off in range(0, len(data), CHUNK):
        chunk = data[off:off + CHUNK]
        bz = bz2.compress(chunk, 9)
        blob, typ = (bz, 1) if len(bz) < len(chunk) else (chunk, 0)
        ops.append((typ, base + len(blobs), len(blob), hashlib.sha256(blob).digest(), off // BLOCK, CHUNK // BLOCK))
        blobs += blob
    return ops, blobs


def signatures_size(n_keys, sig_len=256):
    one = 2 + 1 + len(pb_enc_varint(sig_len)) + sig_len   # version field + data field
    return n_keys * (1 + len(pb_enc_varint(one)) + one)


def recover(pub, sig, tmpdir):
    path = os.path.join(str(tmpdir), "sig.bin")
    with open(path, "wb") as fh:
        fh.write(sig)
    return subprocess.run(["openssl", "pkeyutl", "-verifyrecover", "-pubin", "-inkey", pub, "-pkeyopt",
                           "rsa_padding_mode:pkcs1", "-pkeyopt", "digest:sha256", "-in", path],
                          capture_output=True, check=True).stdout


def check_real_layout(path, image, kernel, pubs, tmpdir):
    """Assert that ``path`` is exactly what the real generator + core_sign_update make from image/kernel,
    signed by ``pubs`` in order; return a dict of the expected values for comparisons."""
    with open(path, "rb") as fh:
        data = fh.read()
    fields, metadata_size = split(data)
    part_ops, blobs = expected_ops(image, 0)
    kern_ops, kblobs = expected_ops(kernel, len(blobs)) if kernel else ([], b"")
    sig_off = len(blobs) + len(kblobs)
    sig_size = signatures_size(len(pubs))
    assert len(data) == metadata_size + sig_off + sig_size
    assert data[metadata_size:metadata_size + sig_off] == blobs + kblobs
    by = {}
    for n, _w, v in fields:
        by.setdefault(n, []).append(v)
    assert sorted(by) == ([1, 2, 3, 4, 5, 9, 10] if kernel else [1, 2, 3, 4, 5, 9])
    assert [n for n, _w, _v in fields] == sorted(n for n, _w, _v in fields)  # field-number order
    got_part = [op_dict(b) for b in by[1]]
    assert [(o["type"], o["data_offset"], o["data_length"], o["hash"]) + o["dst_extents"][0] for o in got_part] == part_ops
    assert all(set(o) == {"type", "data_offset", "data_length", "hash", "dst_extents"} for o in got_part)
    assert by[3] == [4096] and by[4] == [sig_off] and by[5] == [sig_size]
    assert by[9] == [pb_encode([(1, 0, len(image)), (2, 2, hashlib.sha256(image).digest())])]
    noops = [op_dict(b) for b in by[2]]
    want_noops = [(0, off, ln, h, SPARSE_HOLE, (ln + 4095) // 4096) for _t, off, ln, h, _s, _n in kern_ops]
    assert [(o["type"], o["data_offset"], o["data_length"], o["hash"]) + o["dst_extents"][0] for o in noops[:-1]] == want_noops
    assert noops[-1] == {"type": 0, "data_offset": sig_off, "data_length": sig_size,
                         "dst_extents": [(SPARSE_HOLE, (sig_size + 4095) // 4096)]}
    if kernel:
        (proc,) = by[10]
        pf = pb_fields(proc)
        assert pf[0] == (1, 0, 0)  # KERNEL
        assert [(o["type"], o["data_offset"], o["data_length"], o["hash"]) + o["dst_extents"][0]
                for o in (op_dict(v) for n, _w, v in pf if n == 2)] == kern_ops
        assert pf[-1] == (4, 2, pb_encode([(1, 0, len(kernel)), (2, 2, hashlib.sha256(kernel).digest())]))
    sigs = [pb_fields(v) for _n, _w, v in pb_fields(data[metadata_size + sig_off:])]
    versions = [s[0][2] for s in sigs]
    assert versions == ([2] if len(pubs) == 1 else list(range(3 - len(pubs), 3)))
    signed = hashlib.sha256(data[:metadata_size + sig_off]).digest()
    for s, pub in zip(sigs, pubs):
        assert len(s[1][2]) == 256 and recover(pub, s[1][2], tmpdir) == signed
    return {"size": len(data), "metadata_size": metadata_size, "manifest_size": metadata_size - 20,
            "signatures_offset": sig_off, "signatures_size": sig_size, "versions": versions,
            "sha256_hex": hashlib.sha256(data).hexdigest(), "sha1": hashlib.sha1(data).digest(),
            "part_types": sorted(t for t, *_r in part_ops), "kernel_ops": len(kern_ops),
            "part_bytes": len(blobs), "kernel_bytes": len(kblobs), "signed_hash": signed}
