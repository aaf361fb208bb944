#!/usr/bin/python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: binpkg_cache
short_description: Push a board's binary packages from the warm SDK container to the fleet's build cache, or find them there
version_added: 0.1.0
description:
  - O(mode=push) runs B(on the builder) after C(kiln.flatcar.packages). It copies C(/build/<board>/var/lib/portage/pkgs)
    out of the warm SDK container (C(docker cp) / C(podman cp)) into a staging directory on the builder and sends it with
    C(rsync) over C(ssh) straight to the cache host's C(boards/<board>/<version>/pkgs/) (Flatcar's bincache layout);
    nothing goes through the Ansible controller. Packages go first and the C(Packages) index last, so a client never
    sees an index naming files that are not there yet. Nothing is sent when the cache already has the same index.
  - O(mode=pull) returns the binhost URL (C(<cache_url>/boards/<board>/<version>/pkgs/)) to give to
    C(kiln.flatcar.packages) as O(kiln.flatcar.packages#module:binhost), and whether the cache has an index there (a
    cache hit). The URL is returned on a miss too, so the packages stage's inputs do not change between runs.
  - Works with the cache role's restricted push account (rrsync, paths relative to the cache root, O(rrsync=true)) or with
    an unrestricted account (absolute O(cache_root)).
author:
  - kiln developers (@kiln-project)
extends_documentation_fragment:
  - kiln.flatcar._attributes
  - kiln.flatcar._attributes.actiongroup
  - kiln.flatcar._common
  - kiln.flatcar._common.board_required
  - kiln.flatcar._common.version_required
  - kiln.flatcar._common.engine
  - kiln.flatcar._ssh
  - kiln.flatcar._ssh.legacy
  - kiln.flatcar._ssh.remote
attributes:
  check_mode:
    support: full
    details: Compares the container's index with the cache's (through a private temporary directory); sends and creates nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  mode:
    description: V(push) sends the packages to the cache, V(pull) reports the binhost URL and whether it is a hit.
    type: str
    choices: [push, pull]
    default: pull
  version:
    description:
      - Version directory in the cache (C(boards/<board>/<version>/pkgs)), the FLATCAR_VERSION of the build.
  cache_url:
    description: HTTP(S) base URL of the cache as the builder reaches it (O(mode=pull)).
    type: str
  timeout:
    description: HTTP timeout in seconds (O(mode=pull)).
    type: int
    default: 30
  container_name:
    description: The warm SDK container holding C(/build/<board>) (O(mode=push)).
    type: str
  staging_dir:
    description: Directory on the builder the packages are copied to before they are sent (O(mode=push)).
    type: path
  cache_host:
    description: Address of the cache host as the builder reaches it (O(mode=push)).
    type: str
  ssh_user:
    description:
      - Push account on the cache host. The alias O(cache_user) is deprecated and will be removed in 2.0.0.
    default: kiln-cache
    aliases: [cache_user]
  cache_root:
    description:
      - Cache root on the cache host (absolute, plain characters). Ignored with O(rrsync=true), where paths are relative to
        the account's root.
    type: path
    default: /srv/kiln-cache
  rrsync:
    description:
      - The push account is restricted with rrsync (the cache role's default); paths are relative, O(rsync_path) and
        O(remote_python) are not used.
    type: bool
    default: false
  log_path:
    description: Log on the builder (O(mode=push)). Default C(<staging_dir>/../binpkg-push-<board>.log).
    type: path
notes:
  - The destination directory is created with a small Python program run over ssh (its path travels as JSON data, and it
    must resolve inside O(cache_root)); no remote shell command is built from option values.
"""

EXAMPLES = r"""
- name: Binhost of the fleet cache for this build
  kiln.flatcar.binpkg_cache:
    mode: pull
    board: amd64-usr
    version: 4593.2.5
    cache_url: http://cache.example.internal:8080
  register: binhost

- name: Publish the packages to the cache after the build
  kiln.flatcar.binpkg_cache:
    mode: push
    board: amd64-usr
    version: 4593.2.5
    container_name: flatcar-sdk-all-4593.2.5_os-4593.2.5
    staging_dir: /var/cache/kiln/binpkgs/amd64-usr
    cache_host: cache.example.internal
    ssh_user: kiln-cache
    rrsync: true
    ssh_private_key_file: /var/lib/kiln/.ssh/id_ed25519
"""

RETURN = r"""
changed:
  description: Whether packages were sent (push). Always false for pull.
  returned: always
  type: bool
binhost:
  description: Binhost URL for C(kiln.flatcar.packages).
  returned: when O(cache_url) is set
  type: str
hit:
  description: Whether the cache has a C(Packages) index for this board and version (pull), or already had this one (push).
  returned: always
  type: bool
packages_sha256:
  description: sha256 of the C(Packages) index (pushed, or found in the cache).
  returned: when known
  type: str
package_count:
  description: Number of binary package files pushed.
  returned: when O(mode=push)
  type: int
bytes:
  description: Total size of the pushed package directory.
  returned: when O(mode=push)
  type: int
dest:
  description: rsync destination on the cache host.
  returned: when O(mode=push)
  type: str
log_path:
  description: Push log on the builder.
  returned: when O(mode=push)
  type: str
"""

import hashlib
import os
import shutil
import tempfile

from ansible_collections.kiln.flatcar.plugins.module_utils._module import KilnModule as AnsibleModule
from ansible.module_utils.urls import fetch_url

from ansible_collections.kiln.flatcar.plugins.module_utils import _validate
from ansible_collections.kiln.flatcar.plugins.module_utils._argspec import (
    SSH_MUTUALLY_EXCLUSIVE,
    board_args,
    deprecated,
    detect_engine,
    engine_args,
    remote_args,
    ssh_args,
    validate_common,
    version_args,
)
from ansible_collections.kiln.flatcar.plugins.module_utils._hostxfer import remote_mkdir, remote_python, ssh_command, ssh_e, target
from ansible_collections.kiln.flatcar.plugins.module_utils._record import file_sha256
from ansible_collections.kiln.flatcar.plugins.module_utils._runner import Runner
from ansible_collections.kiln.flatcar.plugins.module_utils._safety import ExitCleanup
from ansible_collections.kiln.flatcar.plugins.module_utils._stage import guarded

REMOTE_INDEX = r'''
import hashlib, os
def main(p):
    try:
        with open(p["path"], "rb") as fh:
            return {"sha256": hashlib.sha256(fh.read()).hexdigest()}
    except OSError:
        return {"sha256": None}
'''

PKGDIR = "/build/%s/var/lib/portage/pkgs"


def sha256_file(path):
    try:
        return file_sha256(path)
    except OSError:
        return None


def pull(module):
    p = module.params
    if not p["cache_url"]:
        module.fail_json(msg="mode=pull needs cache_url: the HTTP base URL of the build cache")
    url = "%s/boards/%s/%s/pkgs/" % (p["cache_url"].rstrip("/"), p["board"], p["version"])
    resp, info = fetch_url(module, url + "Packages", timeout=p["timeout"])
    status = info.get("status")
    if status == 200 and resp is not None:
        data = resp.read()
        module.exit_json(changed=False, binhost=url, hit=True, packages_sha256=hashlib.sha256(data).hexdigest())
    if status in (403, 404, 410):
        module.exit_json(changed=False, binhost=url, hit=False)
    module.fail_json(msg="cannot reach the build cache at %s (HTTP %s: %s): check cache_url and that the cache's nginx runs"
                     % (url, status, info.get("msg")), binhost=url)


def remote_index(runner, ssh, dest, dest_dir, p, tmp):
    """sha256 of the cache's Packages index (None when it has none)."""
    if not p["rrsync"]:
        return remote_python(runner, ssh, dest, REMOTE_INDEX, {"path": os.path.join(dest_dir, "Packages")}, p["remote_python"],
                             msg="checking the cache index on %s failed" % dest)["sha256"]
    # rrsync accounts cannot run programs: fetch the index with rsync
    copy = os.path.join(tmp, "Packages.cache")
    rc, _out, _err = runner.capture(["rsync", "-e", ssh_e(ssh), "--", "%s:%s/Packages" % (dest, dest_dir), copy])
    return sha256_file(copy) if rc == 0 else None


def push(module, cleanup):
    p = module.params
    for name in ("container_name", "staging_dir", "cache_host"):
        if not p[name]:
            module.fail_json(msg="mode=push needs %s" % name)
    staging = p["staging_dir"]
    log_path = p["log_path"] or os.path.join(os.path.dirname(staging.rstrip("/")), "binpkg-push-%s.log" % p["board"])
    tmp = tempfile.mkdtemp(prefix="kiln-binpkg-")  # private (0700): probe copies, the ssh-agent socket
    cleanup.add(lambda: shutil.rmtree(tmp, ignore_errors=True))
    runner = Runner(module, log_path=os.devnull if module.check_mode else log_path)
    _engine, engine_argv = detect_engine(module, p["engine"])
    src = PKGDIR % p["board"]
    rel = "boards/%s/%s/pkgs" % (p["board"], p["version"])
    dest_dir = rel if p["rrsync"] else os.path.join(p["cache_root"], rel)
    dest = target(p, "cache_host")
    ssh, agent = ssh_command(runner, p, tmp)
    if ssh is None:
        runner.fail(agent)
    if agent is not None:
        cleanup.add(agent.close)
    result = dict(dest="%s:%s/" % (dest, dest_dir), log_path=log_path)

    # Compare indexes first: the container's Packages (small) with the cache's.
    probe = os.path.join(tmp, "Packages.container")
    rc, _out, err = runner.capture(engine_argv + ["cp", "%s:%s/Packages" % (p["container_name"], src), probe])
    if rc != 0:
        runner.fail("cannot read %s/Packages from container %s: %s (run kiln.flatcar.packages first)"
                    % (src, p["container_name"], ((err or "").strip().splitlines() or [""])[-1]))
    local_sha = sha256_file(probe)
    remote_sha = remote_index(runner, ssh, dest, dest_dir, p, tmp)
    if remote_sha and remote_sha == local_sha:
        module.exit_json(changed=False, hit=True, packages_sha256=local_sha, package_count=None, bytes=0, **result)
    if module.check_mode:
        module.exit_json(changed=True, hit=False, packages_sha256=local_sha, package_count=None, bytes=0, **result)
    send(module, runner, engine_argv, ssh, dest, dest_dir, result, local_sha)


def send(module, runner, engine_argv, ssh, dest, dest_dir, result, local_sha):
    """Copy the packages out of the container and rsync them: packages, then the index, then prune."""
    p = module.params
    src = PKGDIR % p["board"]
    os.makedirs(p["staging_dir"], exist_ok=True)
    work = os.path.join(p["staging_dir"], "pkgs")
    shutil.rmtree(work, ignore_errors=True)
    runner.run(engine_argv + ["cp", "%s:%s/." % (p["container_name"], src), work],
               msg="copying %s out of container %s failed" % (src, p["container_name"]))
    count, size = 0, 0
    for base, _dirs, names in os.walk(work):
        for name in names:
            size += os.path.getsize(os.path.join(base, name))
            if name != "Packages":
                count += 1
    common = ["rsync", "-a", "--partial", "-e", ssh_e(ssh)]
    if not p["rrsync"]:
        # the directory is made by a Python call (path as JSON data, confined to cache_root), never by a remote shell
        remote_mkdir(runner, ssh, dest, p["cache_root"], os.path.relpath(dest_dir, p["cache_root"]), p["remote_python"])
        common.append("--rsync-path=" + p["rsync_path"])
    # 1) packages (no index), 2) the index last, 3) drop files the new index no longer names.
    runner.run(common + ["--exclude=/Packages", "--", work + "/", "%s:%s/" % (dest, dest_dir)],
               msg="sending binary packages to %s failed" % dest)
    runner.run(common + ["--", os.path.join(work, "Packages"), "%s:%s/Packages" % (dest, dest_dir)],
               msg="sending the Packages index to %s failed" % dest)
    runner.run(common + ["--delete", "--exclude=/Packages", "--", work + "/", "%s:%s/" % (dest, dest_dir)],
               msg="pruning old binary packages on %s failed" % dest)
    runner.note("pushed %d packages (%d bytes) to %s" % (count, size, result["dest"]))
    module.exit_json(changed=True, hit=False, packages_sha256=local_sha, package_count=count, bytes=size, **result)


def validate(module):
    """Every value that becomes a path, URL or host: one line on failure, before anything runs."""
    p = module.params
    v = _validate
    validate_common(module)
    p["version"] = v.check(module, v.version, p["version"], canonical=True).version
    if p["cache_url"]:
        v.check(module, v.url, p["cache_url"], "cache_url")
    if p["cache_host"]:
        v.check(module, v.host, p["cache_host"], "cache_host")
    if not p["rrsync"]:
        p["cache_root"] = v.check(module, v.remote_path, p["cache_root"], "cache_root")


def main():
    spec = dict(
        mode=dict(type="str", default="pull", choices=["push", "pull"]),
        cache_url=dict(type="str"),
        timeout=dict(type="int", default=30),
        container_name=dict(type="str"),
        staging_dir=dict(type="path"),
        cache_host=dict(type="str"),
        cache_root=dict(type="path", default="/srv/kiln-cache"),
        rrsync=dict(type="bool", default=False),
        log_path=dict(type="path"),
    )
    spec.update(board_args(required=True))
    spec.update(version_args(required=True))
    spec.update(engine_args())
    spec.update(ssh_args(user_default="kiln-cache"))
    spec["ssh_user"].update(aliases=["cache_user"], deprecated_aliases=deprecated("cache_user"))
    spec.update(remote_args())
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=SSH_MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    guarded(module, lambda: _main(module))


def _main(module):
    validate(module)
    if module.params["mode"] == "pull":
        pull(module)
    else:
        with ExitCleanup() as cleanup:  # temp dir, ssh-agent: gone on every exit path
            push(module, cleanup)


if __name__ == "__main__":
    main()
