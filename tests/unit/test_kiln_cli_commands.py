"""kiln hotfix / kiln rollback: the command line becomes one JSON extra var for kiln.flatcar.hotfix / rollback."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))

from kiln_cli import main as cli  # noqa: E402


def _vars(argv):
    args, rest = cli.parser().parse_known_args(argv)
    return args, cli.command_vars(args), rest


def test_hotfix_vars(tmp_path):
    mods = tmp_path / "mods.yml"
    mods.write_text("kiln_mods:\n  - kind: kernel_config\n    options: ['CONFIG_NFS_FS=y']\n")
    args, extra, rest = _vars(["hotfix", "-i", "inv", "4593.2.5", "--patch", "/srv/p/0001-a.patch", "--patch", "/srv/p/0002-b.patch",
                               "--mods", str(mods), "--rebuild", "sys-apps/systemd", "--channel", "stable", "-e", "x=1"])
    assert args.playbook == "kiln.flatcar.hotfix" and rest == ["-e", "x=1"]
    assert extra == {"kiln_hotfix_release": "4593.2.5", "kiln_hotfix_patches": ["/srv/p/0001-a.patch", "/srv/p/0002-b.patch"],
                     "kiln_hotfix_rebuild": ["sys-apps/systemd"], "kiln_hotfix_move_current": False,
                     "kiln_hotfix_mods": [{"kind": "kernel_config", "options": ["CONFIG_NFS_FS=y"]}],
                     "kiln_hotfix_channel": "stable"}
    # a value with spaces or quotes survives as JSON, never split by a shell or by Ansible's key=value parser
    assert json.loads(json.dumps(extra)) == extra


def test_rollback_vars_and_required_reason():
    _args, extra, _rest = _vars(["rollback", "--from", "4593.2.5+hotfix-1", "--to", "4593.2.5", "--reason", "INC-1: it's broken",
                                 "--channel", "stable", "--current"])
    assert extra == {"kiln_rollback_from": "4593.2.5+hotfix-1", "kiln_rollback_to": "4593.2.5",
                     "kiln_rollback_reason": "INC-1: it's broken", "kiln_rollback_current": True, "kiln_rollback_channel": "stable"}
    with pytest.raises(SystemExit):
        cli.parser().parse_known_args(["rollback", "--from", "a", "--to", "b"])


def test_mods_file_must_hold_a_list(tmp_path):
    bad = tmp_path / "mods.yml"
    bad.write_text("kind: ebuild\n")
    args, _rest = cli.parser().parse_known_args(["hotfix", "4593.2.5", "--mods", str(bad)])
    with pytest.raises(ValueError, match="does not hold a list of mods"):
        cli.command_vars(args)
