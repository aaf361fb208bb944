# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""How kiln talks to the container engine about images.

* Docker with the Docker SDK for Python installed on the host (``python3-docker``): the engine API. Image
  inspection is one API call instead of a CLI process whose output is parsed, and a cached SDK tarball is
  decompressed by ``zstd`` and streamed into ``POST /images/load`` in 1 MiB chunks: no shell pipeline, no
  temporary file, constant memory, and the daemon's own error message when the tarball is bad.
* Podman, or Docker without the SDK: the engine's CLI through the one runner (``image inspect``,
  ``zstd -dc | <engine> load``). Podman's Docker-compatible API is not used: its CLI is always there.

``engine_api`` (auto / sdk / cli) chooses; ``auto`` takes the SDK when it is importable and the daemon answers.
"""

from __future__ import annotations

import json

from ansible_collections.kiln.flatcar.plugins.module_utils._sdk import image_id

try:
    import docker as docker_sdk
    from docker import errors as docker_errors
    from docker.utils import kwargs_from_env
    HAS_DOCKER_SDK = True
except ImportError:  # the builder has no python3-docker: the CLI path serves
    docker_sdk = docker_errors = kwargs_from_env = None
    HAS_DOCKER_SDK = False

API_CHOICES = ("auto", "sdk", "cli")
CHUNK = 1024 * 1024

# A fixed script; the file and engine arrive as positional parameters, never interpolated.
LOAD_SCRIPT = 'set -o pipefail 2>/dev/null; zstd -dc -- "$1" | "$2" load'


def engine_api_args():
    """argument_spec piece: how to reach the engine (documented in the modules that take it)."""
    return dict(engine_api=dict(type="str", default="auto", choices=list(API_CHOICES)))


def _one_line(exc):
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())[:300]


class EngineImages:
    """Image inspect and load for one module run, through the Docker SDK or the engine CLI."""

    def __init__(self, module, runner, engine, engine_argv, api="auto", timeout=300):
        self.module = module
        self.runner = runner
        self.engine_argv = list(engine_argv)
        self.client = None
        self.reason = ""
        if api != "cli":
            self.client, self.reason = self._connect(engine, timeout)
        if api == "sdk" and self.client is None:
            module.fail_json(msg="engine_api=sdk but the Docker SDK cannot be used: %s (install python3-docker, or set engine_api: auto)" % self.reason)
        self.path = "sdk" if self.client is not None else "cli"

    @staticmethod
    def _connect(engine, timeout):
        if engine != "docker":
            return None, "the engine is %s (kiln uses its CLI)" % engine
        if not HAS_DOCKER_SDK:
            return None, "the Docker SDK for Python is not installed"
        try:
            client = docker_sdk.APIClient(version="auto", timeout=timeout, **kwargs_from_env())
            client.ping()
            return client, ""
        except Exception as exc:  # pylint: disable=broad-except
            return None, "the Docker daemon does not answer through the SDK (%s)" % _one_line(exc)

    def image_id(self, ref):
        """The image's ID (``sha256:...``), or None when the engine does not have it."""
        if self.client is None:
            return image_id(self.runner, self.engine_argv, ref)
        try:
            return self.client.inspect_image(ref).get("Id") or None
        except docker_errors.NotFound:
            return None
        except docker_errors.APIError as exc:
            self.runner.fail("inspecting %s through the Docker API failed: %s" % (ref, _one_line(exc)))
        return None

    def tag(self, source, target):
        """Give the image ``source`` (a local name) the name ``target`` (``repository:tag``)."""
        if self.client is None:
            self.runner.run(self.engine_argv + ["tag", source, target], msg="tagging %s as %s failed" % (source, target))
            return
        repository, _sep, tag = target.rpartition(":")
        try:
            self.client.tag(source, repository, tag)
        except docker_errors.APIError as exc:
            self.runner.fail("tagging %s as %s through the Docker API failed: %s" % (source, target, _one_line(exc)))

    def load_zstd(self, path, label):
        """Load a ``docker save | zstd`` tarball at ``path`` into the engine."""
        if self.client is None:
            self.runner.run(["/bin/bash", "-c", LOAD_SCRIPT, "kiln-load", path, self.engine_argv[0]],
                            msg="loading %s into %s failed" % (label, self.engine_argv[0]))
            return
        with self.runner.stdout_stream(["zstd", "-dc", "--", path], msg="decompressing %s failed (truncated or not zstd?)" % label) as pipe:
            try:
                for event in self.client.load_image(iter(lambda: pipe.read(CHUNK), b"")):
                    self._load_event(event, label)
            except docker_errors.APIError as exc:
                self.runner.fail("the Docker daemon refused %s: %s" % (label, _one_line(exc)))

    def _load_event(self, event, label):
        if not isinstance(event, dict):
            return
        if event.get("error") or event.get("errorDetail"):
            detail = event.get("error") or json.dumps(event.get("errorDetail"))
            self.runner.fail("the Docker daemon could not load %s: %s" % (label, " ".join(str(detail).split())))
        if event.get("stream"):
            self.runner.note(event["stream"].strip())
