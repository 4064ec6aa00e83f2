"""The ``glue(..., display=False)`` lines stay out of the code the reader sees.

A page puts the numbers it computes into its prose with myst-nb's ``glue``: plumbing, not
content. When the HTML build has finished, each code block of a written page loses its
statements ``glue(...)`` (one or more lines, with ``display=False``), any ``for`` loop whose body
is nothing but such statements, and the line ``from myst_nb import glue``. The executed notebook, the page's download and its source keep
them; only the shown code is shorter. Every other line is left exactly as it was highlighted.
"""
import html
import re
from pathlib import Path

PRE = re.compile(r'(<div class="highlight"><pre>)(.*?)(</pre>)', re.S)
TAG = re.compile(r"<[^>]+>")


def _text(line: str) -> str:
    return html.unescape(TAG.sub("", line))


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _glue_end(texts, i):
    """The index after the glue statement starting at line i, or None if line i starts none."""
    if not texts[i].lstrip().startswith("glue("):
        return None
    depth, j = 0, i
    while j < len(texts):
        depth += texts[j].count("(") - texts[j].count(")")
        j += 1
        if depth <= 0:
            break
    statement = "\n".join(texts[i:j])
    return j if "display=False" in statement else None


def _removable_end(texts, i):
    """The index after a removable statement at line i (a glue call, or a loop of nothing else)."""
    end = _glue_end(texts, i)
    if end is not None:
        return end
    head = texts[i].strip()
    if head.startswith("from myst_nb import glue"):
        return i + 1  # the import, with nothing left to use it
    if not (head.startswith("for ") and head.endswith(":")):
        return None
    level, j = _indent(texts[i]), i + 1
    body = False
    while j < len(texts) and (not texts[j].strip() or _indent(texts[j]) > level):
        if not texts[j].strip():
            j += 1
            continue
        end = _removable_end(texts, j)
        if end is None:
            return None
        body, j = True, end
    return j if body else None


def _strip_block(match):
    lines = match.group(2).split("\n")
    texts = [_text(line) for line in lines]
    kept, i = [], 0
    while i < len(lines):
        end = _removable_end(texts, i)
        if end is None:
            kept.append(lines[i])
            i += 1
        else:
            i = end
    return match.group(1) + "\n".join(kept) + match.group(3)


def _hide_glue(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if "glue" not in text:
            continue
        new = PRE.sub(_strip_block, text)
        if new != text:
            page.write_text(new, encoding="utf-8")


def setup(app):
    app.connect("build-finished", _hide_glue)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
