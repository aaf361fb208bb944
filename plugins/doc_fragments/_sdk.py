# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This doc fragment is PRIVATE to kiln.flatcar. Do not use it from other collections.

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  scripts_dir:
    description:
      - Flatcar scripts checkout on the builder (made by M(kiln.flatcar.sdk_checkout)).
      - Its C(sdk_container/.repo/manifests/version.txt) pins the version; the SDK runs with C(run_sdk_container -U) so it is never rewritten.
    type: path
    required: true
  flavour:
    description: SDK flavour (container image C(flatcar-sdk-<flavour>)).
    type: str
    default: all
    choices: [all, amd64, arm64]
  container_name:
    description:
      - Name of the warm SDK container shared by all stages on this host.
      - Defaults to run_sdk_container's own default C(flatcar-sdk-<flavour>-<sdk>_os-<os>), pinned explicitly.
    type: str
  sdk_registry:
    description:
      - Repository prefix of the SDK container image C(<sdk_registry>/flatcar-sdk-<flavour>:<SDK version>), as
        M(kiln.flatcar.sdk_image) made it present.
      - When it is not C(ghcr.io/flatcar), every C(run_sdk_container) call gets C(-C <image>), so the SDK runs
        from exactly that image and never pulls; the image name is then part of the stage inputs.
      - Lowercase C(host[:port]/path) without a tag.
    type: str
    default: ghcr.io/flatcar
  force:
    description: Run the stage even when the build record says it passed with the same inputs.
    type: bool
    default: false
  environment:
    description:
      - Extra variables for the SDK step. Only names the SDK passes into its container are accepted
        (C(USE), C(FEATURES), C(SIGNER), C(SBSIGN_KEY), C(MODULE_SIGNING_KEY_DIR), ...).
      - C(FLATCAR_BUILD_ID) is always set from version.txt.
    type: dict
    default: {}
notes:
  - The build record is C(<scripts_dir>/__build__/images/kiln/<board>/<FLATCAR_VERSION>/build-record.json); stage logs are in C(logs/) next to it.
  - A failed step marks its stage C(failed) in the record and leaves earlier stages and their outputs untouched.
"""
