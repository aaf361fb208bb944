# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This doc fragment is PRIVATE to kiln.flatcar. Do not use it from other collections.

from __future__ import annotations


class ModuleDocFragment:
    # Shared options of plugins/module_utils/_argspec.py: board, engine, version, build record location.

    DOCUMENTATION = r"""
options: {}
notes:
  - Playbooks should pass on what an earlier kiln module returned (RV(kiln.flatcar.sdk_checkout#module:version.FLATCAR_VERSION),
    C(record_path)) instead of deriving versions and paths again from inventory variables.
"""

    BOARD = r"""
options:
  board:
    description: Flatcar board.
    type: str
    choices: [amd64-usr, arm64-usr]
"""

    BOARD_REQUIRED = r"""
options:
  board:
    description: Flatcar board.
    type: str
    required: true
    choices: [amd64-usr, arm64-usr]
"""

    ENGINE = r"""
options:
  engine:
    description:
      - Container engine. V(auto) picks it like the Flatcar SDK does (podman when C(docker) is podman's shim, else
        docker, else podman).
    type: str
    choices: [auto, docker, podman]
    default: auto
"""

    VERSION = r"""
options:
  version:
    description:
      - FLATCAR_VERSION of the build (e.g. V(4593.2.5) or V(4593.2.5+kiln-1), no channel prefix); pass on the
        RV(kiln.flatcar.sdk_checkout#module:version.FLATCAR_VERSION) that M(kiln.flatcar.sdk_checkout) returned.
    type: str
"""

    VERSION_REQUIRED = r"""
options:
  version:
    description:
      - FLATCAR_VERSION of the build (e.g. V(4593.2.5) or V(4593.2.5+kiln-1), no channel prefix); pass on the
        RV(kiln.flatcar.sdk_checkout#module:version.FLATCAR_VERSION) that M(kiln.flatcar.sdk_checkout) returned.
    type: str
    required: true
"""

    RECORD = r"""
options:
  record_path:
    description:
      - The build record (C(<build_root>/kiln/<board>/<FLATCAR_VERSION>/build-record.json)); pass on the C(record_path)
        an earlier kiln module returned. Alternative to O(build_root) + O(board) + O(version).
    type: path
  build_root:
    description:
      - The SDK build root (C(<scripts_dir>/__build__/images)); record output paths are relative to it.
        Defaults to four directories above O(record_path).
    type: path
"""
