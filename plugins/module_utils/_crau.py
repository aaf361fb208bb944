# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Pure-Python reader for Flatcar CrAU update payloads (flatcar/update_engine
``src/update_engine/update_metadata.proto``, ``delta_metadata.cc``, ``payload_signer.cc``).

Layout::

    "CrAU" | uint64 BE version (1) | uint64 BE manifest_size | DeltaArchiveManifest | blobs | Signatures

The blobs are those of ``partition_operations`` then of each procedure's operations (the kernel), back to
back; ``noop_operations`` repeats each procedure blob as a dummy REPLACE into a sparse hole and ends with
one covering the Signatures blob (``delta_diff_generator.cc`` ProceduresToNoops, AddSignatureOp), so old
clients that ignore procedures still walk the whole file. ``check_layout`` holds a payload to exactly that.

The Signatures message sits at ``metadata_size + signatures_offset`` and is ``signatures_size`` long;
each ``Signature.data`` is an RSA PKCS#1 v1.5 signature (DigestInfo sha256) over the sha256 of every
byte before it. With N keys the versions are ``3 - N .. 2`` (``kSignatureMessageCurrentVersion = 2``).

No third-party libraries: a minimal protobuf wire-format reader/writer, a DER reader for PEM public
keys, and ``pow(sig, e, n)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct

MAGIC = b"CrAU"
FORMAT_VERSION = 1
HEADER_SIZE = 20  # magic + version + manifest size
CURRENT_SIGNATURE_VERSION = 2
SPARSE_HOLE = 0xFFFFFFFFFFFFFFFF
CHUNK = 4 * 1024 * 1024
MAX_MANIFEST = 64 * 1024 * 1024

OP_TYPES = {0: "REPLACE", 1: "REPLACE_BZ", 2: "MOVE", 3: "BSDIFF"}
PROCEDURE_TYPES = {0: "KERNEL", 1: "PCR_POLICY"}

# DER of DigestInfo { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING(32) } before the hash
SHA256_DIGESTINFO = binascii.unhexlify("3031300d060960864801650304020105000420")
OID_RSA_ENCRYPTION = binascii.unhexlify("2a864886f70d010101")


class PayloadError(Exception):
    """A malformed or unverifiable payload; the message is one line."""


# -- protobuf wire format -------------------------------------------------------------------------

def read_varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise PayloadError("truncated varint in protobuf message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise PayloadError("varint longer than 64 bits in protobuf message")


def iter_fields(buf):
    """Yield (field_number, wire_type, value) of a serialized message; value is int or bytes."""
    buf = bytes(buf)
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise PayloadError("protobuf field number 0")
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise PayloadError("truncated fixed64 in protobuf message")
            value = struct.unpack("<Q", buf[pos:pos + 8])[0]
            pos += 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise PayloadError("length-delimited protobuf field %d runs past its message" % number)
            value = buf[pos:pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise PayloadError("truncated fixed32 in protobuf message")
            value = struct.unpack("<I", buf[pos:pos + 4])[0]
            pos += 4
        else:
            raise PayloadError("unsupported protobuf wire type %d (field %d)" % (wire, number))
        yield number, wire, value


def encode_varint(value):
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number, value):
    return encode_varint(number << 3) + encode_varint(value)


def field_bytes(number, data):
    return encode_varint((number << 3) | 2) + encode_varint(len(data)) + bytes(data)


# -- messages ------------------------------------------------------------------------------------

def _decode(buf, schema, repeated=()):
    """Decode known fields. schema: {number: (name, kind)} kind in int|bytes|<callable>."""
    msg = {}
    for name in repeated:
        msg[schema_name(schema, name)] = []
    for number, wire, value in iter_fields(buf):
        if number not in schema:
            continue  # unknown fields are skipped, like protobuf does
        name, kind = schema[number]
        if kind == "int":
            if wire == 2:
                raise PayloadError("field %s has the wrong wire type" % name)
            decoded = value
        elif kind == "bytes":
            if wire != 2:
                raise PayloadError("field %s has the wrong wire type" % name)
            decoded = value
        else:
            if wire != 2:
                raise PayloadError("field %s has the wrong wire type" % name)
            decoded = kind(value)
        if number in repeated:
            msg[name].append(decoded)
        else:
            msg[name] = decoded
    return msg


def schema_name(schema, number):
    return schema[number][0]


def decode_extent(buf):
    return _decode(buf, {1: ("start_block", "int"), 2: ("num_blocks", "int")})


def decode_operation(buf):
    op = _decode(buf, {1: ("type", "int"), 2: ("data_offset", "int"), 3: ("data_length", "int"),
                       4: ("src_extents", decode_extent), 5: ("src_length", "int"),
                       6: ("dst_extents", decode_extent), 7: ("dst_length", "int"),
                       8: ("data_sha256_hash", "bytes")}, repeated=(4, 6))
    if "type" not in op:
        raise PayloadError("InstallOperation without the required type")
    return op


def decode_info(buf):
    return _decode(buf, {1: ("size", "int"), 2: ("hash", "bytes")})


def decode_procedure(buf):
    return _decode(buf, {1: ("type", "int"), 2: ("operations", decode_operation),
                         3: ("old_info", decode_info), 4: ("new_info", decode_info)}, repeated=(2,))


def decode_manifest(buf):
    return _decode(buf, {1: ("partition_operations", decode_operation), 2: ("noop_operations", decode_operation),
                         3: ("block_size", "int"), 4: ("signatures_offset", "int"), 5: ("signatures_size", "int"),
                         8: ("old_partition_info", decode_info), 9: ("new_partition_info", decode_info),
                         10: ("procedures", decode_procedure)}, repeated=(1, 2, 10))


def decode_signatures(buf):
    def sig(b):
        return _decode(b, {1: ("version", "int"), 2: ("data", "bytes")})
    return _decode(buf, {1: ("signatures", sig)}, repeated=(1,))


def encode_signatures(signatures):
    """Signatures message from [(version, data), ...]."""
    out = b""
    for version, data in signatures:
        out += field_bytes(1, field_varint(1, version) + field_bytes(2, data))
    return out


# -- RSA public keys -----------------------------------------------------------------------------

def _der_read(buf, pos):
    """(tag, content_start, content_end) of the DER TLV at pos."""
    if pos + 2 > len(buf):
        raise PayloadError("truncated DER in public key")
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(buf):
            raise PayloadError("bad DER length in public key")
        length = int(binascii.hexlify(buf[pos:pos + n]), 16)
        pos += n
    if pos + length > len(buf):
        raise PayloadError("DER element runs past the end of the public key")
    return tag, pos, pos + length


def _der_children(buf, start, end):
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = _der_read(buf, pos)
        out.append((tag, cs, ce))
        pos = ce
    return out


def _der_int(buf, cs, ce):
    return int(binascii.hexlify(buf[cs:ce]) or b"0", 16)


def pem_to_der(text):
    """(label, der) of the first PEM block in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            label = line[len("-----BEGIN "):-5]
            body = []
            for other in lines[i + 1:]:
                if other.startswith("-----END "):
                    try:
                        return label, base64.b64decode("".join(body), validate=False)
                    except (binascii.Error, ValueError):
                        raise PayloadError("public key PEM body is not valid base64")
                if ":" in other:  # RFC 1421 headers
                    continue
                body.append(other)
            break
    raise PayloadError("no PEM block found in public key")


def load_rsa_public_key(text):
    """(n, e) from a PEM 'PUBLIC KEY' (SubjectPublicKeyInfo) or 'RSA PUBLIC KEY' (PKCS#1)."""
    label, der = pem_to_der(text)
    if "PRIVATE" in label:
        raise PayloadError("a private key was given where a public key is expected")
    tag, cs, ce = _der_read(der, 0)
    if tag != 0x30:
        raise PayloadError("public key is not a DER SEQUENCE")
    kids = _der_children(der, cs, ce)
    if label == "PUBLIC KEY":
        if len(kids) != 2 or kids[0][0] != 0x30 or kids[1][0] != 0x03:
            raise PayloadError("public key is not a SubjectPublicKeyInfo")
        alg = _der_children(der, kids[0][1], kids[0][2])
        if not alg or alg[0][0] != 0x06 or der[alg[0][1]:alg[0][2]] != OID_RSA_ENCRYPTION:
            raise PayloadError("public key is not an RSA key (update payloads are signed with RSA)")
        bs, be = kids[1][1], kids[1][2]
        if der[bs] != 0:
            raise PayloadError("public key BIT STRING has unused bits")
        inner = der[bs + 1:be]
        tag, cs, ce = _der_read(inner, 0)
        if tag != 0x30:
            raise PayloadError("RSAPublicKey is not a SEQUENCE")
        kids = _der_children(inner, cs, ce)
        der = inner
    elif label != "RSA PUBLIC KEY":
        raise PayloadError("unsupported PEM block %r in public key" % label)
    if len(kids) < 2 or kids[0][0] != 0x02 or kids[1][0] != 0x02:
        raise PayloadError("RSAPublicKey does not hold modulus and exponent")
    n = _der_int(der, kids[0][1], kids[0][2])
    e = _der_int(der, kids[1][1], kids[1][2])
    if n < 3 or e < 3:
        raise PayloadError("RSA public key has an invalid modulus or exponent")
    return n, e


def key_size_bytes(n):
    return (n.bit_length() + 7) // 8


def rsa_recover_sha256(signature, key):
    """The sha256 digest inside a PKCS#1 v1.5 signature, or None when the padding is wrong."""
    n, e = key
    k = key_size_bytes(n)
    if len(signature) != k:
        return None
    s = int(binascii.hexlify(signature), 16)
    if s >= n:
        return None
    m = pow(s, e, n)
    em = binascii.unhexlify("%0*x" % (k * 2, m))
    # EM = 0x00 || 0x01 || PS (0xff, >= 8 bytes) || 0x00 || DigestInfo || H
    tail = SHA256_DIGESTINFO
    if len(em) < 11 + len(tail) + 32 or em[0:2] != b"\x00\x01":
        return None
    ps_end = 2 + (k - 3 - len(tail) - 32)
    if em[2:ps_end] != b"\xff" * (ps_end - 2) or em[ps_end:ps_end + 1] != b"\x00":
        return None
    if em[ps_end + 1:ps_end + 1 + len(tail)] != tail:
        return None
    return em[ps_end + 1 + len(tail):]


def key_fingerprint(key):
    """sha256 of the big-endian modulus and exponent: a stable short id for reports."""
    n, e = key
    return hashlib.sha256(("%x:%x" % (n, e)).encode("ascii")).hexdigest()[:16]


# -- payload -------------------------------------------------------------------------------------

def read_header(fh):
    head = fh.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        raise PayloadError("file is too short to be a CrAU payload (%d bytes)" % len(head))
    if head[:4] != MAGIC:
        raise PayloadError("bad magic %r: not a CrAU update payload" % head[:4])
    version, manifest_size = struct.unpack(">QQ", head[4:])
    if version != FORMAT_VERSION:
        raise PayloadError("unsupported CrAU format version %d (expected %d)" % (version, FORMAT_VERSION))
    if manifest_size > MAX_MANIFEST:
        raise PayloadError("manifest size %d is implausible" % manifest_size)
    return version, manifest_size


def _noop_problem(label, noop, offset, length, block_size, data_hash=None):
    """Why ``noop`` is not the dummy REPLACE of ``length`` bytes at ``offset`` into a sparse hole, or None."""
    want_ext = [{"start_block": SPARSE_HOLE, "num_blocks": (length + block_size - 1) // block_size}]
    if noop.get("type") != 0:
        return "%s is %s, not the REPLACE old clients expect" % (label, OP_TYPES.get(noop.get("type"), noop.get("type")))
    if noop.get("data_offset") != offset or noop.get("data_length") != length:
        return "%s covers offset %s length %s, not offset %d length %d" % (
            label, noop.get("data_offset"), noop.get("data_length"), offset, length)
    if noop.get("src_extents") or noop.get("dst_extents") != want_ext:
        return "%s does not write its %d bytes into a sparse hole of %d blocks" % (label, length, want_ext[0]["num_blocks"])
    if noop.get("data_sha256_hash", b"") != (data_hash or b""):
        return "%s data_sha256_hash differs from the blob it covers" % label
    return None


def check_layout(manifest, sig_off=None, sig_size=None):
    """Problems with the blob layout and the legacy ``noop_operations`` of a decoded manifest.

    What flatcar/update_engine writes (delta_diff_generator.cc GenerateDeltaUpdateFile): the blobs of
    ``partition_operations`` then of each procedure's operations, back to back in manifest order
    (ReorderDataBlobs); one noop per procedure operation that has data, REPLACE into a sparse hole with
    the same offset, length and hash (ProceduresToNoops); the generator checks that partition and noop
    operations read the blob area contiguously ("bad blob offset!"). A signed payload ends with one more
    noop covering exactly the Signatures blob at ``signatures_offset`` (AddSignatureOp, also via
    payload_signer.cc AddSignatureOpToPayload), and that blob follows the last data blob.
    """
    block_size = manifest.get("block_size", 4096) or 4096
    problems = []
    expected = []  # (label, offset, length, hash) of each noop the generator would write
    for pi, proc in enumerate(manifest["procedures"]):
        for oi, op in enumerate(proc["operations"]):
            if op.get("data_length", 0):
                expected.append(("noop for procedures[%d].operations[%d]" % (pi, oi),
                                 op.get("data_offset", 0), op["data_length"], op.get("data_sha256_hash")))
    noops = manifest["noop_operations"]
    if sig_off is not None:
        expected.append(("signature noop operation", sig_off, sig_size, None))
        if not noops or noops[-1].get("data_offset") != sig_off:
            return ["no noop operation covers the signature blob at signatures_offset %d as the last one: old clients "
                    "cannot skip the signature" % sig_off]
    if len(noops) != len(expected):
        return ["manifest has %d noop operations, the generator writes %d (one per procedure data blob%s)"
                % (len(noops), len(expected), ", then the signature" if sig_off is not None else "")]
    for i, (label, offset, length, data_hash) in enumerate(expected):
        why = _noop_problem("noop_operations[%d] (%s)" % (i, label), noops[i], offset, length, block_size, data_hash)
        if why:
            problems.append(why)
            return problems
    # blobs are read in manifest order: partition operations, then the noops (old clients), then the signature
    pos = 0
    in_order = [("partition_operations[%d]" % i, op) for i, op in enumerate(manifest["partition_operations"])]
    in_order += [("noop_operations[%d]" % i, op) for i, op in enumerate(noops)]
    for label, op in in_order:
        if "data_offset" not in op:
            continue
        if op["data_offset"] != pos:
            problems.append("%s data starts at blob offset %d, expected %d (blobs must follow each other in manifest order)"
                            % (label, op["data_offset"], pos))
            break
        pos += op.get("data_length", 0)
    return problems


def _summarize_ops(ops):
    out = {"count": len(ops), "types": {}, "data_bytes": 0}
    for op in ops:
        name = OP_TYPES.get(op.get("type"), str(op.get("type")))
        out["types"][name] = out["types"].get(name, 0) + 1
        out["data_bytes"] += op.get("data_length", 0)
    return out


def _info(info):
    if not info:
        return None
    return {"size": info.get("size"), "sha256": binascii.hexlify(info.get("hash", b"")).decode("ascii") or None}


def _blob_ranges(manifest, metadata_size, blob_end, check_blobs, problems):
    """[abs_start, abs_end, expected sha256, label, hasher] of every operation's data, sorted by start."""
    ranges = []
    all_ops = [("partition_operations[%d]" % i, op) for i, op in enumerate(manifest["partition_operations"])]
    for pi, proc in enumerate(manifest["procedures"]):
        all_ops += [("procedures[%d].operations[%d]" % (pi, i), op) for i, op in enumerate(proc["operations"])]
    for label, op in all_ops:
        off, length = op.get("data_offset"), op.get("data_length")
        if length:
            start = metadata_size + (off or 0)
            if start + length > blob_end:
                raise PayloadError("%s data (offset %d, length %d) runs past the blob area" % (label, off or 0, length))
            if check_blobs and op.get("data_sha256_hash"):
                ranges.append([start, start + length, op["data_sha256_hash"], label, hashlib.sha256()])
            elif check_blobs:
                problems.append("%s has no data_sha256_hash" % label)
    ranges.sort(key=lambda r: r[0])
    return ranges


def _stream(fh, chunk, ranges, blob_end, signed):
    """One pass over the file: (sha1, sha256, sha256 of what is signed, signature blob); feeds ``ranges``."""
    sha1 = hashlib.sha1()
    sha256 = hashlib.sha256()
    signed_hash = hashlib.sha256()
    fh.seek(0)
    pos = 0
    sig_blob = bytearray()
    active = 0
    while True:
        block = fh.read(chunk)
        if not block:
            break
        end = pos + len(block)
        sha1.update(block)
        sha256.update(block)
        if pos < blob_end:
            signed_hash.update(block[:max(0, min(len(block), blob_end - pos))])
        if signed and end > blob_end:
            sig_blob += block[max(0, blob_end - pos):]
        while active < len(ranges) and ranges[active][1] <= pos:
            active += 1
        j = active
        while j < len(ranges) and ranges[j][0] < end:
            r = ranges[j]
            lo, hi = max(r[0], pos), min(r[1], end)
            if hi > lo:
                r[4].update(block[lo - pos:hi - pos])
            j += 1
        pos = end
    return sha1.digest(), sha256.digest(), signed_hash.digest(), bytes(sig_blob)


def _check_signatures(sig_blob, digest, public_keys, problems):
    """(signatures, verified key labels) of the Signatures message; a key that verifies none is a problem."""
    signatures = []
    verified_keys = []
    try:
        sigs = decode_signatures(sig_blob)["signatures"]
    except PayloadError as exc:
        raise PayloadError("Signatures message is malformed: %s" % exc)
    for i, sig in enumerate(sigs):
        entry = {"index": i, "version": sig.get("version"), "size": len(sig.get("data", b"")), "verified_by": None}
        for label, key in public_keys:
            recovered = rsa_recover_sha256(sig.get("data", b""), key)
            if recovered is not None and recovered == digest:
                entry["verified_by"] = label
                if label not in verified_keys:
                    verified_keys.append(label)
                break
        signatures.append(entry)
    for label, _key in public_keys:
        if label not in verified_keys:
            problems.append("no signature verifies with public key %s" % label)
    return signatures, verified_keys


def _manifest_summary(manifest, sig_off, sig_size):
    kernel = [p for p in manifest["procedures"] if p.get("type", 0) == 0]
    return {
        "block_size": manifest.get("block_size", 4096),
        "partition_operations": _summarize_ops(manifest["partition_operations"]),
        "noop_operations": len(manifest["noop_operations"]),
        "new_partition_info": _info(manifest.get("new_partition_info")),
        "old_partition_info": _info(manifest.get("old_partition_info")),
        "procedures": [{"type": PROCEDURE_TYPES.get(p.get("type", 0), str(p.get("type"))),
                        "operations": _summarize_ops(p["operations"]),
                        "new_info": _info(p.get("new_info"))} for p in manifest["procedures"]],
        "has_kernel": bool(kernel),
        "signatures_offset": sig_off,
        "signatures_size": sig_size,
        "delta": bool(manifest.get("old_partition_info")),
    }


def open_regular(path):
    """``path`` opened for binary reading, when it is a regular file (symlinks followed); PayloadError otherwise.

    A FIFO, a device or a directory is refused before it is opened (a FIFO would block ``open`` until a writer
    comes), and the file is opened with O_NONBLOCK and checked again on the descriptor, so a path swapped for a FIFO
    between the two checks cannot hang the caller either."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PayloadError("cannot read %s: %s" % (path, exc.strerror or exc))
    if not stat.S_ISREG(st.st_mode):
        raise PayloadError("%s is not a regular file (%s)" % (path, _file_kind(st.st_mode)))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PayloadError("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PayloadError("%s is not a regular file (%s)" % (path, _file_kind(st.st_mode)))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def inspect(path, public_keys=(), check_blobs=True, chunk=CHUNK):
    """Parse and verify a CrAU payload in one pass.

    ``public_keys``: list of (label, (n, e)). Returns a dict; raises PayloadError for a structurally
    broken payload. Signature and blob-hash outcomes are reported, not raised (see ``problems``).
    """
    problems = []
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        version, manifest_size = read_header(fh)
        metadata_size = HEADER_SIZE + manifest_size
        if size < metadata_size:
            raise PayloadError("payload is truncated: %d bytes, its manifest alone needs %d" % (size, metadata_size))
        manifest = decode_manifest(fh.read(manifest_size))
        sig_off = manifest.get("signatures_offset")
        sig_size = manifest.get("signatures_size")
        signed = sig_off is not None and sig_size is not None
        if signed and metadata_size + sig_off + sig_size != size:
            raise PayloadError(
                "payload size %d does not match metadata %d + signatures_offset %d + signatures_size %d"
                % (size, metadata_size, sig_off, sig_size))
        blob_end = metadata_size + sig_off if signed else size
        ranges = _blob_ranges(manifest, metadata_size, blob_end, check_blobs, problems)
        problems += check_layout(manifest, sig_off if signed else None, sig_size if signed else None)
        sha1_d, sha256_d, signed_digest, sig_blob = _stream(fh, chunk, ranges, blob_end, signed)
    if check_blobs:
        for _start, _end, expected, label, h in ranges:
            if h.digest() != expected:
                problems.append("%s data does not match its data_sha256_hash" % label)
    signatures, verified_keys = [], []
    if signed:
        signatures, verified_keys = _check_signatures(sig_blob, signed_digest, public_keys, problems)
    elif public_keys:
        problems.append("payload is not signed (no signatures_offset/signatures_size in the manifest)")
    return {
        "path": path,
        "size": size,
        "sha1_base64": base64.b64encode(sha1_d).decode("ascii"),
        "sha256_base64": base64.b64encode(sha256_d).decode("ascii"),
        "sha256_hex": binascii.hexlify(sha256_d).decode("ascii"),
        "format_version": version,
        "manifest_size": manifest_size,
        "metadata_size": metadata_size,
        "manifest": _manifest_summary(manifest, sig_off, sig_size),
        "signed": signed,
        "signature_count": len(signatures),
        "signatures": signatures,
        "verified_keys": verified_keys,
        "verified": bool(public_keys) and signed and not [p for p in problems if p.startswith("no signature")],
        "problems": problems,
    }


def signed_hash_of(path):
    """sha256 of everything before the signature blob (what core_sign_update signs)."""
    with open_regular(path) as fh:
        _v, manifest_size = read_header(fh)
        manifest = decode_manifest(fh.read(manifest_size))
    end = HEADER_SIZE + manifest_size + manifest.get("signatures_offset", 0)
    h = hashlib.sha256()
    with open_regular(path) as fh:
        left = end
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.digest()
