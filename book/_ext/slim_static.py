"""The built site without the static files no page uses.

sphinx-mathjax-offline copies MathJax's whole distribution into ``_static/mathjax`` (24 MB): every
combined component, the SVG and MathML inputs and outputs, the speech-rule engine. The pages load
``tex-chtml.js`` only, which fetches its CommonHTML fonts and, when a formula needs one, a TeX
extension or a menu module. When the HTML build has finished, the rest is deleted, as are the
JavaScript and CSS source maps (``*.map``, for debugging the theme). ``make book-check`` then opens
every page in Chromium and fails if a formula is not typeset or a file is missing.
"""
import shutil
from pathlib import Path

# what tex-chtml.js loads, relative to _static/mathjax
KEEP = {"tex-chtml.js", "input/tex/extensions", "output/chtml", "ui", "a11y"}


def _slim(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    mathjax = static / "mathjax"
    if (mathjax / "tex-chtml.js").is_file():
        for path in sorted(mathjax.rglob("*"), reverse=True):  # deepest first
            rel = path.relative_to(mathjax).as_posix()
            if any(rel == k or rel.startswith(k + "/") or k.startswith(rel + "/") for k in KEEP):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    for source_map in static.rglob("*.map"):
        source_map.unlink()


def setup(app):
    app.connect("build-finished", _slim)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
