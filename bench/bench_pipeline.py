#!/usr/bin/env python
"""Benchmark of the fleet pipeline (playbooks/pipeline.yml) on a throwaway netns fleet with the stand-in SDK.

Prints:
  * parallelism: wall time of the two-architecture pipeline divided by T, where T is one architecture's
    stand-in build time (every stand-in SDK step sleeps S seconds: T = steps x S). Also the same after
    subtracting the pipeline's fixed overhead (a cold run with S=0): goal close to 1 (parallel), not 2 (serial).
  * the no-op rerun's wall time as a fraction of the cold run;
  * the controller's peak memory (sum of VmRSS over every process in the controller's netns: ansible-playbook,
    its forks, ssh masters) while kiln.flatcar.artifact_transfer moves a 1 GiB artifact builder -> signer,
    next to the same for a 1 MiB artifact (goal: independent of the size).

Root only (network namespaces), docker for the stand-in SDK.  Usage:
    python3 bench/bench_pipeline.py [--step-sleep 15] [--big-mib 1024] [--keep] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.harness import pids_in_netns  # noqa: E402
from tests.integration import test_pipeline_fleet as tpf  # noqa: E402
from tests.kiln_testlib import ensure_collection_path  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakSampler(threading.Thread):
    def __init__(self, netns, interval=0.05):
        super().__init__(daemon=True)
        self.netns, self.interval, self.peak, self.stop = netns, interval, 0, False

    def run(self):
        while not self.stop:
            total = sum(rss_kib(p) for p in pids_in_netns(self.netns))
            self.peak = max(self.peak, total)
            time.sleep(self.interval)


PROFILE = {}   # run label -> profile JSON path, when --profile


def run(fleet, *extra, label=None):
    env = None
    if label and PROFILE.get("dir"):
        PROFILE[label] = PROFILE["dir"] / ("profile-%s.json" % label)
        env = {"ANSIBLE_CALLBACK_PLUGINS": str(REPO / "bench" / "callback_plugins"),
               "ANSIBLE_CALLBACKS_ENABLED": "kiln_profile", "KILN_PROFILE_OUT": str(PROFILE[label])}
    t0 = time.monotonic()
    res = tpf.run_pipeline(fleet, *extra, timeout=3600, env=env)
    return time.monotonic() - t0, res


def print_profile(label, top=15):
    """Where a run's time went: per play, the slowest tasks, and per host the time inside tasks."""
    path = PROFILE.get(label)
    if not path or not path.exists():
        return
    prof = json.loads(path.read_text())
    tasks = prof["tasks"]
    print("\n  profile of the %s run: %.1f s wall, %d tasks, %d host-task results" % (
        label, prof["wall_s"], len(tasks), sum(len(t["hosts"]) for t in tasks)))
    plays = {}
    for t in tasks:
        p = plays.setdefault(t["play"], [t["start"], t["end"], 0])
        p[0], p[1], p[2] = min(p[0], t["start"]), max(p[1], t["end"]), p[2] + 1
    print("    %-58s %8s %6s" % ("play", "wall s", "tasks"))
    for name, (a, b, n) in sorted(plays.items(), key=lambda kv: kv[1][0]):
        print("    %-58s %8.1f %6d" % (name[:58], b - a, n))
    print("    %-58s %8s  %s" % ("slowest tasks", "wall s", "hosts"))
    for t in sorted(tasks, key=lambda t: t["start"] - t["end"])[:top]:
        print("    %-58s %8.1f  %s" % (t["task"][:58], t["end"] - t["start"], ",".join(sorted(t["hosts"]))[:40]))
    per_host = {}
    for t in tasks:
        for h, (a, b, _st) in t["hosts"].items():
            agg = per_host.setdefault(h, [0.0, 0])
            agg[0] += (b if b is not None else a) - a
            agg[1] += 1
    print("    %-20s %10s %8s %12s" % ("host", "in tasks s", "tasks", "s per task"))
    for h, (sec, n) in sorted(per_host.items()):
        print("    %-20s %10.1f %8d %12.2f" % (h, sec, n, sec / max(n, 1)))


def sleeps_per_arch(fleet, version):
    """How many stand-in steps slept in one architecture's build (from its stage logs)."""
    counts = []
    for h, board in (("b-amd64", "amd64-usr"), ("b-arm64", "arm64-usr")):
        logs = fleet.host_root(h) / "kiln" / "scripts" / "__build__" / "images" / "kiln" / board / version / "logs"
        n = 0
        for f in logs.glob("*.log"):
            n += f.read_text(errors="replace").count("stand-in: sleeping")
        counts.append(n)
    return max(counts)


def fake_record(root, board, version, size):
    """A build record with one image output of ``size`` bytes under ``root`` (a build root)."""
    rel = "images/%s/bench-%s-a1/flatcar_production_image.bin" % (board, version)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    import hashlib
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _unused in range(size >> 20):
            fh.write(block)
            h.update(block)
    rec = {"schema_version": 1, "kind": "kiln.flatcar/build-record", "board": board, "arch": board[:5],
           "version": {"FLATCAR_VERSION": version}, "build_root": str(root), "build_dir": os.path.dirname(rel),
           "created": "2026-01-01T00:00:00.000000Z", "updated": "2026-01-01T00:00:00.000000Z",
           "stage_order": ["image"],
           "stages": {"image": {"status": "passed", "started": "2026-01-01T00:00:00.000000Z", "finished": None, "duration_s": None,
                                "host": "bench", "input_digest": "sha256:" + "0" * 64, "inputs": {}, "attempts": 1, "log_path": None, "message": None,
                                "details": {}, "outputs": [{"path": rel, "role": "generic_image", "size": size,
                                                            "sha256": h.hexdigest()}]}}}
    rp = root / "kiln" / board / version / "build-record.json"
    rp.parent.mkdir(parents=True, exist_ok=True)
    rp.write_text(json.dumps(rec))
    return rp


def transfer_peak(fleet, size_mib, tag):
    src_root = fleet.host_root("b-amd64") / ("xfer-" + tag)
    rp = fake_record(src_root, "amd64-usr", "9999.0.%d" % size_mib, size_mib << 20)
    dest = fleet.host_root("signer") / ("xfer-" + tag)
    play = fleet.workdir / ("xfer-%s.yml" % tag)
    play.write_text(
        "- name: Move one artifact builder -> signer\n  hosts: b-amd64\n  gather_facts: false\n  tasks:\n"
        "    - name: Transfer\n      kiln.flatcar.artifact_transfer:\n"
        "        record_path: %s\n        dest_host: \"{{ hostvars['signer'].ansible_host }}\"\n"
        "        dest_build_root: %s\n        ssh_config: \"{{ kiln_ssh_config }}\"\n" % (rp, dest))
    sampler = PeakSampler(fleet.ctl_ns)
    sampler.start()
    t0 = time.monotonic()
    res = fleet.ansible_playbook(str(play), env={"ANSIBLE_COLLECTIONS_PATH": ensure_collection_path()}, timeout=1800)
    dt = time.monotonic() - t0
    sampler.stop = True
    sampler.join()
    if res.returncode != 0:
        raise SystemExit("transfer failed:\n" + res.stdout[-4000:])
    shutil.rmtree(src_root, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    return sampler.peak, dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-sleep", type=float, default=15.0, help="seconds every stand-in SDK step sleeps (S)")
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the big artifact (MiB)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--profile", action="store_true",
                    help="also print where the S=0 cold run's and the no-op rerun's time went (per play, task, host)")
    ap.add_argument("--quick", action="store_true",
                    help="only the fixed overhead and a no-op rerun of it (no S-second run, no transfers); implies --profile")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    if a.profile or a.quick:
        PROFILE["dir"] = work
    fleet, gen, fid = tpf.prepare_fleet(work, name_prefix="kbn")
    try:
        # 0) warm-up (first-time role setup, SDK image load, nginx start): not measured
        wu, ru = run(fleet, "-e", "kiln_build_id=bench-warmup")
        if ru.returncode != 0:
            raise SystemExit("warm-up run failed:\n" + ru.stdout[-6000:])
        # 1) overhead: a cold run of a new version with instant stand-in steps
        w0, r0 = run(fleet, "-e", "kiln_build_id=bench0", label="cold")
        if r0.returncode != 0:
            raise SystemExit("cold run (S=0) failed:\n" + r0.stdout[-6000:])
        if a.quick:
            wq, rq = run(fleet, "-e", "kiln_build_id=bench0", label="no-op")
            changed = sum(int(m) for m in re.findall(r"changed=(\d+)", rq.stdout.split("PLAY RECAP")[-1]))
            print("kiln pipeline benchmark --quick (stand-in SDK, 2 architectures, netns fleet, %d CPUs)" % os.cpu_count())
            print("  warm-up run (not measured)        : %.1f s" % wu)
            print("  fixed overhead (cold run, S=0)    : %.1f s" % w0)
            # the same no-op rerun preparing every host as before host-state records (kiln_host_state_dir empty)
            wp, rp = run(fleet, "-e", "kiln_build_id=bench0", "-e", "kiln_host_state_dir=", label="no-op-prepare")
            print("  no-op rerun of it                 : %.1f s   -> %.1f%% of the S=0 run (changed=%d)" % (
                wq, 100 * wq / w0, changed))
            print("  no-op rerun preparing every host  : %.1f s   -> prepared-state skip saves %.1f s (ratio %.2f)%s" % (
                wp, wp - wq, wq / wp, "" if rp.returncode == 0 else " (FAILED)"))
            print_profile("cold")
            print_profile("no-op")
            print_profile("no-op-prepare")
            return
        # 2) cold run with S seconds per step on both architectures
        for h in ("b-amd64", "b-arm64"):
            sdk.set_sleep(fleet.host_root(h) / "kiln" / "scripts", a.step_sleep)
        w1, r1 = run(fleet, "-e", "kiln_build_id=bench1")
        if r1.returncode != 0:
            raise SystemExit("cold run failed:\n" + r1.stdout[-6000:])
        steps = sleeps_per_arch(fleet, "4593.2.5+bench1")
        T = steps * a.step_sleep
        # 3) no-op rerun
        w2, r2 = run(fleet, "-e", "kiln_build_id=bench1", label="no-op")
        changed = sum(int(m) for m in re.findall(r"changed=(\d+)", r2.stdout.split("PLAY RECAP")[-1]))
        for h in ("b-amd64", "b-arm64"):
            sdk.set_sleep(fleet.host_root(h) / "kiln" / "scripts", None)
        # 4) controller memory while moving artifacts host to host
        small_peak, small_t = transfer_peak(fleet, 1, "small")
        big_peak, big_t = transfer_peak(fleet, a.big_mib, "big")
        print("kiln pipeline benchmark (stand-in SDK, 2 architectures, netns fleet, %d CPUs)" % os.cpu_count())
        print("  stand-in step sleep S             : %.1f s x %d steps per arch -> T = %.1f s" % (a.step_sleep, steps, T))
        print("  cold 2-arch pipeline wall         : %.1f s   -> wall / T = %.2f" % (w1, w1 / T))
        print("  warm-up run (not measured)        : %.1f s" % wu)
        print("  fixed overhead (cold run, S=0)    : %.1f s   -> (wall - overhead) / T = %.2f  (1 = parallel, 2 = serial)"
              % (w0, (w1 - w0) / T))
        print("  no-op rerun wall                  : %.1f s   -> %.1f%% of the cold run (changed=%d)" % (w2, 100 * w2 / w1, changed))
        print("  controller peak RSS, 1 MiB move   : %.1f MiB (%.1f s)" % (small_peak / 1024, small_t))
        print("  controller peak RSS, %d MiB move: %.1f MiB (%.1f s)  -> ratio %.2f" % (
            a.big_mib, big_peak / 1024, big_t, big_peak / max(small_peak, 1)))
        print_profile("cold")
        print_profile("no-op")
    finally:
        tpf.finish_fleet(fleet, gen, fid)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
