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
