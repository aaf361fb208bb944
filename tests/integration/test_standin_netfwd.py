"""The stand-in SDK's network relay (tests/standin_sdk/scripts/build_library/standin_netfwd.py): what --network host
gives the real SDK container (reaching an http:// binhost from the builder's network) without sending traffic
anywhere a test did not create. In a namespace with a default route (the root one) it relays to 127.0.0.0/8 only;
in a namespace without one (a fleet's) to directly connected subnets only. Root only (network namespaces)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[1] / "standin_sdk" / "scripts" / "build_library" / "standin_netfwd.py"


def _has_default_route():
    return subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True, check=False).stdout.strip() != ""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = ("path=%s host=%s\n" % (self.path, self.headers.get("Host"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def relay(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    # a long directory: the relay binds by name in its directory, so sun_path's 108 bytes do not matter
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    sock = deep / "net.sock"
    proc = subprocess.Popen([sys.executable, str(RELAY), str(sock)])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sock.exists()
        yield deep, srv.server_address[1]
    finally:
        proc.kill()
        proc.wait()
        srv.shutdown()


def _get(deep, host_header, path="/pkgs/Packages"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(deep)
    try:
        s.connect("net.sock")
    finally:
        os.chdir(cwd)
    with s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host_header)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


def test_relays_to_loopback(relay):
    deep, port = relay
    out = _get(deep, "127.0.0.1:%d" % port)
    assert out.startswith("HTTP/1.0 200") or out.startswith("HTTP/1.1 200"), out
    assert "path=/pkgs/Packages host=127.0.0.1:%d" % port in out


@pytest.mark.parametrize("host, why", [
    ("10.9.8.7:8080", "refusing 10.9.8.7: this network namespace has a default route"),
    ("192.0.2.1:80", "refusing 192.0.2.1"),
    ("example.com:80", "not an IPv4 literal"),
    ("[::1]:80", "not an IPv4 literal"),
])
def test_refuses_anything_else_in_the_root_namespace(relay, host, why):
    if not _has_default_route() and "default route" in why:
        pytest.skip("this namespace has no default route")
    deep = relay[0]
    out = _get(deep, host)
    assert out.startswith("HTTP/1.1 502"), out
    assert why in out, out


@pytest.mark.parametrize("url,why", [("http://127.0.0.1:1/x", None), ("http://8.8.8.8/x", "has a default route"),
                                     ("http://example.com/x", "IPv4 literal"), ("ftp://127.0.0.1/x", "IPv4 literal")])
def test_check_mode_applies_the_relay_rule(url, why):
    if why == "has a default route" and not _has_default_route():
        pytest.skip("this namespace has no default route")
    res = subprocess.run([sys.executable, str(RELAY), "--check", url], capture_output=True, text=True, check=False)
    if why is None:
        assert res.returncode == 0 and res.stderr == "", res
    else:
        assert res.returncode == 1 and why in res.stderr, res


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ip netns)")
def test_in_a_namespace_without_default_route_relays_on_link_only(tmp_path):
    """Like a fleet builder's namespace: an on-link address is relayed, another subnet is not."""
    ns = "kiln-nfw-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs = []
    try:
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                    ["ip", "addr", "add", "10.250.1.1/24", "dev", "v0"], ["ip", "link", "set", "v0", "up"],
                    ["ip", "link", "set", "v1", "up"]):
            subprocess.run(["ip", "netns", "exec", ns] + cmd, check=True)
        (tmp_path / "pkgs").mkdir()
        (tmp_path / "pkgs" / "Packages").write_text("PACKAGES: 0\n")
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "8080",
                                       "--bind", "10.250.1.1", "--directory", str(tmp_path)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        sock = tmp_path / "net.sock"
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(RELAY), str(sock)]))
        deadline = time.monotonic() + 10
        out = ""
        while time.monotonic() < deadline:
            if sock.exists():
                out = _get(tmp_path, "10.250.1.1:8080")
                if " 200 " in out.splitlines()[0]:
                    break
            time.sleep(0.1)
        assert " 200 " in out.splitlines()[0] and "PACKAGES: 0" in out, out
        out = _get(tmp_path, "10.250.2.1:8080")
        assert out.startswith("HTTP/1.1 502") and "not on a directly connected subnet" in out, out
        # host mode's --check (sp_http_get without a relay) answers with the same rule, in the same namespace
        check = ["ip", "netns", "exec", ns, sys.executable, str(RELAY), "--check"]
        ok = subprocess.run(check + ["http://10.250.1.1:8080/Packages"], capture_output=True, text=True, check=False)
        assert ok.returncode == 0 and ok.stderr == "", ok
        no = subprocess.run(check + ["http://10.250.2.1:8080/Packages"], capture_output=True, text=True, check=False)
        assert no.returncode == 1 and "not on a directly connected subnet" in no.stderr, no
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
