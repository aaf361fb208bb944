"""kiln report (cli/kiln_cli/report*.py): the report model of a run directory made here -- two architectures, one
failed stage, cache hits, packages rebuilt, the diff against the previous run -- and the same facts in Markdown,
JSON and HTML, with every value from the fleet escaped (a ``<script>`` in a message or a version stays text)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "cli"))

from kiln_cli import report, report_html, report_model  # noqa: E402
from kiln_cli.main import main  # noqa: E402

EVIL = "<script>alert('kiln')</script>"
SHA = dict((k, hashlib.sha256(k.encode()).hexdigest()) for k in ("img1", "img2", "arm1", "arm2", "ver", "digests", "asc"))
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
PKGS_NOW = "app-misc/kiln-demo-1.1::kiln\nsys-apps/systemd-255-r2::coreos\nsys-libs/glibc-2.38-r10::portage-stable\n"
PKGS_BEFORE = "app-misc/old-tool-0.9::kiln\nsys-apps/systemd-255-r1::coreos\nsys-libs/glibc-2.38-r10::portage-stable\n"
T = "2026-11-30T12:%02d:%02dZ"


def stage(minute, seconds, status="passed", outputs=(), message=None, details=None, host=None, log=None):
    start = T % (minute, 0)
    end = T % (minute + seconds // 60, seconds % 60)
    st = {"status": status, "started": start, "finished": end, "duration_s": float(seconds), "outputs": list(outputs),
          "message": message, "attempts": 1, "input_digest": "sha256:" + "1" * 64}
    if details:
        st["details"] = details
    if host:
        st["host"] = host
    if log:
        st["log_path"] = log
    return st


def out(path, role, key, size=10):
    return {"path": path, "role": role, "size": size, "sha256": SHA[key]}


def record(board, version, stages, build_root="/nonexistent"):
    return {"schema_version": 1, "kind": "kiln.flatcar/build-record", "board": board, "version": {"FLATCAR_VERSION": version},
            "build_root": build_root, "stage_order": list(stages), "stages": stages, "updated": T % (30, 0)}


def amd64_record(build_root, packages_sha):
    d = "images/amd64-usr/developer-4593.2.5+kiln-2"
    return record("amd64-usr", "4593.2.5+kiln-2", {
        "packages": stage(1, 300, details={
            "container_id": "c1", "built_from_source": ["app-misc/kiln-demo-1.1", "app-misc/evil-1" + EVIL],
            "binary": ["sys-apps/systemd-255-r2", "sys-libs/glibc-2.38-r10"],
            "rebuilt": [{"package": "app-misc/kiln-demo-1.1", "atom": "app-misc/kiln-demo", "reason": "mod"}],
            "usepkg_exclude": ["app-misc/kiln-demo"]}, host="b-amd64", log="/build/logs/packages.log"),
        "image": stage(7, 120, outputs=[
            out(d + "/flatcar_production_image.bin", "generic_image", "img2", 4096),
            {"path": d + "/flatcar_production_image_packages.txt", "role": "report", "size": len(PKGS_NOW), "sha256": packages_sha},
            out(d + "/version.txt", "version", "ver")], host="b-amd64"),
        "vm_image:qemu_uefi": dict(stage(0, 30), started="2026-11-29T08:00:00Z", finished="2026-11-29T08:00:30Z"),
        "boot_check:qemu_uefi": stage(10, 45, details={"verdict": "passed", "boot_time_s": 12.5}, host="b-amd64"),
        "sign": stage(12, 5, outputs=[out(d + "/flatcar_production_image.bin.DIGESTS", "signature", "digests"),
                                      out(d + "/flatcar_production_image.bin.DIGESTS.asc", "signature", "asc")],
                      details={"signer_fingerprint": FPR, "signing_key_fingerprint": FPR[::-1], "key_expires": None,
                               "signature_files": [d + "/flatcar_production_image.bin.DIGESTS", d + "/flatcar_production_image.bin.DIGESTS.asc"]},
                      host="signer"),
        "publish:mirror": stage(13, 10, details={"gate": {"passed": True, "problems": []}}, host="signer"),
    }, build_root)


def arm64_record(version="4593.2.5+kiln-2", failed=True, key="arm1"):
    d = "images/arm64-usr/developer-" + version
    stages = {"packages": stage(0, 200, details={"built_from_source": [], "binary": ["sys-apps/systemd-255-r2"]}, host="b-arm64")}
    if failed:
        stages["image"] = stage(4, 60, status="failed", message="build_image failed with rc=1: " + EVIL, host="b-arm64")
    else:
        stages["image"] = stage(4, 60, outputs=[out(d + "/flatcar_production_image.bin", "generic_image", key)], host="b-arm64")
    return record("arm64-usr", version, stages)


def slurp_event(n, records, ident="4b1e"):
    res = {"results": [{"content": base64.b64encode(json.dumps(r).encode()).decode(), "encoding": "base64", "item": r["board"]}
                       for r in records]}
    return {"event": "runner_on_ok", "counter": n, "event_data": {"host": "localhost", "task": "Read", "res": res}}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(data if isinstance(data, str) else json.dumps(data, indent=2))


def make_runs(tmp):
    """A runs directory with a published run (yesterday) and a partial release (today); returns (root, now, before)."""
    root = os.path.join(str(tmp), "runs")
    before = os.path.join(root, "20261129T120000Z-release")
    write(os.path.join(before, "run.json"), {"run_id": "20261129T120000Z-release", "command": "release", "playbook": "kiln.flatcar.pipeline",
                                             "started": "2026-11-29T12:00:00+00:00", "exit_code": 0, "hosts": {}, "failures": []})
    old_amd = amd64_record("/nonexistent", SHA["img1"])
    old_amd["version"]["FLATCAR_VERSION"] = "4593.2.5+kiln-1"
    write(os.path.join(before, "records", "amd64-usr.json"), old_amd)
    write(os.path.join(before, "records", "amd64-usr.packages.txt"), PKGS_BEFORE)
    write(os.path.join(before, "records", "arm64-usr.json"), arm64_record("4593.2.5+kiln-1", failed=False, key="arm2"))
    # a later failed run of another command is not the previous release
    write(os.path.join(root, "20261129T130000Z-publish", "run.json"), {"run_id": "x", "command": "publish", "exit_code": 1})

    now = os.path.join(root, "20261130T120000Z-release")
    build_root = os.path.join(str(tmp), "build-amd64")
    write(os.path.join(build_root, "images/amd64-usr/developer-4593.2.5+kiln-2/flatcar_production_image_packages.txt"), PKGS_NOW)
    amd = amd64_record(build_root, hashlib.sha256(PKGS_NOW.encode()).hexdigest())
    builder_view = dict(amd, stages=dict((k, v) for k, v in amd["stages"].items() if k not in ("sign", "publish:mirror")))
    events = os.path.join(now, "runner", "artifacts", "4b1e", "job_events")
    write(os.path.join(events, "1-a.json"), slurp_event(1, [builder_view, arm64_record()]))
    write(os.path.join(events, "2-b.json"), slurp_event(2, [amd]))
    write(os.path.join(events, "3-c.json"), {"event": "runner_on_failed", "event_data": {"host": "b-arm64"}})
    write(os.path.join(now, "runner", "artifacts", "4b1e", "stdout"), "PLAY [x]\n")
    summary = {"run_id": "kiln-7", "keys": [{"name": "image-signing.asc", "sha256": SHA["asc"], "url": "https://mirror.example/keys/image-signing.asc"}],
               "gate": {"passed": ["amd64-usr"], "missing": ["arm64-usr"], "released": ["amd64-usr"]},
               "allow_partial_release": True, "architectures": [
                   {"board": "amd64-usr", "host": "b-amd64", "version": "4593.2.5+kiln-2", "result": "published",
                    "cache_hits": {"sdk_image": "cache", "binpkgs": True, "binpkgs_pushed": True},
                    "release": {"payloads": [{"name": "flatcar_production_update.gz", "size": 123, "sha256": SHA["img1"]}],
                                "update_url": "https://mirror.example/update/amd64-usr/4593.2.5+kiln-2/", "nebraska_package_id": "pkg-1"},
                    "stages": {"build": {"result": "passed"}, "transfer": {"result": "passed", "bytes": 5}}},
                   {"board": "arm64-usr", "host": "b-arm64", "version": "4593.2.5+kiln-2", "result": "failed",
                    "cache_hits": {"sdk_image": "built", "binpkgs": False, "binpkgs_pushed": False},
                    "stages": {"build": {"result": "failed", "message": "image: build_image failed"}}}]}
    write(os.path.join(now, "summary", "summary.json"), summary)
    write(os.path.join(now, "summary", "summary.md"), "# kiln pipeline run kiln-7\n")
    write(os.path.join(now, "run.json"), {
        "run_id": "20261130T120000Z-release", "command": "release", "playbook": "kiln.flatcar.pipeline", "inventory": "/inv",
        "started": "2026-11-30T12:00:00+00:00", "duration_s": 900.0, "rc": 2, "status": "failed", "exit_code": 3,
        "hosts": {"b-amd64": 800.0, "b-arm64": 300.0},
        "failures": [{"host": "b-arm64", "task": "Build the image " + EVIL, "msg": "build_image failed with rc=1: " + EVIL}],
        "stages": [{"host": "b-amd64", "stage": "packages", "changed": True, "reason": "input digest changed: scripts commit", "board": "amd64-usr"},
                   {"host": "b-arm64", "stage": "packages", "changed": True, "reason": "output missing", "board": "arm64-usr"},
                   {"host": "b-amd64", "stage": "image", "changed": True, "reason": "previous stage result changed"},
                   {"host": "signer", "stage": "sign", "changed": True, "reason": "not signed yet"},
                   {"host": "signer", "stage": "sign", "changed": True, "reason": "another board"},
                   {"host": "b-amd64", "stage": "vm_image:qemu_uefi", "changed": False, "reason": "current"}],
        "summary": summary})
    report_model.save_records(now)
    return root, now, before


@pytest.fixture()
def runs(tmp_path):
    return make_runs(tmp_path)


def arch(model, board):
    return next(a for a in model["architectures"] if a["board"] == board)


def test_model_of_two_architectures(runs):
    _root, now, before = runs
    model = report_model.build(now)
    assert model["previous"]["path"] == before and model["result"] == "partial release" and model["exit_code"] == 3
    assert [a["board"] for a in model["architectures"]] == ["amd64-usr", "arm64-usr"]
    amd, arm = arch(model, "amd64-usr"), arch(model, "arm64-usr")
    stages = dict((s["name"], s) for s in amd["stages"])
    # the signer's record (more stages) wins over the builder's; the reused VM image did not run in this run
    assert list(stages) == ["packages", "image", "vm_image:qemu_uefi", "boot_check:qemu_uefi", "sign", "publish:mirror"]
    # one time axis for both: from the first stage that ran in this run (arm64 packages at 12:00)
    assert stages["packages"]["start_s"] == 60 and stages["packages"]["end_s"] == 360 and stages["image"]["start_s"] == 420
    assert arch(model, "arm64-usr")["stages"][0]["start_s"] == 0
    assert stages["vm_image:qemu_uefi"]["ran"] is False and stages["vm_image:qemu_uefi"]["start_s"] is None
    assert amd["cache_hits"] == {"sdk_image": "cache", "binpkgs": True, "binpkgs_pushed": True, "stages_reused": ["vm_image:qemu_uefi"]}
    assert amd["rebuilt"][:2] == [{"stage": "packages", "reason": "input digest changed: scripts commit"},
                                  {"stage": "image", "reason": "previous stage result changed"}]
    # the signer ran "sign" for two boards without saying which: no guess
    assert {"stage": "sign", "reason": "ran in this run"} in amd["rebuilt"]
    assert arm["rebuilt"] == [{"stage": "packages", "reason": "output missing"}, {"stage": "image", "reason": "failed"}]
    assert amd["packages"]["built_from_source"][0] == "app-misc/kiln-demo-1.1" and len(amd["packages"]["binary"]) == 2
    assert amd["gate"]["verdict"] == "released" and amd["gate"]["boot_checks"][0]["verdict"] == "passed"
    assert arm["gate"]["verdict"] == "missing: did not pass" and arm["result"] == "failed"
    image = next(a for a in amd["artifacts"] if a["role"] == "generic_image")
    assert image["sha256"] == SHA["img2"] and [os.path.basename(s) for s in image["signatures"]] == [
        "flatcar_production_image.bin.DIGESTS", "flatcar_production_image.bin.DIGESTS.asc"]
    assert amd["signature"]["signer_fingerprint"] == FPR
    assert [s["status"] for s in arm["stages"]] == ["passed", "failed"] and EVIL in arm["stages"][1]["message"]
    labels = [x["label"] for x in amd["logs"]]
    assert "Ansible output" in labels and "build record" in labels and "image package list" in labels
    # diff: packages and versions from the image package lists (amd64), artifact digests where there is none (arm64)
    d = amd["diff"]
    assert d["basis"] == "packages" and d["version"] == {"from": "4593.2.5+kiln-1", "to": "4593.2.5+kiln-2"}
    assert d["added"] == {"app-misc/kiln-demo": "1.1"} and d["removed"] == {"app-misc/old-tool": "0.9"}
    assert d["changed"] == [{"name": "sys-apps/systemd", "from": "255-r1", "to": "255-r2"}] and d["unchanged"] == 1
    assert arm["diff"]["basis"] == "artifacts" and arm["diff"]["removed"] == {"flatcar_production_image.bin": SHA["arm2"]}


def test_package_list_is_kept_only_when_its_digest_matches(tmp_path):
    _root, now, _before = make_runs(tmp_path)
    assert os.path.isfile(os.path.join(now, "records", "amd64-usr.packages.txt"))
    with open(os.path.join(str(tmp_path), "build-amd64/images/amd64-usr/developer-4593.2.5+kiln-2/flatcar_production_image_packages.txt"), "a") as fh:
        fh.write("sys-apps/tampered-1::x\n")
    os.unlink(os.path.join(now, "records", "amd64-usr.packages.txt"))
    report_model.save_records(now)
    assert not os.path.exists(os.path.join(now, "records", "amd64-usr.packages.txt"))
    assert arch(report_model.build(now), "amd64-usr")["diff"]["basis"] == "artifacts"


def test_parse_packages_follows_write_packages_format():
    assert report_model.parse_packages("sys-apps/systemd-212-r8::coreos\ndev-lang/python-3.11.9_p1::portage-stable\nbad line\n") == {
        "sys-apps/systemd": "212-r8", "dev-lang/python": "3.11.9_p1"}


def test_markdown_and_json_hold_the_same_facts(runs):
    _root, now, _before = runs
    model = report_model.build(now)
    text = report.markdown(model, now)
    assert text.startswith("# kiln release — run 20261130T120000Z-release")
    for fact in ("## amd64-usr — 4593.2.5+kiln-2 — published", "Gate: **released**", "Gate: **missing: did not pass**",
                 "input digest changed: scripts commit", "stages reused: vm_image:qemu_uefi", "SDK image cache, binary packages hit",
                 "Built from source (2): app-misc/kiln-demo-1.1 (mod)", "kept out of binary packages: app-misc/kiln-demo", FPR,
                 "- update payload flatcar_production_update.gz, 123 bytes", "- nebraska_package_id: pkg-1",
                 "- public key image-signing.asc sha256 " + SHA["asc"], SHA["img2"], "flatcar_production_image.bin.DIGESTS.asc",
                 "boot_check:qemu_uefi: passed in 12.5s",
                 "changed sys-apps/systemd 255-r1 → 255-r2", "added app-misc/kiln-demo 1.1", "removed app-misc/old-tool 0.9",
                 "(artifacts)", "[Ansible output](runner/artifacts/4b1e/stdout)", "| b-amd64 | 800.0 |"):
        assert fact in text, fact
    assert "<script" not in text and "&lt;script&gt;" in text
    data = json.loads(report.render(model, "json", now))
    assert data == json.loads(json.dumps(model)) and data["exit_code"] == 3 and data["playbook"] == "kiln.flatcar.pipeline"
    amd = arch(data, "amd64-usr")
    assert amd["diff"]["changed"][0]["to"] == "255-r2" and amd["signature"]["signer_fingerprint"] == FPR


def test_html_is_self_contained_and_escaped(runs):
    _root, now, _before = runs
    page = report_html.render(report_model.build(now), now)
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    csp = "default-src &#x27;none&#x27;; style-src &#x27;unsafe-inline&#x27;; img-src data:"
    assert page.count('<meta http-equiv="Content-Security-Policy" content="%s">' % csp) == 1
    # URLs are facts shown as text (the update URL), never something to load or follow: no attribute holds one
    assert "https://mirror.example/update/amd64-usr/4593.2.5+kiln-2/" in page and not re.search(r"url\(|@import", page)
    attrs = re.findall(r'\s([a-zA-Z][\w:-]*)\s*=\s*"([^"]*)"', "".join(re.findall(r"<[a-zA-Z][^>]*>", page)))
    assert attrs and not [(k, v) for k, v in attrs if v != csp and ("//" in v or re.search(r"(?i)\b(?:https?|file|data|javascript):", v))], attrs
    refs = [v for k, v in attrs if k.lower() in ("href", "src", "xlink:href", "action", "srcset", "poster", "data")]
    assert refs and all(not re.match(r"^[a-z][a-z0-9+.-]*:|^/", r, re.I) for r in refs), refs
    for ref in refs:
        assert os.path.exists(os.path.join(now, ref)), ref
    assert page.count('<rect class="bar passed"') >= 6 and page.count('<rect class="bar failed"') == 1
    assert page.count('<rect class="bar reused"') == 1 and page.count("<svg") == 2
    assert page.count("image-signing.asc sha256") == 1 and "app-misc/kiln-demo-1.1 (mod)" in page and "nebraska_package_id" in page


def test_href_never_leaves_as_a_url():
    assert report_html.href("javascript:alert(1)", "/x") == "javascript%3Aalert%281%29"
    for path in ("//evil.example/x", "/x//y", "a//b"):
        ref = report_html.href(path, "/x")
        assert not ref.startswith("/") and "//" not in ref, ref


def test_cli_writes_each_format_and_takes_previous(runs, tmp_path, capsys):
    root, now, before = runs
    assert main(["report", "latest", "--runs-dir", root, "--format", "html"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(now, "report.html")
    target = str(tmp_path / "elsewhere" / "r.html")
    os.makedirs(os.path.dirname(target))
    assert main(["report", now, "--format", "html", "--output", target]) == 0
    with open(target, encoding="utf-8") as fh:
        assert 'href="../runs/20261130T120000Z-release/runner/artifacts/4b1e/stdout"' in fh.read()
    capsys.readouterr()
    assert main(["report", "20261130T120000Z-release", "--runs-dir", root, "--format", "json", "--previous", before]) == 0
    assert json.loads(capsys.readouterr().out)["previous"]["run_id"] == "20261129T120000Z-release"
    with pytest.raises(SystemExit, match="itself"):
        main(["report", now, "--previous", now])


def test_publish_gate_refused_and_overridden(tmp_path):
    run = {"run_id": "20261201T000000Z-publish", "command": "publish", "playbook": "kiln.flatcar.publish", "exit_code": 2,
           "started": "2026-11-30T12:00:00+00:00", "hosts": {"localhost": 3.0},
           "failures": [{"host": "localhost", "task": "Publish", "msg": "publish gate refused amd64-usr 4593.2.5+kiln-2: no passed boot check"}]}
    refused = os.path.join(str(tmp_path), "runs", run["run_id"])
    write(os.path.join(refused, "run.json"), run)
    write(os.path.join(refused, "records", "amd64-usr.json"), record("amd64-usr", "4593.2.5+kiln-2", {"packages": stage(1, 10)}))
    gate = arch(report_model.build(refused), "amd64-usr")["gate"]
    assert gate["verdict"] == "refused" and "no passed boot check" in gate["detail"]
    run = dict(run, run_id="20261201T010000Z-publish", exit_code=0, failures=[])
    over = os.path.join(str(tmp_path), "runs", run["run_id"])
    write(os.path.join(over, "run.json"), run)
    write(os.path.join(over, "records", "amd64-usr.json"), record("amd64-usr", "4593.2.5+kiln-2", {"publish:mirror": stage(
        1, 10, details={"gate": {"passed": False, "overridden": True, "reason": "cli-test", "problems": ["no passed boot check"]}})}))
    model = report_model.build(over)
    gate = arch(model, "amd64-usr")["gate"]
    assert gate == {"verdict": "released", "detail": "overridden: cli-test", "boot_checks": [], "problems": ["no passed boot check"]}
    # the previous run of the same command, though it did not publish; its record has no artifacts to compare
    assert model["previous"]["run_id"] == "20261201T000000Z-publish"
    assert arch(model, "amd64-usr")["diff"]["basis"] == "artifacts" and "Gate: **released** — overridden: cli-test" in report.markdown(model, over)
