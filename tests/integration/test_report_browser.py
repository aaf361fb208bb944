"""The HTML run report (kiln report --format html) in a real headless Chromium: the page renders from a file:// URL
with no network, the screenshot is not blank and its timeline shows the stage colours, the DOM holds the SVG
timeline bars and no script element (a ``<script>`` from a task message stays text). And a real run through
ansible-runner keeps the build records its playbook read, the image package list and report.html."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "cli"))
sys.path.insert(0, os.path.join(REPO, "tests", "unit"))

from kiln_cli.main import main  # noqa: E402
from kiln_cli.run import run_playbook  # noqa: E402
from test_kiln_report import PKGS_NOW, amd64_record, make_runs  # noqa: E402

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.access(p, os.X_OK)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="install chromium: apt-get install chromium")
WIDTH, HEIGHT = 1200, 1600
GREEN, RED, GREY = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28), (0x9E, 0x9E, 0x9E)


def chromium(tmp_path, *args):
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=%d,%d" % (WIDTH, HEIGHT), *args]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(argv, capture_output=True, timeout=120, env=env, check=False)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def decode_png(data):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = head
    assert depth == 8 and colour in (2, 6) and interlace == 0, head
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((x + p) & 0xFF for x, p in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a, c = (line[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
                line[i] = (line[i] + _paeth(a, prev[i], c)) & 0xFF
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, bpp)])
        prev = line
    return width, height, rows


def near(px, colour, tol=8):
    return all(abs(a - b) <= tol for a, b in zip(px, colour))


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    _root, now, _before = make_runs(tmp)
    assert main(["report", now, "--format", "html"]) == 0
    return tmp, os.path.join(now, "report.html")


@needs_chromium
def test_screenshot_is_not_blank_and_shows_the_timeline(report_page):
    tmp, page = report_page
    shot = tmp / "shot.png"
    res = chromium(tmp, "--screenshot=%s" % shot, "file://" + page)
    assert res.returncode == 0 and shot.is_file(), res.stderr.decode()[-2000:]
    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    pixels = [px for row in rows for px in row]
    non_white = sum(1 for px in pixels if px != (255, 255, 255))
    assert len(set(pixels)) > 50 and non_white > 0.02 * len(pixels), (len(set(pixels)), non_white)
    # the timeline sits at the top of the page: its bars in the stage colours (passed, failed, reused)
    top = [px for row in rows[:HEIGHT // 3] for px in row]
    counts = dict((name, sum(1 for px in top if near(px, c))) for name, c in (("passed", GREEN), ("failed", RED), ("reused", GREY)))
    assert counts["passed"] > 3000 and counts["failed"] > 500 and counts["reused"] > 100, counts


@needs_chromium
def test_dom_has_the_svg_timeline_and_no_script(report_page):
    tmp, page = report_page
    res = chromium(tmp, "--dump-dom", "file://" + page)
    dom = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0 and "</html>" in dom, res.stderr.decode()[-2000:]
    assert len(re.findall(r"<svg\b", dom)) == 2
    assert len(re.findall(r'<rect class="bar (?:passed|failed|reused)"', dom)) == 8
    assert "<script" not in dom.lower() and "&lt;script&gt;alert('kiln')&lt;/script&gt;" in dom


READ_PLAYBOOK = """
- name: Read a build record like the pipeline's summary does
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the build record
      ansible.builtin.slurp:
        src: "{{ item }}"
      loop: "{{ records }}"
      register: read_records
"""


def test_a_run_keeps_its_build_records_and_report(tmp_path):
    build_root = str(tmp_path / "build")
    listing = os.path.join(build_root, "images/amd64-usr/developer-4593.2.5+kiln-2/flatcar_production_image_packages.txt")
    os.makedirs(os.path.dirname(listing))
    with open(listing, "w", encoding="utf-8") as fh:
        fh.write(PKGS_NOW)
    rec = amd64_record(build_root, hashlib.sha256(PKGS_NOW.encode()).hexdigest())
    rec_path = os.path.join(build_root, "images/kiln/amd64-usr/4593.2.5+kiln-2/build-record.json")
    os.makedirs(os.path.dirname(rec_path))
    with open(rec_path, "w", encoding="utf-8") as fh:
        json.dump(rec, fh)
    (tmp_path / "read.yml").write_text(READ_PLAYBOOK)
    inv = tmp_path / "inventory.json"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "records": [rec_path]}
    inv.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    out = io.StringIO()
    code = run_playbook("release", str(tmp_path / "read.yml"), str(inv), [], "quiet", str(tmp_path / "runs"), out=out)
    assert code == 0, out.getvalue()
    (run_id,) = [d for d in os.listdir(tmp_path / "runs") if d.endswith("-release")]
    run_dir = tmp_path / "runs" / run_id
    assert json.loads((run_dir / "records" / "amd64-usr.json").read_text()) == rec
    assert (run_dir / "records" / "amd64-usr.packages.txt").read_text() == PKGS_NOW
    page = (run_dir / "report.html").read_text()
    # the record's stages all started before this run: reused, none rebuilt
    assert "amd64-usr" in page and page.count('<rect class="bar reused"') == 6 and "<script" not in page
