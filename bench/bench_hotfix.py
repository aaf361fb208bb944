#!/usr/bin/env python
"""Time to hotfix against a cold release build, on a throwaway netns fleet with the stand-in SDK (issue 12).

Every package the stand-in build_packages builds from source takes S seconds (STANDIN_PKG_BUILD_SECONDS, set per
checkout in .standin/pkg_build_seconds); binary packages cost nothing. The bench runs, both architectures at once:
  1. a cold release (kiln.flatcar.pipeline: every package from source, then image, boot check, sign, payload, publish);
  2. a hotfix of it with one package changed (kiln.flatcar.hotfix with a user patch for update_engine; warm cache:
     the release's binary packages).
Prints both wall times, the packages stage of each (from the build records) and the ratios
    hotfix / cold release          (goal: at most 0.2)
    hotfix packages / cold packages (the SDK's part alone)
and the fixed cost of one pipeline run that does not depend on S, so the ratio at another S (or a real SDK, where a
cold build takes hours) can be read off:  ratio(S) = (F_h + S) / (F_c + N * S).

Root only (network namespaces), docker for the stand-in SDK.  Usage:
    python3 bench/bench_hotfix.py [--pkg-seconds 20] [--keep] [--profile]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration import test_hotfix_fleet as thf  # noqa: E402
from tests.integration import test_pipeline_fleet as tpf  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
import bench_pipeline as bp  # noqa: E402  (the --profile callback and its printer)


def profiled(label):
    """The environment that makes one run write its per-task profile (bench/callback_plugins/kiln_profile.py)."""
    if not bp.PROFILE.get("dir"):
        return None
    bp.PROFILE[label] = bp.PROFILE["dir"] / ("profile-%s.json" % label)
    return {"ANSIBLE_CALLBACK_PLUGINS": str(REPO / "bench" / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "kiln_profile", "KILN_PROFILE_OUT": str(bp.PROFILE[label])}


def packages_stage(fleet, version):
    out = {}
    for board, host in zip(thf.BOARDS, ("b-amd64", "b-arm64")):
        st = thf.record(fleet, host, board, version)["stages"]["packages"]
        out[board] = (st["duration_s"], len(st["details"].get("built_from_source") or []), len(st["details"].get("binary") or []))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pkg-seconds", type=float, default=20.0, help="seconds per package built from source (S)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--profile", action="store_true", help="print where each run's time went (per play, slowest tasks, per host)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-hotfix-"))
    if a.profile:
        bp.PROFILE["dir"] = work
    ctx = thf.prepare(work, name_prefix="kbh")
    fleet = ctx["fleet"]
    try:
        for h in ("b-amd64", "b-arm64"):
            sdk.set_pkg_build_seconds(fleet.host_root(h) / "kiln" / "scripts", a.pkg_seconds)
        t0 = time.monotonic()
        res = thf.play(fleet, tpf.PIPELINE, timeout=7200, env=profiled("cold"))
        cold = time.monotonic() - t0
        if res.returncode != 0:
            sys.exit("cold release failed:\n" + res.stdout[-6000:] + (res.stderr or "")[-3000:])
        patch = thf.make_hotfix_patch(work, ctx["origin"], "bench", "KILN_HOTFIX=bench")
        t0 = time.monotonic()
        res = thf.play(fleet, thf.HOTFIX, *thf.hotfix_args(patch), timeout=7200, env=profiled("hotfix"))
        hot = time.monotonic() - t0
        if res.returncode != 0:
            sys.exit("hotfix failed:\n" + res.stdout[-6000:] + (res.stderr or "")[-3000:])
        pc, ph = packages_stage(fleet, thf.RELEASE), packages_stage(fleet, thf.HOTFIX1)
        n = max(v[1] for v in pc.values())
        s = a.pkg_seconds
        print("bench_hotfix: stand-in SDK, %.1f s per package built from source, both architectures in parallel" % s)
        for board in thf.BOARDS:
            print("  %-9s packages stage: cold %6.1f s (%d from source, %d binary), hotfix %6.1f s (%d from source, %d binary)"
                  % (board, pc[board][0], pc[board][1], pc[board][2], ph[board][0], ph[board][1], ph[board][2]))
        print("  cold release (pipeline)          : %7.1f s" % cold)
        print("  hotfix, one package (warm cache) : %7.1f s" % hot)
        print("  ratio hotfix / cold release      : %.3f   (goal <= 0.2)" % (hot / cold))
        print("  ratio of the packages stages     : %.3f" % (max(v[0] for v in ph.values()) / max(v[0] for v in pc.values())))
        fixed_c, fixed_h = cold - n * s, hot - s
        print("  fixed cost per run (S-independent): cold %.1f s, hotfix %.1f s -> ratio(S) = (%.0f + S) / (%.0f + %d*S)"
              % (fixed_c, fixed_h, fixed_h, fixed_c, n))
        for s2 in (60, 300, 1800):
            print("    at S = %4d s: %.3f" % (s2, (fixed_h + s2) / (fixed_c + n * s2)))
        bp.print_profile("cold")
        bp.print_profile("hotfix")
        print(json.dumps({"bench": "hotfix", "pkg_seconds": s, "cold_s": round(cold, 1), "hotfix_s": round(hot, 1),
                          "ratio": round(hot / cold, 4), "packages_cold": pc, "packages_hotfix": ph}))
    finally:
        thf.finish(ctx)
        if a.keep:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
