"""DIGESTS files: byte-compatible with Flatcar's create_digests, computed in one read pass."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _digests

# create_digests' loop body from flatcar/scripts ci-automation/ci_automation_common.sh, run with coreutils
CREATE_DIGESTS = r'''
file="$1"; df="$2"; fbn=$(basename "${file}")
: > "${df}"
for hash_type in md5 sha1 sha512; do
    echo "# ${hash_type} HASH" | tr "a-z" "A-Z" >>"${df}"
    output=$("${hash_type}sum" "${file}")
    echo "${output%% *}  ${fbn}" >>"${df}"
done
'''


def coreutils_digests(path, tmp_path):
    out = tmp_path / "fixture.DIGESTS"
    subprocess.run(["bash", "-c", CREATE_DIGESTS, "create_digests", str(path), str(out)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("name,content", [
    ("flatcar_production_image.bin.bz2", os.urandom(3 * 1024 * 1024 + 17)),
    ("empty.txt", b""),
    ("with space.txt", b"hello\n"),
    ("version.txt", b"FLATCAR_VERSION=4593.2.5\n"),
])
def test_render_matches_coreutils(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    hashes = _digests.hash_file(str(path))
    assert _digests.render(name, hashes) == coreutils_digests(path, tmp_path)
    assert hashes["size"] == len(content)


def test_exact_layout():
    hashes = {"md5": "a" * 32, "sha1": "b" * 40, "sha512": "c" * 128}
    text = _digests.render("f.bin", hashes).decode()
    assert text == ("# MD5 HASH\n" + "a" * 32 + "  f.bin\n# SHA1 HASH\n" + "b" * 40 + "  f.bin\n"
                    "# SHA512 HASH\n" + "c" * 128 + "  f.bin\n")


def test_one_read_pass_from_a_fifo(tmp_path):
    """A FIFO can be read only once: right digests from it prove a single pass."""
    data = os.urandom(5 * 1024 * 1024 + 3)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as fh:
            fh.write(data)

    t = threading.Thread(target=writer)
    t.start()
    hashes = _digests.hash_file(str(fifo), chunk=1024 * 1024)
    t.join()
    real = tmp_path / "real"
    real.write_bytes(data)
    assert hashes == _digests.hash_file(str(real))


def test_check_and_parse(tmp_path):
    path = tmp_path / "a.raw"
    path.write_bytes(b"x" * 100)
    hashes = _digests.hash_file(str(path))
    text = _digests.render("a.raw", hashes)
    assert _digests.check(text, "a.raw", hashes) is None
    path.write_bytes(b"y" * 100)
    assert "MD5" in _digests.check(text, "a.raw", _digests.hash_file(str(path)))
    assert _digests.check(text, "other.raw", hashes) == "no digest for other.raw"
    assert set(_digests.parse(text)) == {"md5", "sha1", "sha512"}


def test_clearsigned_text():
    armored = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n# MD5 HASH\n- -dash line\nabc  f\n"
               "-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n")
    assert _digests.clearsigned_text(armored) == "# MD5 HASH\n-dash line\nabc  f\n"
    assert _digests.clearsigned_text("not signed") is None


def test_signable():
    for name in ("a.sig", "a.asc", "a.gpg", "a.DIGESTS"):
        assert not _digests.is_signable(name)
    assert _digests.is_signable("a.DIGESTS.txt")
    assert _digests.is_signable("flatcar_production_image.bin.bz2")


def test_parallel_groups_give_the_same_digests_as_one_thread(tmp_path):
    path = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for i in range(_digests.PARALLEL_MIN_BYTES // len(block) + 3):
            fh.write(block[i:] + block[:i])
    import hashlib
    data = path.read_bytes()
    expected = dict((a, hashlib.new(a, data).hexdigest()) for a in ("md5", "sha1", "sha512", "sha256"))
    expected["size"] = len(data)
    assert _digests.hash_file(str(path), workers=1) == expected
    assert _digests.hash_file(str(path), workers=2, chunk=1024 * 1024 + 7) == expected
    assert _digests.hash_file(str(path), workers=8) == expected
    # no hashing thread outlives the call
    assert not [t for t in threading.enumerate() if t.name != "MainThread" and t.daemon and t.is_alive()
                and getattr(t, "_target", None) is _digests._worker]


def test_plan_groups_uses_every_algorithm_once():
    algos = ["md5", "sha1", "sha512", "sha256"]
    for workers in (1, 2, 3, 4, 9):
        groups = _digests.plan_groups(algos, workers)
        assert len(groups) == min(workers, 4)
        assert sorted(a for g in groups for a in g) == sorted(algos)


def test_read_error_stops_the_workers(tmp_path):
    with pytest.raises(OSError):
        _digests.hash_file(str(tmp_path / "missing"), workers=2)
    assert threading.active_count() == 1
