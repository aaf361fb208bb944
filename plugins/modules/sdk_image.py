#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sdk_image
short_description: Make the Flatcar SDK container image present on a builder
version_added: 0.1.0
description:
  - Ensures C(<sdk_registry>/flatcar-sdk-<flavour>:<sdk version>) (default C(ghcr.io/flatcar/...)) is present in the builder's container engine.
  - From a registry (C(pull)), or from a C(docker save | zstd) tarball and its C(.id) file in Flatcar's build-cache
    layout C(containers/<ver>/flatcar-sdk-<flavour>-<ver>.tar.zst), on a URL or a path on the builder.
  - The download is skipped when the local image ID equals the C(.id) file, as Flatcar's CI does.
  - The engine is detected like the SDK does it (docker preferred; podman when docker is absent or is podman).
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common
  - kiln.flatcar._common.engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  sdk_version:
    description:
      - SDK version, e.g. V(4593.2.5) or V(4799.0.0+nightly-20260821-2100). Defaults to C(FLATCAR_SDK_VERSION) of O(scripts_dir)'s version.txt.
    type: str
  scripts_dir:
    description: Scripts checkout whose version.txt names the SDK version (used when O(sdk_version) is not given).
    type: path
  flavour:
    description: SDK flavour; V(arm64) means "set up to build arm64 images on amd64 hosts".
    type: str
    default: all
    choices: [all, amd64, arm64]
  source:
    description: Where the image comes from.
    type: str
    default: registry
    choices: [registry, cache]
  sdk_registry:
    description:
      - Repository prefix of the SDK images; the image is named, pulled, loaded and tagged as
        C(<sdk_registry>/flatcar-sdk-<flavour>:<SDK version>).
      - With O(source=cache) and a prefix other than C(ghcr.io/flatcar), the tarball (which holds the upstream
        name) is loaded and then tagged with this name. The SDK stage modules take the same O(sdk_registry) and
        run C(run_sdk_container -C <image>) with it.
      - Lowercase C(host[:port]/path) without a tag.
    type: str
    default: ghcr.io/flatcar
    aliases: [registry]
  cache:
    description:
      - Base URL (V(https://...), V(http://...)) or absolute path of a build cache holding C(containers/<ver>/...).
      - Required with O(source=cache).
    type: str
  download_dir:
    description: Where a tarball from a cache URL is downloaded to on the builder before loading (removed afterwards).
    type: path
    default: /var/tmp
  force:
    description: Pull or load even when the local image is current.
    type: bool
    default: false
  timeout:
    description: Timeout in seconds for HTTP requests to the cache.
    type: int
    default: 60
  engine_api:
    description:
      - How kiln talks to the engine about images.
      - V(sdk) the Docker SDK for Python (C(python3-docker) on the builder) - image inspect through the API and a
        cached tarball streamed by C(zstd -dc) into the daemon's image load, without a shell pipeline.
      - V(cli) the engine's command line (C(image inspect), C(zstd -dc | <engine> load)); podman always takes it.
      - V(auto) the SDK when the engine is Docker, the SDK is installed and the daemon answers it; else the CLI.
    type: str
    default: auto
    choices: [auto, sdk, cli]
"""

EXAMPLES = r"""
- name: SDK image from the build cache of the fleet
  kiln.flatcar.sdk_image:
    scripts_dir: /var/lib/kiln/scripts
    flavour: all
    source: cache
    cache: http://cache.example.internal/

- name: SDK image from ghcr.io
  kiln.flatcar.sdk_image:
    sdk_version: 4593.2.5
    flavour: amd64
"""

RETURN = r"""
image:
  description: The SDK image.
  returned: success
  type: dict
  contains:
    ref:
      description: Image reference.
      type: str
      sample: ghcr.io/flatcar/flatcar-sdk-all:4593.2.5
    id:
      description: Image ID after the module ran (null in check mode when it would be fetched).
      type: str
engine:
  description: Container engine used (V(docker) or V(podman)).
  returned: success
  type: str
engine_api:
  description: How the engine was reached (V(sdk) the Docker SDK, V(cli) the engine's command line).
  returned: success
  type: str
source:
  description: Where the image came from, or V(local) when it was already current.
  returned: success
  type: str
expected_id:
  description: The ID the cache's C(.id) file names (source=cache).
  returned: when source is cache
  type: str
log_path:
  description: Log of the pull or load.
  returned: success
  type: str
"""

import os
import shutil
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule
from ansible.module_utils.urls import fetch_url

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import deprecated, detect_engine, engine_args
from ansible_collections.kiln.flatcar.plugins.module_utils._engine import EngineImages, engine_api_args
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import sdk_image_ref
from ansible_collections.kiln.flatcar.plugins.module_utils._version import VERSIONFILE, FlatcarVersion, VersionError, read_versionfile


def _same_id(a, b):
    """Image IDs compare with or without the 'sha256:' prefix (.id files are written both ways)."""
    def norm(x):
        return (x or "").strip().split(":", 1)[-1]
    return bool(a) and bool(b) and norm(a) == norm(b)


def _is_url(text):
    return text.startswith(("http://", "https://"))


class SdkImage:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.sdk_version = self._sdk_version()
        self.flavour = p["flavour"]
        self.registry = _validate.check(module, _validate.registry, p["sdk_registry"])
        self.ref = sdk_image_ref(self.flavour, self.sdk_version.version, self.registry)
        self.upstream_ref = sdk_image_ref(self.flavour, self.sdk_version.version)
        log_dir = os.path.join(os.path.abspath(p["scripts_dir"]), "__build__", "images", "kiln", "logs") if p["scripts_dir"] else "/var/tmp"
        # check mode writes nothing, not even the log directory
        log_path = os.devnull if module.check_mode else os.path.join(log_dir, "sdk-image-%s.log" % self.flavour)
        self.runner = Runner(module, log_path=log_path, fail_extra={"stage": "sdk"})
        self.engine, self.engine_argv = detect_engine(module, p["engine"])
        self.images = EngineImages(module, self.runner, self.engine, self.engine_argv, p["engine_api"])
        self.name = "flatcar-sdk-%s-%s" % (self.flavour, self.sdk_version.docker_vernum)

    def _sdk_version(self):
        p = self.module.params
        try:
            if p["sdk_version"]:
                return FlatcarVersion.parse(p["sdk_version"], "SDK version")
            if not p["scripts_dir"]:
                self.module.fail_json(msg="give sdk_version or scripts_dir (whose version.txt names the SDK version)")
            values = read_versionfile(os.path.join(p["scripts_dir"], VERSIONFILE))
            return FlatcarVersion.parse(values.get("FLATCAR_SDK_VERSION"), "FLATCAR_SDK_VERSION in version.txt")
        except VersionError as exc:
            self.module.fail_json(msg=str(exc))
        return None

    def cache_paths(self):
        base = self.module.params["cache"].rstrip("/")
        sub = "containers/%s/%s" % (self.sdk_version.docker_vernum, self.name)
        return base + "/" + sub + ".tar.zst", base + "/" + sub + ".id"

    def read_text(self, location):
        if _is_url(location):
            resp, info = fetch_url(self.module, location, timeout=self.module.params["timeout"])
            if info.get("status") != 200 or resp is None:
                self.module.fail_json(msg="cannot fetch %s (HTTP %s): is the SDK %s in the cache?" % (location, info.get("status"), self.sdk_version.version))
            return resp.read().decode("utf-8", "replace")
        try:
            with open(location, "r", encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            self.module.fail_json(msg="cannot read %s: %s (is the SDK %s in the cache?)" % (location, exc.strerror, self.sdk_version.version))
        return None

    def download(self, url, dest):
        resp, info = fetch_url(self.module, url, timeout=self.module.params["timeout"])
        if info.get("status") != 200 or resp is None:
            self.module.fail_json(msg="cannot download %s (HTTP %s)" % (url, info.get("status")))
        with open(dest, "wb") as fh:
            shutil.copyfileobj(resp, fh, 4 * 1024 * 1024)

    def run(self):
        p = self.module.params
        before = self.images.image_id(self.ref)
        result = dict(engine=self.engine, engine_api=self.images.path, log_path=self.runner.log_path)
        if p["source"] == "cache":
            if not p["cache"]:
                self.module.fail_json(msg="source=cache needs cache: a URL or path of the build cache")
            tar, idfile = self.cache_paths()
            expected = self.read_text(idfile).strip()
            result["expected_id"] = expected
            if _same_id(before, expected) and not p["force"]:
                return dict(result, changed=False, source="local", image=dict(ref=self.ref, id=before))
            if self.module.check_mode:
                return dict(result, changed=True, source="cache", image=dict(ref=self.ref, id=None))
            self.load(tar)
            after = self.images.image_id(self.ref)
            if after is None and self.ref != self.upstream_ref:
                # the ci-automation tarball holds the upstream name: give the loaded image ours
                self.images.tag(self.upstream_ref, self.ref)
                after = self.images.image_id(self.ref)
            if not _same_id(after, expected):
                self.runner.fail("loaded SDK image %s has ID %s but the cache's .id file says %s: the cache is inconsistent, "
                                 "rebuild the tarball" % (self.ref, after, expected))
            return dict(result, changed=after != before, source="cache", image=dict(ref=self.ref, id=after))
        # registry
        if before and not p["force"]:
            return dict(result, changed=False, source="local", image=dict(ref=self.ref, id=before))
        if self.module.check_mode:
            return dict(result, changed=True, source="registry", image=dict(ref=self.ref, id=None))
        self.runner.run(self.engine_argv + ["pull", self.ref],
                        msg="pulling %s failed: check registry access, or use source: cache" % self.ref)
        after = self.images.image_id(self.ref)
        return dict(result, changed=after != before, source="registry", image=dict(ref=self.ref, id=after))

    def load(self, tar):
        if not self.module.get_bin_path("zstd"):
            self.module.fail_json(msg="zstd not found on the builder: install it to load SDK tarballs from the cache")
        tmpdir = None
        try:
            if _is_url(tar):
                tmpdir = tempfile.mkdtemp(prefix="kiln-sdk-", dir=self.module.params["download_dir"])
                local = os.path.join(tmpdir, os.path.basename(tar))
                self.runner.note("downloading %s" % tar)
                self.download(tar, local)
            else:
                local = tar
                if not os.path.isfile(local):
                    self.module.fail_json(msg="SDK tarball %s not found in the cache" % local)
            self.images.load_zstd(local, os.path.basename(local))
        finally:
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sdk_version=dict(type="str"),
            scripts_dir=dict(type="path"),
            flavour=dict(type="str", default="all", choices=["all", "amd64", "arm64"]),
            source=dict(type="str", default="registry", choices=["registry", "cache"]),
            sdk_registry=dict(type="str", default="ghcr.io/flatcar", aliases=["registry"], deprecated_aliases=deprecated("registry")),
            cache=dict(type="str"),
            download_dir=dict(type="path", default="/var/tmp"),
            force=dict(type="bool", default=False),
            timeout=dict(type="int", default=60),
            **dict(engine_args(), **engine_api_args())
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["sdk_version"]:
        _validate.check(module, _validate.version, p["sdk_version"], "SDK version")
    if p["cache"] and _is_url(p["cache"]):
        _validate.check(module, _validate.url, p["cache"], "cache")
    elif p["cache"] and not os.path.isabs(p["cache"]):
        module.fail_json(msg="cache %r is neither an http(s) URL nor an absolute path" % p["cache"])
    module.exit_json(**SdkImage(module).run())


if __name__ == "__main__":
    main()
