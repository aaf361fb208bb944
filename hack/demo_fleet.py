#!/usr/bin/env python
"""hack/demo.sh's worker: a throwaway local kiln fleet in network namespaces running the whole pipeline
against the STAND-IN SDK (a test fixture that imitates the Flatcar SDK's CLI; no real Flatcar is built).

  demo_fleet.py up DIR     fleet + stand-in SDK + Nebraska stub + playbooks/pipeline.yml (run release-<version>:
                           images, update payloads, public keys, Nebraska registration) + mirror on 127.0.0.1:PORT
  demo_fleet.py down DIR   remove everything `up` made (recorded in DIR/demo-state.json as it goes): the local
                           nginx, the SDK containers, the fleet (namespaces, sshd), gpg-agent, mounts and loop
                           devices under DIR, the stand-in SDK image and the kiln test cache if the demo created
                           them, dockerd if the demo started it, then DIR (the demo's TMPDIR is DIR/tmp)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.harness import Fleet  # noqa: E402
from tests.integration import test_pipeline_fleet as tpf  # noqa: E402
from tests.standin_sdk import fixture as sdk  # noqa: E402

PORT = int(os.environ.get("KILN_DEMO_PORT", "8088"))
STATE = "demo-state.json"
DOCKERD_SH = Path(os.environ.get("KILN_DEMO_DOCKERD_SH", REPO / "tests" / "standin_sdk" / "dockerd.sh"))  # tests stub it


def cache_dir():
    return Path(os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-test"))


def load_state(d):
    try:
        return json.loads((d / STATE).read_text())
    except (OSError, ValueError):
        return {}


def record(d, **kw):
    """Write what up is about to create BEFORE creating it, so that an interrupted up is cleaned too."""
    st = load_state(d)
    st.update(kw)
    tmp = d / (STATE + ".tmp")
    tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
    os.replace(tmp, d / STATE)


STANDIN_LABEL = "org.kiln.standin-sdk.hash"  # set by tests/standin_sdk/image/build-sdk-image.sh


def legacy_standin_tags():
    """Stand-in SDK images that older versions tagged with the real SDK's name (ghcr.io/flatcar/flatcar-sdk-*):
    a real run_sdk_container would take them for the SDK. Only tags whose image carries the stand-in label."""
    ls = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "ghcr.io/flatcar/flatcar-sdk-*"],
                        capture_output=True, text=True, check=False)
    found = []
    for tag in ls.stdout.split() if ls.returncode == 0 else []:
        label = subprocess.run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "%s"}}' % STANDIN_LABEL, tag],
                               capture_output=True, text=True, check=False).stdout.strip()
        if label and label != "<no value>":
            found.append(tag)
    return found


def image_exists(name):
    return subprocess.run(["docker", "image", "inspect", "--", name], capture_output=True, check=False).returncode == 0


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
        types {{ text/plain txt DIGESTS asc sha256 pem; }}
    }}
}}
""")
    (d / "nginx" / "tmp").mkdir(exist_ok=True)
    return conf


def up(d):
    if d.exists():
        trusted_state(d)            # ours, and nobody else could have planted what down will remove
    else:
        d.mkdir(mode=0o700, parents=True)
        os.chmod(d, 0o700)          # down refuses a directory others can write to
    # every temp file of the controller side (ours, ansible's, the stand-in's scripts) under DIR
    (d / "tmp").mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(d / "tmp")
    record(d, cache_dir=str(cache_dir()), cache_created=not cache_dir().exists(),
           dockerd_started=not sdk.docker_available())

    def skip(msg):
        raise SystemExit("demo cannot run: " + msg)
    tpf.check_prerequisites(skip)       # starts dockerd (tests/standin_sdk/dockerd.sh) when docker does not work
    image = sdk.sdk_image_name("all", tpf.SDK_VERSION)
    record(d, images_built=[] if image_exists(image) else [image])
    print("kiln demo: this uses the STAND-IN SDK (tests/standin_sdk), not the real Flatcar SDK;", flush=True)
    print("           the images it builds are tiny stand-ins that really boot under QEMU.", flush=True)
    hosts = json.dumps(tpf.HOSTS)
    subprocess.run([sys.executable, "-m", "tests.fleet.harness", "up", "--dir", str(d / "fleet"),
                    "--prefix", "kdemo", "--hosts", hosts], check=True, cwd=REPO)
    fleet = Fleet.load(d / "fleet")
    (d / "fid").write_text(fleet.fleet_id.replace("/", "-"))      # what populate_fleet names containers after
    fid = tpf.populate_fleet(fleet, d)
    (d / "fid").write_text(fid)
    # Nebraska: the spec-checked stub on 127.0.0.1 of the controller's namespace (where the pipeline's registration
    # runs); it ends with the fleet's namespaces on down. Package URLs point at the mirror as served below.
    nebraska = tpf.nebraska_spec().is_file()
    if nebraska:
        tpf.start_release_services(fleet, public_url=f"http://127.0.0.1:{PORT}", mirror_http=False)
    else:
        print("kiln demo: no Nebraska OpenAPI spec at %s (set KILN_VENDOR_DIR): the demo runs without Nebraska"
              % tpf.nebraska_spec(), flush=True)
    print("kiln demo: running playbooks/pipeline.yml on the fleet (build -> test -> sign -> update payload -> publish"
          " -> keys -> Nebraska) as run release-%s..." % tpf.VERSION, flush=True)
    res = tpf.run_pipeline(fleet, timeout=3600)
    (d / "pipeline.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        print(res.stdout[-6000:])
        raise SystemExit("kiln demo: the pipeline failed (full log: %s)" % (d / "pipeline.log"))
    conf = nginx_conf(d, fleet.host_root("mirror") / "mirror")
    subprocess.run(["nginx", "-c", str(conf), "-p", str(d / "nginx")], check=True)
    print((fleet.workdir / "summary" / "summary.md").read_text())
    print(f"kiln demo: mirror served on http://127.0.0.1:{PORT}/  (e.g. curl http://127.0.0.1:{PORT}/amd64-usr/current/version.txt)")
    show_release(fleet, nebraska)
    print(f"kiln demo: run summary in {fleet.workdir / 'summary'}/summary.{{md,json}}; pipeline log in {d / 'pipeline.log'}")
    down_cmd = "make -C %s demo-clean" % REPO
    if d != Path("/tmp/kiln-demo"):
        down_cmd += " KILN_DEMO_DIR=%s" % d
    print("kiln demo: remove everything with: %s  (or: %s down)" % (down_cmd, REPO / "hack" / "demo.sh"))


def show_release(fleet, nebraska):
    """What flatcar-update, Nebraska and a user verifying images get from this release."""
    base = f"http://127.0.0.1:{PORT}"
    print(f"kiln demo: update payload as flatcar-update fetches it: {base}/update/amd64-usr/{tpf.VERSION}/flatcar_production_update.gz"
          " (+ .sha256)")
    print(f"kiln demo: public keys: {base}/keys/update-payload-key.pub.pem (update payloads), {base}/keys/image-signing-key.asc"
          " (GnuPG, image signatures)")
    if not nebraska:
        return
    for pkg in tpf.nebraska_packages(fleet) or []:
        print("kiln demo: Nebraska package %s: version %s arch %s size %s sha1 %s url %s%s" % (
            pkg["id"], pkg["version"], {1: "amd64", 2: "arm64"}.get(pkg["arch"], pkg["arch"]), pkg["size"], pkg["hash"],
            pkg["url"], pkg["filename"]))
    print("kiln demo: the Nebraska stub listens on 127.0.0.1:%d inside the controller namespace: sudo ip netns exec %s curl "
          "-H 'Authorization: Bearer %s' http://127.0.0.1:%d/api/apps/%s/packages" % (
              tpf.NEBRASKA_PORT, fleet.ctl_ns, tpf.NEBRASKA_TOKEN, tpf.NEBRASKA_PORT, tpf.FLATCAR_APP))


def mounts_under(d):
    """Mount points at or below d, deepest first (from /proc/self/mountinfo; octal escapes decoded)."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        mp = line.split()[4].encode().decode("unicode_escape")
        if mp == str(d) or mp.startswith(str(d) + "/"):
            out.append(mp)
    return sorted(set(out), key=len, reverse=True)


def loops_under(d):
    """Loop devices whose backing file is below d."""
    res = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True, check=False)
    devs = []
    for line in res.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip().startswith(str(d) + "/"):
            devs.append(parts[0])
    return devs


def trusted_state(d):
    """The recorded state, refused unless DIR and the file are ours and writable only by us: down runs as
    root and removes what the file names (DIR defaults to a path in the world-writable /tmp)."""
    for p in (d, d / STATE):
        try:
            info = os.lstat(p)
        except FileNotFoundError:
            continue
        if info.st_uid != os.geteuid() or info.st_mode & 0o022 or (p == d and not os.path.isdir(p)):
            raise SystemExit("kiln demo: %s is not owned by this user or is writable by others: not touching it" % p)
    st = load_state(d)
    cache = st.get("cache_dir")
    if cache is not None and (not isinstance(cache, str) or not os.path.isabs(cache)
                              or os.path.normpath(cache) in ("/", "/var", "/var/cache", "/tmp")):
        raise SystemExit("kiln demo: %s names an odd cache directory %r: not touching it" % (d / STATE, cache))
    images = st.get("images_built", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and re.fullmatch(r"[a-z0-9][a-z0-9._/:-]*", i)
                                               for i in images):
        raise SystemExit("kiln demo: %s names odd images %r: not touching them" % (d / STATE, images))
    return st


def down(d):
    if not d.exists():
        print("kiln demo: nothing at %s" % d)
        return
    if not any((d / f).exists() for f in (STATE, "fid", "fleet/fleet.json")):
        raise SystemExit("kiln demo: %s holds no demo (no %s, fid or fleet/fleet.json): not removing it" % (d, STATE))
    st = trusted_state(d)
    pid = d / "nginx" / "nginx.pid"
    if pid.exists():
        subprocess.run(["nginx", "-c", str(d / "nginx" / "nginx.conf"), "-p", str(d / "nginx"), "-s", "stop"],
                       capture_output=True, check=False)
    if (d / "fid").exists():
        sdk.remove_containers("kiln-%s-" % (d / "fid").read_text().strip())
    if (d / "fleet" / "fleet.json").exists():
        subprocess.run([sys.executable, "-m", "tests.fleet.harness", "down", "--dir", str(d / "fleet")], cwd=REPO, check=False)
    for gh in sorted((d / "fleet").glob("hosts/*/gnupg")) if (d / "fleet").is_dir() else []:
        subprocess.run(["gpgconf", "--homedir", str(gh), "--kill", "all"], capture_output=True, check=False)
    for mp in mounts_under(d):
        subprocess.run(["umount", "--lazy", "--", mp], capture_output=True, check=False)
    for dev in loops_under(d):
        subprocess.run(["losetup", "--detach", dev], capture_output=True, check=False)
    left = mounts_under(d)
    if left:
        raise SystemExit("kiln demo: still mounted under %s, not removing it: %s" % (d, ", ".join(left)))
    for image in st.get("images_built", []) + (legacy_standin_tags() if sdk.docker_available() else []):
        if sdk.docker_available():
            subprocess.run(["docker", "image", "rm", "--force", "--", image], capture_output=True, check=False)
            print("kiln demo: removed image %s" % image)
    if st.get("cache_created") and st.get("cache_dir"):
        cache = Path(st["cache_dir"])
        subprocess.run(["rm", "-rf", "--", str(cache)], check=False)
        print("kiln demo: removed %s" % cache)
    if st.get("dockerd_started"):
        # stops only a dockerd that tests/standin_sdk/dockerd.sh started (its pid file)
        r = subprocess.run([str(DOCKERD_SH), "stop"], capture_output=True, text=True, check=False)
        print("kiln demo: %s" % (r.stdout.strip() or r.stderr.strip()))
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(d)], check=True)
    print("kiln demo: removed %s" % d)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("up", "down"):
        raise SystemExit(__doc__)
    d = Path(sys.argv[2]).resolve()
    (up if sys.argv[1] == "up" else down)(d)


if __name__ == "__main__":
    main()
