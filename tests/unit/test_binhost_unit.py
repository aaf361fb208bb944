"""Issue 9, defect 3: the binhost values kiln writes into version.txt (sourced as shell by the SDK) and how a
binary package cache URL becomes build_packages' --getbinpkgver."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils._version import VersionError, check_binhost_root, versionfile_content
from ansible_collections.kiln.flatcar.plugins.modules.packages import binhost_getbinpkgver

ROOT = "http://cache.example:8080/kiln"


def test_versionfile_gets_the_root_quoted_without_trailing_slash():
    text = versionfile_content("4593.2.5+x", "4593.2.5", {"FLATCAR_DEV_BUILDS": ROOT + "/"})
    assert text.endswith('FLATCAR_DEV_BUILDS="%s"\n' % ROOT)


@pytest.mark.parametrize("bad", ["cache.example", "http://a b", "http://a;id", "http://a/$(id)", "http://a/`id`", 'http://a"b',
                                 "http://a\n", "http://a\nFOO=1", "http://a|b", "http://a&b",
                                 ROOT + "/boards/amd64-usr/4593.2.5/pkgs/"])
def test_unsafe_or_pkgs_urls_are_refused(bad):
    with pytest.raises(VersionError):
        check_binhost_root(bad)
    with pytest.raises(VersionError):
        versionfile_content("4593.2.5+x", "4593.2.5", {"FLATCAR_DEV_BUILDS": bad})


def stage(dev_builds=ROOT):
    return SimpleNamespace(board="amd64-usr", dev_builds=dev_builds)


def test_cache_urls_become_getbinpkgver():
    url = ROOT + "/boards/amd64-usr/4593.2.5+kiln-1/pkgs/"
    assert binhost_getbinpkgver(stage(), [url], None) == ("4593.2.5+kiln-1", None)
    assert binhost_getbinpkgver(stage(), [url], "4593.2.5+kiln-1") == ("4593.2.5+kiln-1", None)
    two = [url, ROOT + "/boards/amd64-usr/4593.2.5/pkgs"]
    assert binhost_getbinpkgver(stage(), two, None) == ("4593.2.5+kiln-1 4593.2.5", None)
    assert binhost_getbinpkgver(stage(), [], "1.2.3") == ("1.2.3", None)


@pytest.mark.parametrize("dev_builds,host,getbinpkgver,expect", [
    (None, ROOT + "/boards/amd64-usr/1.2.3/pkgs/", None, "cannot reach portage"),
    ("http://other", ROOT + "/boards/amd64-usr/1.2.3/pkgs/", None, "cannot reach portage"),
    (ROOT, ROOT + "/boards/arm64-usr/1.2.3/pkgs/", None, "not a binary package cache URL"),
    (ROOT, ROOT + "/somewhere/else/", None, "not a binary package cache URL"),
    (ROOT, ROOT + "/boards/amd64-usr/1.2.3+sdk-1/pkgs/", None, "rewrites"),
    (ROOT, ROOT + "/boards/amd64-usr/1.2.3/pkgs/", "1.2.4", "disagree"),
])
def test_binhosts_that_cannot_reach_portage_fail(dev_builds, host, getbinpkgver, expect):
    value, error = binhost_getbinpkgver(stage(dev_builds), [host], getbinpkgver)
    assert value is None and expect in error and "\n" not in error
