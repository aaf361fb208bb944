import pytest

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.kiln.flatcar.plugins.module_utils import _runner


class Failed(Exception):
    pass


@pytest.fixture
def module(monkeypatch):
    with patch_module_args({}):
        mod = AnsibleModule(argument_spec={})

    def fail_json(**kw):
        raise Failed(kw)

    monkeypatch.setattr(mod, "fail_json", fail_json)
    return mod


def test_output_goes_to_log_not_memory(module, tmp_path):
    log = tmp_path / "logs" / "x.log"
    runner = _runner.Runner(module, log_path=str(log))
    res = runner.run(["/bin/sh", "-c", "for i in 1 2 3; do echo line$i; done; echo err >&2"])
    assert res.rc == 0 and res.cmd[0] == "/bin/sh"
    text = log.read_text()
    assert "line3" in text and "err" in text and "### kiln" in text


def test_environment_is_allow_listed(module, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_SECRET_SHOULD_NOT_LEAK", "s3cret")
    monkeypatch.setenv("FLATCAR_BUILD_ID", "from-env")
    log = tmp_path / "env.log"
    runner = _runner.Runner(module, log_path=str(log), env_allow=_runner.SDK_ENV_PASSTHROUGH, env={"COREOS_OFFICIAL": "1"})
    runner.run(["/usr/bin/env"])
    text = log.read_text()
    assert "KILN_SECRET_SHOULD_NOT_LEAK" not in text
    assert "FLATCAR_BUILD_ID=from-env" in text and "COREOS_OFFICIAL=1" in text


def test_stdin_carries_secrets_without_argv(module, tmp_path):
    log = tmp_path / "s.log"
    out = tmp_path / "got"
    runner = _runner.Runner(module, log_path=str(log))
    runner.run(["/bin/sh", "-c", 'cat > "$0"', str(out)], data=b"passphrase-123")
    assert out.read_bytes() == b"passphrase-123"
    assert "passphrase-123" not in log.read_text()


def test_failure_is_one_line_with_tail(module, tmp_path):
    log = tmp_path / "f.log"
    seen = {}
    runner = _runner.Runner(module, log_path=str(log), on_failure=lambda msg, payload: seen.update(msg=msg))
    with pytest.raises(Failed) as exc:
        runner.run(["/bin/sh", "-c", "echo partial; echo 'ERROR: disk full' >&2; exit 3"], msg="step failed:\nsee log")
    kw = exc.value.args[0]
    assert kw["msg"] == "step failed: see log"
    assert kw["rc"] == 3 and kw["log_path"] == str(log)
    assert any("disk full" in line for line in kw["log_tail"])
    assert seen["msg"] == "step failed: see log"


def test_tail_lines_reads_only_the_end(tmp_path):
    big = tmp_path / "big.log"
    with open(big, "w") as fh:
        for i in range(200000):
            fh.write("line %d\n" % i)
    tail = _runner.tail_lines(str(big), 3)
    assert tail == ["line 199997", "line 199998", "line 199999"]


def test_run_all_runs_at_once_and_logs_in_call_order(module, tmp_path):
    """Two commands that each wait for the other's marker can only finish when they run at the same time; the log
    then holds each command whole, in call order, and no part file is left."""
    log = tmp_path / "all.log"
    runner = _runner.Runner(module, log_path=str(log))
    a, b = tmp_path / "a", tmp_path / "b"
    wait = 'touch "$1"; i=0; while [ ! -e "$2" ]; do i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.05; done; echo "$3 done"'
    res = runner.run_all([
        {"argv": ["/bin/sh", "-c", wait, "x", str(a), str(b), "first"]},
        {"argv": ["/bin/sh", "-c", wait, "x", str(b), str(a), "second"], "data": "ignored"},
    ], workers=2)
    assert [r.rc for r in res] == [0, 0]
    text = log.read_text()
    assert text.index("first done") < text.index("second done")
    assert text.count("### kiln") == 4 and text.index("first done") < text.index("rc=0") < text.index("second done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "all.log", "b"]


def test_run_all_fails_with_the_first_failure_after_all_ended(module, tmp_path):
    log = tmp_path / "all.log"
    runner = _runner.Runner(module, log_path=str(log))
    done = tmp_path / "slow-done"
    with pytest.raises(Failed) as err:
        runner.run_all([
            {"argv": ["/bin/sh", "-c", "echo slow; sleep 0.5; touch " + str(done)], "msg": "slow failed"},
            {"argv": ["/bin/sh", "-c", "echo boom; exit 3"], "msg": "the second one failed"},
            {"argv": ["/bin/sh", "-c", "exit 4"], "msg": "the third one failed"},
        ])
    kw = err.value.args[0]
    assert kw["msg"] == "the second one failed" and kw["rc"] == 3 and kw["log_path"] == str(log)
    assert any("boom" in line for line in kw["log_tail"])
    assert done.exists()  # the slow command was not cut short
    assert not [p for p in tmp_path.iterdir() if ".part-" in p.name]


def test_run_all_one_worker_runs_in_order(module, tmp_path):
    log = tmp_path / "one.log"
    runner = _runner.Runner(module, log_path=str(log))
    order = tmp_path / "order"
    res = runner.run_all([{"argv": ["/bin/sh", "-c", "echo %d >> %s" % (i, order)]} for i in range(4)], workers=1)
    assert [r.rc for r in res] == [0] * 4 and order.read_text().split() == ["0", "1", "2", "3"]
    assert runner.run_all([]) == []
