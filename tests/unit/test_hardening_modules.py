"""Issue 11, part A: module hardening, each case run in-process through the module's real main().

Every case here failed (traceback, hang, leftover or accepted bad input) on the code before the fix:
build_lock (ttl, corrupt lease, read-only state dir), boot_check (timeout bounds, the QEMU allow-list, a
read-only console log directory), payload_info (FIFO, directory, device), the update_conf filters (control
characters, schemes), artifact_sign (read-only and full destination, no partial DIGESTS temp file) and the
module-level exception guard. Mount-based cases (read-only and full tmpfs) need root and skip without it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time

import pytest

from ansible.errors import AnsibleFilterError

from module_testlib import call_module
from ansible_collections.kiln.flatcar.plugins.module_utils import _qemu as q
from ansible_collections.kiln.flatcar.plugins.module_utils import _stage as s

BOARD = "amd64-usr"
VERSION = "4593.2.5"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs (read-only or full): needs root")


def call(mod, args, capsys, name, check_mode=False):
    """Run ``mod.main()`` with ``args`` like Ansible does; the module's JSON result."""
    return call_module(mod, args, capsys, name=name, check=check_mode)


def one_line_failure(res, *needles):
    assert res.get("failed"), res
    assert "\n" not in res["msg"] and "Traceback" not in json.dumps(res) and "exception" not in res, res
    for needle in needles:
        assert needle in res["msg"], res["msg"]
    return res["msg"]


@contextlib.contextmanager
def tmpfs(path, size="64k", read_only=False, prepare=None):
    """A small tmpfs mounted on ``path`` (``prepare(path)`` runs while it is writable), unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "kiln-test", str(path)], check=True)
    try:
        if prepare:
            prepare(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path):
    """Fill the file system of ``path`` to the last byte."""
    fd = os.open(os.path.join(path, ".filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- build_lock ------------------------------------------------------------------------------------------

def lock(capsys, directory, owner="run-a", **kw):
    from ansible_collections.kiln.flatcar.plugins.modules import build_lock

    check_mode = kw.pop("check_mode", False)
    args = dict(dir=str(directory), board=BOARD, version=VERSION, owner=owner)
    args.update(kw)
    return call(build_lock, args, capsys, "build_lock", check_mode=check_mode)


@pytest.mark.parametrize("ttl", [10 ** 12, 30 * 24 * 3600 + 1, 0, -5])
def test_build_lock_ttl_out_of_range(tmp_path, capsys, ttl):
    res = lock(capsys, tmp_path / "locks", ttl=ttl)
    one_line_failure(res, "ttl", "2592000")
    assert not (tmp_path / "locks" / BOARD / (VERSION + ".lock")).exists()


def test_build_lock_ttl_at_the_bound(tmp_path, capsys):
    res = lock(capsys, tmp_path / "locks", ttl=30 * 24 * 3600)
    assert res["held"] and res["holder"]["ttl"] == 30 * 24 * 3600


CORRUPT_LEASES = ['{"owner": "run-x", "expires_epoch": "abc"}', '{"owner": "run-x"}', '{"owner": "run-x", "expires_epoch": 1e999}',
                  '{"expires_epoch": 1}', '["owner"]', "not json", '{"owner": 5, "expires_epoch": 99999999999}', "dir"]


@pytest.mark.parametrize("content", CORRUPT_LEASES)
def test_build_lock_corrupt_lease_never_locks_for_good(tmp_path, capsys, content):
    lease = tmp_path / "locks" / BOARD / (VERSION + ".lock")
    lease.parent.mkdir(parents=True)
    if content == "dir":
        lease.mkdir()
    else:
        lease.write_text(content)
    refused = lock(capsys, tmp_path / "locks", owner="run-b")
    one_line_failure(refused, str(lease), "corrupt", "force=true")
    assert (lease.is_dir() if content == "dir" else lease.read_text() == content)  # left alone without force
    query = lock(capsys, tmp_path / "locks", owner="run-b", state="query")
    assert not query.get("failed") and query["corrupt"] and query["holder"] is None
    checked = lock(capsys, tmp_path / "locks", owner="run-b", force=True, check_mode=True)
    assert checked["changed"] and (lease.is_dir() if content == "dir" else lease.read_text() == content)
    forced = lock(capsys, tmp_path / "locks", owner="run-b", force=True)
    assert forced["changed"] and forced["held"] and forced["corrupt"]
    assert json.loads(lease.read_text())["owner"] == "run-b"
    again = lock(capsys, tmp_path / "locks", owner="run-b")
    assert again["held"] and not again["changed"]


def test_build_lock_corrupt_lease_released_with_force(tmp_path, capsys):
    lease = tmp_path / "locks" / BOARD / (VERSION + ".lock")
    lease.parent.mkdir(parents=True)
    lease.write_text('{"owner": "run-x", "expires_epoch": "abc"}')
    one_line_failure(lock(capsys, tmp_path / "locks", state="released"), "corrupt")
    gone = lock(capsys, tmp_path / "locks", state="released", force=True)
    assert gone["changed"] and not lease.exists()


@pytest.mark.parametrize("version", ["1.2", "abc", "../../etc", "4593.2.5;true"])
def test_build_lock_version_is_validated(tmp_path, capsys, version):
    one_line_failure(lock(capsys, tmp_path / "locks", version=version), "version")
    assert not (tmp_path / "locks" / BOARD).exists()


@needs_root
def test_build_lock_read_only_state_dir(tmp_path, capsys):
    locks = tmp_path / "locks"
    with tmpfs(locks, read_only=True, prepare=lambda p: os.makedirs(os.path.join(p, BOARD))):
        msg = one_line_failure(lock(capsys, locks), str(locks), "writable")
        assert "Read-only file system" in msg
        checked = lock(capsys, locks, check_mode=True)  # check mode writes nothing, so it still answers
        assert checked["changed"] and not checked.get("failed")
    with tmpfs(locks, read_only=True):
        one_line_failure(lock(capsys, locks), "cannot create lock directory")


@needs_root
def test_build_lock_full_state_dir(tmp_path, capsys):
    locks = tmp_path / "locks"

    def prepare(path):
        os.makedirs(os.path.join(path, BOARD))
        open(os.path.join(path, ".kiln-locks.lock"), "w").close()
        fill(path)

    with tmpfs(locks, prepare=prepare):
        one_line_failure(lock(capsys, locks), "No space left on device")
        assert sorted(os.listdir(locks / BOARD)) == []  # no temp lease left behind


# -- payload_info ----------------------------------------------------------------------------------------

def _payload_info(capsys, path, **kw):
    from ansible_collections.kiln.flatcar.plugins.modules import payload_info

    return call(payload_info, dict(kw, path=str(path)), capsys, "payload_info")


def _no_hang(fn, limit=10):
    """Run ``fn()`` in a thread; fail the test (and unblock the FIFO) when it does not return within ``limit`` s."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: B902 - SystemExit included
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    return thread, box


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_payload_info_refuses_what_is_not_a_file(tmp_path, capsys, kind):
    path = tmp_path / "payload"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = "/dev/zero"
    start = time.monotonic()
    thread, box = _no_hang(lambda: _payload_info(capsys, path))
    if thread.is_alive():  # the old code blocks in open(): give it a writer so the thread ends, then fail
        with open(path, "wb"):
            pass
        thread.join(10)
        pytest.fail("payload_info hung on a %s" % kind)
    assert time.monotonic() - start < 5
    if "error" in box:
        raise box["error"]
    one_line_failure(box["result"], str(path), "not a regular file")


def test_payload_info_public_key_fifo(tmp_path, capsys):
    fifo = tmp_path / "key.pem"
    os.mkfifo(fifo)
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"CrAU" + b"\0" * 20)
    thread, box = _no_hang(lambda: _payload_info(capsys, payload, public_keys=[str(fifo)]))
    if thread.is_alive():
        with open(fifo, "wb"):
            pass
        thread.join(10)
        pytest.fail("payload_info hung on a FIFO public key")
    one_line_failure(box["result"], str(fifo), "not a regular file")


# -- update_conf filters ---------------------------------------------------------------------------------

def _filters():
    """The filters as Ansible gets them (FilterModule().filters(): guarded), as attributes."""
    import types

    from ansible_collections.kiln.flatcar.plugins.filter import update_conf as uc

    ns = types.SimpleNamespace(**uc.FilterModule().filters())
    ns.update_conf_text = uc.update_conf
    return ns


INJECTIONS = ["\nGROUP=evil", "\rREBOOT_STRATEGY=off", "\0", "\x1b[2J", "\x85GROUP=evil", "\u2028GROUP=evil", "\t", "\x7f"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("where", ["server", "group", "machine_alias", "download_user", "download_password",
                                   "pcr_policy_server"])
def test_update_conf_refuses_control_characters(bad, where):
    uc = _filters()
    args = {"server": "https://nebraska.example/v1/update/", "group": "stable"}
    args[where] = ("https://nebraska.example/v1/update/" if where == "server" else "x") + bad
    for fn in (uc.update_conf, uc.update_conf_ignition, uc.update_conf_butane):
        with pytest.raises(AnsibleFilterError) as err:
            fn(**args)
        assert "\n" not in str(err.value.message) and where.upper() in str(err.value.message)


@pytest.mark.parametrize("server", ["ftp://nebraska.example/", "file:///etc/passwd", "javascript:alert(1)", "https://",
                                    "https://nebraska.example/ GROUP=x", "https://x/'$(id)'", "gopher://x/"])
def test_update_conf_server_must_be_http(server):
    with pytest.raises(AnsibleFilterError) as err:
        _filters().update_conf(server)
    assert "SERVER" in err.value.message and "\n" not in err.value.message


def test_update_conf_newline_adds_no_key_anywhere():
    """The issue's example: a '\\n GROUP=' in the URL or a value must not add a key to update.conf, nor a line
    to the Butane or Ignition output (each refused), while a clean config has exactly its keys."""
    uc = _filters()
    for args in ({"server": "https://n.example/v1/update/\nGROUP=evil"}, {"server": "https://n.example/v1/update/\n GROUP=evil"},
                 {"server": "https://n.example/v1/update/", "group": "stable\nREBOOT_STRATEGY=off"},
                 {"server": "https://n.example/v1/update/", "machine_alias": "m\r\nGROUP=evil"},
                 {"server": "https://n.example/v1/update/", "group": "stable\n"}):
        for fn in (uc.update_conf, uc.update_conf_ignition, uc.update_conf_butane):
            with pytest.raises(AnsibleFilterError):
                fn(**args)
    text = uc.update_conf("https://n.example/v1/update/", "stable", machine_alias="m1")
    assert [line.split("=", 1)[0] for line in text.splitlines()] == ["SERVER", "GROUP", "MACHINE_ALIAS"]
    ign = uc.update_conf_ignition("https://n.example/v1/update/", "stable")
    from urllib.parse import unquote

    assert unquote(ign["storage"]["files"][0]["contents"]["source"][len("data:,"):]) == uc.update_conf(
        "https://n.example/v1/update/", "stable")
    butane = uc.update_conf_butane("https://n.example/v1/update/", "stable", butane_version="1.0.0")
    assert butane.count("GROUP=") == 1 and butane.count("SERVER=") == 1
    for bad_version in ("1.0.0\n", "1.0.0\nstorage: {}"):
        with pytest.raises(AnsibleFilterError):
            uc.update_conf_butane("https://n.example/v1/update/", butane_version=bad_version)
        with pytest.raises(AnsibleFilterError):
            uc.update_conf_ignition("https://n.example/v1/update/", ignition_version=bad_version.replace("1.", "3.", 1))


@pytest.mark.parametrize("bad", [{"a": 1}, ["x"], object()])
def test_update_conf_wrong_types_are_one_line(bad):
    uc = _filters()
    for kwargs in ({"server": bad}, {"server": "https://n.example/", "group": bad},
                   {"server": "https://n.example/", "reboot_strategy": bad}):
        with pytest.raises(AnsibleFilterError) as err:
            uc.update_conf(**kwargs)
        assert "\n" not in err.value.message


# -- boot_check ------------------------------------------------------------------------------------------

needs_qemu = pytest.mark.skipif(q.shutil.which("qemu-system-x86_64") is None or q.shutil.which("qemu-img") is None,
                                reason="QEMU is not installed")


def _boot_check(capsys, tmp_path, **kw):
    from ansible_collections.kiln.flatcar.plugins.modules import boot_check

    check_mode = kw.pop("check_mode", False)
    args = dict(board=BOARD, accel="tcg", firmware="bios", cache_dir=str(tmp_path / "cache"))
    args.update(kw)
    return call(boot_check, args, capsys, "boot_check", check_mode=check_mode)


@pytest.mark.parametrize("option,value", [("timeout", -1), ("timeout", 0), ("timeout", 10 ** 12), ("tcg_timeout_factor", 0),
                                          ("tcg_timeout_factor", -2.0), ("tcg_timeout_factor", 1e9), ("memory", 10 ** 9),
                                          ("cpus", 100000), ("slot_wait", -1), ("lock_wait", 10 ** 12), ("max_parallel", -3)])
def test_boot_check_numbers_out_of_range(tmp_path, capsys, option, value):
    res = _boot_check(capsys, tmp_path, **{option: value})
    one_line_failure(res, option, "out of range")
    assert not (tmp_path / "cache").exists()


QEMU_REFUSED = [["-qmp-pretty", "tcp:127.0.0.1:4444,server,nowait"], ["-gdb", "tcp::1234"], ["-s"], ["-S"],
                ["-display", "vnc=0.0.0.0:1"], ["-vnc", ":1"], ["-monitor", "tcp:0:5555,server"], ["-serial", "tcp:1.2.3.4:5"],
                ["-chardev", "socket,id=c,host=0.0.0.0,port=9,server=on"], ["-netdev", "user,id=n"], ["-nic", "user"],
                ["-net", "nic"], ["-qmp", "unix:/tmp/q,server"], ["-daemonize"], ["-incoming", "tcp:0:4444"],
                ["-device", "virtio-net-pci"], ["-device", "virtio-rng-pci,rng=r0"], ["-device", "vhost-user-fs-pci"],
                ["-object", "memory-backend-file,id=m,mem-path=/etc"], ["-drive", "file=/etc/shadow"], ["-hda", "/etc/shadow"],
                ["-kernel", "/boot/vmlinuz"], ["-fw_cfg", "name=opt/x,file=/etc/shadow"], ["-plugin", "/tmp/x.so"],
                ["-machine", "q35,firmware=/etc/shadow"], ["-m", "1G;id"], ["-cpu"], ["--gdb", "tcp::1"],
                ["-device", "virtio-rng-pci\n"], ["-enable-kvm"], ["-trace", "file=/etc/x"], ["-D", "/etc/passwd"],
                ["-run-with", "chroot=/"], ["-runas", "nobody"], ["-sandbox", "off"], ["-spice", "port=5900"],
                ["-pidfile", "/etc/x"], ["-readconfig", "/etc/x"], ["-loadvm", "x"], ["-virtfs", "local,path=/"]]


@pytest.mark.parametrize("extra", QEMU_REFUSED, ids=[" ".join(x) for x in QEMU_REFUSED])
def test_boot_check_extra_args_allow_list_refuses(tmp_path, capsys, extra):
    res = _boot_check(capsys, tmp_path, extra_args=extra, image="/nonexistent.bin")
    one_line_failure(res, "extra QEMU argument")
    with pytest.raises(q.QemuError):
        q.check_extra_args(extra)


@pytest.mark.parametrize("extra", [["-device", "virtio-rng-pci"], ["-cpu", "host,+avx2,-x2apic"], ["-smp", "4,sockets=1,cores=4"],
                                   ["-m", "4G"], ["-M", "q35,smm=on"], ["-machine", "virt,gic-version=3"],
                                   ["-accel", "tcg,thread=multi"], ["-rtc", "base=utc,clock=host"],
                                   ["-device", "pvpanic", "-device", "i6300esb,id=wd"]])
def test_boot_check_extra_args_allow_list_accepts(extra):
    q.check_extra_args(extra)


@needs_qemu
def test_boot_check_extra_args_in_the_command(tmp_path, capsys):
    image = tmp_path / "flatcar_production_image.bin"
    image.write_bytes(b"\0" * 4096)
    res = _boot_check(capsys, tmp_path, image=str(image), extra_args=["-device", "pvpanic"], check_mode=True)
    assert res["verdict"] == "would_run" and res["qemu_cmd"][-2:] == ["-device", "pvpanic"]


@needs_qemu
@needs_root
@pytest.mark.parametrize("where", ["console_log", "work_dir"])
@pytest.mark.parametrize("how", ["read-only", "full"])
def test_boot_check_read_only_or_full_destination(tmp_path, capsys, where, how):
    image = tmp_path / "flatcar_production_image.bin"
    image.write_bytes(b"\0" * 4096)
    dest = tmp_path / "dest"
    args = {"console_log": str(dest / "console.log")} if where == "console_log" else {"work_dir": str(dest)}
    with tmpfs(dest, read_only=how == "read-only", prepare=fill if how == "full" else None):
        res = _boot_check(capsys, tmp_path, image=str(image), timeout=5, **args)
        one_line_failure(res, str(dest), "Read-only file system" if how == "read-only" else "")
        assert "verdict" not in res or res["verdict"] != "passed"
        assert [n for n in os.listdir(dest) if n != ".filler"] == []
    assert not list(tmp_path.glob("**/kiln-boot-*"))


@needs_root
def test_kvm_probe_read_only_cache_dir(tmp_path, monkeypatch):
    """A probe answer that cannot be cached (read-only or full cache_dir) is still the answer: no OSError."""
    if q.host_arch() != "amd64" or not os.path.exists("/dev/kvm"):
        pytest.skip("needs an amd64 host with /dev/kvm")
    monkeypatch.setattr(q, "_probe_boot", lambda *a, **k: {"verdict": "passed", "boot_time_s": 0.1, "elapsed_s": 0.2})
    with tmpfs(tmp_path / "cache", read_only=True):
        info = q.kvm_probe(None, "amd64", "/usr/bin/qemu-system-x86_64", str(tmp_path / "cache"), refresh=True)
    assert info["usable"] and "Read-only file system" in info["cache_error"]


# -- artifact_sign ---------------------------------------------------------------------------------------

needs_gpg = pytest.mark.skipif(q.shutil.which("gpg") is None, reason="gpg not installed")


@pytest.fixture(scope="module")
def gpg_key():
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="kh2-")  # short: the agent socket path must fit
    os.chmod(home, 0o700)
    subprocess.run(["gpg", "--batch", "--homedir", home, "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-generate-key", "Kiln H2 <h2@example.invalid>", "ed25519", "sign", "0"],
                   check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--homedir", home, "--with-colons", "--list-secret-keys"],
                         check=True, capture_output=True, text=True).stdout
    fpr = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")][0]
    yield home, fpr
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


def _sign(capsys, home, fpr, files, **kw):
    from ansible_collections.kiln.flatcar.plugins.modules import artifact_sign

    args = dict(files=[str(f) for f in files], key_fingerprint=fpr, gnupghome=home)
    args.update(kw)
    return call(artifact_sign, args, capsys, "artifact_sign")


def _leftovers(directory):
    return sorted(n for n in os.listdir(directory) if "kiln-tmp" in n)


@needs_gpg
@needs_root
@pytest.mark.parametrize("how", ["read-only", "full", "full-after-digests"])
def test_artifact_sign_read_only_or_full_destination(tmp_path, capsys, monkeypatch, gpg_key, how):
    home, fpr = gpg_key
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    dest = tmp_path / "dest"

    def prepare(path):
        with open(os.path.join(path, "flatcar_production_image.bin"), "wb") as fh:
            fh.write(os.urandom(8192))
        if how == "full-after-digests":
            with open(os.path.join(path, ".filler"), "wb") as fh:  # room for the DIGESTS, not for every signature
                fh.write(b"\0" * (64 * 1024 - 8192 - 3 * 4096))
        elif how == "full":
            fill(path)

    with tmpfs(dest, size="64k", read_only=how == "read-only", prepare=prepare):
        before = sorted(os.listdir(dest))
        res = _sign(capsys, home, fpr, [dest / "flatcar_production_image.bin"])
        msg = one_line_failure(res, "nothing was signed")
        if how != "full-after-digests":
            assert str(dest) in msg and ("Read-only" in msg or "No space" in msg), msg
        assert _leftovers(dest) == [] and sorted(os.listdir(dest)) == before


# -- the module-level exception guard ---------------------------------------------------------------------

def _boom_with(text):
    def boom(*_args, **_kwargs):
        raise RuntimeError("injected\nfault near %s" % text)
    return boom


def _guard_case(name, tmp_path):
    """(args, attribute to replace with a failing one, the option whose value the failure names)."""
    image = tmp_path / "flatcar_production_image.bin"
    image.write_bytes(b"\0" * 1024)
    rec = str(tmp_path / "images" / "kiln" / BOARD / VERSION / "build-record.json")
    return {
        "build_lock": ({"dir": str(tmp_path / "locks"), "board": BOARD, "version": VERSION, "owner": "run-a"},
                       "read_lease", "dir", str(tmp_path / "locks")),
        "payload_info": ({"path": str(image)}, "inspect", "path", str(image)),
        "gpg_key": ({"gnupghome": str(tmp_path / "gnupg"), "fingerprint": "A" * 40}, "normalize_fingerprint",
                    "fingerprint", "A" * 40),
        "host_preflight": ({"programs": [], "min_mem_gb": 1}, "mem_gib", None, "/proc/meminfo"),
        "binpkg_cache": ({"board": BOARD, "version": VERSION, "cache_url": "http://127.0.0.1:9/cache"}, "pull",
                         "cache_url", "http://127.0.0.1:9/cache"),
        "kola": ({"image": str(image), "board": BOARD, "output_dir": str(tmp_path / "out"), "tests": ["cl.basic"]},
                 "Kola", "output_dir", str(tmp_path / "out")),
        "artifact_transfer": ({"record_path": rec, "dest_host": "127.0.0.1", "dest_build_root": "/srv/kiln"}, "locate",
                              "record_path", rec),
        "artifact_verify": ({"record_path": rec, "public_key_content": "x"}, "locate", "record_path", rec),
        "update_payload": ({"record_path": rec, "private_keys": ["k"], "public_keys": ["p"]}, "locate", "record_path", rec),
        "artifact_sign": ({"record_path": rec, "key_fingerprint": "B" * 40}, "normalize_fingerprint", "key_fingerprint",
                          "B" * 40),
        "boot_check": ({"board": BOARD, "accel": "tcg", "extra_args": ["-m", "4096"]}, "q.check_extra_args", "extra_args",
                       "4096"),
    }[name]


GUARDED = ["build_lock", "payload_info", "gpg_key", "host_preflight", "binpkg_cache", "kola", "artifact_transfer",
           "artifact_verify", "update_payload", "artifact_sign", "boot_check"]


@pytest.mark.parametrize("name", GUARDED)
def test_unexpected_exception_is_one_line_naming_module_and_input(tmp_path, capsys, monkeypatch, name):
    import importlib

    mod = importlib.import_module("ansible_collections.kiln.flatcar.plugins.modules." + name)
    args, attr, option, text = _guard_case(name, tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    target = mod
    if "." in attr:
        owner, attr = attr.split(".")
        target = getattr(mod, owner)
    monkeypatch.setattr(target, attr, _boom_with(text))
    res = call(mod, args, capsys, name)
    msg = one_line_failure(res, "kiln.flatcar.%s: unexpected RuntimeError: injected fault near" % name, "; input: ")
    assert res["exception_type"] == "RuntimeError"
    if option:
        assert res["input_options"] == [option] and msg.endswith("; input: %s" % option), msg


def test_guard_names_options_the_task_set_when_no_value_matches():
    class M:
        params = {"dir": "/srv/locks", "ttl": 5, "force": False, "secret": "s3", "_ansible_check_mode": False}
        argument_spec = {"dir": {}, "ttl": {"default": 28800}, "force": {"default": False}, "secret": {"no_log": True}}

    assert s.offending_options(M(), RuntimeError("s3 nothing")) == ["dir", "secret", "ttl"]
    assert s.offending_options(M(), RuntimeError("/srv/locks broke")) == ["dir"]


def test_guard_lets_exit_and_fail_through():
    calls = []

    class M:
        params = {}

        def fail_json(self, **kw):
            calls.append(kw)
            raise SystemExit(1)

    def leave():
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        s.guarded(M(), leave)
    assert calls == []
    with pytest.raises(SystemExit):
        s.guarded(M(), lambda: 1 / 0, "kiln.flatcar.x")
    assert calls[0]["msg"] == "kiln.flatcar.x: unexpected ZeroDivisionError: division by zero; input: (none)"


def test_filter_guard_turns_any_exception_into_one_line(monkeypatch):
    from ansible_collections.kiln.flatcar.plugins.filter import kiln_summary, update_conf as uc

    def boom(*_a, **_k):
        raise KeyError("line one\nline two")

    monkeypatch.setattr(uc, "_no_control", boom)
    with pytest.raises(AnsibleFilterError) as err:
        uc.FilterModule().filters()["update_conf"]("https://n.example/")
    assert err.value.message == "update_conf: unexpected KeyError: 'line one\\nline two'" or "\n" not in err.value.message
    assert err.value.message.startswith("update_conf: unexpected KeyError:")
    rows = kiln_summary.FilterModule().filters()["kiln_summary_rows"]
    with pytest.raises(AnsibleFilterError) as err:
        rows(["not a row"], {})
    assert err.value.message.startswith("kiln_summary_rows: unexpected ") and "\n" not in err.value.message


def test_transfer_patterns_take_only_passed_stages():
    """artifact_transfer: ``boot_check:*`` must not pick up a failed boot check of a firmware that is no longer asked
    for (it would then refuse the whole transfer, for every later run of that build); a stage named in full is
    returned as asked, and the module refuses it when it did not pass."""
    from ansible_collections.kiln.flatcar.plugins.modules import artifact_transfer

    class Rec:
        data = {"stage_order": ["image", "vm_image:qemu", "boot_check:bios", "boot_check:uefi", "gone"],
                "stages": {"image": {"status": "passed"}, "vm_image:qemu": {"status": "passed"},
                           "boot_check:bios": {"status": "failed"}, "boot_check:uefi": {"status": "passed"}}}

        def stage(self, name):
            return self.data["stages"].get(name)

    pick = artifact_transfer.select_stages
    assert pick(Rec(), ["image", "vm_image:*"]) == ["image", "vm_image:qemu"]
    assert pick(Rec(), ["boot_check:*"]) == ["boot_check:uefi"]
    assert pick(Rec(), ["boot_check:bios"]) == ["boot_check:bios"]
    assert pick(Rec(), []) == ["image", "vm_image:qemu", "boot_check:uefi"]
    assert pick(Rec(), ["sysext:*", "image"]) == ["image"]
    assert pick(Rec(), ["payload"]) == "payload"      # a named stage the record lacks: the module fails naming it
