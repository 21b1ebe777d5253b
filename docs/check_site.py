"""Check the built docs site in a real browser: every page, as a reader's Chromium renders it.

Serves ``site/`` on a localhost port, opens every HTML page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium) at each window width, and fails with one
line per problem, naming the page and the width, on:

- a console error (a JavaScript exception, a file that failed to load, a formula KaTeX rejected);
- a request to anything but the local server (the site must work offline: math included);
- a broken image (not loaded, or ``naturalWidth`` 0);
- unrendered math: an ``arithmatex`` element without KaTeX output, a KaTeX error, or ``$...$``,
  ``\\(...\\)`` or ``\\[...\\]`` left as plain text outside code;
- horizontal overflow of the page: ``document.documentElement.scrollWidth`` wider than the
  viewport (wide tables and code must scroll or wrap inside their own box);
- a picture that cannot be enlarged: every image of a page's content must be a lightbox link
  (glightbox), and clicking the first one of a page must open it, loaded;
- lost text: an element in a page's content that Markdown, the theme and KaTeX do not produce, such
  as ``<name>`` written outside backticks, which the browser takes for a tag and does not show;
- on a results page (``NARROW_TABLES``), a table that scrolls sideways in a window at least 1,000 px
  wide: results are read at a glance, so a wide table is split or its cells shortened;
- a page taller than ``MAX_HEIGHT`` (12,000 CSS px) in a window at least 1,000 px wide, or than
  ``NARROW_HEIGHT`` (20,000 px) in a narrower one.

Usage::

    python docs/check_site.py [--site site] [--widths 1280,390] [--screenshots DIR]

``--screenshots DIR`` saves a full-page PNG of every page at every width into ``DIR/<width>/``.
Exit status: 0 when every page passes, 1 on any problem, 2 when the check itself cannot run.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
HEIGHT = 900
# A page a reader can take in: at most this tall (CSS px) in a window at least WIDE px wide, and NARROW_HEIGHT in a
# narrower one (phones wrap text and tables into more lines).
MAX_HEIGHT, WIDE, NARROW_HEIGHT = 12_000, 1000, 20_000
NARROW_TABLES = "/results/"  # pages whose tables must fit the content column without scrolling sideways
MAX_SCREENSHOT_HEIGHT = 16000

# The elements Markdown, its extensions, the theme and KaTeX put into a page's content; any other
# element there is an HTML tag written by mistake, whose text the browser does not show.
PRODUCED_TAGS = (
    "a abbr article aside b blockquote br button caption cite code col colgroup dd del details div dl dt em "
    "figcaption figure footer h1 h2 h3 h4 h5 h6 header hr i img input ins kbd label li mark nav ol p path pre q s "
    "script section small source span strong style sub summary sup svg table tbody td tfoot th thead time tr u ul var"
).split()
# Runs in the page once it has loaded (PRODUCED_TAGS is defined before it); resolves with what the page shows.
INSPECT = r"""
const done = arguments[arguments.length - 1];
const sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.race([
    Promise.all(images.map(img => img.complete ? null
      : new Promise(r => { img.addEventListener("load", r); img.addEventListener("error", r); }))),
    sleep(10000),
  ]);
  if (document.fonts) await Promise.race([document.fonts.ready, sleep(5000)]);
  const pending = () => [...document.querySelectorAll(".arithmatex")].filter(el => !el.querySelector(".katex"));
  for (let i = 0; i < 40 && pending().length; i++) await sleep(50);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));

  const describe = el => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    if (el.classList.length) s += "." + [...el.classList].slice(0, 2).join(".");
    const text = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 50);
    return text ? `${s} "${text}"` : s;
  };
  const problems = [];
  for (const img of images) {
    if (!img.complete || img.naturalWidth === 0) problems.push(`broken image ${img.getAttribute("src")}`);
  }
  for (const img of document.querySelectorAll(".md-content img")) {
    if (!img.closest("a.glightbox") && !img.closest(".skip-lightbox") && !img.classList.contains("skip-lightbox")) {
      problems.push(`image ${img.getAttribute("src")} cannot be enlarged (no lightbox link)`);
    }
  }
  const unrendered = pending();
  for (const el of unrendered.slice(0, 5)) problems.push(`unrendered math ${el.textContent.trim().replace(/\s+/g, " ").slice(0, 60)}`);
  if (unrendered.length > 5) problems.push(`unrendered math: ${unrendered.length - 5} more formulas`);
  for (const el of document.querySelectorAll(".katex-error")) problems.push(`KaTeX error ${describe(el)}`);
  const content = document.querySelector(".md-content") || document.body;
  const walker = document.createTreeWalker(content, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement.closest("pre, code, script, style, .katex, .arithmatex")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
  });
  const rawMath = /\$[^$\s][^$]*\$|\\\(|\\\)|\\\[|\\\]/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.textContent.match(rawMath);
    if (m) problems.push(`raw math text "${m[0].slice(0, 60)}" in ${describe(n.parentElement)}`);
  }
  // An HTML tag swallowed from the Markdown (`runs/<name>` outside backticks) becomes an element and its
  // text is lost: any element in the content that Markdown, the theme and KaTeX do not produce.
  const produced = new Set(PRODUCED_TAGS);
  for (const el of content.querySelectorAll("*")) {
    if (el.closest(".katex, svg, math, .md-typeset__scrollwrap script")) continue;
    const tag = el.tagName.toLowerCase();
    if (!produced.has(tag)) problems.push(`lost text: an HTML tag <${tag}> in ${describe(el.parentElement)} (write it in backticks, or as &lt;${tag}&gt;)`);
  }
  const root = document.documentElement;
  const viewport = root.clientWidth;
  if (root.scrollWidth > viewport + 1) {
    // the outermost elements sticking out of the viewport, not inside a box that scrolls or clips
    // (an ancestor that scrolls or clips only contains what it is a containing block of: an
    // absolutely positioned element escapes every static ancestor)
    const clipped = el => {
      let position = getComputedStyle(el).position;
      for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
        if (position === "fixed") return false;
        const style = getComputedStyle(a);
        if (position === "absolute" && style.position === "static" && style.transform === "none") continue;
        if (style.overflowX !== "visible") return true;
        position = style.position;
      }
      return false;
    };
    const out = [...document.body.querySelectorAll("*")].filter(el => {
      const r = el.getBoundingClientRect();
      return r.width > 0 && r.right > viewport + 1 && !clipped(el);
    });
    const outermost = out.filter(el => !out.includes(el.parentElement)).slice(0, 3).map(describe);
    problems.push(`page wider than the window: scrollWidth ${root.scrollWidth} > ${viewport}`
      + (outermost.length ? `; sticking out: ${outermost.join("; ")}` : ""));
  }
  // A table that scrolls sideways in a wide window is too wide to read: split it or shorten its cells.
  if (viewport >= WIDE && location.pathname.startsWith(NARROW_TABLES)) {
    for (const table of content.querySelectorAll("table")) {
      const wrap = table.closest(".md-typeset__scrollwrap") || table.parentElement;
      if (wrap.scrollWidth > wrap.clientWidth + 1) {
        problems.push(`table wider than the page (${wrap.scrollWidth} > ${wrap.clientWidth} px): ${describe(table.querySelector("th") || table)}`);
      }
    }
  }
  const origin = location.origin;
  for (const entry of performance.getEntriesByType("resource")) {
    if (!entry.name.startsWith(origin) && !entry.name.startsWith("data:")) problems.push(`external request ${entry.name}`);
  }
  done({
    problems,
    height: Math.max(root.scrollHeight, document.body.scrollHeight),
    math: document.querySelectorAll(".katex").length,
    images: images.length,
    lightboxes: document.querySelectorAll(".md-content a.glightbox").length,
  });
})().catch(err => done({problems: [`check script failed: ${err}`], height: 0, math: 0, images: 0, lightboxes: 0}));
"""

# Clicks the page's first lightbox link; resolves with a problem, or null once the enlarged image shows.
OPEN_LIGHTBOX = r"""
const done = arguments[arguments.length - 1];
const link = document.querySelector(".md-content a.glightbox");
link.click();
const started = Date.now();
(function poll() {
  const img = document.querySelector(".glightbox-container .gslide.current img");
  if (img && img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0) {
    setTimeout(() => done(null), 400);  // let the zoom animation finish before a screenshot
  } else if (Date.now() - started > 5000) {
    done(`clicking ${link.getAttribute("href")} opened no lightbox`);
  } else {
    setTimeout(poll, 50);
  }
})();
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


def max_height(width: int) -> int:
    return MAX_HEIGHT if width >= WIDE else NARROW_HEIGHT


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def pages(site: Path) -> list[str]:
    """Every HTML page of the site as a URL path (``index.html`` of a directory as the directory)."""
    out = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        out.append(rel[: -len("index.html")] if rel.endswith("index.html") else rel)
    return out


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def screenshot(driver, path: Path, width: int, height: int) -> None:
    """The whole page as one PNG: the viewport is made as tall as the page for the shot (unlike a
    capture beyond the viewport, this paints the scrollbars of tables that scroll sideways)."""
    import base64

    height = max(1, min(height, MAX_SCREENSHOT_HEIGHT))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
    })
    try:
        driver.execute_script("window.scrollTo(0, 0)")
        driver.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def console_errors(driver, base: str) -> list[str]:
    errors = []
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            errors.append("console error: " + entry.get("message", "").replace(base, "").strip()[:300])
    return errors


def check(site: Path, widths: list[int], shots: Path | None) -> list[str]:
    server, base = serve(site)
    profile = Path(tempfile.mkdtemp(prefix="check-site-chromium-"))
    problems: list[str] = []
    try:
        driver = browser(profile)
        try:
            for width in widths:
                driver.set_window_size(width, HEIGHT)
                inner = driver.execute_script("return window.innerWidth")
                if inner != width:  # the window has decorations: size the viewport itself
                    driver.set_window_size(2 * width - inner, HEIGHT)
                for page in pages(site):
                    name = f"/{page}"
                    driver.get(f"{base}/{page}")
                    result = driver.execute_async_script(f"const PRODUCED_TAGS = {json.dumps(PRODUCED_TAGS)}, WIDE = {WIDE}, NARROW_TABLES = {json.dumps(NARROW_TABLES)};\n{INSPECT}")
                    bound = max_height(width)
                    if result["height"] > bound:
                        problems.append(f"{name} [{width}px]: page {result['height']} px tall, more than {bound} px "
                                        "(fold long tables into collapsible blocks, or split the page)")
                    found = console_errors(driver, base) + result["problems"]
                    problems += [f"{name} [{width}px]: {p}" for p in found]
                    file = (page.rstrip("/") or "index").replace("/", "__").removesuffix(".html")
                    if shots is not None:
                        screenshot(driver, shots / str(width) / f"{file}.png", width, result["height"])
                    if result["lightboxes"]:
                        failed = driver.execute_async_script(OPEN_LIGHTBOX)
                        problems += [f"{name} [{width}px]: {failed}"] if failed else []
                        problems += [f"{name} [{width}px]: {p} (lightbox)" for p in console_errors(driver, base)]
                        if shots is not None and not failed:
                            viewport = driver.execute_script("return window.innerHeight")
                            screenshot(driver, shots / str(width) / f"{file}__lightbox.png", width, viewport)
        finally:
            driver.quit()
    finally:
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site (default: site/)")
    parser.add_argument("--widths", default="1280,390", help="window widths in CSS px, comma-separated (default 1280,390)")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save a full-page PNG per page and width here")
    args = parser.parse_args(argv)

    if not (args.site / "index.html").exists():
        print(f"check_site: {args.site}/index.html not found; build the site first (mkdocs build)", file=sys.stderr)
        return 2
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not (Path(tool).exists() or shutil.which(tool)):
            print(f"check_site: {tool} not found (apt-get install chromium chromium-driver)", file=sys.stderr)
            return 2
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("check_site: selenium is not installed (pip install -e '.[docs]')", file=sys.stderr)
        return 2

    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    started = time.perf_counter()
    count = len(pages(args.site))
    problems = check(args.site, widths, args.screenshots)
    for line in problems:
        print(line)
    took = time.perf_counter() - started
    widths_text = ", ".join(f"{w}px" for w in widths)
    print(f"check_site: {count} pages at {widths_text}: {len(problems)} problem(s) in {took:.0f} s", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
