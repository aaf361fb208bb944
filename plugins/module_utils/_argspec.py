# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""Argument-spec fragments: one option name per concept across every kiln module.

Each function returns a fresh ``dict`` of options to merge into a module's ``argument_spec``; the matching
documentation is in ``plugins/doc_fragments/`` (named next to each function). Values are validated by
``_validate`` (one function per kind); ``validate_common(module)`` applies the validators of these fragments.

The names follow Ansible's own connection variables (``ansible_user``, ``ansible_port``,
``ansible_ssh_private_key_file``, ``ansible_ssh_extra_args``) with an ``ssh_`` prefix:

==========================  ================================================================  =====================
concept                     name                                                              old names (deprecated)
==========================  ================================================================  =====================
login on the other host     ``ssh_user``                                                      dest_user, cache_user, mirror_user
port of the other host      ``ssh_port``                                                      mirror_port
private key file (a path)   ``ssh_private_key_file``                                          ssh_key
private key text (secret)   ``ssh_private_key`` (no_log)
ssh client config           ``ssh_config``
extra ssh arguments         ``ssh_extra_args`` (a list of argv words)                         ssh_options (-o values)
rsync on the other host     ``rsync_path`` (rsync ``--rsync-path``)                           remote_rsync_path
board                       ``board``, choices ``sorted(_record.BOARDS)``
container engine            ``engine`` (auto/docker/podman, ``detect_engine``)
version                     ``version`` (``_validate.version``)                               image_version (kola)
scripts checkout            ``scripts_dir``                                                   dest (sdk_checkout)
SDK image repository        ``sdk_registry`` (``_validate.registry``)                         registry (sdk_image)
build record                ``record_path`` | ``scripts_dir`` + ``board`` | ``build_root`` + ``board`` + ``version``
==========================  ================================================================  =====================
"""

from __future__ import annotations

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._record import BOARDS

COLLECTION = "kiln.flatcar"
DEPRECATION_VERSION = "2.0.0"

# every ssh/remote option name a kiln module may have (tests/unit/test_option_names.py holds modules to it)
SSH_NAMES = ("ssh_user", "ssh_port", "ssh_private_key_file", "ssh_private_key", "ssh_config", "ssh_extra_args",
             "ssh_known_hosts_file", "ssh_host_key_checking")
REMOTE_NAMES = ("rsync_path", "remote_python")
# deprecated names and the name that replaced them
RENAMED = {
    "dest_user": "ssh_user",
    "cache_user": "ssh_user",
    "mirror_user": "ssh_user",
    "mirror_port": "ssh_port",
    "ssh_key": "ssh_private_key_file",
    "ssh_options": "ssh_extra_args",
    "remote_rsync_path": "rsync_path",
    "rsync_executable": None,  # stays (the local rsync); listed so the name check knows it
    "image_version": "version",
    "dest": "scripts_dir",
    "registry": "sdk_registry",
}
ENGINES = ("auto", "docker", "podman")


def deprecated(*names):
    """``deprecated_aliases`` entries for old option names (removed in 2.0.0)."""
    return [dict(name=name, version=DEPRECATION_VERSION, collection_name=COLLECTION) for name in names]


def renamed(spec, new, *old):
    """Keep ``old`` names of option ``new`` working as deprecated aliases (documented under ``aliases``)."""
    opt = spec[new]
    opt["aliases"] = list(opt.get("aliases", [])) + list(old)
    opt["deprecated_aliases"] = list(opt.get("deprecated_aliases", [])) + deprecated(*old)
    return spec


# -- board (doc fragment kiln.flatcar._common.board / board_required) --------------------------------------
def board_args(required=False):
    return dict(board=dict(type="str", required=required, choices=sorted(BOARDS)))


# -- container engine (kiln.flatcar._common.engine) -------------------------------------------------------
def engine_args():
    return dict(engine=dict(type="str", default="auto", choices=list(ENGINES)))


def detect_engine(module, wanted="auto"):
    """``(name, argv)`` of the container engine: docker or podman, decided like the SDK does
    (``sdk_lib/sdk_container_common.sh``: podman when ``docker`` is podman's docker shim). The one engine probe of
    every kiln module (SDK stages, sdk_image, binpkg_cache, kola)."""
    docker = module.get_bin_path("docker")
    podman = module.get_bin_path("podman")
    if wanted == "docker":
        if not docker:
            module.fail_json(msg="container engine docker not found on this host: install docker (or set engine: podman)")
        return "docker", [docker]
    if wanted == "podman":
        if not podman:
            module.fail_json(msg="container engine podman not found on this host: install podman (or set engine: docker)")
        return "podman", [podman]
    if podman and docker:
        _rc, out, _err = module.run_command([docker, "help"])
        if "podman" in (out or "").lower():
            return "podman", [podman]
        return "docker", [docker]
    if docker:
        return "docker", [docker]
    if podman:
        return "podman", [podman]
    module.fail_json(msg="no container engine found on this host: install docker or podman")
    return None  # not reached


# -- version (kiln.flatcar._common.version / version_required) --------------------------------------------
def version_args(required=False, aliases=()):
    spec = dict(version=dict(type="str", required=required))
    if aliases:
        renamed(spec, "version", *aliases)
    return spec


# -- build record location (kiln.flatcar._common.record) --------------------------------------------------
def record_args():
    """``record_path`` or ``build_root`` + ``board`` + ``version`` (with ``board_args``/``version_args``)."""
    return dict(record_path=dict(type="path"), build_root=dict(type="path"))


# -- mods: declared changes to the scripts checkout (kiln.flatcar._mods; validated by _mods.validate_mods) ----
def mods_args():
    return dict(mods=dict(type="list", elements="dict", default=[]))


# -- ssh to another host (kiln.flatcar._ssh) --------------------------------------------------------------
def ssh_args(user_default=None, host_key_checking=None):
    """The one set of ssh options. Hosts keep their role's name (``dest_host``, ``cache_host``, ``mirror_host``)."""
    return dict(
        ssh_user=dict(type="str", default=user_default),
        ssh_port=dict(type="int"),
        ssh_private_key_file=dict(type="path", aliases=["ssh_key"], deprecated_aliases=deprecated("ssh_key")),
        ssh_private_key=dict(type="str", no_log=True),
        ssh_config=dict(type="path"),
        ssh_extra_args=dict(type="list", elements="str", default=[]),
        ssh_known_hosts_file=dict(type="path"),
        ssh_host_key_checking=dict(type="str", choices=["yes", "accept-new", "no"], default=host_key_checking),
        # the former list of -o values; each becomes ``-o <value>`` (an alias cannot carry that meaning)
        ssh_options=dict(type="list", elements="str", removed_in_version=DEPRECATION_VERSION, removed_from_collection=COLLECTION),
    )


SSH_MUTUALLY_EXCLUSIVE = [("ssh_private_key", "ssh_private_key_file")]


# -- programs on the other host (kiln.flatcar._ssh.remote) ------------------------------------------------
def remote_args():
    return dict(
        rsync_path=dict(type="str", default="rsync"),
        remote_python=dict(type="str", default="python3"),
    )


def validate_common(module):
    """Validate the values of the shared fragments present in ``module.params`` (one line on failure).

    ``board`` is checked by its choices; ``version`` is left to the module (request vs FLATCAR_VERSION)."""
    p = module.params
    try:
        if p.get("ssh_user"):
            _validate.user(p["ssh_user"])
        if p.get("ssh_port") is not None and not 0 < p["ssh_port"] < 65536:
            raise _validate.Invalid("ssh_port %r is not a TCP port" % p["ssh_port"])
        for value in p.get("ssh_options") or []:
            _validate.ssh_option(value, "ssh_options item")
        for key in ("rsync_path", "remote_python"):
            if key in p and p[key] is not None:
                _validate.command(p[key], key)
        if p.get("container_name"):
            _validate.container_name(p["container_name"])
    except _validate.Invalid as exc:
        module.fail_json(msg=str(exc))


def ssh_extra(params):
    """``ssh_extra_args`` plus the deprecated ``ssh_options`` as ``-o`` pairs."""
    out = list(params.get("ssh_extra_args") or [])
    for value in params.get("ssh_options") or []:
        out += ["-o", value]
    return out
