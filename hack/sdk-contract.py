#!/usr/bin/env python
# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write the SDK contract of a flatcar/scripts checkout as JSON.

  python hack/sdk-contract.py /path/to/flatcar-scripts > tests/sdk_contract/4799.json
  python hack/sdk-contract.py -o tests/sdk_contract /path/to/flatcar-scripts   # writes <major>.json there

The parser is plugins/module_utils/_contract.py (the same code the preflight runs on the builder);
this file only loads it by path and prints its result.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRACT_PY = os.path.join(os.path.dirname(HERE), "plugins", "module_utils", "_contract.py")


def load_contract_module():
    spec = importlib.util.spec_from_file_location("kiln_sdk_contract", CONTRACT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(data):
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the SDK contract (flags, options, environment, types, outputs) of a flatcar/scripts checkout.")
    parser.add_argument("scripts_dir", help="a flatcar/scripts checkout")
    parser.add_argument("-o", "--output-dir", help="write <release line>.json into this directory instead of stdout")
    args = parser.parse_args(argv)
    contract = load_contract_module()
    try:
        data = contract.build_contract(args.scripts_dir)
        line = contract.release_line(data["version"]["FLATCAR_VERSION_ID"] or data["version"]["FLATCAR_VERSION"])
    except contract.ContractError as exc:
        sys.stderr.write("sdk-contract: %s\n" % exc)
        return 1
    text = render({"release_line": line, **data})
    if args.output_dir:
        path = os.path.join(args.output_dir, line + ".json")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        sys.stderr.write("sdk-contract: wrote %s (flatcar/scripts %s)\n" % (path, data["version"]["FLATCAR_VERSION"]))
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
