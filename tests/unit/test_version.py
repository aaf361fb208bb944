import pytest

from ansible_collections.kiln.flatcar.plugins.module_utils import _version as v


@pytest.mark.parametrize(
    "text,version,version_id,build_id,channel,official,docker",
    [
        ("stable-4593.2.5", "4593.2.5", "4593.2.5", "", "stable", True, "4593.2.5"),
        ("main-4799.0.0-nightly-20260821-2100", "4799.0.0+nightly-20260821-2100", "4799.0.0", "nightly-20260821-2100",
         "developer", False, "4799.0.0-nightly-20260821-2100"),
        ("4593.2.5+hotfix-1", "4593.2.5+hotfix-1", "4593.2.5", "hotfix-1", "developer", False, "4593.2.5-hotfix-1"),
        ("alpha-3233.0.0-foo", "3233.0.0+foo", "3233.0.0", "foo", "alpha", False, "3233.0.0-foo"),
        ("lts-4081.3.6", "4081.3.6", "4081.3.6", "", "lts", True, "4081.3.6"),
        ("3066.1.0+5-gcf4ff44a", "3066.1.0+5-gcf4ff44a", "3066.1.0", "5-gcf4ff44a", "developer", False, "3066.1.0-5-gcf4ff44a"),
    ],
)
def test_parse_matches_sdk_semantics(text, version, version_id, build_id, channel, official, docker):
    parsed = v.FlatcarVersion.parse(text)
    assert parsed.version == version
    assert parsed.version_id == version_id
    assert parsed.build_id == build_id
    assert parsed.channel == channel
    assert parsed.official is official
    assert parsed.docker_vernum == docker


@pytest.mark.parametrize("bad", ["", "stable", "4593.2", "stable-4593.2.x", "4593.2.5+", "v4593.2.5", "4593.2.5 junk", "STABLE-1.2.3"])
def test_malformed_versions_give_one_line(bad):
    with pytest.raises(v.VersionError) as exc:
        v.FlatcarVersion.parse(bad)
    assert "\n" not in str(exc.value)
    assert "e.g." in str(exc.value) or "build id" in str(exc.value)


def test_versionfile_roundtrip(tmp_path):
    path = tmp_path / "version.txt"
    content = v.versionfile_content("main-4799.0.0-nightly-20260821-2100", "4799.0.0+nightly-20260821-2100",
                                    {"FLATCAR_DEV_BUILDS": "http://cache.example/"})
    v.atomic_write(str(path), content)
    text = path.read_text()
    # the exact lines create_versionfile writes, in the same order
    assert text.splitlines()[:4] == [
        "FLATCAR_VERSION=4799.0.0+nightly-20260821-2100",
        "FLATCAR_VERSION_ID=4799.0.0",
        'FLATCAR_BUILD_ID="nightly-20260821-2100"',
        "FLATCAR_SDK_VERSION=4799.0.0+nightly-20260821-2100",
    ]
    values = v.read_versionfile(str(path))
    assert values["FLATCAR_BUILD_ID"] == "nightly-20260821-2100"
    assert values["FLATCAR_DEV_BUILDS"] == "http://cache.example"  # the cache root, without its trailing /


def test_versionfile_garbage_is_refused(tmp_path):
    path = tmp_path / "version.txt"
    path.write_text("FLATCAR_VERSION=1.2.3\nrm -rf /\n")
    with pytest.raises(v.VersionError, match="line 2"):
        v.read_versionfile(str(path))
    path.write_text("FOO=1\n")
    with pytest.raises(v.VersionError, match="no FLATCAR_VERSION"):
        v.read_versionfile(str(path))


def test_compare_orders_versions():
    assert v.compare("4593.2.5", "4593.2.4") == 1
    assert v.compare("4593.2.5+a", "4593.2.5") == -1
    assert v.compare("stable-4593.2.5", "4593.2.5") == 0
    assert v.compare("4600.0.0", "4593.10.0") == 1
