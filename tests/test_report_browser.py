"""report.html rendered by headless Chromium: plots drawn, tables present, no network request.

"No network request" is checked two ways: the page has no http(s) src/href, and Chromium's
NetLog shows no request made on behalf of the page (requests the browser makes for itself,
e.g. its updater, carry no page origin and are ignored; a control page proves the check
sees page requests). ``--host-resolver-rules`` keeps everything off the real network.
Needs the Debian package ``chromium``; skipped with a reason when it is absent.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from autokd.report import build_report
from autokd.study import StudyPaths
from tests._helpers import quick_study

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                "(apt-get install chromium)")
TINY_SPACE = """
family: cnn
architecture:
  depth: {int: [1, 2]}
  widths: {choice: [4, 8], per_stage: depth}
  kernel: 3
  pool: max
distillation:
  soft_loss: kl
  alpha: {float: [0.5, 0.9]}
training:
  lr: 0.01
  epochs: 2
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyPaths, dict[str, Any]]:
    """A real 4-trial search with a quickly trained teacher, and its report."""
    root = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_CACHE", str(root / "cache"))
        study = quick_study(root, "browser", TINY_SPACE, budget=4, seed=1)
    paths = StudyPaths(root / "results" / "browser")
    return paths, build_report(study, paths)


def chromium(page: Path, tmp: Path) -> tuple[str, list[dict[str, Any]]]:
    """Render ``page`` (scripts run); return the DOM and the NetLog's request-start events."""
    netlog = tmp / "netlog.json"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return done.stdout, [e["params"] for e in log["events"] if e["type"] == start]


def page_requests(events: list[dict[str, Any]]) -> list[str]:
    """URLs requested on behalf of a file:// page (the browser's own requests have no page)."""
    return [e["url"] for e in events
            if e.get("initiator") in ("null", "file://")
            or "file://" in str(e.get("network_isolation_key", ""))]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value and (tag == "script" or re.match(
                    r"^(https?:)?//", value)):
                self.external.append(f"{tag} {key}={value}")


def test_report_html_has_no_external_references(report: Any) -> None:
    paths, _ = report
    parser = _Refs()
    parser.feed((paths.root / "report.html").read_text())
    assert parser.external == []


def test_chromium_renders_plots_and_tables_offline(report: Any, tmp_path: Path) -> None:
    paths, data = report
    dom, events = chromium(paths.root / "report.html", tmp_path)
    titles = re.findall(r'<text class="gtitle"[^>]*>([^<]*)<', dom)  # drawn by plotly.js
    assert "Pareto front: val accuracy vs FLOPs (multiply-adds)" in titles
    assert "Hypervolume of the feasible front after each trial" in titles
    assert dom.count('class="point"') >= len(data["points"])  # every trial drawn as a marker
    front_table = re.search(r"<table class=\"front\">.*?</table>", dom, re.DOTALL)
    assert front_table and front_table.group(0).count("<tr>") == len(data["front"]) + 1
    claim = re.search(r"<table class=\"claim\">.*?</table>", dom, re.DOTALL)
    bands = html.unescape(claim.group(0)) if claim else ""
    assert all(band in bands for band in ("2-4×", "4-8×", "8-16×", ">16×"))
    assert "<table class=\"teacher\">" in dom and len(data["front"]) >= 1
    assert page_requests(events) == []


def test_network_check_sees_page_requests(tmp_path: Path) -> None:
    """Control: the same check flags a page that does load remote resources."""
    page = tmp_path / "control.html"
    page.write_text("<html><body><img src='http://autokd-control.invalid/x.png'>"
                    "<script src='https://autokd-control.invalid/a.js'></script></body></html>")
    _, events = chromium(page, tmp_path)
    assert sorted(page_requests(events)) == ["http://autokd-control.invalid/x.png",
                                             "https://autokd-control.invalid/a.js"]
