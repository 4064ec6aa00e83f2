"""Equation labels in code and outputs become the equation numbers the reader sees.

The pages' code comments and printed lines point at the equations they implement by label, as in
``# (ch05-loss)`` or ``print("... eq. (ch03-chi2) ...")``: in the source that is the stable name
(the numbers move when an equation is added). Sphinx resolves ``{eq}`` references in the prose
but cannot see into code cells or their outputs, where the reader would meet the bare label. When
the HTML build has finished, every ``(chNN-label)`` in a written page whose label names a numbered
equation of the book is replaced by that equation's number, ``(5.15)``, taken from the pages
themselves. A label that names no equation is left as it is and reported as a warning.
"""
import re
from pathlib import Path

from sphinx.util import logging

LOG = logging.getLogger(__name__)
NUMBER = re.compile(r'<span class="eqno">\(([^)<]+)\)<a class="headerlink" href="#equation-([\w-]+)"')
LABEL = re.compile(r"\((ch\d\d-[A-Za-z0-9_-]+)\)")


def _replace_labels(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    pages = sorted(Path(app.outdir).rglob("*.html"))
    numbers = {}
    for page in pages:
        for number, label in NUMBER.findall(page.read_text(encoding="utf-8")):
            numbers[label] = number
    unknown = set()
    for page in pages:
        text = page.read_text(encoding="utf-8")

        def number_of(match):
            label = match.group(1)
            if label in numbers:
                return f"({numbers[label]})"
            unknown.add(label)
            return match.group(0)

        new = LABEL.sub(number_of, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
    for label in sorted(unknown):
        LOG.warning(f"equation_numbers_in_code: ({label}) names no numbered equation; left as it is")


def setup(app):
    app.connect("build-finished", _replace_labels)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
