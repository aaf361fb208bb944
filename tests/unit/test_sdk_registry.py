"""Issue 14 item 4: the SDK image's repository prefix (``sdk_registry``). Under any prefix other than
ghcr.io/flatcar every run_sdk_container call names the image with ``-C`` (before ``--``), which the real
run_sdk_container takes as "an entirely custom container image" and never pulls; under the default the argv is
unchanged (existing build records stay current). The prefix is validated by ``_validate.registry``."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml

from kiln_testlib import REPO

from ansible_collections.kiln.flatcar.plugins.doc_fragments._sdk import ModuleDocFragment
from ansible_collections.kiln.flatcar.plugins.module_utils import _contract as c
from ansible_collections.kiln.flatcar.plugins.module_utils import _validate as v
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import COMMON_ARGS, REGISTRY, custom_sdk_image, sdk_image_ref
from ansible_collections.kiln.flatcar.plugins.module_utils._sdkargv import sdk_command

NAME = "flatcar-sdk-all-4593.2.5_os-4593.2.5"
ARGV = ["./build_packages", "--board=amd64-usr", "--", "app-misc/jq"]


def command(registry, flavour="all", sdk="4593.2.5"):
    return sdk_command(NAME, flavour, sdk, ARGV, image=custom_sdk_image(flavour, sdk, registry))


@pytest.mark.parametrize("registry", [REGISTRY, REGISTRY + "/", None, ""])
def test_default_registry_adds_no_option(registry):
    argv = command(registry)
    assert "-C" not in argv
    assert argv == ["./run_sdk_container", "-U", "-n", NAME, "-a", "all", "-V", "4593.2.5", "--"] + ARGV


@pytest.mark.parametrize("registry", ["kiln-standin.invalid", "registry.example.com:5000/mirror/flatcar", "localhost/flatcar/"])
def test_other_registry_names_the_image_with_C_before_the_double_dash(registry):
    argv = command(registry, "arm64", "4799.0.0+nightly-20260821-2100")
    image = "%s/flatcar-sdk-arm64:4799.0.0-nightly-20260821-2100" % registry.rstrip("/")
    assert argv.count("-C") == 1
    i = argv.index("-C")
    assert argv[i + 1] == image == sdk_image_ref("arm64", "4799.0.0+nightly-20260821-2100", registry)
    assert i < argv.index("--")
    assert argv[argv.index("--") + 1:] == ARGV


def _lines():
    paths = sorted(glob.glob(os.path.join(REPO, "tests", "sdk_contract", "*.json")))
    assert paths
    return paths


@pytest.mark.parametrize("path", _lines(), ids=os.path.basename)
def test_C_is_an_option_of_every_release_line(path):
    with open(path, encoding="utf-8") as fh:
        contract = c.ContractData(json.load(fh))
    assert c.command_problems(contract, command("kiln-standin.invalid")) == []


GOOD = ["ghcr.io/flatcar", "kiln-standin.invalid", "localhost:5000/a/b", "registry.example.com/flatcar_sdk/x-y", "quay.io/a.b/c__d"]
BAD = ["", "GHCR.io/flatcar", "ghcr.io/flatcar:latest", "ghcr.io/flatcar@sha256:00", "../x", "ghcr.io/../x", "a..b/c",
       "-oops", "ghcr.io//flatcar", "ghcr.io/flatcar; rm -rf /", "ghcr.io/fla tcar", "ghcr.io/flatcar\nx", "a/-b", "a/b-",
       "a" * 300, None, ["ghcr.io/flatcar"], "host:99999999/x"]


@pytest.mark.parametrize("value", GOOD)
def test_registry_validator_accepts(value):
    assert v.registry(value) == value
    assert v.registry(value + "/") == value


@pytest.mark.parametrize("value", BAD, ids=range(len(BAD)))
def test_registry_validator_refuses_in_one_line(value):
    with pytest.raises(v.Invalid) as exc:
        v.registry(value)
    assert "\n" not in str(exc.value) and "sdk_registry" in str(exc.value)


def test_one_option_name_in_every_sdk_module():
    assert COMMON_ARGS["sdk_registry"] == {"type": "str", "default": REGISTRY}
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["sdk_registry"]
    assert doc["default"] == REGISTRY and doc["type"] == "str"
    with open(os.path.join(REPO, "plugins", "modules", "sdk_image.py"), encoding="utf-8") as fh:
        text = fh.read()
    options = yaml.safe_load(text.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])["options"]
    assert "registry" not in options and options["sdk_registry"]["aliases"] == ["registry"]
    with open(os.path.join(REPO, "roles", "build", "tasks", "main.yml"), encoding="utf-8") as fh:
        tasks = yaml.safe_load(fh)
    sdk_modules = ("kiln.flatcar.sdk_image", "kiln.flatcar.packages", "kiln.flatcar.image", "kiln.flatcar.vm_image", "kiln.flatcar.sysext")
    found = [t for block in tasks for t in block.get("block", [block]) for m in sdk_modules if m in t]
    assert len(found) == len(sdk_modules)
    for task in found:
        args = next(task[m] for m in sdk_modules if m in task)
        assert args["sdk_registry"] == "{{ build_sdk_registry }}", task["name"]
