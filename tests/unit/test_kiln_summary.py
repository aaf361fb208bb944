"""The run summary filters read stage results and durations from build records (slurped), not from set_fact."""

from __future__ import annotations

import base64
import json

from ansible_collections.kiln.flatcar.plugins.filter.kiln_summary import kiln_summary_markdown, kiln_summary_rows

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BEFORE = "2027-01-15T07:00:00.000000Z"
DURING = "2027-01-15T08:05:00.000000Z"


def slurp(record, **item):
    return dict({"content": base64.b64encode(json.dumps(record).encode()).decode(), "failed": False}, **item)


def stage(started, duration, status="passed", outputs=(), message=None):
    return {"status": status, "started": started, "duration_s": duration, "outputs": list(outputs), "message": message}


BUILDER = {
    "stage_order": ["packages", "image", "vm_image:qemu_uefi", "boot_check:uefi"],
    "stages": {
        "packages": stage(BEFORE, 100.0),
        "image": stage(DURING, 20.5, outputs=[
            {"path": "images/amd64-usr/x/flatcar_production_image.bin", "role": "generic_image", "sha256": "ab" * 32, "size": 10},
            {"path": "images/amd64-usr/x/version.txt", "role": "version", "sha256": "cd" * 32, "size": 1}]),
        "vm_image:qemu_uefi": stage(DURING, 4.5),
        "boot_check:uefi": stage(DURING, 30.0),
    },
}
SIGNER = {"stage_order": ["image", "sign", "publish:mirror"],
          "stages": {"image": BUILDER["stages"]["image"], "sign": stage(BEFORE, 2.0), "publish:mirror": stage(DURING, 1.0)}}


def hostvars():
    return {
        "b-amd64": {"kiln_build_record": slurp(BUILDER), "kiln_transfer": {"changed": True, "bytes_sent": 5, "duration_s": 1.5},
                    "build_sdk": {"source": "cache"}, "build_binpkg_pull": {"hit": True}, "build_binpkg_push": {"changed": False}},
        "b-arm64": {"kiln_build_record": slurp({"stage_order": ["packages", "image"], "stages": {
            "packages": stage(DURING, 50.0), "image": stage(DURING, 3.0, status="failed", message="build_image failed")}}),
            "kiln_build_failure": {"task": "Wait for the image", "action": "ansible.builtin.async_status", "msg": "build_image failed"},
            "build_sdk": {"source": "local"}},
        "b-lost": {},
    }


ROWS = [
    {"host": "b-amd64", "board": "amd64-usr", "version": "1.0.0", "ok": True, "lost": False, "record_path": "/s/r.json"},
    {"host": "b-arm64", "board": "arm64-usr", "version": "1.0.0", "ok": False, "lost": False, "record_path": None},
    {"host": "b-lost", "board": "riscv-usr", "version": None, "ok": False, "lost": True, "record_path": None},
]


def test_rows_come_from_the_records():
    rows = {r["board"]: r for r in kiln_summary_rows(ROWS, hostvars(), [slurp(SIGNER, item={"key": "amd64-usr"})], START, ["amd64-usr"])}
    amd = rows["amd64-usr"]
    assert amd["result"] == "published"
    # packages were current (started before the run): only image + vm_image ran, their recorded durations add up
    assert amd["stages"]["build"] == {"result": "passed", "ran": True, "duration_s": 25.0,
                                      "stages": ["image", "packages", "vm_image:qemu_uefi"]}
    assert amd["stages"]["test"]["duration_s"] == 30.0
    assert amd["stages"]["transfer"] == {"result": "passed", "ran": True, "bytes": 5, "duration_s": 1.5}
    assert amd["stages"]["sign"]["ran"] is False and amd["stages"]["sign"]["result"] == "passed"
    assert amd["stages"]["publish"]["ran"] is True
    assert amd["record_stages"]["packages"]["ran"] is False
    assert amd["artifacts"] == [{"path": "images/amd64-usr/x/flatcar_production_image.bin", "sha256": "ab" * 32, "size": 10}]
    assert amd["cache_hits"] == {"sdk_image": "cache", "binpkgs": True, "binpkgs_pushed": False}
    arm = rows["arm64-usr"]
    assert arm["result"] == "failed" and arm["stages"]["build"]["result"] == "failed"
    assert arm["stages"]["build"]["message"] == "image: build_image failed"
    assert "sign" not in arm["stages"] and arm["stages"]["publish"] == {"result": "not run"}
    lost = rows["riscv-usr"]
    assert lost["result"] == "host lost" and lost["stages"]["build"]["result"] == "host lost (unreachable)"
    md = kiln_summary_markdown({"run_id": "r", "started": "s", "duration_s": 1, "gate": {"passed": ["amd64-usr"], "missing": ["arm64-usr"],
                                "released": ["amd64-usr"]}, "architectures": list(rows.values())})
    assert md.count("| amd64-usr |") == 1 and "passed (skipped, current)" in md and "- arm64-usr build failed: image: build_image failed" in md


def test_transfer_failure_and_gate_hold():
    hv = hostvars()
    hv["b-arm64"] = {"kiln_build_record": slurp(BUILDER), "kiln_transfer": {"failed": True, "msg": "corrupted or lost in transit"},
                     "kiln_build_failure": {"task": "Send", "action": "kiln.flatcar.artifact_transfer", "msg": "corrupted or lost in transit"}}
    rows = {r["board"]: r for r in kiln_summary_rows(ROWS[:2], hv, [slurp(SIGNER, item={"key": "amd64-usr"})], START, [])}
    assert rows["arm64-usr"]["stages"]["transfer"]["result"] == "failed"
    assert rows["arm64-usr"]["stages"]["build"]["result"] == "passed"
    assert rows["amd64-usr"]["stages"]["publish"] == {"result": "held back by the gate"}
    assert rows["amd64-usr"]["result"] == "passed"
