"""The built book as a reader's browser shows it (run by `make book-check` after the build).

Every page of ``_build/html`` is opened from disk in Debian's headless Chromium (tests/browser.py)
at 1400 x 900 and at 390 x 844 (a phone), with the browser's cache off (every load is a cold
one), and the check fails, naming the page, on:

- a request for anything that is not a file of the site (the book must work offline);
- an error in the page's console or an uncaught exception;
- a cold load over 1.5 MB (the files the page fetches on opening, figures out of view excepted:
  they load lazily);
- a figure without a numbered caption ("Fig. 5.3") or without alt text (a file name is not one);
- an icon of the theme without its glyph (book/_ext/slim_static.py keeps only the icons in use);
- at 1400 px, a display equation wider than the text column or with a glyph cut off by its box,
  or a code cell that scrolls sideways;
- at 390 px, a page wider than the screen (it would scroll sideways as a whole), a display
  equation that scrolls without the visible scroll cue (book/_static/reader.js),
  or a figure shrunk below 600 px (its text would be too small to read: a wide one scrolls in its
  frame instead, with the same cue);
- build plumbing in the visible text: an equation label such as ``(ch05-loss)``, a ``glue(`` call
  or an nbval marker;
- the bibliography: an entry that does not link back to a page citing it; the index
  (genindex.html) with fewer than 100 terms; the landing page without a link to every chapter
  and lab.

Without Chromium the check says so and fails when ``CI`` is set, as the tests do.
"""
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SITE = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html").resolve()
PLUMBING = re.compile(r"\(ch\d\d-[a-z][\w-]*\)|\bglue\(|NBVAL")
IGNORED_CONSOLE = ("Got invalid theme mode",)  # pydata-sphinx-theme on a first visit, before it stores a mode
EQUATIONS = """Array.from(document.querySelectorAll('div.math')).map(d => {
  const els = [d, ...d.querySelectorAll('mjx-container')];
  const box = (d.querySelector('mjx-container') || d).getBoundingClientRect();
  const glyphs = Array.from(d.querySelectorAll('mjx-c')).map(c => c.getBoundingClientRect()).filter(r => r.height > 0);
  // a glyph's box touching the container's edge: its ink (which overshoots the box) is cut off
  const clipped = glyphs.some(r => r.top < box.top + 1 || r.bottom > box.bottom - 1);
  return {id: d.id || d.textContent.slice(0, 40), over: Math.max(...els.map(e => e.scrollWidth - e.clientWidth)), clipped};
})"""
TYPESET = ("document.querySelectorAll('div.math').length === document.querySelectorAll('div.math mjx-container').length"
           " && document.documentElement.dataset.dgmEquationsMarked === '1'")
MAX_COLD_LOAD = 1_500_000  # bytes
FIGURES = """Array.from(document.querySelectorAll('article img')).map(img => {
  const fig = img.closest('figure');
  const cap = fig && fig.querySelector('figcaption .caption-number');
  return {src: img.getAttribute('src').split('/').pop().slice(0, 24), alt: img.getAttribute('alt') || '',
          numbered: !!(cap && /^Fig\\. \\d+(\\.\\d+)?/.test(cap.textContent.trim()))};
})"""
ICONS = """Array.from(document.querySelectorAll('i.fa-solid, i.fa-regular, i.fa-brands, i.fab, i.fas')).filter(
  i => i.offsetParent !== null).map(i => ({cls: i.className, glyph: getComputedStyle(i, '::before').content}))
  .filter(i => !i.glyph || i.glyph === 'none' || i.glyph === 'normal' || i.glyph === '""')"""
CODE_SCROLLING = """Array.from(document.querySelectorAll('div.cell_input pre')).filter(
  p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1).length"""
PHONE_FIGURES = """(async () => {
  const imgs = Array.from(document.querySelectorAll('figure img'));
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })));
  window.dispatchEvent(new Event('resize'));
  await new Promise(r => setTimeout(r, 500));
  return imgs.map(i => {
    const frame = i.parentElement, fig = i.closest('figure');
    const natural = parseFloat(i.style.width) || i.naturalWidth;
    const scrolls = frame.scrollWidth > frame.clientWidth + 1;
    return {src: i.getAttribute('src').split('/').pop().slice(0, 24),
            small: i.getBoundingClientRect().width < Math.min(natural, 600) - 1,
            nocue: scrolls && !(fig.classList.contains('dgm-scrolls') && getComputedStyle(frame, '::after').content !== 'none')};
  }).filter(f => f.small || f.nocue);
})()"""
NO_CUE = """Array.from(document.querySelectorAll('div.math')).filter(d => {
  const els = [d, ...d.querySelectorAll('mjx-container')];
  const scrolls = els.some(e => e.scrollWidth > e.clientWidth + 1);
  return scrolls && (!d.classList.contains('dgm-scrolls') || getComputedStyle(d, '::after').content === 'none');
}).map(d => d.id || d.textContent.slice(0, 40))"""


def main() -> int:
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        print("book-check: chromium is not installed (apt-get install chromium): the pages were not opened in a browser")
        return 1 if os.environ.get("CI") else 0
    from browser import Browser

    pages = sorted(SITE.glob("book/*.html")) + sorted(SITE.glob("notebooks/*/*.html"))
    problems, phone_scrolling, equations, figures, heaviest = [], 0, 0, 0, (0, "")
    for width, height in ((1400, 900), (390, 844)):
        browser = Browser(width, height)
        try:
            browser.record_requests()
            browser.send("Network.setCacheDisabled", cacheDisabled=True)
            for page in pages:
                browser.console.clear()
                browser.requests.clear()
                browser.goto(page.as_uri())
                browser.wait_for(TYPESET, 60, f"MathJax to typeset {page.name}")
                time.sleep(0.3)
                name = f"{page.relative_to(SITE)} at {width} px"
                remote = [u for u in browser.requests if not u.startswith(("file:", "data:", "blob:"))]
                if remote:
                    problems.append(f"{name}: requests {remote[:3]}")
                errors = [e for e in browser.console if not e.startswith(IGNORED_CONSOLE)]
                if errors:
                    problems.append(f"{name}: console {errors[:2]}")
                shown_equations = browser.eval(EQUATIONS)
                wide = [e for e in shown_equations if e["over"] > 1]
                if width >= 1000:
                    equations += len(shown_equations)
                    if wide:
                        problems.append(f"{name}: display equations wider than the column {[e['id'] for e in wide]}")
                    clipped = [e["id"] for e in shown_equations if e["clipped"]]
                    if clipped:
                        problems.append(f"{name}: display equations with glyphs cut off at the top or bottom {clipped[:3]}")
                    weight = _cold_load(browser.requests)
                    heaviest = max(heaviest, (weight, page.name))
                    if weight > MAX_COLD_LOAD:
                        problems.append(f"{name}: a cold load fetches {weight / 1e6:.2f} MB (over {MAX_COLD_LOAD / 1e6} MB)")
                    scrolling = browser.eval(CODE_SCROLLING)
                    if scrolling:
                        problems.append(f"{name}: {scrolling} code cells scroll sideways")
                    shown_figures = browser.eval(FIGURES)
                    figures += len(shown_figures)
                    bad = [f["src"] for f in shown_figures
                           if not f["numbered"] or len(f["alt"].strip()) < 15 or f["alt"].strip().endswith((".png", ".svg"))]
                    if bad:
                        problems.append(f"{name}: figures without a numbered caption or alt text {bad[:4]}")
                    glyphless = browser.eval(ICONS)
                    if glyphless:
                        problems.append(f"{name}: icons without a glyph {[i['cls'] for i in glyphless[:4]]}")
                else:
                    phone_scrolling += len(wide)
                    no_cue = browser.eval(NO_CUE)
                    if no_cue:
                        problems.append(f"{name}: equations that scroll without the scroll cue {no_cue[:3]}")
                    sideways = browser.eval("document.documentElement.scrollWidth - window.innerWidth")
                    if sideways > 1:
                        problems.append(f"{name}: the page scrolls sideways by {sideways} px")
                    cramped = browser.eval(PHONE_FIGURES)
                    if cramped:
                        problems.append(f"{name}: figures shrunk below 600 px or scrolling without a cue {cramped[:3]}")
                text = browser.eval("document.body.innerText")
                shown = sorted(set(PLUMBING.findall(text)))
                if shown:
                    problems.append(f"{name}: build plumbing in the text {shown[:5]}")
        finally:
            browser.close()
    problems += _site_pages(pages)
    for problem in problems:
        print("book-check:", problem)
    print(f"book-check: {len(pages)} pages opened in Chromium at 1400 and 390 px: {equations} display equations, "
          f"none wider than the column at 1400 px ({phone_scrolling} scroll at 390 px, each with its cue); "
          f"{figures} figures, each numbered, captioned and described; the heaviest cold load "
          f"{heaviest[0] / 1e6:.2f} MB ({heaviest[1]})" if not problems else "book-check: the browser check failed")
    return 1 if problems else 0


def _cold_load(urls: list[str]) -> int:
    """Bytes of the site's files a page fetched (each file once)."""
    from urllib.parse import unquote, urlparse

    total = 0
    for url in dict.fromkeys(urls):
        if url.startswith("file:"):
            path = Path(unquote(urlparse(url).path))
            if path.is_file():
                total += path.stat().st_size
    return total


def _site_pages(pages: list[Path]) -> list[str]:
    """The bibliography links back, the index lists the book's terms, the landing page maps the book."""
    problems = []
    bib = SITE / "book" / "bibliography.html"
    if bib.is_file():
        entries = re.findall(r'<div class="citation".*?</div>', bib.read_text(encoding="utf-8"), re.S)
        unlinked = [re.sub(r"<[^>]+>", "", e)[:60] for e in entries if 'class="dgm-cited-in"' not in e]
        if not entries or unlinked:
            problems.append(f"bibliography: entries that link back to no citing page {unlinked[:3] or 'none found'}")
    index = SITE / "genindex.html"
    terms = len(re.findall(r"<li>", index.read_text(encoding="utf-8"))) if index.is_file() else 0
    if terms < 100:
        problems.append(f"genindex.html lists {terms} terms (fewer than 100)")
    landing = SITE / "book" / "index.html"
    if not landing.is_file():
        problems.append("book/index.html (the landing page) is missing")
    else:
        text = landing.read_text(encoding="utf-8")
        missing = [p.name for p in pages if p.name not in ("index.html", "search.html") and p.name not in text]
        if missing:
            problems.append(f"the landing page does not link {missing[:5]}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
