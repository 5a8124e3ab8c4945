"""The jobs page as an operator sees it: a real `tidyq serve` process, a real Celery worker running a
3,000-item job against a loopback OpenAI stand-in that refuses about one call in ten, and Debian's
headless Chromium (driven by selenium) reading the RENDERED page: progress moved by the page's
script without a reload, the job's numbers equal to `tidyq status`, its failed items listed and paged.

Screenshots go to the test's tmp dir, or to TIDYQ_SCREENSHOT_DIR when set (to look at them).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from producers.client import Client
from tests.integration.serve_process import PASSWORD, USER, Serve
from tests.waiting import wait_for

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ITEMS = 3000
MLFLOW_UI = "http://127.0.0.1:5999"  # where an operator's MLflow UI would be; links only, never fetched


def _need_browser() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    reason = "Debian's chromium and chromium-driver are not installed (scripts/ensure-tools.sh installs them)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def serve(redis_url, tmp_path):
    env = {"TIDYQ_UI_REFRESH_SECONDS": "0.5", "TIDYQ_MLFLOW_UI_URL": MLFLOW_UI}
    with Serve(redis_url, tmp_path / "serve.log", **env) as server:
        yield server


@pytest.fixture
def browser(tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log")))
    try:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        yield driver
    finally:
        driver.quit()


def shoot(driver, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("TIDYQ_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1500, min(2400, max(800, height + 40)))
    assert driver.save_screenshot(str(path))
    return path


def cell(driver, job_id: str, field: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'tr[data-key="{job_id}"] [data-field="{field}"]').text


def progress(driver, job_id: str) -> float:
    from selenium.webdriver.common.by import By

    return float(driver.find_element(By.CSS_SELECTOR, f'tr[data-key="{job_id}"] progress').get_attribute("value"))


def calm(read):
    """``read`` as a wait_for predicate that tolerates the page being re-rendered under it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def attempt():
        try:
            return read()
        except (NoSuchElementException, StaleElementReferenceException):
            return None

    return attempt


def test_the_page_shows_a_running_job_live_and_its_failed_items(redis_url, start_worker, openai_fake, serve,
                                                                 browser, tmp_path):
    from selenium.webdriver.common.by import By

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    openai_fake.set_latency(0.05)
    openai_fake.set_failure_rate(0.1, statuses=(400,), seed=21)  # a bad request: not retried, the item fails
    start_worker(queues=["predict.direct"], concurrency=1, env={
        "TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": "sk-browser-test", "TIDYQ_MODEL": "openai/gpt-4o-mini",
        "TIDYQ_CACHE_ENABLED": "false", "TIDYQ_CONCURRENCY_DIRECT": "8", "TIDYQ_METRICS_INTERVAL": "0.5",
        "TIDYQ_HEARTBEAT_INTERVAL": "1", "TIDYQ_BREAKER_CONSECUTIVE_FAILURES": "0",
        "TIDYQ_MLFLOW_TRACKING_URI": tracking_uri})
    client = Client(redis_url)
    rows = [{"custom_id": f"q{i:04d}", "inputs": {"question": f"What is {i} + {i}?"}} for i in range(ITEMS)]
    job = client.submit_batch(rows, "question -> answer", backend="direct", model="openai/gpt-4o-mini", chunk_size=50)
    wait_for(lambda: 0 < sum(job.status()["counts"][k] for k in ("succeeded", "failed")) < ITEMS * 0.6,
             timeout=60, what="the job to be running")

    browser.get(serve.url + "/")
    first = progress(browser, job.id)
    assert cell(browser, job.id, "status") == "running"
    browser.execute_script("window.tidyqSamePage = true")  # gone if the page reloads
    # the script moves the bar in place: a larger value, on the same page, after a poll
    wait_for(calm(lambda: browser.execute_script("return window.tidyqSamePage === true")
                  and int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-polls") or 0) >= 1
                  and progress(browser, job.id) > first), timeout=30, what="the progress bar to move without a reload")
    running_shot = shoot(browser, tmp_path, "jobs-page-running")
    assert cell(browser, job.id, "done").endswith(f"/{ITEMS}")
    assert "direct:openai/gpt-4o-mini" in browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{job.id}"]').text
    queue_row = browser.find_element(By.CSS_SELECTOR, 'tbody[data-section="queues"] tr[data-key="predict.direct"]')
    assert queue_row.find_element(By.CSS_SELECTOR, '[data-field="workers"]').text == "1"
    assert len(browser.find_elements(By.CSS_SELECTOR, 'tbody[data-section="workers"] tr[data-key]')) == 1

    status = job.wait(timeout=240)
    counts = status["counts"]
    assert status["status"] == "completed" and counts["failed"] > 0 and counts["succeeded"] > 0
    # the status change re-renders the page; its numbers are the job's
    wait_for(calm(lambda: cell(browser, job.id, "status") == "completed"), timeout=30, what="the page to show the end")
    assert cell(browser, job.id, "done") == f"{ITEMS}/{ITEMS}"
    assert cell(browser, job.id, "failed") == str(counts["failed"])
    assert progress(browser, job.id) == 100.0
    errors_text = cell(browser, job.id, "errors")
    # the job's MLflow run, linked once the worker has written it (the script shows the link in place)
    link = wait_for(calm(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{job.id}"] a[data-link]')
                         .get_attribute("href") or None), timeout=60, what="the MLflow run link")
    prefix = f"{MLFLOW_UI}/#/runs/"
    assert link.startswith(prefix)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri).get_run(link[len(prefix):])
    assert run.data.params["job_id"] == job.id
    shoot(browser, tmp_path, "jobs-page-finished")

    browser.find_element(By.LINK_TEXT, job.id).click()
    wait_for(lambda: browser.current_url.endswith(f"/jobs/{job.id}"), timeout=10, what="the job page")
    error_rows = browser.find_elements(By.CSS_SELECTOR, 'tbody[data-section="errors"] tr[data-key]')
    by_type = {r.get_attribute("data-key"): int(r.find_element(By.CSS_SELECTOR, "td.num").text) for r in error_rows}
    assert sum(by_type.values()) == counts["failed"]
    failed_results = [r for r in job.results(timeout=10) if r["status"] == "failed"]
    assert {t: sum(1 for r in failed_results if r["error"]["type"] == t) for t in by_type} == by_type
    top = max(by_type, key=by_type.get)
    assert errors_text.startswith(f"{top} {by_type[top]}")
    listed = browser.find_elements(By.CSS_SELECTOR, "tr.failed-item")
    assert len(listed) == min(50, counts["failed"])
    first_page = [r.find_element(By.TAG_NAME, "td").text for r in listed]
    assert first_page == [r["custom_id"] for r in failed_results][:50]
    message = listed[0].find_element(By.CSS_SELECTOR, "td.message").text
    assert message and message == failed_results[0]["error"]["message"]
    assert "What is" not in browser.find_element(By.TAG_NAME, "body").text  # item inputs are not shown
    job_shot = shoot(browser, tmp_path, "job-page-failed-items")
    if counts["failed"] > 50:
        browser.find_element(By.LINK_TEXT, "next page").click()
        second = [r.find_element(By.TAG_NAME, "td").text
                  for r in browser.find_elements(By.CSS_SELECTOR, "tr.failed-item")]
        assert second == [r["custom_id"] for r in failed_results][50:100]
    assert running_shot.stat().st_size > 10_000 and job_shot.stat().st_size > 10_000
