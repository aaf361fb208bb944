#!/usr/bin/env python
"""hack/demo.sh's worker: a throwaway local kiln fleet in network namespaces running the whole pipeline
against the STAND-IN SDK (a test fixture that imitates the Flatcar SDK's CLI; no real Flatcar is built).

  demo_fleet.py up DIR     fleet + stand-in SDK + playbooks/pipeline.yml + mirror served on 127.0.0.1:PORT
  demo_fleet.py down DIR   stop the local nginx, remove SDK containers, tear the fleet down, remove DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.harness import Fleet  # noqa: E402
from tests.integration import test_pipeline_fleet as tpf  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

PORT = int(os.environ.get("KILN_DEMO_PORT", "8088"))


def nginx_conf(d, root):
    (d / "nginx").mkdir(exist_ok=True)
    conf = d / "nginx" / "nginx.conf"
    conf.write_text(f"""user root;
worker_processes 1;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {d}/nginx/access.log;
    client_body_temp_path {d}/nginx/tmp;
    proxy_temp_path {d}/nginx/tmp;
    fastcgi_temp_path {d}/nginx/tmp;
    uwsgi_temp_path {d}/nginx/tmp;
    scgi_temp_path {d}/nginx/tmp;
    server {{
        listen 127.0.0.1:{PORT};
        root {root};
        autoindex on;
        default_type application/octet-stream;
        types {{ text/plain txt DIGESTS asc sha256; }}
    }}
}}
""")
    (d / "nginx" / "tmp").mkdir(exist_ok=True)
    return conf


def up(d):
    d.mkdir(parents=True, exist_ok=True)

    def skip(msg):
        raise SystemExit("demo cannot run: " + msg)
    tpf.check_prerequisites(skip)
    print("kiln demo: this uses the STAND-IN SDK (tests/standin_sdk), not the real Flatcar SDK;", flush=True)
    print("           the images it builds are tiny stand-ins that really boot under QEMU.", flush=True)
    hosts = json.dumps(tpf.HOSTS)
    subprocess.run([sys.executable, "-m", "tests.fleet.harness", "up", "--dir", str(d / "fleet"),
                    "--prefix", "kdemo", "--hosts", hosts], check=True, cwd=REPO)
    fleet = Fleet.load(d / "fleet")
    fid = tpf.populate_fleet(fleet, d)
    (d / "fid").write_text(fid)
    print("kiln demo: running playbooks/pipeline.yml on the fleet (build -> test -> sign -> publish)...", flush=True)
    res = tpf.run_pipeline(fleet, timeout=3600)
    (d / "pipeline.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        print(res.stdout[-6000:])
        raise SystemExit("kiln demo: the pipeline failed (full log: %s)" % (d / "pipeline.log"))
    conf = nginx_conf(d, fleet.host_root("mirror") / "mirror")
    subprocess.run(["nginx", "-c", str(conf), "-p", str(d / "nginx")], check=True)
    print((fleet.workdir / "summary" / "summary.md").read_text())
    print(f"kiln demo: mirror served on http://127.0.0.1:{PORT}/  (e.g. curl http://127.0.0.1:{PORT}/amd64-usr/current/version.txt)")
    print(f"kiln demo: run summary in {fleet.workdir / 'summary'}/summary.{{md,json}}; pipeline log in {d / 'pipeline.log'}")
    print("kiln demo: remove everything with: hack/demo.sh down")


def down(d):
    pid = d / "nginx" / "nginx.pid"
    if pid.exists():
        subprocess.run(["nginx", "-c", str(d / "nginx" / "nginx.conf"), "-p", str(d / "nginx"), "-s", "stop"],
                       capture_output=True, check=False)
    if (d / "fid").exists():
        sdk.remove_containers("kiln-%s-" % (d / "fid").read_text().strip())
    if (d / "fleet" / "fleet.json").exists():
        subprocess.run([sys.executable, "-m", "tests.fleet.harness", "down", "--dir", str(d / "fleet")], cwd=REPO, check=False)
    subprocess.run(["rm", "-rf", str(d)], check=True)
    print("kiln demo: removed %s" % d)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("up", "down"):
        raise SystemExit(__doc__)
    d = Path(sys.argv[2]).resolve()
    (up if sys.argv[1] == "up" else down)(d)


if __name__ == "__main__":
    main()
