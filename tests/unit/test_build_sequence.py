"""Issue 10: build.yml and pipeline.yml run one build sequence, the kiln.flatcar.build role.

Static checks on the shipped YAML: both playbooks import the role, neither calls an SDK stage module itself, and
the role runs the stages in the documented order with async jobs for the long ones."""

from __future__ import annotations

import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SDK_STAGE_MODULES = ("sdk_checkout", "sdk_image", "packages", "image", "vm_image", "sysext")
ORDER = ["sdk_checkout", "build_lock", "sdk_image", "binpkg_cache", "packages", "async_wait", "image", "async_wait",
         "vm_image", "sysext", "binpkg_cache", "build_lock"]


def load(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def tasks(items):
    """Every task, depth first, through block/rescue/always."""
    for t in items or []:
        yield t
        for key in ("block", "rescue", "always"):
            yield from tasks(t.get(key))


def action(task):
    skip = {"name", "block", "rescue", "always", "when", "register", "vars", "loop", "loop_control", "async", "poll",
            "changed_when", "failed_when", "until", "retries", "delay", "tags", "delegate_to", "check_mode", "no_log",
            "throttle", "notify", "ignore_errors", "module_defaults"}
    keys = [k for k in task if k not in skip]
    return keys[0] if keys else ""


def playbook_tasks(name):
    for play in load("playbooks", name):
        for section in ("pre_tasks", "tasks", "post_tasks"):
            yield from tasks(play.get(section))


def test_both_playbooks_import_the_build_role_and_call_no_stage_module():
    for name in ("build.yml", "pipeline.yml"):
        found = list(playbook_tasks(name))
        imports = [t for t in found if action(t) == "ansible.builtin.import_role" and t[action(t)]["name"] == "kiln.flatcar.build"]
        assert len(imports) == 1, name
        called = sorted({action(t) for t in found} & {"kiln.flatcar." + m for m in SDK_STAGE_MODULES})
        assert called == [], "%s calls %s itself instead of through kiln.flatcar.build" % (name, called)


def test_role_runs_the_stages_in_order_with_async_jobs():
    role = list(tasks(load("roles", "build", "tasks", "main.yml")))
    seq = [action(t).split(".")[-1] for t in role if action(t).startswith(("kiln.flatcar.", "ansible.builtin.async_status"))
           and not (t.get(action(t)) or {}).get("mode") == "cleanup" and "after a failure" not in t.get("name", "")]
    assert seq == ORDER, seq
    by_module = {action(t).split(".")[-1]: t for t in role if action(t).startswith("kiln.flatcar.")}
    for long_step in ("packages", "image"):
        assert by_module[long_step]["poll"] == 0 and "async" in by_module[long_step]
    # check-mode guard: nothing after a fresh checkout is inspected in --check
    assert "__build_can_run" in str(by_module["sdk_image"]["when"]) and "__build_can_run" in str(by_module["packages"]["when"])
    # the sysext stage exists and loops over the requested extensions
    assert by_module["sysext"]["loop"] == "{{ build_sysexts }}"


def test_role_has_argument_specs_for_every_default():
    defaults = load("roles", "build", "defaults", "main.yml")
    spec = load("roles", "build", "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(spec)
    assert all(name.startswith("build_") for name in defaults)


def test_pipeline_passes_returned_record_paths_on():
    text = open(os.path.join(REPO, "playbooks", "pipeline.yml"), encoding="utf-8").read()
    assert "build-record.json" not in text and "kiln_build_version" not in text
    found = list(playbook_tasks("pipeline.yml"))
    # both transfers take the block's module_defaults: the builder's record, never a path of their own
    defaults = [t["module_defaults"]["kiln.flatcar.artifact_transfer"] for t in found
                if "kiln.flatcar.artifact_transfer" in (t.get("module_defaults") or {})]
    assert [d["record_path"] for d in defaults] == ["{{ build_record_path }}"]
    transfers = [t for t in found if action(t) == "kiln.flatcar.artifact_transfer"]
    assert len(transfers) == 2 and not any("record_path" in t[action(t)] for t in transfers)
    # the build's outputs go while the image boots (an async job launched before the boot check and waited for
    # after it); the boot check's own results go after it
    seq = [action(t) for t in found]
    early, late = (found.index(t) for t in transfers)
    boot = seq.index("kiln.flatcar.boot_check")
    assert transfers[0].get("poll") == 0 and "async" in transfers[0] and early < boot < late
    assert "kiln.flatcar.async_wait" in seq[boot:late]
    # signing runs in the builder's play, on the record the transfer returned for the signer
    for mod in ("kiln.flatcar.update_payload", "kiln.flatcar.artifact_sign"):
        task = next(t for t in found if action(t) == mod)
        assert task[mod]["record_path"] == "{{ kiln_transfer.dest_record_path }}"
        assert task["delegate_to"] == "{{ _signer }}"
    # publishing, after the gate, on the record the gate collected per architecture (the same returned path)
    task = next(t for t in found if action(t) == "kiln.flatcar.publish")
    assert task["kiln.flatcar.publish"]["record_path"] == "{{ _outcome[item].record_path }}"
