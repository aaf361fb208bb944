# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""What every SDK build stage shares: locating the checkout, the pinned version, the warm SDK
container, the build record, the stage log, and the skip/run/record cycle."""

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import board_args, detect_engine, engine_args, validate_common
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BOARDS, describe_output
from ansible_collections.kiln.flatcar.plugins.module_utils._contract import ScriptsContract, command_problems, environment_problems
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import SDK_ENV_PASSTHROUGH, Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._sdkargv import CONTAINER_ROOT, CONTAINER_SCRIPTS, container_path, sdk_command
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import LocateError, Stage, locate
from ansible_collections.kiln.flatcar.plugins.module_utils._validate import check
from ansible_collections.kiln.flatcar.plugins.module_utils._version import (
    CHANNELS,
    VERSIONFILE,
    FlatcarVersion,
    VersionError,
    read_versionfile,
)

REGISTRY = "ghcr.io/flatcar"
FLAVOURS = ("all", "amd64", "arm64")
CHECKOUT_STATE = "checkout.json"

# argument_spec pieces every SDK stage module takes (doc fragment kiln.flatcar._sdk); board and engine are the
# shared fragments of _argspec (board choices from _record.BOARDS, one detect_engine)
COMMON_ARGS = dict(
    scripts_dir=dict(type="path", required=True),
    flavour=dict(type="str", default="all", choices=list(FLAVOURS)),
    container_name=dict(type="str"),
    force=dict(type="bool", default=False),
    environment=dict(type="dict", default={}),
    sdk_registry=dict(type="str", default=REGISTRY),
)
COMMON_ARGS.update(board_args(required=True))
COMMON_ARGS.update(engine_args())


def board_arch(board):
    return BOARDS.get(board)


def check_board(module, board):
    check(module, _validate.board, board)


def sdk_image_ref(flavour, sdk_version, registry=REGISTRY):
    return "%s/flatcar-sdk-%s:%s" % ((registry or REGISTRY).rstrip("/"), flavour, FlatcarVersion.parse(sdk_version, "SDK version").docker_vernum)


def custom_sdk_image(flavour, sdk_version, registry):
    """The image run_sdk_container must be told with ``-C``: None under the default registry (its own name)."""
    if not registry or registry.rstrip("/") == REGISTRY:
        return None
    return sdk_image_ref(flavour, sdk_version, registry)


def default_container_name(flavour, sdk_version, os_version):
    """run_sdk_container's default name, pinned so one warm container serves every stage."""
    sdk = FlatcarVersion.parse(sdk_version, "SDK version").docker_vernum
    osv = FlatcarVersion.parse(os_version).docker_vernum
    return "flatcar-sdk-%s-%s_os-%s" % (flavour, sdk, osv)


def image_id(runner, engine_argv, ref):
    rc, out, _err = runner.capture(engine_argv + ["image", "inspect", "--format", "{{.Id}}", ref])
    return out.strip() if rc == 0 and out.strip() else None


def container_id(runner, engine_argv, name):
    rc, out, _err = runner.capture(engine_argv + ["container", "inspect", "--format", "{{.Id}}", name])
    return out.strip() if rc == 0 and out.strip() else None


class SdkStage:
    """One SDK build stage run by a module, on the stage engine (_stage.Stage, docs/design.md "The stage cycle"):
    preflight, then ``with stage:`` (open the record: locked, or read-only in check mode) around the module
    body, whose ``run`` skips when current, reports in check mode, else begins, executes and finishes.
    Any failure or exception inside the ``with`` marks the stage failed and releases the lock."""

    stage = None  # set by subclasses or the constructor

    def __init__(self, module, stage):
        self.module = module
        self.stage = stage
        p = module.params
        self.board = p["board"]
        check_board(module, self.board)
        validate_common(module)
        self.registry = check(module, _validate.registry, p.get("sdk_registry") or REGISTRY)
        self.scripts_dir = os.path.abspath(p["scripts_dir"])
        if not os.path.isfile(os.path.join(self.scripts_dir, "run_sdk_container")):
            module.fail_json(
                msg="%s is not a Flatcar scripts checkout (no run_sdk_container): run kiln.flatcar.sdk_checkout first "
                "or fix scripts_dir" % self.scripts_dir
            )
        try:
            self.versionfile = read_versionfile(os.path.join(self.scripts_dir, VERSIONFILE))
            self.version = FlatcarVersion.parse(self.versionfile["FLATCAR_VERSION"], "FLATCAR_VERSION in version.txt")
            self.sdk_version = FlatcarVersion.parse(self.versionfile.get("FLATCAR_SDK_VERSION"), "FLATCAR_SDK_VERSION in version.txt")
        except VersionError as exc:
            module.fail_json(msg=str(exc))
        self.build_id = self.versionfile.get("FLATCAR_BUILD_ID", self.version.build_id)
        try:
            self.location = locate(scripts_dir=self.scripts_dir, board=self.board, version=self.version.version)
        except LocateError as exc:
            module.fail_json(msg=str(exc))
        self.build_root = self.location.build_root
        self.state_dir = self.location.state_dir
        self.record_path = self.location.record_path
        self.log_path = self.location.log_path(stage)
        self.flavour = p.get("flavour") or "all"
        self.container_name = p.get("container_name") or default_container_name(self.flavour, self.sdk_version.version, self.version.version)
        self.record = None
        self.cycle = None
        self._contract = None
        self._preflighted = False
        # The build id is pinned once in version.txt (Flatcar#2041) and every step reads it from there
        # (run_sdk_container -U never rewrites the file). It is NOT exported: with FLATCAR_BUILD_ID in the
        # environment common.sh ignores version.txt's FLATCAR_BUILD_ID, FLATCAR_DEV_BUILDS and
        # FLATCAR_DEV_BUILDS_SDK (flatcar/scripts common.sh, "The build id may be provided externally"), so the
        # binary package cache written there by sdk_checkout would never reach setup_board's make.conf.
        # Only a version.txt without the line gets it from the environment. An empty build id means an
        # official build, which the SDK only makes with COREOS_OFFICIAL=1.
        # A stray FLATCAR_BUILD_ID in the module's own environment is dropped (None) for the same reason.
        env = {"FLATCAR_BUILD_ID": None}
        if self.build_id and "FLATCAR_BUILD_ID" not in self.versionfile:
            env["FLATCAR_BUILD_ID"] = self.build_id
        if not self.build_id:
            env["COREOS_OFFICIAL"] = "1"
        for key, value in (p.get("environment") or {}).items():
            if key not in SDK_ENV_PASSTHROUGH and key not in ("TMPDIR",):
                module.fail_json(
                    msg="environment variable %s does not reach the SDK container: use one of %s" % (key, ", ".join(SDK_ENV_PASSTHROUGH))
                )
            env[key] = value
        # FLATCAR_DEV_BUILDS as common.sh will see it (None: the SDK's default server)
        self.dev_builds = None if env.get("FLATCAR_BUILD_ID") else (self.versionfile.get("FLATCAR_DEV_BUILDS") or None)
        # check mode writes no log (and so makes no logs/ directory), as Stage.runner() does
        self.runner = Runner(
            module,
            log_path=os.devnull if module.check_mode else self.log_path,
            env_allow=SDK_ENV_PASSTHROUGH,
            env=env,
            cwd=self.scripts_dir,
            fail_extra={"stage": stage, "record_path": self.record_path, "log_path": self.log_path},
        )
        self.engine, self.engine_argv = detect_engine(module, p.get("engine") or "auto")

    # -- helpers -----------------------------------------------------------------------------
    def host_to_container(self, path, what="path"):
        """The container path of a host path inside the checkout (run_sdk_container mounts the build root
        at CONTAINER_ROOT and the checkout at CONTAINER_SCRIPTS); anything else fails with one line."""
        inside = container_path(path, self.scripts_dir)
        if inside is None:
            self.module.fail_json(msg="%s %s is not visible in the SDK container: run_sdk_container mounts only the scripts checkout %s "
                                  "(as %s) and its build root (as %s); put the file inside the checkout"
                                  % (what, path, self.scripts_dir, CONTAINER_SCRIPTS, CONTAINER_ROOT))
        return inside

    def container_to_host(self, path):
        if not path.startswith(CONTAINER_ROOT):
            return path
        return os.path.join(self.build_root, path[len(CONTAINER_ROOT):].lstrip("/"))

    def sdk_command(self, argv):
        """``run_sdk_container -U`` with the pinned container name: version.txt is never rewritten."""
        return sdk_command(self.container_name, self.flavour, self.sdk_version.version, argv,
                           image=custom_sdk_image(self.flavour, self.sdk_version.version, self.registry))

    # -- preflight ---------------------------------------------------------------------------
    def scripts_ref(self):
        """The checkout's name for messages: ``git describe --tags``, else FLATCAR_VERSION of version.txt."""
        rc, out, _err = self.runner.capture(["git", "describe", "--tags"])
        return out.strip() if rc == 0 and out.strip() else self.version.version

    def preflight(self, commands, sudo=False):
        """Refuse, in seconds and in check mode too, what the checked-out scripts do not support.

        ``commands`` are the SDK argvs (as passed to sdk_command) this stage will run. They are checked
        with the shared parser (_contract.py) against the scripts at scripts_dir: every run_sdk_container
        option, script flag and its type, build_image type, image_to_vm.sh format, compression format,
        and every environment variable kiln hands to the container. The parse is cached on this stage
        object only, so a changed checkout is always read afresh."""
        if self._contract is None:
            self._contract = ScriptsContract(self.scripts_dir)
        problems = []
        for argv in commands:
            problems.extend(command_problems(self._contract, self.sdk_command(argv)))
        names = sorted(k for k, v in self.runner.env.items() if v is not None and k != "TMPDIR")
        problems.extend(environment_problems(self._contract, names, sudo=sudo))
        if problems:
            unique = []
            for item in problems:
                if item not in unique:
                    unique.append(item)
            self.module.fail_json(msg="scripts at %s have no %s" % (self.scripts_ref(), "; no ".join(unique)),
                                  stage=self.stage, scripts_dir=self.scripts_dir)
        self._preflighted = True

    def scripts_commit(self):
        rc, out, _err = self.runner.capture(["git", "rev-parse", "HEAD"])
        return out.strip() if rc == 0 else None

    def sdk_image(self):
        ref = sdk_image_ref(self.flavour, self.sdk_version.version, self.registry)
        return {"ref": ref, "id": image_id(self.runner, self.engine_argv, ref)}

    def base_inputs(self, previous=None):
        inputs = {
            "stage": self.stage,
            "board": self.board,
            "scripts_commit": self.scripts_commit(),
            "version": {
                "FLATCAR_VERSION": self.version.version,
                "FLATCAR_VERSION_ID": self.version.version_id,
                "FLATCAR_BUILD_ID": self.build_id,
                "FLATCAR_SDK_VERSION": self.sdk_version.version,
            },
            "sdk_image": self.sdk_image(),
            "environment": dict(sorted((self.module.params.get("environment") or {}).items())),
        }
        if previous:
            inputs["previous_stage"] = {"name": previous, "result_digest": self.cycle.result_digest(previous) if self.cycle else None}
        return inputs

    def version_fields(self):
        return {
            "FLATCAR_VERSION": self.version.version,
            "FLATCAR_VERSION_ID": self.version.version_id,
            "FLATCAR_BUILD_ID": self.build_id,
            "FLATCAR_SDK_VERSION": self.sdk_version.version,
            "channel": self.channel(),
            "official": self.version.official,
        }

    def channel(self):
        """The channel sdk_checkout parsed from the tag or version it pinned. version.txt cannot carry it
        (its FLATCAR_VERSION has no ``<channel>-`` prefix, so parsing that alone always gives 'developer')."""
        pinned = (self._checkout_state() or {}).get("version") or {}
        if pinned.get("FLATCAR_VERSION") == self.version.version and pinned.get("channel") in CHANNELS:
            return pinned["channel"]
        return self.version.channel

    def open_record(self):
        """Open the record through the stage engine: locked (created if missing), or read-only in check mode."""
        self.cycle = Stage(self.module, self.stage, self.location, create=True, version_fields=self.version_fields(),
                           log_path=self.log_path)
        self.cycle.open()
        self.record = self.cycle.record
        if not self.module.check_mode:
            self.record.set("build_root", self.build_root)
            source = self._checkout_state()
            if source:
                self.record.set("source", source)
        return self.record

    def __enter__(self):
        self.open_record()
        return self

    def __exit__(self, exc_type, exc, tb):
        """Leaving the module body: unlock; an exception fails the stage with one line (Stage.__exit__)."""
        if self.cycle is None:
            return False
        return self.cycle.__exit__(exc_type, exc, tb)

    def _checkout_state(self):
        path = os.path.join(self.build_root, "kiln", CHECKOUT_STATE)
        try:
            with open(path, "r", encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def require_stage(self, name, hint):
        """The entry of an earlier stage that must have passed (else the stage fails with one line ending in ``hint``)."""
        return self.cycle.require(name, hint)

    def check_disk(self, path, need_bytes):
        try:
            free = shutil.disk_usage(path).free
        except OSError:
            return
        if free < need_bytes:
            self.runner.fail(
                "only %d MiB free on %s, %s needs at least %d MiB: free some space (old builds under __build__) and rerun"
                % (free // 1048576, path, self.stage, need_bytes // 1048576)
            )

    # -- the cycle ---------------------------------------------------------------------------
    def run(self, inputs, execute, extra_check=None, result_extra=None):
        """Skip if current; in check mode report (nothing written); else begin, execute() -> (outputs, details), finish.

        Call it inside ``with stage:`` (the record is open); it releases the lock on every way out."""
        module = self.module
        if not self._preflighted:
            module.fail_json(msg="kiln bug: stage %s reached its run without a preflight of its SDK commands" % self.stage)
        cycle = self.cycle
        current, reason = cycle.is_current(inputs, extra_check)
        result = dict(
            stage=self.stage,
            board=self.board,
            version=self.version_fields(),
            record_path=self.record_path,
            log_path=self.log_path,
            input_digest=cycle.input_digest,
            container_name=self.container_name,
        )
        if result_extra:
            result.update(result_extra)
        if current:
            entry = cycle.entry()
            cycle.close()
            result.update(changed=False, reason=reason, outputs=entry.get("outputs", []), details=entry.get("details", {}))
            return result
        if module.check_mode:
            cycle.close()
            result.update(changed=True, reason=reason, outputs=[], details={})
            return result
        cycle.begin(log_path=self.log_path)
        self.runner.note("stage %s for %s %s (%s)" % (self.stage, self.board, self.version.version, reason))
        outputs, details = execute()
        entry = cycle.finish(outputs, details)
        result.update(changed=True, reason=reason, outputs=entry["outputs"], details=entry["details"], duration_s=entry["duration_s"])
        return result

    def describe(self, path, role):
        return describe_output(self.build_root, path, role)
