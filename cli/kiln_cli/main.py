"""The kiln command: run kiln.flatcar playbooks through ansible-runner with live progress, read the fleet's
build records, and report runs. Every ansible-playbook option is still reachable after the command."""

from __future__ import annotations

import argparse
import json
import os
import sys

PLAYBOOKS = {
    "release": ("kiln.flatcar.pipeline", "build, boot-check, sign and publish every architecture"),
    "build": ("kiln.flatcar.build", "build on the builders (checkout, SDK, packages, image, VM images, sysexts)"),
    "test": ("kiln.flatcar.test", "boot-check built images on the testers"),
    "sign": ("kiln.flatcar.sign", "write DIGESTS and signatures on the signer"),
    "publish": ("kiln.flatcar.publish", "publish a signed build to the mirror"),
    "hotfix": ("kiln.flatcar.hotfix", "rebuild a released version with a fix as <release>+hotfix-<n> (docs/hotfix.md)"),
    "rollback": ("kiln.flatcar.rollback", "point a Nebraska channel (and current) back at an earlier version"),
}

EPILOG = """exit codes: 0 succeeded (published), 1 failed, 2 a gate refused (publish gate, or the release gate held back
architectures that passed), 3 partial release (some architectures published, others missing).
Anything after the command's own options goes to ansible-playbook unchanged, e.g.
  kiln release -i inventories/prod -e kiln_build_id=kiln-7 --limit 'builders_amd64:signers:mirrors:localhost'
Put secrets in ansible-vault files (-e @vault.yml --ask-vault-pass), never in -e key=value."""


def _output(args):
    if args.json:
        return "json"
    if args.quiet:
        return "quiet"
    if args.output != "auto":
        return args.output
    return "tty" if sys.stdout.isatty() else "lines"


def _run_options(s):
    s.add_argument("-i", "--inventory", default=os.environ.get("KILN_INVENTORY", "inventory"), help="inventory (default $KILN_INVENTORY or ./inventory)")
    s.add_argument("--output", choices=["auto", "tty", "lines", "json", "quiet"], default="auto",
                   help="progress: a block redrawn in place (tty), a line per task change (lines), JSON lines (json), nothing (quiet)")
    s.add_argument("--json", action="store_true", help="same as --output json (for CI)")
    s.add_argument("-q", "--quiet", action="store_true", help="same as --output quiet")
    s.add_argument("--runs-dir", help="where run directories go (default $XDG_STATE_HOME/kiln/runs)")


def parser():
    p = argparse.ArgumentParser(prog="kiln", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (playbook, text) in PLAYBOOKS.items():
        s = sub.add_parser(name, help="%s (%s)" % (text, playbook), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        _run_options(s)
        s.set_defaults(playbook=playbook)
        if name == "hotfix":
            s.add_argument("release", help="the FLATCAR_VERSION to fix (kiln built and published it)")
            s.add_argument("--patch", action="append", default=[], help="a patch of the scripts repository (path on the builders); repeat")
            s.add_argument("--mods", help="a YAML or JSON file on this machine with a list of mods (docs/mods.md)")
            s.add_argument("--rebuild", action="append", default=[], help="a package (cat/pkg) to build from source anyway; repeat")
            s.add_argument("--channel", help="Nebraska channel to point at the hotfix")
            s.add_argument("--move-current", action="store_true", help="also move the mirror's current to the hotfix")
            s.add_argument("--plan", action="store_true", help="check mode: print the plan, change nothing")
        elif name == "rollback":
            s.add_argument("--from", dest="rb_from", required=True, help="the version withdrawn")
            s.add_argument("--to", dest="rb_to", required=True, help="the version to point back at")
            s.add_argument("--reason", required=True, help="why (recorded in the build record)")
            s.add_argument("--channel", help="Nebraska channel to move back")
            s.add_argument("--current", action="store_true", help="also move the mirror's current back")
    s = sub.add_parser("plan", help="check mode of a playbook (default: release): per host, which stages would run and why")
    s.add_argument("--for", dest="plan_for", choices=sorted(set(PLAYBOOKS) - {"hotfix", "rollback"}),
                   default="release", help="the command to plan (default release; kiln hotfix --plan plans a hotfix)")
    _run_options(s)
    s = sub.add_parser("status", help="the newest build records on the fleet, per host, board and stage (read-only)")
    s.add_argument("-i", "--inventory", default=os.environ.get("KILN_INVENTORY", "inventory"))
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("report", help="the report of a run (HTML, Markdown or JSON): kiln report RUN_ID|latest|DIR",
                       description="Per architecture: a timeline of the stages, cache hits, what was rebuilt and why, the gate "
                                   "verdict, artifacts with digests and signatures, links to the logs, and the diff against the "
                                   "previous run of the same command (packages and versions, else artifact digests).")
    s.add_argument("run", nargs="?", default="latest", help="a run id (ls the runs directory), latest (default), or a run directory")
    s.add_argument("--format", choices=["html", "md", "json"], default="md",
                   help="html: one self-contained file (default <run dir>/report.html); md and json go to standard output")
    s.add_argument("--output", "-o", help="write the report to this file (links in it are relative to its directory)")
    s.add_argument("--previous", help="the run to diff against (default: the previous run of the same command)")
    s.add_argument("--runs-dir")
    return p


def main(argv=None):
    args, rest = parser().parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.command == "report":
        if rest:
            raise SystemExit("kiln report: unexpected arguments %s" % " ".join(rest))
        from kiln_cli.report import run_report
        return run_report(args.run, args.format, args.runs_dir, output=args.output, previous=args.previous)
    if not os.path.exists(args.inventory):
        raise SystemExit("kiln %s: inventory %s not found (give -i PATH or set KILN_INVENTORY)" % (args.command, args.inventory))
    if args.command == "status":
        from kiln_cli.status import run_status
        return run_status(os.path.abspath(args.inventory), rest, "json" if args.json else "text")
    from kiln_cli.run import run_playbook
    if args.command == "plan":
        return run_playbook("plan", PLAYBOOKS[args.plan_for][0], args.inventory, rest + ["--check"], _output(args), args.runs_dir)
    extra = command_vars(args)
    if extra:
        rest = ["-e", json.dumps(extra)] + rest + (["--check"] if getattr(args, "plan", False) else [])
    return run_playbook(args.command, args.playbook, args.inventory, rest, _output(args), args.runs_dir)


def command_vars(args):
    """The extra vars of the hotfix and rollback commands (one JSON -e, so no value is split by a shell or by Ansible)."""
    if args.command == "hotfix":
        patches = [os.path.abspath(p) if not os.path.isabs(p) else p for p in args.patch]
        out = {"kiln_hotfix_release": args.release, "kiln_hotfix_patches": patches,
               "kiln_hotfix_rebuild": args.rebuild, "kiln_hotfix_move_current": bool(args.move_current)}
        if args.mods:
            out["kiln_hotfix_mods"] = _load_mods(args.mods)
        if args.channel:
            out["kiln_hotfix_channel"] = args.channel
        return out
    if args.command == "rollback":
        out = {"kiln_rollback_from": args.rb_from, "kiln_rollback_to": args.rb_to, "kiln_rollback_reason": args.reason,
               "kiln_rollback_current": bool(args.current)}
        if args.channel:
            out["kiln_rollback_channel"] = args.channel
        return out
    return {}


def _load_mods(path):
    import yaml  # ansible-core's dependency, in the same environment as ansible-runner
    with open(path) as fh:
        mods = yaml.safe_load(fh)
    if isinstance(mods, dict) and "kiln_mods" in mods:
        mods = mods["kiln_mods"]
    if not isinstance(mods, list):
        raise ValueError("%s does not hold a list of mods (docs/mods.md)" % path)
    return mods


def entry():
    """Console entry point: one line instead of a traceback for anything unexpected."""
    try:
        return main()
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, ImportError) as exc:
        sys.stderr.write("kiln: %s: %s\n" % (type(exc).__name__, " ".join(str(exc).split())))
        return 1


if __name__ == "__main__":
    sys.exit(entry())
