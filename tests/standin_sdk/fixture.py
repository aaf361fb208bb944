"""pytest helpers for the kiln stand-in Flatcar SDK (tests/standin_sdk).

Typical use::

    from tests.standin_sdk import fixture as sdk   # or import via sys.path
    origin = sdk.make_scripts_origin(tmp_path / "origin", tags=["stable-4593.2.5"])
    subprocess.run(["git", "clone", origin, str(checkout)], check=True)
    sdk.instantiate(checkout, assets_dir=None)
    if sdk.dockerd_start():
        sdk.ensure_sdk_image("all", "4593.2.5")
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

STANDIN_DIR = Path(__file__).resolve().parent
SCRIPTS_SRC = STANDIN_DIR / "scripts"
DISK_SRC = STANDIN_DIR / "disk"
OVERLAY_SRC = STANDIN_DIR / "overlay"
OVERLAY_DEST = "sdk_container/src/third_party"
DOCKERD_SH = STANDIN_DIR / "dockerd.sh"
BUILD_SDK_IMAGE = STANDIN_DIR / "image" / "build-sdk-image.sh"

sys.path.insert(0, str(STANDIN_DIR.parent))
from kiln_testlib import VENDOR_SKIP, flatcar_scripts_dir  # noqa: E402

# Files of the real flatcar/scripts that the generated origin gets at run time (never committed to kiln):
# the real flag parser (sourced by common.sh like the real one, vendor common.sh:398-405) and the sudoers
# env_keep list the SDK installs (sdk_lib/90_env_keep, read by the host-mode sudo and baked into the image).
VENDOR_FILES = ("lib/shflags", "sdk_lib/90_env_keep")

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "kiln test",
    "GIT_AUTHOR_EMAIL": "kiln-test@example.invalid",
    "GIT_COMMITTER_NAME": "kiln test",
    "GIT_COMMITTER_EMAIL": "kiln-test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
_GITIGNORE = "__build__/\n.standin/\n.default_board\nsdk_container/.sdkenv\nsdk_container/.cache/\n"
_VERSION_RE = re.compile(r"^(?:([a-z]+)-)?([0-9]+\.[0-9]+\.[0-9]+)(?:[-+](.*))?$")

PathLike = Union[str, os.PathLike]


def _git(repo: PathLike, *args: str, date: Optional[str] = None) -> str:
    env = dict(os.environ, **_GIT_ENV)
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    return subprocess.run(["git", "-C", str(repo), *args], check=True, env=env,
                          capture_output=True, text=True).stdout


def versionfile_text(tag: str, sdk_version: Optional[str] = None) -> str:
    """version.txt content for a tag like create_versionfile writes it."""
    m = _VERSION_RE.match(tag)
    if not m:
        raise ValueError(f"not a Flatcar version/tag: {tag!r}")
    vid, build_id = m.group(2), m.group(3) or ""
    os_version = f"{vid}+{build_id}" if build_id else vid
    sdk = sdk_version or os_version
    return (f"FLATCAR_VERSION={os_version}\nFLATCAR_VERSION_ID={vid}\n"
            f'FLATCAR_BUILD_ID="{build_id}"\nFLATCAR_SDK_VERSION={sdk}\n')


def vendor_scripts() -> Path:
    """The real flatcar/scripts tree; skips the calling test (one line) when it is not there."""
    found = flatcar_scripts_dir()
    if not found:
        import pytest  # only reached under pytest
        pytest.skip(VENDOR_SKIP)
    return Path(found)


def _copy_vendor(dest: Path) -> None:
    src = vendor_scripts()
    for rel in VENDOR_FILES:
        s, d = src / rel, dest / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            shutil.copyfile(s, d)
        for path in [d, *d.rglob("*")] if d.is_dir() else [d]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # the vendor copy is read-only


# What build_image packs into flatcar_production_update.zip (build_library/generate_au_zip.py STATIC_FILES,
# RECURSE_DIRS): the real common.sh and core_sign_update, and lib/shflags; plus the stand-in delta_generator
# (the real SDK's /usr/bin/delta_generator, which the stand-in image does not carry). Kept apart from the
# stand-in's own common.sh under build_library/standin_au_generator/ of the generated origin only.
AU_GENERATOR_VENDOR_FILES = ("common.sh", "core_sign_update", "lib/shflags")
AU_GENERATOR_DIR = "build_library/standin_au_generator"


def _copy_au_generator(dest: Path) -> None:
    src = vendor_scripts()
    out = dest / AU_GENERATOR_DIR
    for rel in AU_GENERATOR_VENDOR_FILES:
        s, d = src / rel, out / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
            for path in [d, *d.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)  # the vendor copy is read-only
        else:
            shutil.copyfile(s, d)
            d.chmod(0o755 if rel == "core_sign_update" else 0o644)
    shutil.copyfile(STANDIN_DIR / "au" / "delta_generator", out / "delta_generator")
    (out / "delta_generator").chmod(0o755)


def _copy_tree(dest: Path) -> None:
    _copy_vendor(dest)
    _copy_au_generator(dest)
    for item in SCRIPTS_SRC.iterdir():
        if item.name in ("__build__", ".standin"):
            continue
        target = dest / item.name
        if item.is_dir():
            shutil.copytree(item, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    # The stand-in overlays at the real place (flatcar/scripts sdk_container/src/third_party/...)
    overlay_dest = dest / OVERLAY_DEST
    if OVERLAY_SRC.is_dir():
        shutil.copytree(OVERLAY_SRC, overlay_dest, symlinks=True, dirs_exist_ok=True)
    disk_dest = dest / "build_library" / "standin_disk"
    if DISK_SRC.is_dir():
        shutil.copytree(DISK_SRC, disk_dest, symlinks=True, dirs_exist_ok=True)
    (dest / ".gitignore").write_text(_GITIGNORE)


def make_scripts_origin(dest_dir: PathLike, tags: Sequence[str] = ("stable-4593.2.5",),
                        sdk_version: Optional[str] = None, branch: str = "main") -> str:
    """Create a scripts-shaped git repo at dest_dir with one commit per tag.

    Each commit writes sdk_container/.repo/manifests/version.txt for its tag
    (SDK version = sdk_version or the tag's own version) and is tagged with it.
    Returns a file:// URL usable as the clone origin.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(dest)], check=True,
                   env=dict(os.environ, **_GIT_ENV))
    _copy_tree(dest)
    vfile = dest / "sdk_container" / ".repo" / "manifests" / "version.txt"
    base = 1700000000
    if not tags:
        _git(dest, "add", "-A")
        _git(dest, "commit", "-q", "-m", "stand-in scripts", date=f"@{base} +0000")
    for i, tag in enumerate(tags):
        vfile.write_text(versionfile_text(tag, sdk_version))
        _git(dest, "add", "-A")
        _git(dest, "commit", "-q", "--allow-empty", "-m", f"New version: {tag}",
             date=f"@{base + 60 * i} +0000")
        _git(dest, "tag", "-f", tag)
    return dest.resolve().as_uri()


def add_commit(repo: PathLike, message: str = "change", path: str = "CHANGES") -> str:
    """Add one commit on top (e.g. to get `git describe` = <tag>-1-g<sha>)."""
    p = Path(repo) / path
    with p.open("a") as f:
        f.write(message + "\n")
    _git(repo, "add", path)
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD").strip()


def instantiate(checkout_dir: PathLike, assets_dir: Optional[PathLike] = None) -> Path:
    """Prepare a clone for use: `.standin/` control dir and the assets pointer."""
    checkout = Path(checkout_dir)
    ctl = checkout / ".standin"
    ctl.mkdir(parents=True, exist_ok=True)
    disk_dest = checkout / "build_library" / "standin_disk"
    if DISK_SRC.is_dir() and not disk_dest.exists():
        shutil.copytree(DISK_SRC, disk_dest, symlinks=True)
    if assets_dir is not None:
        (ctl / "assets").write_text(str(Path(assets_dir).resolve()) + "\n")
    return checkout


def set_fail(checkout_dir: PathLike, steps: Union[str, Iterable[str], None]) -> None:
    """Make the named step(s) fail (None/empty clears)."""
    f = Path(checkout_dir) / ".standin" / "fail"
    f.parent.mkdir(parents=True, exist_ok=True)
    if not steps:
        f.unlink(missing_ok=True)
        return
    if isinstance(steps, str):
        steps = [steps]
    f.write_text("\n".join(steps) + "\n")


def overlay_dir(checkout_dir: PathLike, repo: str = "coreos-overlay") -> Path:
    """The checkout's overlay (coreos-overlay or portage-stable) as build_packages sees it."""
    return Path(checkout_dir) / OVERLAY_DEST / repo


def _set_seconds(checkout_dir: PathLike, name: str, seconds: Optional[float]) -> None:
    """Write (or, for 0/None, remove) the control file ``.standin/<name>`` holding ``seconds``."""
    f = Path(checkout_dir) / ".standin" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    if not seconds:
        f.unlink(missing_ok=True)
    else:
        f.write_text(f"{seconds}\n")


def set_sleep(checkout_dir: PathLike, seconds: Optional[float]) -> None:
    """Every stand-in SDK step sleeps ``seconds`` first."""
    _set_seconds(checkout_dir, "sleep", seconds)


def set_pkg_build_seconds(checkout_dir: PathLike, seconds: Optional[float]) -> None:
    """Every package the stand-in build_packages builds from source takes ``seconds`` (binary packages none)."""
    _set_seconds(checkout_dir, "pkg_build_seconds", seconds)


# ---------------------------------------------------------------- docker ---

def erofs_files(image: PathLike, dest: PathLike) -> Path:
    """The files of a stand-in sysext (EROFS, ``fsck.erofs --extract``) under ``dest``, to read what it installs."""
    subprocess.run(["fsck.erofs", "--extract=%s" % dest, str(image)], check=True, capture_output=True)
    return Path(dest)


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def dockerd_start() -> bool:
    """Start dockerd like .ci/run does (idempotent). True when docker works."""
    if docker_available():
        return True
    if not shutil.which("dockerd"):
        return False
    subprocess.run([str(DOCKERD_SH), "start"], capture_output=True, check=False)
    return docker_available()


def dockerd_stop() -> None:
    subprocess.run([str(DOCKERD_SH), "stop"], capture_output=True, check=False)


# The stand-in images' repository prefix (build-sdk-image.sh): never ghcr.io/flatcar, so a real
# run_sdk_container here cannot take a stand-in for the SDK; kiln gets it as sdk_registry / kiln_sdk_registry.
STANDIN_REGISTRY = "kiln-standin.invalid"


def sdk_image_name(flavour: str, sdk_version: str) -> str:
    return f"{STANDIN_REGISTRY}/flatcar-sdk-{flavour}:{sdk_version.replace('+', '-')}"


def ensure_sdk_image(flavour: str = "all", sdk_version: str = "4593.2.5",
                     save_dir: Optional[PathLike] = None) -> str:
    """Build (or reuse) the stand-in SDK image; returns its name."""
    cmd = [str(BUILD_SDK_IMAGE)]
    if save_dir is not None:
        cmd += ["--save", str(save_dir)]
    cmd += [flavour, sdk_version]
    env = dict(os.environ, KILN_VENDOR_DIR=str(vendor_scripts()))  # the image gets the real sdk_lib/90_env_keep
    with _image_lock():  # parallel test workers: one build/import/save of the image at a time
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return sdk_image_name(flavour, sdk_version)


class _image_lock:
    """Exclusive flock on IMAGE_LOCK while build-sdk-image.sh runs (not the lock file that helpers put
    around a whole pytest run, so a locked run does not wait for itself)."""

    def __enter__(self):
        import fcntl
        self._fh = open(IMAGE_LOCK, "a")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self._fh.close()  # releases the lock
        return False


IMAGE_LOCK = os.environ.get("KILN_SDK_IMAGE_LOCK", "/tmp/kiln-sdk-image.lock")


def remove_containers(name_prefix: str) -> None:
    """Force-remove containers whose name starts with name_prefix."""
    if not docker_available():
        return
    out = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=False).stdout.split()
    names = [n for n in out if n.startswith(name_prefix)]
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)


def container_id(name: str) -> Optional[str]:
    r = subprocess.run(["docker", "inspect", "--format", "{{.Id}}", name],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() if r.returncode == 0 else None
