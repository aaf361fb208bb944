# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mods (issue 12): validation with one-line errors per kind, one deterministic commit (same mods, same commit id in
two fresh clones), the packages that must be rebuilt from source, kernel config merging, the image's RDEPEND, and
the parser of portage's ``>>> Emerging`` lines the packages module records."""
import os
import subprocess

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _mods as m
from ansible_collections.kiln.flatcar.plugins.modules import packages as pkgmod

META = """EAPI=7
RDEPEND=">=sys-apps/baselayout-3.0.0"
RDEPEND="${RDEPEND}
\tapp-misc/jq
\tsys-kernel/coreos-kernel
"
"""
COMMONCONFIG = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_S=\"old\"\n"
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "up", "GIT_AUTHOR_EMAIL": "up@x", "GIT_COMMITTER_NAME": "up",
           "GIT_COMMITTER_EMAIL": "up@x", "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


OEM_AZURE = 'EAPI=8\nDESCRIPTION="OEM suite for Azure"\nSLOT="0"\nKEYWORDS="amd64 arm64"\nRDEPEND="\n  net-misc/chrony\n"\n'


def run_git(cwd, *args, env=None):
    full = dict(os.environ, HOME=cwd, **GIT_ENV)
    full.update(env or {})
    return subprocess.run(["git", "-C", cwd] + list(args), env=full, check=True, capture_output=True, text=True).stdout


def git_for(checkout):
    def git(args, env=None):
        full = dict(os.environ, HOME=checkout, GIT_CONFIG_NOSYSTEM="1", **(env or {}))
        res = subprocess.run(["git", "-C", checkout] + list(args), env=full, capture_output=True, text=True, check=False)
        if res.returncode:
            raise m.ModsError("git failed: " + res.stderr.strip())
        return res.stdout
    return git


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A git repo with the flatcar/scripts overlay paths mods touch."""
    root = str(tmp_path_factory.mktemp("upstream"))
    write(os.path.join(root, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild"), META)
    write(os.path.join(root, m.KERNEL_FILES, "commonconfig-6.6"), "CONFIG_OLD=y\n")
    write(os.path.join(root, m.KERNEL_FILES, "commonconfig-6.12"), COMMONCONFIG)
    write(os.path.join(root, m.KERNEL_FILES, "amd64_defconfig-6.12"), "CONFIG_X86=y\n")
    write(os.path.join(root, m.PROFILE_FILES["use"]), "sys-apps/systemd -foo\n")
    write(os.path.join(root, m.PORTAGE_STABLE, "app-misc/jq/jq-1.7.ebuild"), "EAPI=8\n")
    write(os.path.join(root, m.OVERLAY, "coreos-base/oem-azure/oem-azure-2.12.0.4-r2.ebuild"), OEM_AZURE)
    write(os.path.join(root, m.OVERLAY, "coreos-base/oem-azure/oem-azure-2.9.1.1-r3.ebuild"), OEM_AZURE)
    run_git(root, "init", "-q", "-b", "main")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "base")
    return root


@pytest.fixture
def sources(tmp_path):
    src = tmp_path / "src"
    write(str(src / "hello" / "hello-1.0-r1.ebuild"), "EAPI=8\nSLOT=0\n")
    write(str(src / "hello" / "files" / "hello.conf"), "x=1\n")
    write(str(src / "hello" / "files" / "run.sh"), "#!/bin/sh\n", 0o755)
    write(str(src / "fix.patch"), "--- a/x\n+++ b/x\n")
    return str(src)


def good_mods(src):
    return [
        {"kind": "ebuild", "src": src + "/hello", "category": "app-misc", "image": True},
        {"kind": "patch", "src": src + "/fix.patch", "package": "app-misc/jq"},
        {"kind": "kernel_config", "options": ["CONFIG_B=y", "CONFIG_A=n", "CONFIG_NEW=m", 'CONFIG_S="new value"', "CONFIG_N=0x10"]},
        {"kind": "use", "entries": ["net-misc/curl http2 -ssl"]},
        {"kind": "accept_keywords", "entries": ["=dev-lang/go-1.22.0 ~amd64"]},
        {"kind": "mask", "entries": [">=sys-apps/foo-2"]},
    ]


def clone(upstream, dest):
    subprocess.run(["git", "clone", "-q", upstream, dest], check=True, env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1"))
    return dest


def test_same_mods_give_the_same_commit_in_two_fresh_clones(upstream, sources, tmp_path):
    mods = m.validate_mods(good_mods(sources))
    results = [m.apply_mods(clone(upstream, str(tmp_path / name)), mods, git_for(str(tmp_path / name))) for name in ("a", "b")]
    assert results[0]["commit"] == results[1]["commit"]
    a = str(tmp_path / "a")
    assert run_git(a, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%cd", "--date=raw").strip() == \
        "kiln <kiln@localhost>|kiln <kiln@localhost>|1700000000 +0000"
    assert run_git(a, "status", "--porcelain").strip() == ""
    message = run_git(a, "log", "-1", "--format=%B")
    assert "ebuild app-misc/hello" in message and "kernel_config" in message
    assert results[0]["rebuild_atoms"] == ["app-misc/hello", "app-misc/jq", "coreos-base/coreos", "dev-lang/go", "net-misc/curl",
                                           "sys-apps/foo", "sys-kernel/coreos-kernel", "sys-kernel/coreos-modules"]
    dest = os.path.join(a, m.OVERLAY, "app-misc/hello")
    assert sorted(os.listdir(dest)) == ["files", "hello-1.0-r1.ebuild"]
    assert os.access(os.path.join(dest, "files/run.sh"), os.X_OK)
    assert os.path.isfile(os.path.join(a, m.USER_PATCHES, "app-misc/jq/fix.patch"))
    assert "\tapp-misc/hello\n" in open(os.path.join(a, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild")).read()
    assert open(os.path.join(a, m.PROFILE_FILES["use"])).read() == "sys-apps/systemd -foo\nnet-misc/curl http2 -ssl\n"
    assert open(os.path.join(a, m.PROFILE_FILES["mask"])).read() == ">=sys-apps/foo-2\n"
    # the newest series was changed, the older one not
    assert open(os.path.join(a, m.KERNEL_FILES, "commonconfig-6.6")).read() == "CONFIG_OLD=y\n"
    # a changed source changes the commit
    write(os.path.join(sources, "hello", "files", "hello.conf"), "x=2\n")
    changed = m.validate_mods(good_mods(sources))
    assert changed[0]["sha256"] != mods[0]["sha256"]
    c = m.apply_mods(clone(upstream, str(tmp_path / "c")), changed, git_for(str(tmp_path / "c")))
    assert c["commit"] != results[0]["commit"]


def test_no_mods_and_no_change_make_no_commit(upstream, tmp_path):
    work = clone(upstream, str(tmp_path / "w"))
    head = run_git(work, "rev-parse", "HEAD").strip()
    assert m.apply_mods(work, [], git_for(work))["commit"] == head
    same = m.validate_mods([{"kind": "use", "entries": ["sys-apps/systemd -foo"]}])  # already there
    res = m.apply_mods(work, same, git_for(work))
    assert res["commit"] == head and res["rebuild_atoms"] == ["sys-apps/systemd"] and res["changed_paths"] == []


def test_arch_kernel_config_and_sysext(upstream, sources, tmp_path):
    work = clone(upstream, str(tmp_path / "w"))
    mods = m.validate_mods([{"kind": "kernel_config", "arch": "amd64", "options": ["CONFIG_X86=n"]},
                            {"kind": "ebuild", "src": sources + "/hello", "category": "app-misc", "sysext": "hello-ext"}])
    res = m.apply_mods(work, mods, git_for(work))
    assert open(os.path.join(work, m.KERNEL_FILES, "amd64_defconfig-6.12")).read() == "# CONFIG_X86 is not set\n"
    assert res["sysext_packages"] == {"hello-ext": ["app-misc/hello"]}
    assert "coreos-base/coreos" not in res["rebuild_atoms"]


def test_kernel_config_merge_replaces_existing_lines():
    out = m.merge_kernel_config(COMMONCONFIG + "CONFIG_A=m\n", ["CONFIG_A=n", "CONFIG_B=y", 'CONFIG_S="x y"', "CONFIG_Z=12"])
    assert out == '# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_S="x y"\nCONFIG_Z=12\n'
    assert m.merge_kernel_config(out, ["CONFIG_A=n", "CONFIG_B=y"]) == out


def test_rdepend_insertion_is_idempotent():
    once = m.add_rdepend(META, "app-misc/hello")
    twice = m.add_rdepend(once, "app-misc/hello")
    assert once == twice and once.count("app-misc/hello") == 1
    assert m.add_rdepend(META, "app-misc/jq") == META  # already in the image
    both = m.add_rdepend(once, "dev-util/other")
    assert both.count(m.RDEPEND_MARK) == 1
    assert both.endswith(m.RDEPEND_MARK + '\nRDEPEND+="\n\tapp-misc/hello\n\tdev-util/other\n"\n')


def test_atoms_from_paths():
    paths = [m.OVERLAY + "/app-misc/hello/hello-1.0.ebuild", m.PORTAGE_STABLE + "/dev-libs/openssl/files/x.patch",
             m.USER_PATCHES + "/net-misc/curl/0001.patch", m.KERNEL_FILES + "/commonconfig-6.12",
             m.OVERLAY + "/profiles/coreos/base/package.use", m.OVERLAY + "/eclass/foo.eclass", "README.md",
             m.OVERLAY + "/app-misc/Manifest", "sdk_container/.repo/manifests/version.txt"]
    assert m.atoms_from_paths(paths) == ["app-misc/hello", "dev-libs/openssl", "net-misc/curl", "sys-kernel/coreos-kernel",
                                         "sys-kernel/coreos-modules"]
    assert m.atoms_from_paths([]) == []


@pytest.mark.parametrize("mod,needle", [
    ("not a dict", "kind None"),
    ({"kind": "rpm"}, "kind 'rpm' is not one of"),
    ({"kind": "mask", "entries": ["a/b"], "extra": 1}, "unknown key 'extra'"),
    ({"kind": "ebuild", "src": "relative/dir", "category": "app-misc"}, "not an absolute path"),
    ({"kind": "ebuild", "src": "{src}/missing", "category": "app-misc"}, "is not a directory"),
    ({"kind": "ebuild", "src": "{src}/hello", "category": "../etc"}, "category"),
    ({"kind": "ebuild", "src": "{src}/badname", "category": "app-misc"}, "PMS version rules"),
    ({"kind": "ebuild", "src": "{src}/escape", "category": "app-misc"}, "symlink pointing out"),
    ({"kind": "ebuild", "src": "{src}/hello", "category": "app-misc", "image": True, "sysext": "x"}, "image and sysext"),
    ({"kind": "ebuild", "src": "{src}/hello", "category": "app-misc", "sysext": "a b"}, "sysext"),
    ({"kind": "patch", "src": "{src}/fix.txt", "package": "app-misc/jq"}, ".patch or .diff"),
    ({"kind": "patch", "src": "{src}/fix.patch", "package": "app-misc/jq-1.0"}, "not a package name"),
    ({"kind": "patch", "src": "{src}/none.patch", "package": "app-misc/jq"}, "cannot read patch"),
    ({"kind": "kernel_config", "options": ["CONFIG_X=yes"]}, "CONFIG_<NAME>"),
    ({"kind": "kernel_config", "options": ["CONFIG_X=y\nCONFIG_Y=y"]}, "CONFIG_<NAME>"),
    ({"kind": "kernel_config", "options": ["CONFIG_X=y", "CONFIG_X=m"]}, "twice"),
    ({"kind": "kernel_config", "options": ["CONFIG_X=y"], "arch": "x86"}, "arch"),
    ({"kind": "kernel_config", "options": []}, "non-empty list"),
    ({"kind": "use", "entries": ["net-misc/curl"]}, "names no USE flag"),
    ({"kind": "use", "entries": ["net-misc/curl $(id)"]}, "USE flag"),
    ({"kind": "use", "entries": ["net-misc/curl;id x"]}, "not a package atom"),
    ({"kind": "accept_keywords", "entries": ["dev-lang/go ~am;d64"]}, "keyword"),
    ({"kind": "mask", "entries": [">=sys-apps/foo"]}, "not a package atom"),
    ({"kind": "mask", "entries": ["sys-apps/foo bar"]}, "one atom"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/etc/acme", "name": "acme", "image": True}, "under /usr/"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr", "name": "acme", "image": True}, "under /usr/"),
    ({"kind": "files", "src": "{src}/hello", "dest": "usr/share/acme", "name": "acme", "image": True}, "under /usr/"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/../../etc", "name": "acme", "image": True}, "'..'"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/$(id)", "name": "acme", "image": True}, "under /usr/"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/a b", "name": "acme", "image": True}, "under /usr/"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/x\ny", "name": "acme", "image": True}, "control characters"),
    ({"kind": "files", "src": "{src}/hello", "dest": ["/usr/x"], "name": "acme", "image": True}, "is not a path"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "image": True}, "name None is not set"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "a;b", "image": True}, "not a package name"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme-1.0", "image": True}, "not a package name"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme", "image": True, "sysext": "x"},
     "image and sysext both set"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme"}, "none of image, sysext, oem set"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme", "image": False}, "none of image, sysext, oem set"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme", "oem": "qemu", "sysext": "x"},
     "sysext and oem both set"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme", "oem": "../qemu"}, "oem"),
    ({"kind": "ebuild", "src": "{src}/hello", "category": "app-misc", "image": True, "oem": "qemu"}, "image and oem both set"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme", "sysext": "a b"}, "sysext"),
    ({"kind": "files", "src": "{src}/missing", "dest": "/usr/share/acme", "name": "acme", "image": True}, "is not a directory"),
    ({"kind": "files", "src": "{src}/fix.patch", "dest": "/usr/share/acme", "name": "acme", "image": True}, "is not a directory"),
    ({"kind": "files", "src": "{src}/empty", "dest": "/usr/share/acme", "name": "acme", "image": True}, "holds no files"),
    ({"kind": "files", "src": "{src}/escape", "dest": "/usr/share/acme", "name": "acme", "image": True}, "symlink pointing out"),
    ({"kind": "files", "src": "{src}/hello", "dest": "/usr/share/acme", "name": "acme", "image": True, "category": "x"},
     "unknown key 'category'"),
])
def test_bad_mods_fail_with_one_line_naming_the_index(mod, needle, sources):
    os.makedirs(os.path.join(sources, "badname"))
    write(os.path.join(sources, "badname", "hello.ebuild"), "")
    os.makedirs(os.path.join(sources, "escape"))
    write(os.path.join(sources, "escape", "esc-1.ebuild"), "")
    os.symlink("/etc/hostname", os.path.join(sources, "escape", "leak"))
    write(os.path.join(sources, "fix.txt"), "")
    os.makedirs(os.path.join(sources, "empty", "sub"))
    if isinstance(mod, dict):
        mod = dict((k, v.replace("{src}", sources) if isinstance(v, str) else v) for k, v in mod.items())
    good = {"kind": "mask", "entries": ["app-misc/jq"]}
    with pytest.raises(m.ModsError) as exc:
        m.validate_mods([good, mod])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("mods[1]") and needle in msg, msg


def test_validation_normalises_and_digests(sources):
    mods = m.validate_mods(good_mods(sources))
    assert mods[0]["package"] == "app-misc/hello" and mods[0]["versions"] == ["1.0-r1"]
    assert all(len(x["sha256"]) == 64 for x in mods)
    assert m.planned_atoms(mods) == ["app-misc/hello", "app-misc/jq", "coreos-base/coreos", "dev-lang/go", "net-misc/curl",
                                     "sys-apps/foo", "sys-kernel/coreos-kernel", "sys-kernel/coreos-modules"]
    assert all("files" not in x for x in m.summary(mods))


# -- files mods: a generated package kiln-files/<name> installing a directory of files under /usr -------------------
@pytest.fixture
def payload(tmp_path):
    src = tmp_path / "payload"
    write(str(src / "acme.conf"), "level=1\n")
    write(str(src / "bin" / "acme-run"), "#!/bin/sh\necho acme\n", 0o755)
    write(str(src / "doc" / "README"), "read me\n", 0o600)
    return str(src)


def files_mod(src, **kw):
    return dict({"kind": "files", "src": src, "dest": "/usr/share/acme", "name": "acme", "image": True}, **kw)


def package_dir(checkout, name="acme"):
    return os.path.join(checkout, m.OVERLAY, m.FILES_CATEGORY, name)


def test_files_mod_generates_a_package_in_the_image_deterministically(upstream, payload, tmp_path):
    mods = m.validate_mods([files_mod(payload)])
    assert mods[0]["package"] == "kiln-files/acme" and mods[0]["dest"] == "/usr/share/acme"
    assert mods[0]["files"] == [["acme.conf", mods[0]["files"][0][1], False], ["bin/acme-run", mods[0]["files"][1][1], True],
                                ["doc/README", mods[0]["files"][2][1], False]]
    results = [m.apply_mods(clone(upstream, str(tmp_path / name)), mods, git_for(str(tmp_path / name))) for name in ("a", "b")]
    assert results[0]["commit"] == results[1]["commit"]
    a = str(tmp_path / "a")
    assert run_git(a, "status", "--porcelain").strip() == ""
    assert "- files kiln-files/acme in /usr/share/acme (sha256 " in run_git(a, "log", "-1", "--format=%B")
    assert results[0]["rebuild_atoms"] == ["coreos-base/coreos", "kiln-files/acme"]
    assert results[0]["sysext_packages"] == {}
    assert m.planned_atoms(mods) == results[0]["rebuild_atoms"]
    pkg = package_dir(a)
    assert sorted(os.listdir(pkg)) == ["acme-1.ebuild", "files"]
    ebuild = open(os.path.join(pkg, "acme-1.ebuild")).read()
    assert ebuild == m.files_ebuild(mods[0])
    for line in ('EAPI=8', 'SLOT="0"', 'KEYWORDS="amd64 arm64"', 'LICENSE="metapackage"', 'S="${WORKDIR}"',
                 '\tmkdir -p "${D}/usr/share/acme"', '\tcp -R "${FILESDIR}/src/." "${D}/usr/share/acme/"'):
        assert line + "\n" in ebuild, line
    assert 'DESCRIPTION="Files of the kiln files mod acme, installed in /usr/share/acme"' in ebuild
    src = os.path.join(pkg, "files", "src")
    assert open(os.path.join(src, "acme.conf")).read() == "level=1\n"
    assert open(os.path.join(src, "doc", "README")).read() == "read me\n"
    assert os.access(os.path.join(src, "bin", "acme-run"), os.X_OK)
    assert not os.access(os.path.join(src, "acme.conf"), os.X_OK)
    assert run_git(a, "ls-files", "-s", "--", m.OVERLAY + "/kiln-files/acme/files/src/bin/acme-run").startswith("100755 ")
    assert "\tkiln-files/acme\n" in open(os.path.join(a, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild")).read()
    # the upstream fixture has no profiles/categories: none is created
    assert not os.path.exists(os.path.join(a, m.CATEGORIES_FILE))
    # changed content, or a changed exec bit, changes the digest and the commit
    write(os.path.join(payload, "acme.conf"), "level=2\n")
    changed = m.validate_mods([files_mod(payload)])
    assert changed[0]["sha256"] != mods[0]["sha256"]
    c = m.apply_mods(clone(upstream, str(tmp_path / "c")), changed, git_for(str(tmp_path / "c")))
    assert c["commit"] != results[0]["commit"]
    os.chmod(os.path.join(payload, "doc", "README"), 0o700)
    assert m.validate_mods([files_mod(payload)])[0]["sha256"] != changed[0]["sha256"]


def test_files_mod_digest_covers_contents_and_keys(payload):
    first = m.validate_mods([files_mod(payload)])[0]
    assert m.validate_mods([files_mod(payload)])[0]["sha256"] == first["sha256"]
    # the same files elsewhere on the builder: the same digest (src itself is not part of it)
    other = os.path.join(os.path.dirname(payload), "copy")
    subprocess.run(["cp", "-a", payload, other], check=True)
    assert m.validate_mods([files_mod(other)])[0]["sha256"] == first["sha256"]
    assert m.validate_mods([files_mod(payload, dest="/usr/share/acme/")])[0]["sha256"] == first["sha256"]  # normalised
    digests = {m.validate_mods([files_mod(payload, **kw)])[0]["sha256"]
               for kw in ({"dest": "/usr/lib/acme"}, {"name": "acme2"}, {"image": False, "sysext": "tools"})}
    assert len(digests) == 3 and first["sha256"] not in digests
    with pytest.raises(m.ModsError, match=r"^mods\[1\] \(files\): name 'acme' is already the name of mods\[0\]"):
        m.validate_mods([files_mod(payload), files_mod(payload, dest="/usr/lib/acme")])
    assert m.summary([first]) == [{"kind": "files", "src": payload, "package": "kiln-files/acme", "dest": "/usr/share/acme",
                                   "image": True, "sha256": first["sha256"]}]


def test_files_mod_into_a_sysext_and_the_categories_file(upstream, payload, tmp_path):
    work = clone(upstream, str(tmp_path / "w"))
    write(os.path.join(work, m.CATEGORIES_FILE), "coreos-base\nsys-apps")  # no newline at the end
    run_git(work, "add", "-A")
    run_git(work, "commit", "-q", "-m", "categories")
    meta = open(os.path.join(work, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild")).read()
    mods = m.validate_mods([files_mod(payload, image=False, sysext="tools"),
                            files_mod(payload, name="acme-extra", dest="/usr/lib/acme", sysext="tools", image=False),
                            files_mod(payload, name="other", sysext="more", image=False)])
    res = m.apply_mods(work, mods, git_for(work))
    assert res["sysext_packages"] == {"more": ["kiln-files/other"], "tools": ["kiln-files/acme", "kiln-files/acme-extra"]}
    assert res["rebuild_atoms"] == ["kiln-files/acme", "kiln-files/acme-extra", "kiln-files/other"]
    assert open(os.path.join(work, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild")).read() == meta
    assert open(os.path.join(work, m.CATEGORIES_FILE)).read() == "coreos-base\nsys-apps\nkiln-files\n"
    assert m.CATEGORIES_FILE in res["changed_paths"]
    assert 'mkdir -p "${D}/usr/lib/acme"' in open(os.path.join(package_dir(work, "acme-extra"), "acme-extra-1.ebuild")).read()
    # applied again on top (a later build on the same checkout): the category is not added twice, a file dropped
    # from src is dropped from the package
    os.remove(os.path.join(payload, "doc", "README"))
    again = m.apply_mods(work, m.validate_mods([files_mod(payload, image=False, sysext="tools")]), git_for(work))
    assert open(os.path.join(work, m.CATEGORIES_FILE)).read() == "coreos-base\nsys-apps\nkiln-files\n"
    assert again["changed_paths"] == [m.OVERLAY + "/kiln-files/acme/files/src/doc/README"]
    assert not os.path.exists(os.path.join(package_dir(work), "files", "src", "doc"))
    assert m.atoms_from_paths(again["changed_paths"]) == ["kiln-files/acme"]


def test_files_and_ebuild_mods_into_an_oem_sysext(upstream, payload, sources, tmp_path):
    """oem: <id> puts the package in the RDEPEND of coreos-base/oem-<id> (every ebuild of it), so build_image's
    build_sysext --metapkgs=coreos-base/oem-<id> installs it into the OEM sysext; the metapackage is rebuilt."""
    work = clone(upstream, str(tmp_path / "w"))
    meta = open(os.path.join(work, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild")).read()
    mods = m.validate_mods([files_mod(payload, image=False, oem="azure"),
                            {"kind": "ebuild", "src": sources + "/hello", "category": "app-misc", "oem": "azure"}])
    assert [x["oem"] for x in mods] == ["azure", "azure"]
    res = m.apply_mods(work, mods, git_for(work))
    azure = os.path.join(work, m.OVERLAY, "coreos-base/oem-azure")
    for name in ("oem-azure-2.12.0.4-r2.ebuild", "oem-azure-2.9.1.1-r3.ebuild"):
        text = open(os.path.join(azure, name)).read()
        assert text.startswith(OEM_AZURE)
        assert text.endswith(m.OEM_RDEPEND_MARK + '\nRDEPEND+="\n\tkiln-files/acme\n\tapp-misc/hello\n"\n'), text
    assert open(os.path.join(work, m.OVERLAY, "coreos-base/coreos/coreos-0.0.1.ebuild")).read() == meta
    assert res["rebuild_atoms"] == ["app-misc/hello", "coreos-base/oem-azure", "kiln-files/acme"]
    assert res["sysext_packages"] == {}
    assert [x.get("oem") for x in m.summary(mods)] == ["azure", "azure"]
    # an OEM the checkout has no ebuild for: one line naming what to give
    work2 = clone(upstream, str(tmp_path / "w2"))
    with pytest.raises(m.ModsError) as exc:
        m.apply_mods(work2, m.validate_mods([files_mod(payload, image=False, oem="qemu")]), git_for(work2))
    assert "\n" not in str(exc.value) and "oem 'qemu'" in str(exc.value) and "coreos-base/oem-qemu has no ebuild" in str(exc.value)


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_files_ebuild_src_install_installs_the_files(upstream, payload, tmp_path, shell):
    """The generated src_install as the stand-in SDK (and portage) run it: sourced, with D, FILESDIR, S set."""
    work = clone(upstream, str(tmp_path / "w"))
    os.chmod(os.path.join(payload, "doc"), 0o700)
    m.apply_mods(work, m.validate_mods([files_mod(payload)]), git_for(work))
    pkg = package_dir(work)
    image = str(tmp_path / "image")
    env = dict(os.environ, D=image, FILESDIR=os.path.join(pkg, "files"), WORKDIR=str(tmp_path), PN="acme", PF="acme-1",
               CATEGORY="kiln-files", EBUILD=os.path.join(pkg, "acme-1.ebuild"))
    subprocess.run([shell, "-c", 'set -e; umask 077; . "$EBUILD"; cd "$S"; src_install'], env=env, check=True, cwd=str(tmp_path))
    dest = os.path.join(image, "usr/share/acme")
    found = sorted(os.path.relpath(os.path.join(d, f), dest) for d, _dirs, files in os.walk(dest) for f in files)
    assert found == ["acme.conf", "bin/acme-run", "doc/README"]
    assert open(os.path.join(dest, "bin/acme-run")).read() == "#!/bin/sh\necho acme\n"
    mode = dict((rel, os.stat(os.path.join(dest, rel)).st_mode & 0o777) for rel in found + ["doc"])
    assert mode == {"acme.conf": 0o644, "bin/acme-run": 0o755, "doc/README": 0o644, "doc": 0o755}
    assert subprocess.run([os.path.join(dest, "bin/acme-run")], capture_output=True, text=True, check=False).stdout == "acme\n"


EMERGE_LOG = """\
>>> Running pre-merge checks for app-misc/hello-1.0-r1
>>> Emerging binary (1 of 4) sys-libs/glibc-2.40-r5::portage-stable for /build/amd64-usr/
>>> Emerging (2 of 4) app-misc/hello-1.0-r1::coreos-overlay for /build/amd64-usr/
\x1b[32;01m>>>\x1b[0m Emerging (3 of 4) \x1b[32;01mapp-misc/needs-hello-2.1::coreos-overlay\x1b[0m for /build/amd64-usr/
>>> Emerging binary (4 of 4) coreos-base/coreos-0.0.1-r300::coreos-overlay
>>> Installing (2 of 4) app-misc/hello-1.0-r1::coreos-overlay
>>> Emerging (1 of 1) app-misc/hello-1.0-r1::coreos-overlay for /build/amd64-usr/
"""


def test_emerge_lines_are_parsed():
    source, binary = pkgmod.parse_emerge(EMERGE_LOG)
    assert source == ["app-misc/hello-1.0-r1", "app-misc/needs-hello-2.1"]
    assert binary == ["coreos-base/coreos-0.0.1-r300", "sys-libs/glibc-2.40-r5"]
    rebuilt = pkgmod.rebuild_reasons(source, mods=["app-misc/hello"], excluded=["app-misc/hello", "x/y"])
    assert rebuilt == [{"package": "app-misc/hello-1.0-r1", "atom": "app-misc/hello", "reason": "mod"},
                       {"package": "app-misc/needs-hello-2.1", "atom": "app-misc/needs-hello", "reason": "dependency"}]
    assert pkgmod.rebuild_reasons(source, mods=[], excluded=["app-misc/hello"])[0]["reason"] == "excluded"


def test_rebuild_since_a_release_names_only_what_changed(upstream, sources, tmp_path):
    """A hotfix: the release's mods reapplied give the release's commit again, so only the hotfix shows in the diff."""
    release_mods = m.validate_mods([{"kind": "ebuild", "src": sources + "/hello", "category": "app-misc", "image": True}])
    work = clone(upstream, str(tmp_path / "w"))
    release = m.apply_mods(work, release_mods, git_for(work))["commit"]
    # the hotfix: a plain git patch to a package and a USE change, on top of the release commit
    write(os.path.join(work, m.PORTAGE_STABLE, "app-misc/jq/jq-1.7.ebuild"), "EAPI=8\n# fixed\n")
    run_git(work, "commit", "-q", "-am", "fix jq")
    hotfix = m.validate_mods([{"kind": "use", "entries": ["net-misc/curl -http2"]}])
    m.apply_mods(work, hotfix, git_for(work))
    assert m.rebuild_since(release, git_for(work)) == ["app-misc/jq", "net-misc/curl"]


def test_atoms_from_profile_diff():
    diff = "--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n-sys-apps/systemd -foo\n+sys-apps/systemd foo\n+# a comment\n+>=dev-lang/go-1.2 ~amd64\n"
    assert m.atoms_from_profile_diff(diff) == ["dev-lang/go", "sys-apps/systemd"]


# -- the sdk_checkout module with mods (in-process, a local upstream repository) ------------------------------------
VERSIONTXT = ("FLATCAR_VERSION=4593.2.5\nFLATCAR_VERSION_ID=4593.2.5\nFLATCAR_BUILD_ID=\"\"\n"
              "FLATCAR_SDK_VERSION=4593.2.0\n")


@pytest.fixture(scope="module")
def scripts_upstream(upstream, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("scripts"))
    subprocess.run(["git", "clone", "-q", upstream, root], check=True, env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1"))
    write(os.path.join(root, "sdk_container/.repo/manifests/version.txt"), VERSIONTXT)
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "version")
    run_git(root, "tag", "stable-4593.2.5")
    return root


def test_sdk_checkout_applies_mods_once_and_reruns_when_they_change(scripts_upstream, sources, tmp_path, capsys):
    from module_testlib import call_module
    from ansible_collections.kiln.flatcar.plugins.modules import sdk_checkout

    dest = str(tmp_path / "checkout")
    args = {"scripts_dir": dest, "repo": scripts_upstream, "ref": "stable-4593.2.5", "build_id": "kiln-1",
            "mods": good_mods(sources)}
    planned = call_module(sdk_checkout, args, capsys, check=True)
    assert planned["changed"] and not os.path.exists(dest)  # check mode: validated, nothing written
    assert "coreos-base/coreos" in planned["rebuild_atoms"]
    first = call_module(sdk_checkout, args, capsys)
    assert first["changed"] and first["commit"] != first["base_commit"], first
    assert first["rebuild_atoms"] == planned["rebuild_atoms"] and len(first["mods"]) == 6
    assert all(len(x["sha256"]) == 64 for x in first["mods"])
    again = call_module(sdk_checkout, args, capsys)
    assert not again["changed"] and again["commit"] == first["commit"] and again["rebuild_atoms"] == first["rebuild_atoms"]
    # the same mods in another fresh checkout: the same commit id
    other = call_module(sdk_checkout, dict(args, scripts_dir=str(tmp_path / "other")), capsys)
    assert other["commit"] == first["commit"]
    # a changed mod reruns the checkout and changes the commit
    changed = call_module(sdk_checkout, dict(args, mods=good_mods(sources)[:2]), capsys)
    assert changed["changed"] and changed["commit"] != first["commit"]
    # a hotfix since the first commit: only what differs from it
    since = call_module(sdk_checkout, dict(args, rebuild_since=first["commit"]), capsys)
    assert since["commit"] == first["commit"] and since["rebuild_atoms"] == []


def test_sdk_checkout_refuses_a_bad_mod_in_check_mode(scripts_upstream, tmp_path, capsys):
    from module_testlib import call_module
    from ansible_collections.kiln.flatcar.plugins.modules import sdk_checkout

    dest = str(tmp_path / "checkout")
    res = call_module(sdk_checkout, {"scripts_dir": dest, "repo": scripts_upstream, "ref": "stable-4593.2.5",
                                     "mods": [{"kind": "kernel_config", "options": ["CONFIG_X=maybe"]}]}, capsys, check=True)
    assert res["failed"] and res["msg"].startswith("mods[0] (kernel_config):") and "\n" not in res["msg"]
    assert not os.path.exists(dest)
