#!/usr/bin/python3
"""screenshots_bundled.py BUILD OUTDIR — the dashboard's Inspect page with the bundled models.

The browser test (tests/browser/test_dashboard.py) saves screenshots served by tiny,
barely trained test models; this shows what a user of `make run` sees: galaxyd with
models/default/ on a free port, headless Chromium, each bundled example (or the names given
with --examples) in the Inspect view with its counterfactual grid, once per view
(counterfactual, difference). Writes OUTDIR/inspect-bundled-<example>-<view>.png. Not a test:
it asserts only what it needs to take the pictures (the grid's images loaded).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def until(driver, js, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        if driver.execute_script("return (" + js + ");"):
            return
        if time.monotonic() > deadline:
            sys.exit(f"screenshots_bundled: timed out waiting for {what}")
        time.sleep(0.1)


def start_galaxyd(build, tmp):
    p = subprocess.Popen([os.path.join(build, "galaxyd"), "--port", "0", "--models",
                          os.path.join(ROOT, "models", "default"), "--db", os.path.join(tmp, "d.sqlite"),
                          "--web", os.path.join(ROOT, "web"), "--access-log", "/dev/null"],
                         stdout=subprocess.PIPE, text=True)
    m = re.search(r"listening on (http://\S+)", p.stdout.readline())
    if not m:
        p.kill()
        sys.exit("screenshots_bundled: galaxyd did not start")
    return p, m.group(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("outdir")
    ap.add_argument("--examples", default="", help="comma-separated example labels (default: all)")
    a = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    os.makedirs(a.outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_galaxyd(a.build, tmp)
        o = Options()
        o.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--lang=en-GB"):
            o.add_argument(arg)
        d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
        try:
            d.get(url + "/#inspect")
            until(d, "document.querySelectorAll('.examples button').length > 0", "the examples")
            buttons = d.find_elements("css selector", ".examples button")
            labels = [b.text.replace("\n", " ").strip() for b in buttons]
            want = [s.strip() for s in a.examples.split(",") if s.strip()] or labels
            for i, label in enumerate(labels):
                if label not in want:
                    continue
                d.find_elements("css selector", ".examples button")[i].click()
                until(d, "document.querySelectorAll('#cf-grid img').length > 0 && [...document.querySelectorAll("
                      "'#cf-grid img')].every((i) => i.complete && i.naturalWidth > 0)", "the counterfactual grid")
                until(d, "document.querySelectorAll('.progress').length === 0", "classification and scores",
                      timeout=180)
                slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
                for view in ("cf", "diff"):
                    if view != "cf":
                        d.find_element("css selector", f"input[name=cfview][value={view}]").click()
                        until(d, "[...document.querySelectorAll('#cf-grid img')].every((i) => i.complete && "
                              f"i.naturalWidth > 0 && i.src.includes('{view}'))", f"the {view} view")
                    h = d.execute_script("return document.documentElement.scrollHeight;")
                    d.set_window_size(1280, min(h + 100, 4000))
                    time.sleep(0.3)
                    path = os.path.join(a.outdir, f"inspect-bundled-{slug}-{view}.png")
                    d.save_screenshot(path)
                    d.set_window_size(1280, 1000)
                    print(path)
                d.find_element("css selector", "input[name=cfview][value=cf]").click() \
                    if d.find_elements("css selector", "input[name=cfview][value=cf]") else None
        finally:
            d.quit()
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
