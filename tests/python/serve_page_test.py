"""The chat page of `frugal serve` in headless Chromium: type a message, see the reply stream in
(the reply element changes several times before it is done), then the conversation continues.
Usage: serve_page_test.py FRUGAL_BINARY (exit 77: skipped)."""
import os
import re
import shutil
import urllib.request
import sys
import time

from serve_support import Server, skip

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    skip("the 'selenium' package is not importable (pip install selenium)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
if not CHROMIUM or not os.path.exists(DRIVER):
    skip("chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")

# Records every text the newest assistant reply shows, so the test sees it grow chunk by chunk.
OBSERVE = """
window.__texts = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('.msg.assistant .content');
  if (replies.length) window.__texts.push(replies[replies.length - 1].textContent);
}).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
"""


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def cancelled(server):
    with urllib.request.urlopen(server.url + "/metrics") as r:
        m = re.search(r"^frugal_http_cancelled_total (\d+)", r.read().decode(), re.M)
    return int(m.group(1)) if m else 0


def send(driver, text):
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def main():
    server = Server(sys.argv[1])
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        driver.get(server.url + "/")
        assert "frugal" in driver.title, driver.title
        temperature = driver.find_element(By.ID, "temperature")
        temperature.clear()
        temperature.send_keys("0")
        tokens = driver.find_element(By.ID, "max_tokens")
        tokens.clear()
        tokens.send_keys("48")
        driver.execute_script(OBSERVE)
        send(driver, "Write a short poem about the sea.")
        reply = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".msg.assistant.done .content"), 90, "the reply")[0]
        text = reply.text
        texts = driver.execute_script("return window.__texts")
        grown = sorted({len(t) for t in texts if t})
        print("reply:", repr(text), "| distinct lengths while streaming:", len(grown))
        assert text.strip(), "empty reply"
        assert len(grown) >= 2, "the reply did not stream (one update only)"
        assert not driver.find_elements(By.CSS_SELECTOR, ".msg.error"), "the page shows an error"
        # A second turn: the history is sent along and a second reply appears.
        send(driver, "Thanks!")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant.done")) == 2, 90, "the second reply")
        assert len(driver.find_elements(By.CSS_SELECTOR, ".msg.user")) == 2
        # The stop button: a long answer is stopped after its first words, the page marks it
        # stopped, and the server cancels the sequence (its metrics count the hang-up).
        tokens.clear()
        tokens.send_keys("400")
        send(driver, "Tell me a very long story about a dragon.")
        wait_for(lambda: len([e for e in driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .content") if e.text]) == 3,
                 90, "the third reply to start")
        driver.find_element(By.ID, "stop").click()
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".msg.assistant.stopped"), 10, "the reply to stop")
        wait_for(lambda: cancelled(server) >= 1, 10, "the server to cancel the stopped request")
    finally:
        if driver:
            driver.quit()
        code = server.stop()
    assert code == 0, "frugal serve exited with %d:\n%s" % (code, "".join(server.log))
    print("ok")


if __name__ == "__main__":
    main()
