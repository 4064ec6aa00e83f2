"""The built book as a reader's browser shows it (run by `make book-check` after the build).

Every page of ``_build/html`` is opened from disk in Debian's headless Chromium (tests/browser.py)
at 1400 x 900 and at 390 x 844 (a phone), and the check fails, naming the page, on:

- a request for anything that is not a file of the site (the book must work offline);
- an error in the page's console or an uncaught exception;
- at 1400 px, a display equation wider than the text column (it would scroll sideways);
- build plumbing in the visible text: an equation label such as ``(ch05-loss)``, a ``glue(`` call
  or an nbval marker.

At 390 px, equations that scroll (with the theme's scroll bar) are counted and printed, not failed.
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
  return {id: d.id || d.textContent.slice(0, 40), over: Math.max(...els.map(e => e.scrollWidth - e.clientWidth))};
})"""
TYPESET = "document.querySelectorAll('div.math').length === document.querySelectorAll('div.math mjx-container').length"


def main() -> int:
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        print("book-check: chromium is not installed (apt-get install chromium): the pages were not opened in a browser")
        return 1 if os.environ.get("CI") else 0
    from browser import Browser

    pages = sorted(SITE.glob("book/*.html")) + sorted(SITE.glob("notebooks/*/*.html"))
    problems, phone_scrolling, equations = [], 0, 0
    for width, height in ((1400, 900), (390, 844)):
        browser = Browser(width, height)
        try:
            browser.record_requests()
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
                else:
                    phone_scrolling += len(wide)
                text = browser.eval("document.body.innerText")
                shown = sorted(set(PLUMBING.findall(text)))
                if shown:
                    problems.append(f"{name}: build plumbing in the text {shown[:5]}")
        finally:
            browser.close()
    for problem in problems:
        print("book-check:", problem)
    print(f"book-check: {len(pages)} pages opened in Chromium at 1400 and 390 px: {equations} display equations, "
          f"none wider than the column at 1400 px" if not problems else "book-check: the browser check failed",
          f"({phone_scrolling} scroll sideways at 390 px)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
