"""Reader aids: ``book/_static/reader.css`` and ``reader.js`` on every page.

- Figures keep their proportions when a phone narrows them (Sphinx writes a 2x figure's display
  size as an inline width and height), and a click opens one at full resolution.
- A display equation wider than the column (on a phone) gets a visible scroll cue, a fading
  right edge marked "scroll", until the reader has scrolled to its end.
"""
import shutil
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "_static"


def _copy(app, exception):
    # copied here rather than through html_static_path: Sphinx (7.4) copies static files only when
    # a page was rebuilt, and never over an existing file, so an edit to them would not show
    if exception is None and app.builder.format == "html":
        for name in ("reader.css", "reader.js"):
            shutil.copy2(STATIC / name, Path(app.outdir) / "_static" / name)


def setup(app):
    app.connect("build-finished", _copy)
    app.add_css_file("reader.css")
    app.add_js_file("reader.js", loading_method="defer")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
