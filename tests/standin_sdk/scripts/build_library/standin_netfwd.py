"""Stand-in network for the SDK container (kiln test fixture).

The real run_sdk_container starts the SDK container with ``--network host`` (vendor run_sdk_container:151), so
emerge --getbinpkg reaches the binhost (PORTAGE_BINHOST, e.g. the fleet's binary package cache) from the
builder's own network. The stand-in's container has ``--network none``, and the docker daemon of the test machine
lives in another network namespace than a fleet builder, so run_sdk_container (on the builder, in its namespace)
starts this relay: it listens on a unix socket inside the checkout (mounted into the container) and forwards each
plain-HTTP request that the stand-in emerge sends there (``curl --unix-socket``) to the host and port named in its
Host header, from the builder's namespace, where the builder's own routes apply.

Network safety (tests may only reach 127.0.0.0/8 and namespaces they created): loopback addresses are always relayed;
any other IPv4 literal only when this network namespace has no default route (a test's fleet namespace: only its own
subnets are reachable; the root namespace has a real default route) and the address is on one of its directly
connected subnets (/proc/net/route).

Usage: standin_netfwd.py SOCKET_PATH   (runs until killed; one thread per connection)
       standin_netfwd.py --check URL   (exit 0 when URL may be fetched from this namespace, else why on stderr)
"""

import ipaddress
import os
import socket
import sys
import threading


def _routes():
    """[(network, mask, gateway)] of this network namespace's IPv4 routes (/proc/net/route, little-endian hex)."""
    out = []
    try:
        with open("/proc/net/route", encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                if len(f) >= 8:
                    out.append(tuple(int.from_bytes(bytes.fromhex(x), "little") for x in (f[1], f[7], f[2])))
    except OSError:
        pass
    return out


def _allowed(ip):
    """None when ``ip`` may be relayed to from here, else why not."""
    if ip.is_loopback:
        return None
    routes = _routes()
    if any(mask == 0 for _net, mask, _gw in routes):
        return "refusing %s: this network namespace has a default route (only 127.0.0.0/8 from here)" % ip
    n = int(ip)
    if any(gw == 0 and (n & mask) == net for net, mask, gw in routes):
        return None
    return "refusing %s: not on a directly connected subnet of this network namespace" % ip


def _host_port(text):
    """(IPv4Address, port) of ``IPv4[:port]`` (port 80 when absent); ValueError for anything else."""
    host, _sep, port = text.rpartition(":")
    if not host:
        host, port = port, "80"
    return ipaddress.IPv4Address(host), int(port)


def _target(head):
    """(ip, port) from the request's Host header, or an error line."""
    for line in head.split(b"\r\n")[1:]:
        name, _sep, value = line.partition(b":")
        if name.strip().lower() != b"host":
            continue
        try:
            ip, port = _host_port(value.strip().decode("ascii", "replace"))
        except ValueError:
            return None, "Host %r is not an IPv4 literal with a port" % value.strip().decode("ascii", "replace")
        why = _allowed(ip)
        if why:
            return None, why
        return (str(ip), port), None
    return None, "request without a Host header"


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve(conn):
    try:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        addr, err = _target(head)
        if err:
            body = ("stand-in netfwd: %s\n" % err).encode()
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            return
        try:
            up = socket.create_connection(addr, timeout=30)
        except OSError as exc:
            body = ("stand-in netfwd: cannot connect to %s:%d: %s\n" % (addr[0], addr[1], exc)).encode()
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            return
        with up:
            up.settimeout(None)
            up.sendall(head)
            back = threading.Thread(target=_pump, args=(up, conn), daemon=True)
            back.start()
            _pump(conn, up)
            back.join()
    finally:
        conn.close()


def check(url):
    """``--check URL``: exit 0 when URL (http://IPv4[:port]/...) may be fetched from this namespace, else print why and
    exit 1. The host-mode stand-in (no container, no relay) asks this before it runs curl itself: one copy of the rule."""
    rest = url[len("http://"):] if url.startswith("http://") else ""
    try:
        why = _allowed(_host_port(rest.split("/", 1)[0])[0])
    except ValueError:
        why = "refusing %s: the stand-in fetches only http:// URLs with an IPv4 literal" % url
    if why:
        sys.stderr.write("stand-in: %s\n" % why)
        return 1
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    # bound by its name in its directory: a checkout's absolute path may be longer than sun_path (108 bytes)
    directory, name = os.path.split(os.path.abspath(sys.argv[1]))
    os.chdir(directory)
    if os.path.exists(name):
        os.unlink(name)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    os.chmod(name, 0o666)   # the SDK user inside the container has the builder's uid, root may differ
    srv.listen(16)
    while True:
        conn = srv.accept()[0]
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
