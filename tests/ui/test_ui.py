"""What a person sees in the Prefect UI after ``pointscale run``, in a real headless Chromium.

``make test-ui`` (run by ``.ci/run`` after ``make test``): a real
``pointscale server --port P`` on a free loopback port, a real ``pointscale
run`` against it in a pseudo-terminal (so the terminal progress bar is the one
a person gets), then the run's page -- opened from the link the run printed --
and its artifacts in headless Chromium, in both UI versions where they differ.
Assertions are on what the page shows: the run's name, the stage names, log
lines, report images that actually decoded (``naturalWidth > 0``), the values
table. On a failure a screenshot of the page is saved under the test's
temporary folder (the path is in the failure message).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.ui, pytest.mark.slow]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]
RUN = ["--points", "60", "--samples-per-point", "8", "--workers", "1", "--select", "10"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def _chromium() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are needed: `make test-ui` installs Debian's chromium and "
                    "chromium-driver (apt-get) when they are missing")
    return binary, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """``pointscale server --port P``: what a user starts to watch runs."""
    from flows.runtime import free_port, stop_process_group

    root = tmp_path_factory.mktemp("ui")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    env["PREFECT_HOME"] = str(root / "prefect-home")
    log = root / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--port", str(port)], cwd=REPO,
                                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Prefect UI at" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pointscale server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield {"port": port, "api": f"http://127.0.0.1:{port}/api", "ui": f"http://127.0.0.1:{port}",
               "root": root, "env": env}
    finally:
        proc.send_signal(signal.SIGTERM)  # it stops its own Prefect server
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)


def _run_in_terminal(args: list[str], env: dict, timeout: float) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdout/stderr (a person's terminal); return status and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the command ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


@pytest.fixture(scope="module")
def run(server) -> dict:
    """``pointscale run`` against the server, on a terminal; the flow run's id and what the terminal showed."""
    out = server["root"] / "run"
    env = dict(server["env"], PREFECT_API_URL=server["api"], COLUMNS="120")
    status, screen = _run_in_terminal([sys.executable, "-m", "flows.cli", "run", *RUN, "--out", str(out)],
                                      env, timeout=600)
    text = ANSI.sub("", screen)
    assert status == 0, text[-4000:]
    urls = re.findall(r"flow run: (http://127\.0\.0\.1:\d+/\S+/([0-9a-f-]{36}))", text)
    assert urls, text[-3000:]
    return {"url": urls[0][0], "id": urls[0][1], "terminal": text, "out": out}


@pytest.fixture(scope="module")
def browser(server) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = Options()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={server['root'] / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def looking_at(driver, tmp_path: Path, name: str):
    """Save a screenshot (and the page text) when an assertion inside fails."""
    try:
        yield
    except BaseException as exc:
        shot = tmp_path / f"{name}.png"
        try:
            driver.save_screenshot(str(shot))
            (tmp_path / f"{name}.txt").write_text(driver.find_element("tag name", "body").text)
        except Exception:  # the browser itself may be the problem
            pass
        raise AssertionError(f"{exc}\n(screenshot of the page: {shot})") from exc


def _wait_text(driver, *wanted: str, timeout: float = 45) -> str:
    """The page's visible text once it shows every string in ``wanted``."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(w in text for w in wanted):
            return text
        time.sleep(0.5)
    missing = [w for w in wanted if w not in text]
    raise AssertionError(f"the page never showed {missing}; it shows:\n{text[:3000]}")


def _click_tab(driver, label: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # The innermost element whose whole text is the label (tabs wrap it in spans).
        xpath = f"//*[normalize-space(.)='{label}' and not(*[normalize-space(.)='{label}'])]"
        for element in driver.find_elements("xpath", xpath):
            if element.is_displayed():
                element.click()
                return
        time.sleep(0.5)
    raise AssertionError(f"no tab {label!r} on the page")


def _api(server, path: str, body: dict) -> list:
    request = urllib.request.Request(f"{server['api']}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def _artifacts(server, flow_run_id: str) -> dict[str, dict]:
    found = _api(server, "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found if a.get("key")}


def _images(driver, timeout: float = 30) -> list[dict]:
    """Every <img> in the page's content with its decoded size, once all have finished loading."""
    script = ("return Array.from(document.querySelectorAll('img')).map(i => "
              "({src: i.getAttribute('src').slice(0, 40), complete: i.complete, width: i.naturalWidth}))")
    deadline = time.monotonic() + timeout
    images = driver.execute_script(script)
    while time.monotonic() < deadline and (not images or not all(i["complete"] for i in images)):
        time.sleep(0.5)
        images = driver.execute_script(script)
    return images


def test_the_terminal_shows_a_progress_bar_with_rate_and_eta_and_the_run_link(run, server):
    terminal = run["terminal"]
    assert run["url"].startswith(server["ui"])
    assert "sampling shards" in terminal and "samples/s" in terminal and "ETA" in terminal, terminal[-3000:]
    assert "Traceback" not in terminal and "Port 8787" not in terminal, terminal[-3000:]


def test_the_printed_link_opens_the_run_with_its_stages_and_logs(run, server, browser, tmp_path):
    with looking_at(browser, tmp_path, "flow-run"):
        browser.get(run["url"])
        # The default UI (V2), a name that says what ran, and the flow's own INFO lines.
        assert "/v2/runs/flow-run/" in browser.current_url
        _wait_text(browser, "breast_cancer-logreg-8spp-60pts", "Completed")
        _click_tab(browser, "Logs")
        _wait_text(browser, "dataset breast_cancer", "starting a local Dask cluster")
        _click_tab(browser, "Task Runs")
        _wait_text(browser, "choose-laws", "value", "select", "removal-curve", "report")
        # More than a page of task runs (the stages' partition tasks too): the earlier stages are
        # found as a person would, by the list's search box.
        search = browser.find_element("css selector", "input[placeholder='Search by run name']")
        search.send_keys("fit-mle-laws")
        _wait_text(browser, "fit-mle-laws-")
        search.clear()
        search.send_keys("ingest")
        _wait_text(browser, "ingest-")
        _click_tab(browser, "Subflow Runs")
        _wait_text(browser, "sample-breast_cancer-logreg")


def test_the_report_images_render_in_both_uis(run, server, browser, tmp_path):
    artifacts = _artifacts(server, run["id"])
    report = artifacts["pointscale-report"]
    figures = len(re.findall(r"!\[[^\]]*\]\(figures/", (run["out"] / "report.md").read_text()))
    assert figures >= 3
    for ui, prefix in (("v1", ""), ("v2", "/v2")):
        with looking_at(browser, tmp_path, f"report-{ui}"):
            browser.get(f"{server['ui']}{prefix}/artifacts/artifact/{report['id']}")
            _wait_text(browser, "pointscale report: breast_cancer", "Most and least valuable points")
            images = [i for i in _images(browser) if i["src"].startswith("data:image/png")]
            assert len(images) == figures, images
            assert all(i["width"] > 0 for i in images), images  # decoded, not a broken-image icon


def test_the_values_table_and_the_outputs_read_well(run, server, browser, tmp_path):
    import pandas as pd

    artifacts = _artifacts(server, run["id"])
    values = pd.read_parquet(run["out"] / "values.parquet").sort_values("shapley", ascending=False)
    with looking_at(browser, tmp_path, "values"):
        browser.get(f"{server['ui']}/artifacts/artifact/{artifacts['values-top-bottom']['id']}")
        text = _wait_text(browser, "Most valuable 10", "Least valuable 10", "point_id", "n_samples")
        assert values["point_id"].iloc[0] in text and values["point_id"].iloc[-1] in text
        # Numbers as a person reads them: no 16-digit floats.
        assert not re.search(r"\d\.\d{8,}", text), text
    with looking_at(browser, tmp_path, "outputs"):
        browser.get(f"{server['ui']}/artifacts/artifact/{artifacts['run-outputs']['id']}")
        _wait_text(browser, "Outputs", str(run["out"]), "values.parquet", "report.md", "laws_mle.parquet")
    # Progress on the pipeline run itself, complete.
    assert float(artifacts["pipeline-progress"]["data"]) == pytest.approx(100.0)


def _hosts_requested(browser, server, paths: list[str]) -> set[str]:
    browser.get_log("performance")  # drop what earlier pages requested
    for path in paths:
        browser.get(f"{server['ui']}{path}")
        time.sleep(3)
    hosts = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith(("http://", "https://", "ws://", "wss://")):
                hosts.add(url.split("/")[2])
    return hosts


def test_the_ui_calls_no_outside_host_but_the_one_the_docs_name(run, server, browser):
    """Telemetry: the V1 UI requests nothing outside its server; the V2 UI (Prefect's default) only
    its analytics client's configuration host, which no setting turns off (docs/prefect.md, "Telemetry")."""
    own = f"127.0.0.1:{server['port']}"
    v1 = _hosts_requested(browser, server, ["/dashboard", f"/runs/flow-run/{run['id']}", "/artifacts"])
    assert v1 == {own}, v1
    v2 = _hosts_requested(browser, server, ["/v2/dashboard", f"/v2/runs/flow-run/{run['id']}"])
    assert own in v2 and all("amplitude" in host for host in v2 - {own}), v2
