"""The demo page in a real headless browser: `filmclevr-demo` serves the demo's shipped model on
127.0.0.1; Chromium (the distribution's package, driven by Selenium through the distribution's
chromedriver; Google Chrome where a CI runner ships it instead) uploads an image, picks a
bundled example, asks questions and reads the answers off the page, which must be what
`filmclevr-ask` prints for the same image and question.

Needs Gradio and Selenium (`pip install -e '.[dev,demo]'`) and Chromium with its driver
(`apt-get install chromium chromium-driver`). Without them the test is skipped, except in CI
(CI=true), where it fails: CI must install them (.ci/run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from filmclevr import ask

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "results/reference/demo/film.pt"
IMAGES = ROOT / "tests/data/clevr_genuine/images/train"
# Debian's Chromium first; GitHub's Ubuntu runners ship Google Chrome and its driver instead
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_SECONDS = 180  # the server's start (Gradio and torch imports, the model): bounded
WAIT_SECONDS = 60  # each wait in the browser: bounded


def _missing() -> list[str]:
    packages = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
    missing = [f"the Python package {name} (pip install -e '.[dev,demo]')" for name in packages]
    if _browser_binary() is None:
        missing.append("Chromium (apt-get install chromium)")
    if _driver_binary() is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    return missing


def _browser_binary() -> str | None:
    return next((shutil.which(n) for n in CHROMIUM if shutil.which(n)), None)


def _driver_binary() -> str | None:
    """chromedriver on the PATH, else where GitHub's runners keep it ($CHROMEWEBDRIVER)."""
    folder = os.environ.get("CHROMEWEBDRIVER")
    return shutil.which("chromedriver") or (folder and shutil.which("chromedriver", path=folder))


def require_a_browser() -> None:
    """Return when everything the browser test needs is here; else skip, but fail in CI."""
    missing = _missing()
    if not missing:
        return
    message = "the demo page's browser test needs " + "; ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: CI must install them (.ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def needs_a_browser() -> None:
    require_a_browser()


def test_without_chromium_the_test_is_skipped_but_fails_in_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs .*Chromium .*chromedriver"):
        require_a_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install them"):
        require_a_browser()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"filmclevr-demo exited with {server.returncode}:\n{log.read_text()}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    pytest.fail(f"filmclevr-demo did not serve {url} in {START_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def page_url(needs_a_browser, tmp_path_factory) -> Iterator[str]:
    """filmclevr-demo serving the demo's model on 127.0.0.1, stopped when the tests end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    command = [sys.executable, "-m", "filmclevr.demo_page", "--model", str(MODEL),
               "--port", str(port)]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_served(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(needs_a_browser) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = _browser_binary()
    # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1400"):  # fmt: skip
        options.add_argument(argument)
    # the distribution's driver, named: Selenium then downloads nothing
    driver = webdriver.Chrome(options=options, service=Service(_driver_binary()))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def cli_output(capsys, image: Path, question: str) -> str:
    """What filmclevr-ask prints for `question` about `image`: the answer, or the error line."""
    code = ask.main(["--model", str(MODEL), "--image", str(image), "--question", question])
    out, err = capsys.readouterr()
    return (out if code == 0 else err).rstrip("\n")


def ask_on_the_page(driver, question: str) -> str:
    """Type `question`, press Ask, and return the answer box's new text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
    box.clear()
    box.send_keys(question)
    answer = driver.find_element(By.CSS_SELECTOR, "#answer textarea")
    driver.execute_script("arguments[0].value = ''", answer)  # so that a new answer shows
    driver.find_element(By.ID, "ask").click()
    WebDriverWait(driver, WAIT_SECONDS).until(lambda _: answer.get_attribute("value"))
    return answer.get_attribute("value")


def test_the_page_answers_as_filmclevr_ask_does(page_url, browser, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_SECONDS)
    browser.get(page_url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#question textarea"))
    question = "How many spheres are there?"

    # an uploaded image
    upload = IMAGES / "CLEVR_train_000023.png"
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(upload))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))
    text = ask_on_the_page(browser, question)
    assert text == cli_output(capsys, upload, question)

    # a bundled example: the first of the genuine CLEVR images
    examples = browser.find_elements(By.CSS_SELECTOR, "#examples button.gallery-item")
    assert len(examples) == len(list(IMAGES.glob("*.png")))
    examples[0].click()
    wait.until(lambda d: "CLEVR_train_000000" in _image_source(d))
    text = ask_on_the_page(browser, question)
    expected = cli_output(capsys, IMAGES / "CLEVR_train_000000.png", question)
    assert text == expected
    # the top 5 as bars, each with its probability in percent, and the Figure 4 map
    lines = browser.find_element(By.ID, "top").text.splitlines()
    bars = [(lines[k - 1], float(line[:-1])) for k, line in enumerate(lines) if line.endswith("%")]
    cli_top = [line.split()[-2:] for line in expected.splitlines()[2:]]
    assert [word for word, _ in bars] == [word for word, _ in cli_top]
    for (_, shown), (_, probability) in zip(bars, cli_top, strict=True):
        assert abs(shown - 100 * float(probability)) <= 1  # the page rounds to whole percents
    assert "/map-" in browser.find_element(By.CSS_SELECTOR, "#map img").get_attribute("src")

    # an unknown word: the error line of filmclevr-ask, and no map
    question = "How many spheres are there please?"
    text = ask_on_the_page(browser, question)
    assert text.startswith("error: unknown word")
    assert text == cli_output(capsys, IMAGES / "CLEVR_train_000000.png", question)
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#map img"))


def _image_source(driver) -> str:
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, "#image img")
    return images[0].get_attribute("src") if images else ""


def _listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on `port` (Linux's /proc/net tables)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for row in list(f)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                    addresses.append(address)
    return addresses


def test_the_server_listens_on_the_loopback_address_only(page_url):
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("no /proc/net/tcp to read the listening sockets from")
    port = int(page_url.rstrip("/").rsplit(":", 1)[1])
    # 127.0.0.1 as /proc/net/tcp writes it (little-endian hexadecimal)
    assert _listening_addresses(port) == ["0100007F"]
