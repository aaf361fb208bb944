"""Network-namespace SSH fleet for kiln integration tests.

A ``Fleet`` is a controller network namespace holding a bridge, plus one network
namespace per emulated host, each with a veth on that bridge and its own
``/usr/sbin/sshd``.  Ansible runs *inside the controller namespace* (see
``run_controller``); nothing in the root namespace ever dials a fleet address.

Safety (docs: test-machine.md, "Safety findings"):

* the root netns has a real default route, so before any namespace is created a
  ``blackhole`` route for the fleet subnet is added in the root netns (and checked
  with ``ip route get``); a stray root-ns connect then fails with EINVAL;
* the controller and the hosts have no default route, only the fleet subnet;
* ``teardown()`` kills every process left in the fleet's namespaces (sshd,
  ControlPersist masters, async jobs), deletes the namespaces and finally the
  route; it runs on normal exit, on errors and on KeyboardInterrupt;
* every fleet is recorded in ``/run/kiln-fleet/<id>.json`` before anything is
  created, so ``cleanup_stale(prefix)`` can remove what a crashed run left.

Usage::

    with Fleet("kft", hosts={"b-amd64": {"groups": ["builders_amd64"]},
                             "signer": {"groups": ["signers"]}},
               workdir=tmp_path) as fleet:
        fleet.ansible_playbook("site.yml")            # runs in the controller netns
        fleet.exec_on("b-amd64", ["ssh", "-F", fleet.ssh_config("b-amd64"),
                                  fleet.ip("signer"), "true"])

CLI (state in DIR/fleet.json)::

    python -m tests.fleet.harness up --dir DIR
    python -m tests.fleet.harness down --dir DIR
    python -m tests.fleet.harness cleanup-stale --prefix kfleet
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
TARGET_PYTHON = "/usr/bin/python3"
REGISTRY_DIR = Path("/run/kiln-fleet")
NETNS_DIR = Path("/run/netns")
# Routing protocol number that marks the harness's blackhole routes ("ip route ... proto 213").
ROUTE_PROTO = "213"
AUTO_SUBNET_BASE = "10.99"
DEFAULT_HOSTS = {
    "b-amd64": {"groups": ["builders_amd64", "builders"]},
    "b-arm64": {"groups": ["builders_arm64", "builders"]},
    "signer": {"groups": ["signers"]},
    "mirror": {"groups": ["mirrors", "caches"]},
}
SSH_ARGS = ("-C -o ControlMaster=auto -o ControlPersist=30m -o ServerAliveInterval=30 "
            "-o ServerAliveCountMax=10 -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR")
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
# ansible formats this with "% dict(directory=...)" (ini value read raw); ssh then sees <dir>/%h-%p-%r
CONTROL_PATH = "%(directory)s/%%h-%%p-%%r"


class FleetError(RuntimeError):
    """Set-up, teardown or safety-check failure of the fleet harness."""


# --------------------------------------------------------------------------- helpers

def _run(argv, check=True, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    res = subprocess.run(argv, check=False, **kw)
    if check and res.returncode != 0:
        raise FleetError(f"{shlex.join(argv)} failed rc={res.returncode}: {(res.stderr or '').strip()}")
    return res


def skip_reason():
    """Why a fleet cannot run here, or None."""
    if os.geteuid() != 0:
        return "fleet harness needs root (network namespaces, sshd)"
    for tool in ("ip", SSHD, SSH, SSH_KEYGEN, TARGET_PYTHON):
        if not shutil.which(tool):
            return f"fleet harness needs {tool}"
    try:
        res = _run(["ip", "netns", "list"], check=False)
    except OSError as exc:
        return f"'ip netns' unavailable: {exc}"
    if res.returncode != 0:
        return f"'ip netns' unavailable: {res.stderr.strip()}"
    return None


def _netns_inode(name):
    st = os.stat(NETNS_DIR / name)
    return (st.st_dev, st.st_ino)


def _pid_netns(pid):
    st = os.stat(f"/proc/{pid}/ns/net")
    return (st.st_dev, st.st_ino)


def pids_in_netns(name):
    """PIDs of live processes whose network namespace is the named netns."""
    try:
        target = _netns_inode(name)
    except FileNotFoundError:
        return []
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if _pid_netns(entry) == target:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # zombies count as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _proc_start(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _kill_pids(pids, grace=2.0):
    """SIGTERM, wait up to ``grace`` s, then SIGKILL what is left."""
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.02)
    if any(_alive(p) for p in pids):
        raise FleetError(f"processes survived SIGKILL: {pids}")


def kill_netns(name):
    """Kill every process in the named netns (repeat: killed parents may spawn/reparent)."""
    for _unused in range(5):
        pids = pids_in_netns(name)
        if not pids:
            return
        _kill_pids(pids)


def _listening(pid, ip, port=22):
    """True when the netns of ``pid`` has a TCP LISTEN socket on ip:port (reads /proc/<pid>/net/tcp)."""
    want = "%08X:%04X" % (int.from_bytes(ipaddress.IPv4Address(ip).packed, "little"), port)
    try:
        with open(f"/proc/{pid}/net/tcp") as fh:
            next(fh)
            return any(line.split()[1] == want and line.split()[3] == "0A" for line in fh)
    except OSError:
        return False


def _root_routes():
    res = _run(["ip", "-j", "route", "show", "table", "main"])
    return json.loads(res.stdout or "[]")


def _route_add_blackhole(subnet):
    """Atomically claim ``subnet``: False if the blackhole route already exists."""
    res = _run(["ip", "route", "add", "blackhole", str(subnet), "proto", ROUTE_PROTO], check=False)
    if res.returncode == 0:
        return True
    if "File exists" in res.stderr:
        return False
    raise FleetError(f"cannot add blackhole route for {subnet}: {res.stderr.strip()}")


def _route_del_blackhole(subnet):
    """Remove the route; True when this call removed it, False when it was already gone."""
    res = _run(["ip", "route", "del", "blackhole", str(subnet), "proto", ROUTE_PROTO], check=False)
    if res.returncode != 0 and "No such process" not in res.stderr:
        raise FleetError(f"cannot remove blackhole route {subnet}: {res.stderr.strip()}")
    return res.returncode == 0


def _subnet_conflict(net):
    """Why ``net`` cannot be a fleet subnet (overlaps a root-ns route/address), or None."""
    for route in _root_routes():
        dst = route.get("dst")
        if dst in (None, "default"):
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version == 4 and other.overlaps(net):
            return f"fleet subnet {net} overlaps root-ns route {route}"
    res = _run(["ip", "-j", "-4", "addr", "show"])
    for link in json.loads(res.stdout or "[]"):
        for addr in link.get("addr_info", []):
            if ipaddress.ip_address(addr["local"]) in net:
                return f"fleet subnet {net} overlaps root-ns address {addr['local']}"
    return None


def assert_root_blackholed(ip):
    """The root netns must drop ``ip``: `ip route get` fails with EINVAL and the most
    specific matching route is a blackhole."""
    res = _run(["ip", "route", "get", str(ip)], check=False)
    if res.returncode == 0 or "Invalid argument" not in res.stderr:
        raise FleetError(f"root netns would route {ip}: {res.stdout.strip() or res.stderr.strip()}")
    matches = json.loads(_run(["ip", "-j", "route", "show", "match", str(ip)]).stdout or "[]")

    def plen(r):
        return -1 if r["dst"] == "default" else ipaddress.ip_network(r["dst"], strict=False).prefixlen
    best = max(matches, key=plen, default=None)
    if not best or best.get("type") != "blackhole":
        raise FleetError(f"most specific root-ns route for {ip} is not a blackhole: {best}")


def _root_tcp_peers(net):
    """TCP/UDP sockets of the root netns whose remote address is inside ``net``."""
    hits = []
    for proto in ("tcp", "udp"):
        try:
            with open(f"/proc/self/net/{proto}") as fh:
                next(fh)
                for line in fh:
                    rem = line.split()[2]
                    ip = ipaddress.IPv4Address(bytes.fromhex(rem.split(":")[0])[::-1])
                    if ip in net:
                        hits.append(f"{proto} {line.strip()}")
        except OSError:
            pass
    return hits


def snmp_counters():
    """Root-ns /proc/net/snmp Tcp counters (informational; not attributable per subnet)."""
    with open("/proc/self/net/snmp") as fh:
        lines = [ln.split() for ln in fh if ln.startswith("Tcp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))


# --------------------------------------------------------------------------- registry

def _registry_write(state):
    REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = REGISTRY_DIR / f"{state['fleet_id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def _registry_entries():
    out = []
    if REGISTRY_DIR.is_dir():
        for p in REGISTRY_DIR.glob("*.json"):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue
    return out


def _owner_alive(state):
    if state.get("detached"):
        return True
    pid = state.get("owner_pid")
    return bool(pid) and _alive(pid) and _proc_start(pid) == state.get("owner_start")


def cleanup_stale(prefix, include_detached=False):
    """Remove leftovers of crashed fleets whose id starts with ``<prefix>-``:
    namespaces (and all processes in them), blackhole routes, registry entries.
    Fleets whose owner process is alive are left alone; CLI (detached) fleets only
    with ``include_detached``.  Returns a list of what was removed."""
    removed = []
    # Snapshot namespaces and routes *before* reading the registry: a fleet records itself
    # before creating anything, so whatever we list here is covered by the entries read next.
    ns_names = sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []
    routes = json.loads(_run(["ip", "-j", "route", "show", "proto", ROUTE_PROTO]).stdout or "[]")
    live_ns, live_nets, torn = set(), set(), set()
    for st in _registry_entries():
        mine = st["fleet_id"].startswith(prefix + "-")
        if mine and (not _owner_alive(st) or (include_detached and st.get("detached"))):
            errors = Fleet._from_state(st)._teardown_state()
            torn.add(st["fleet_id"])
            removed.append(f"fleet {st['fleet_id']}" + (f" (errors: {errors})" if errors else ""))
        else:
            live_ns.update(st.get("netns", []))
            if st.get("subnet"):      # also while the owner is between "recorded" and "route added"
                live_nets.add(st["subnet"])
    for name in ns_names:
        if name.startswith(prefix + "-") and name not in live_ns and (NETNS_DIR / name).exists():
            kill_netns(name)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(f"netns {name}")
    orphans = [r["dst"] for r in routes if r.get("type") == "blackhole" and r["dst"] not in live_nets]
    if orphans:
        # Other processes (parallel test workers) run fleets too: one may have torn down between the
        # snapshot above and the registry read (route gone first, then its entry). Read the registry
        # again, and report only routes this call really removed.
        live_nets = {st["subnet"] for st in _registry_entries() if st.get("subnet") and st["fleet_id"] not in torn}
        for dst in orphans:
            if dst not in live_nets and _route_del_blackhole(dst):
                removed.append(f"route blackhole {dst}")
    return removed


# --------------------------------------------------------------------------- Fleet

class Fleet:
    """A controller netns + one netns/sshd per host.  See the module docstring."""

    def __init__(self, name_prefix="kfleet", subnet=None, hosts=None, workdir=None,
                 groups=None, ansible_bin=None, cfg_extra=None, detached=False):
        if not name_prefix.replace("-", "").isalnum() or len(name_prefix) > 12:
            raise ValueError("name_prefix: letters, digits and '-', at most 12 characters")
        self.name_prefix = name_prefix
        self.fleet_id = f"{name_prefix}-{secrets.token_hex(3)}"
        self.subnet_request = subnet
        self.hosts = {h: dict(spec or {}) for h, spec in (hosts or DEFAULT_HOSTS).items()}
        if not self.hosts:
            raise ValueError("a fleet needs at least one host")
        self.workdir = Path(workdir or f"/tmp/{self.fleet_id}").resolve()
        self.extra_groups = {g: list(m) for g, m in (groups or {}).items()}
        self.ansible_bin = Path(ansible_bin or _default_ansible_bin())
        self.cfg_extra = cfg_extra or {}
        self.detached = detached
        self.ctl_ns = f"{self.fleet_id}-ctl"
        self.host_ns = {h: f"{self.fleet_id}-{_sanitize(h)}" for h in self.hosts}
        self.subnet = None
        self.addrs = {}
        self.ctl_ip = None
        self.route_added = False
        self.netns_created = []
        self._sshd = {}          # host -> Popen (when started by this process)
        self._up = False
        self._torn_down = False
        self.timings = {}

    # ------------------------------------------------------------------ paths
    @property
    def state_file(self):
        return self.workdir / "fleet.json"

    @property
    def key(self):
        return self.workdir / "keys" / "id_ed25519"

    @property
    def inventory(self):
        return self.workdir / "inventory.yml"

    @property
    def ansible_cfg(self):
        return self.workdir / "ansible.cfg"

    @property
    def control_dir(self):
        return self._control_dir

    def host_root(self, host):
        """Per-host data root (namespaces share one filesystem)."""
        self._check_host(host)
        return self.workdir / "hosts" / host

    def ssh_config(self, host):
        """ssh client config a host uses to reach the other hosts (shared client key)."""
        self._check_host(host)
        return self.workdir / "ssh" / f"{host}.config"

    def ip(self, host):
        self._check_host(host)
        return self.addrs[host]

    def _check_host(self, host):
        if host not in self.hosts:
            raise KeyError(f"unknown fleet host {host!r}; hosts: {sorted(self.hosts)}")

    def _sshd_dir(self, host):
        return self.workdir / "sshd" / host

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def up(self):
        if self._up:
            return self
        t0 = time.monotonic()
        reason = skip_reason()
        if reason:
            raise FleetError(reason)
        atexit.register(self._atexit)
        try:
            self._claim_subnet()            # registry + blackhole route, before any netns
            self._write_files()
            self._create_network()
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            for host in self.hosts:
                self.start_sshd(host)
            self._save_state()
        except BaseException:
            try:
                self.teardown()
            except Exception as exc:   # keep the original error visible
                print(f"fleet teardown after failed up() also failed: {exc}", file=sys.stderr)
            raise
        self._up = True
        self.timings["up"] = round(time.monotonic() - t0, 3)
        return self

    def _claim_subnet(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = self._state()
        _registry_write(state)          # recorded before anything exists
        if self.subnet_request and "<n>" not in str(self.subnet_request):
            candidates = [ipaddress.ip_network(self.subnet_request)]
        else:
            order = list(range(1, 255))
            secrets.SystemRandom().shuffle(order)
            candidates = [ipaddress.ip_network(f"{AUTO_SUBNET_BASE}.{n}.0/24") for n in order]
        for net in candidates:
            if not (net.version == 4 and net.is_private) or net.num_addresses - 13 < len(self.hosts):
                raise FleetError(f"fleet subnet {net}: need a private IPv4 net with room for "
                                 f".11-.{10 + len(self.hosts)}")
            conflict = _subnet_conflict(net)
            if conflict:
                if len(candidates) == 1:
                    raise FleetError(conflict)
                continue
            self.subnet = net
            _registry_write(self._state())  # subnet recorded before the route exists
            if _route_add_blackhole(net):
                self.route_added = True
                break
            self.subnet = None
        else:
            raise FleetError("no free fleet subnet (all candidate blackhole routes exist)")
        hosts_ips = list(net.hosts())
        self.ctl_ip = str(hosts_ips[0])
        self.addrs = {h: str(hosts_ips[10 + i]) for i, h in enumerate(self.hosts)}
        for ip in [self.ctl_ip, *self.addrs.values()]:
            assert_root_blackholed(ip)
        _registry_write(self._state())

    def _write_files(self):
        wd = self.workdir
        for sub in ("keys", "ssh", "sshd", "hosts", "logs"):
            (wd / sub).mkdir(parents=True, exist_ok=True)
        # ControlPath (+ the 17-char temp suffix ssh adds) must fit in sun_path (108 bytes).
        # Ansible resolves symlinks in control_path_dir, so a long workdir gets a short real
        # per-fleet directory instead (removed at teardown).
        cp = wd / "cp"
        self._short_cp = None
        if len(str(cp)) + 41 > 107:
            cp = Path(f"/tmp/{self.fleet_id}-cp")
            self._short_cp = str(cp)
        cp.mkdir(mode=0o700, exist_ok=True)
        self._control_dir = cp
        if not self.key.exists():
            _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"{self.fleet_id}-client",
                  "-f", str(self.key)])
        (wd / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        os.chmod(wd / "authorized_keys", 0o600)
        for host in self.hosts:
            d = self._sshd_dir(host)
            d.mkdir(parents=True, exist_ok=True)
            hk = d / "ssh_host_ed25519_key"
            if not hk.exists():
                _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"{host}-hostkey", "-f", str(hk)])
            (d / "sshd_config").write_text(
                f"ListenAddress {self.addrs[host]}\n"
                f"HostKey {hk}\n"
                f"PidFile {d / 'sshd.pid'}\n"
                f"AuthorizedKeysFile {wd / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "MaxStartups 50:30:100\n"
                "MaxSessions 50\n"
                "PrintMotd no\n"
                "UseDNS no\n"
                "Subsystem sftp internal-sftp\n"
                "LogLevel ERROR\n")
            self.host_root(host).mkdir(parents=True, exist_ok=True)
            self.ssh_config(host).write_text(
                f"# client config for {host}: reach the other fleet hosts with the shared key\n"
                "Host *\n"
                "  User root\n"
                f"  IdentityFile {self.key}\n"
                "  IdentitiesOnly yes\n"
                "  BatchMode yes\n"
                "  StrictHostKeyChecking no\n"
                "  UserKnownHostsFile /dev/null\n"
                "  GlobalKnownHostsFile /dev/null\n"
                "  ControlMaster no\n"
                "  ConnectTimeout 10\n"
                "  LogLevel ERROR\n")
        self._write_inventory()
        self._write_ansible_cfg()

    def _inventory_data(self):
        groups = {}
        for host, spec in self.hosts.items():
            for g in spec.get("groups", []):
                groups.setdefault(g, [])
                if host not in groups[g]:
                    groups[g].append(host)
        for g, members in self.extra_groups.items():
            groups.setdefault(g, [])
            for host in members:
                self._check_host(host)
                if host not in groups[g]:
                    groups[g].append(host)
        hostvars = {}
        for host, spec in self.hosts.items():
            root = self.host_root(host)
            hv = {
                "ansible_host": self.addrs[host],
                "kiln_host_root": str(root),
                "kiln_fleet_netns": self.host_ns[host],
                "ansible_remote_tmp": str(root / ".ansible" / "tmp"),
                "ansible_async_dir": str(root / ".ansible_async"),
                "kiln_ssh_config": str(self.ssh_config(host)),
            }
            hv.update(spec.get("vars", {}))
            hostvars[host] = hv
        return {"all": {
            "vars": {
                "ansible_user": "root",
                "ansible_python_interpreter": TARGET_PYTHON,
                "ansible_ssh_private_key_file": str(self.key),
                "kiln_ssh_key": str(self.key),
                "ansible_ssh_args": SSH_ARGS,
                "ansible_ssh_common_args": SSH_COMMON_ARGS,
                "ansible_control_path_dir": str(self.control_dir),
                "ansible_control_path": CONTROL_PATH,
                "ansible_ssh_pipelining": True,
            },
            "hosts": hostvars,
            "children": {g: {"hosts": {h: None for h in m}} for g, m in groups.items()},
        }}

    def _write_inventory(self):
        data = self._inventory_data()
        try:
            import yaml
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        except ImportError:      # JSON is valid YAML
            text = json.dumps(data, indent=2)
        self.inventory.write_text(f"# generated by tests/fleet/harness.py for {self.fleet_id}\n" + text)

    def _write_ansible_cfg(self):
        sections = {
            "defaults": {
                "inventory": str(self.inventory),
                "forks": str(max(5, len(self.hosts))),
                "host_key_checking": "False",
                "interpreter_python": TARGET_PYTHON,
                "retry_files_enabled": "False",
                "local_tmp": str(self.workdir / "ansible-local"),
                "timeout": "10",
            },
            "ssh_connection": {
                "pipelining": "True",
                "ssh_args": SSH_ARGS,
                "control_path_dir": str(self.control_dir),
                "control_path": CONTROL_PATH,
            },
        }
        for sec, kv in self.cfg_extra.items():
            sections.setdefault(sec, {}).update({k: str(v) for k, v in kv.items()})
        text = "".join(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n"
                       for sec, kv in sections.items())
        self.ansible_cfg.write_text(f"# generated by tests/fleet/harness.py for {self.fleet_id}\n" + text)

    def _create_network(self):
        ctl = self.ctl_ns
        plen = self.subnet.prefixlen
        self._netns_add(ctl)
        _run(["ip", "-n", ctl, "link", "set", "lo", "up"])
        _run(["ip", "-n", ctl, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", ctl, "addr", "add", f"{self.ctl_ip}/{plen}", "dev", "br0"])
        _run(["ip", "-n", ctl, "link", "set", "br0", "up"])
        for i, host in enumerate(self.hosts):
            ns = self.host_ns[host]
            self._netns_add(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            veth = f"veth{i}"
            _run(["ip", "link", "add", veth, "netns", ctl, "type", "veth",
                  "peer", "name", "eth0", "netns", ns])
            _run(["ip", "-n", ctl, "link", "set", veth, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.addrs[host]}/{plen}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _netns_add(self, name):
        self.netns_created.append(name)
        _registry_write(self._state())   # recorded before it exists
        _run(["ip", "netns", "add", name])

    # ------------------------------------------------------------------ sshd
    def start_sshd(self, host, timeout=10.0):
        self._check_host(host)
        d = self._sshd_dir(host)
        proc = self._sshd.get(host)
        if proc and proc.poll() is None:
            return proc.pid
        log = open(d / "sshd.log", "ab")
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host_ns[host], SSHD, "-D", "-f", str(d / "sshd_config"),
                 "-E", str(d / "sshd.log")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._sshd[host] = proc
        deadline = time.monotonic() + timeout
        while not _listening(proc.pid, self.addrs[host]):
            if proc.poll() is not None:
                raise FleetError(f"sshd for {host} exited rc={proc.returncode}; see {d / 'sshd.log'}")
            if time.monotonic() > deadline:
                raise FleetError(f"sshd for {host} not listening after {timeout}s")
            time.sleep(0.01)
        if self._up:
            self._save_state()
        return proc.pid

    def sshd_pids(self, host):
        """sshd processes (listener and sessions) in the host's netns."""
        out = []
        for pid in pids_in_netns(self.host_ns[host]):
            try:
                if os.readlink(f"/proc/{pid}/exe") == SSHD:
                    out.append(pid)
            except OSError:
                continue
        return out

    def kill_sshd(self, host):
        """Make ``host`` unreachable: kill its sshd (listener and sessions) and close the
        controller's ControlPersist master for it.  Processes started by earlier tasks
        (async jobs) keep running."""
        self._check_host(host)
        self.close_control_master(host)
        _kill_pids(self.sshd_pids(host))
        proc = self._sshd.pop(host, None)
        if proc:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._up:
            self._save_state()

    def control_socket(self, host, user="root", port=22):
        return Path(str(self.control_dir)) / f"{self.addrs[host]}-{port}-{user}"

    def close_control_master(self, host):
        """``ssh -O exit`` on the ControlPersist master, run inside the controller netns."""
        sock = self.control_socket(host)
        if sock.exists():
            self.run_controller([SSH, "-O", "exit", "-o", f"ControlPath={sock}", "-l", "root",
                                 self.addrs[host]], timeout=15, check=False)
            deadline = time.monotonic() + 5
            while sock.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if sock.exists():
                sock.unlink()

    # ------------------------------------------------------------------ running things
    def controller_env(self, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        e["ANSIBLE_CONFIG"] = str(self.ansible_cfg)
        e["ANSIBLE_FORCE_COLOR"] = "0"
        e["PATH"] = f"{self.ansible_bin}:{e.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        e.update(env or {})
        return e

    def run_controller(self, argv, env=None, timeout=600, check=False, cwd=None, input=None):
        """Run ``argv`` inside the controller netns (``ip netns exec``), with ANSIBLE_CONFIG
        pointing at the fleet's ansible.cfg and the controller venv first on PATH."""
        return self._ns_run(self.ctl_ns, argv, self.controller_env(env), timeout, check,
                            cwd or self.workdir, input)

    def exec_on(self, host, argv, env=None, timeout=600, check=False, cwd=None, input=None):
        """Run ``argv`` inside ``host``'s netns (cwd defaults to its host root)."""
        self._check_host(host)
        e = dict(os.environ)
        e.update(env or {})
        return self._ns_run(self.host_ns[host], argv, e, timeout, check,
                            cwd or self.host_root(host), input)

    def _ns_run(self, ns, argv, env, timeout, check, cwd, input):
        if not (NETNS_DIR / ns).exists():     # never fall back to the root netns
            raise FleetError(f"network namespace {ns} does not exist (fleet not up or torn down)")
        argv = [str(a) for a in argv]
        full = ["ip", "netns", "exec", ns, *argv]
        proc = subprocess.Popen(full, env=env, cwd=str(cwd), text=True, start_new_session=True,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise
        res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and res.returncode != 0:
            raise FleetError(f"[{ns}] {shlex.join(argv)} rc={res.returncode}\n{out}\n{err}")
        return res

    def ansible(self, pattern, *args, **kw):
        return self.run_controller([self.ansible_bin / "ansible", pattern, *args], **kw)

    def ansible_playbook(self, playbook, *args, **kw):
        return self.run_controller([self.ansible_bin / "ansible-playbook", playbook, *args], **kw)

    # ------------------------------------------------------------------ safety
    def assert_no_root_ns_leak(self):
        """Raise FleetError unless: every fleet address is blackholed in the root netns;
        the root netns has no socket to the fleet subnet; every process that refers to a
        fleet address or the control dir outside the fleet namespaces is absent (i.e.
        ssh clients/ControlPersist masters live in the controller netns).  Returns a
        report dict (incl. root-ns Tcp counters, informational)."""
        for ip in [self.ctl_ip, *self.addrs.values()]:
            assert_root_blackholed(ip)
        socks = _root_tcp_peers(self.subnet)
        if socks:
            raise FleetError(f"root netns has sockets to the fleet subnet: {socks}")
        fleet_ns = {}
        for ns in [self.ctl_ns, *self.host_ns.values()]:
            fleet_ns[_netns_inode(ns)] = ns
        needles = list(self.addrs.values()) + [str(self.control_dir), str(self.workdir / "cp")]
        stray, ctl_ssh = [], []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
                ns = _pid_netns(entry)
            except OSError:
                continue
            if not any(n in cmd for n in needles):
                continue
            where = fleet_ns.get(ns)
            if where is None and not cmd.startswith("ip netns exec"):
                stray.append(f"{entry}: {cmd.strip()}")
            elif where == self.ctl_ns and "ssh" in cmd.split(" ", 1)[0]:
                ctl_ssh.append(int(entry))
        if stray:
            raise FleetError("processes outside the fleet namespaces refer to fleet addresses: "
                             + "; ".join(stray))
        return {"blackholed": [self.ctl_ip, *self.addrs.values()], "controller_ssh_pids": ctl_ssh,
                "root_tcp": snmp_counters()}

    # ------------------------------------------------------------------ state / teardown
    def _state(self):
        return {
            "fleet_id": self.fleet_id, "prefix": self.name_prefix, "workdir": str(self.workdir),
            "owner_pid": os.getpid(), "owner_start": _proc_start(os.getpid()),
            "detached": self.detached,
            "subnet": str(self.subnet) if self.subnet else None, "route_added": self.route_added,
            "netns": list(self.netns_created), "ctl_ns": self.ctl_ns, "host_ns": self.host_ns,
            "hosts": self.hosts, "groups": self.extra_groups, "addrs": self.addrs,
            "ctl_ip": self.ctl_ip, "ansible_bin": str(self.ansible_bin),
            "control_dir": str(getattr(self, "_control_dir", "")) or None,
            "short_cp_dir": getattr(self, "_short_cp", None),
            "inventory": str(self.inventory), "ansible_cfg": str(self.ansible_cfg),
            "key": str(self.key),
            "sshd_pids": {h: p.pid for h, p in self._sshd.items()},
        }

    def _save_state(self):
        st = self._state()
        _registry_write(st)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=1))
        os.replace(tmp, self.state_file)

    @classmethod
    def _from_state(cls, st):
        f = cls.__new__(cls)
        f.name_prefix = st["prefix"]
        f.fleet_id = st["fleet_id"]
        f.workdir = Path(st["workdir"])
        f.hosts = st.get("hosts") or {}
        f.extra_groups = st.get("groups") or {}
        f.ansible_bin = Path(st.get("ansible_bin") or _default_ansible_bin())
        f.cfg_extra = {}
        f.detached = st.get("detached", False)
        f.ctl_ns = st["ctl_ns"]
        f.host_ns = st.get("host_ns") or {}
        f.subnet = ipaddress.ip_network(st["subnet"]) if st.get("subnet") else None
        f.subnet_request = st.get("subnet")
        f.addrs = st.get("addrs") or {}
        f.ctl_ip = st.get("ctl_ip")
        f.route_added = st.get("route_added", False)
        f.netns_created = list(st.get("netns") or [])
        f._control_dir = Path(st["control_dir"]) if st.get("control_dir") else f.workdir / "cp"
        f._short_cp = st.get("short_cp_dir")
        f._sshd = {}
        f._up = bool(f.netns_created)
        f._torn_down = False
        f.timings = {}
        return f

    @classmethod
    def load(cls, directory):
        """Re-attach to a fleet from DIR/fleet.json (CLI ``down``)."""
        return cls._from_state(json.loads((Path(directory) / "fleet.json").read_text()))

    def _atexit(self):
        if not self._torn_down and not self.detached:
            try:
                self.teardown()
            except Exception as exc:
                print(f"fleet {self.fleet_id}: teardown at exit failed: {exc}", file=sys.stderr)

    def teardown(self):
        """Kill everything in the fleet namespaces, delete them, then drop the route.
        Idempotent; keeps going after errors and raises one FleetError at the end."""
        if self._torn_down:
            return
        t0 = time.monotonic()
        errors = self._teardown_state()
        self._torn_down = True
        self._up = False
        self.timings["teardown"] = round(time.monotonic() - t0, 3)
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        if errors:
            raise FleetError("fleet teardown incomplete: " + "; ".join(errors))

    def _teardown_state(self):
        errors = []
        # controller first (ssh masters, ansible), then hosts (sshd, async jobs)
        order = [n for n in self.netns_created if n == self.ctl_ns] + \
                [n for n in self.netns_created if n != self.ctl_ns]
        for ns in order:
            try:
                kill_netns(ns)
            except Exception as exc:
                errors.append(f"kill {ns}: {exc}")
        for proc in getattr(self, "_sshd", {}).values():
            try:
                proc.wait(timeout=2)
            except Exception:
                pass
        for ns in reversed(self.netns_created):
            if (NETNS_DIR / ns).exists():
                res = _run(["ip", "netns", "del", ns], check=False)
                if res.returncode != 0:
                    errors.append(f"ip netns del {ns}: {res.stderr.strip()}")
        left = [ns for ns in self.netns_created if (NETNS_DIR / ns).exists()]
        if left:
            errors.append(f"namespaces left: {left}")
        if self.route_added and self.subnet is not None and not left:
            try:
                _route_del_blackhole(self.subnet)
                self.route_added = False
            except Exception as exc:
                errors.append(str(exc))
        short_cp = getattr(self, "_short_cp", None)     # short ControlPath dir outside the workdir
        if short_cp and short_cp.startswith(f"/tmp/{self.fleet_id}-") and os.path.isdir(short_cp):
            shutil.rmtree(short_cp, ignore_errors=True)
        if not errors:
            try:
                (REGISTRY_DIR / f"{self.fleet_id}.json").unlink(missing_ok=True)
            except OSError as exc:
                errors.append(f"registry: {exc}")
        return errors


def _sanitize(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _default_ansible_bin():
    here = Path(sys.executable).parent
    if (here / "ansible-playbook").exists():
        return here
    return Path("/work/venv-kiln/bin")


def fleet_fixture(workdir, **kwargs):
    """Generator for pytest fixtures: skips when the machine cannot run a fleet,
    yields an up Fleet, tears it down afterwards.

        @pytest.fixture(scope="module")
        def fleet(tmp_path_factory):
            yield from fleet_fixture(tmp_path_factory.mktemp("fleet"), hosts={...})
    """
    import pytest
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    kwargs.setdefault("name_prefix", "kft")
    cleanup_stale(kwargs["name_prefix"])       # leftovers of crashed runs (dead owners only)
    with Fleet(workdir=workdir, **kwargs) as fleet:
        yield fleet


# --------------------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.fleet.harness",
                                 description="network-namespace SSH fleet for kiln tests")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create a fleet; state in DIR/fleet.json")
    up.add_argument("--dir", required=True)
    up.add_argument("--prefix", default="kfleet")
    up.add_argument("--subnet", default=None, help="default: a free 10.99.<n>.0/24")
    up.add_argument("--hosts", default=None,
                    help="JSON {host: {groups: [...], vars: {...}}}; default: b-amd64 b-arm64 signer mirror")
    down = sub.add_parser("down", help="tear down the fleet in DIR")
    down.add_argument("--dir", required=True)
    st = sub.add_parser("status", help="print DIR/fleet.json and check the root-ns guard")
    st.add_argument("--dir", required=True)
    cs = sub.add_parser("cleanup-stale", help="remove leftovers of crashed runs")
    cs.add_argument("--prefix", default="kfleet")
    cs.add_argument("--include-detached", action="store_true",
                    help="also fleets created by 'up' (their owner has exited)")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.cmd == "up":
        hosts = json.loads(args.hosts) if args.hosts else None
        fleet = Fleet(args.prefix, subnet=args.subnet, hosts=hosts, workdir=args.dir, detached=True)
        fleet.up()
        print(f"fleet {fleet.fleet_id} up in {fleet.timings['up']}s: subnet {fleet.subnet}, "
              f"controller netns {fleet.ctl_ns}")
        for h in fleet.hosts:
            print(f"  {h:10s} {fleet.ip(h):15s} netns {fleet.host_ns[h]}  root {fleet.host_root(h)}")
        print(f"run ansible with: ip netns exec {fleet.ctl_ns} env ANSIBLE_CONFIG={fleet.ansible_cfg} "
              f"{fleet.ansible_bin}/ansible all -m ansible.builtin.ping")
        print(f"tear down with:   python -m tests.fleet.harness down --dir {args.dir}")
    elif args.cmd == "down":
        fleet = Fleet.load(args.dir)
        fleet.teardown()
        print(f"fleet {fleet.fleet_id} down in {fleet.timings['teardown']}s")
    elif args.cmd == "status":
        fleet = Fleet.load(args.dir)
        print(json.dumps(fleet.assert_no_root_ns_leak(), indent=1))
    elif args.cmd == "cleanup-stale":
        for item in cleanup_stale(args.prefix, include_detached=args.include_detached):
            print("removed", item)
    return 0


if __name__ == "__main__":
    sys.exit(main())
