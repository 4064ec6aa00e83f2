"""The built site without what no page needs: each cold page load under 1.5 MB, the site about 10 MB.

When the HTML build has finished:

- **MathJax**: sphinx-mathjax-offline copies MathJax's whole distribution into ``_static/mathjax``
  (24 MB) and points the pages at ``tex-chtml.js`` (1.16 MB, 426 kB of it the right-click menu).
  ``_config.yml`` loads ``startup.js`` instead, with the components the pages use in
  ``mathjax3_config.loader`` (the TeX input with the same packages as ``tex-chtml.js``, the
  CommonHTML output, and the hidden MathML that screen readers read): 0.76 MB. Everything else
  of the distribution is deleted (``KEEP`` lists what stays: those components, the TeX
  extensions that ``autoload`` fetches when a formula needs one, and the CommonHTML fonts).
- **Icons**: pydata-sphinx-theme draws its Font Awesome icons twice over, with a 1.49 MB script
  that turns each ``<i class="fa-...">`` into an SVG, and with the web font that its style sheet
  already loads. The script is dropped from every page and deleted; the font draws the icons.
  The style sheet's 2,000-odd ``.fa-NAME:before`` rules shrink to the icons that some page or
  script of the site uses; the solid icon font (156 kB) is cut to those glyphs with fontTools
  (a WOFF of a few kB), and the TrueType copies of the fonts go (every browser that runs the
  theme reads the web fonts).
- **Style sheets**: the theme's CSS (Bootstrap's with it) keeps the rules whose selectors name only
  classes that some page uses or some script of the site mentions (a PurgeCSS in 60 lines:
  ``_purge_css``); sphinx-design's goes from the pages that use none of its classes.
- **Search**: sphinx-book-theme loads the search index (with its tools) on every page, while
  only ``search.html`` uses it (``search_as_you_type`` is off): the other pages no longer load it.
- **Figures** load lazily (``loading="lazy"``): a cold load fetches the figures in view. Drawn at
  2x (``gmlib.plot.book_figures``), Matplotlib's PNGs are RGBA with a few hundred colours; each
  opaque one is stored with a palette of 256 (median cut, no dithering) when that changes a
  pixel by less than half a grey level on average (measured: 0.13 at worst, 8.3 -> 3.2 MB for
  the book's figures). A figure with transparency, or one the palette would change more,
  is left as drawn.
- **Code**: Pygments wraps every name, punctuation mark and space of the code in a ``<span>`` whose
  colour is the code block's own (``n``, ``p``, ``w``, ``nn`` in the theme's light and dark
  styles alike); those spans go, a third of a chapter page's bytes. (This runs after
  ``hide_glue`` and ``equation_numbers_in_code``, which read them.)
- Source maps (``*.map``, for debugging the theme) are deleted.

``make book-check`` then opens every page in Chromium and fails if a formula is not typeset, a
file is missing, a cold page load weighs over 1.5 MB, or an icon lost its glyph.
"""
import re
import shutil
from pathlib import Path

# what the pages load, relative to _static/mathjax (``_config.yml``: mathjax_path and loader.load)
KEEP = {"startup.js", "core.js", "input/tex.js", "input/tex/extensions", "output/chtml.js",
        "output/chtml", "a11y/assistive-mml.js"}
MATHJAX_PATH = "mathjax/startup.js"
MARK = "/* purged by book/_ext/slim_static.py */\n"
# the theme's files this extension rewrites or deletes besides its style sheets
REWRITTEN = ("vendor/fontawesome/webfonts/fa-solid-900.woff2", "vendor/fontawesome/webfonts/fa-solid-900.ttf",
             "vendor/fontawesome/webfonts/fa-regular-400.ttf", "vendor/fontawesome/webfonts/fa-brands-400.ttf")
MAX_PALETTE_ERROR = 0.5  # mean absolute change per channel (0-255) a figure's palette may make

_FONTAWESOME_TAG = re.compile(r'\s*<(?:script[^>]*src|link[^>]*href)="[^"]*scripts/fontawesome\.js[^"]*"[^>]*>(?:</script>)?')
_SEARCH_TAGS = re.compile(r'\s*<script src="[^"]*(?:_static/searchtools\.js|_static/language_data\.js|searchindex\.js)"></script>')
_IMG = re.compile(r"<img (?![^>]*\bloading=)")
_PLAIN_TOKEN = re.compile(r'<span class="(?:n|p|w|nn)">([^<]*)</span>')
_ICON_RULE = re.compile(r"((?:\.fa-[a-z0-9-]+:before,?)+)\{content:\"[^\"]*\"\}")
_ICON_NAME = re.compile(r"\bfa-[a-z0-9-]+")
_CLASS_ATTR = re.compile(r'class="([^"]*)"')
_WORD = re.compile(r"[A-Za-z_][\w-]*")
_CLASS = re.compile(r"\.(-?[_a-zA-Z][\w-]*)")
_FUNCTIONAL_PSEUDO = re.compile(r":(?:not|is|where|has)\((?:[^()]|\([^()]*\))*\)")
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_DESIGN_TAGS = re.compile(r'\s*<(?:link[^>]*href|script[^>]*src)="[^"]*_static/(?:sphinx-design\.min\.css|design-tabs\.js)[^"]*"[^>]*>(?:</script>)?')
# the theme's style sheets, purged of rules for classes no page uses
CSS_TO_PURGE = ("styles/pydata-sphinx-theme.css", "styles/sphinx-book-theme.css", "sphinx-design.min.css",
                "basic.css", "mystnb.*.css")


def _slim_mathjax(static: Path) -> None:
    mathjax = static / "mathjax"
    if not (mathjax / "startup.js").is_file():
        return
    for path in sorted(mathjax.rglob("*"), reverse=True):  # deepest first
        rel = path.relative_to(mathjax).as_posix()
        if any(rel == k or rel.startswith(k + "/") or k.startswith(rel + "/") for k in KEEP):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _rewrite_pages(outdir: Path) -> set[str]:
    """Drop the icon script (and the search index but on the search page) from every page, make
    the figures lazy; the icon names the pages use."""
    used: set[str] = set()
    for page in outdir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new = _FONTAWESOME_TAG.sub("", text)
        if page.name != "search.html":
            new = _SEARCH_TAGS.sub("", new)
        new = _IMG.sub('<img loading="lazy" decoding="async" ', new)
        new = _PLAIN_TOKEN.sub(r"\1", new)
        used.update(_ICON_NAME.findall(new))
        if new != text:
            page.write_text(new, encoding="utf-8")
    return used


def _slim_icons(static: Path, used: set[str]) -> None:
    """Keep the ``.fa-NAME:before`` rules of the icons in ``used``."""
    css = static / "styles" / "pydata-sphinx-theme.css"
    if css.is_file():
        text = css.read_text(encoding="utf-8")

        def keep(match: re.Match) -> str:
            names = {s[1:-len(":before")] for s in match.group(1).rstrip(",").split(",")}
            return match.group(0) if names & used else ""

        css.write_text(_ICON_RULE.sub(keep, text), encoding="utf-8")


def _script_words(static: Path) -> set[str]:
    """Every word the site's scripts mention (a class a script adds, such as Bootstrap's ``show``,
    or an icon it draws); MathJax styles its own output."""
    words: set[str] = set()
    for js in static.rglob("*.js"):
        if "mathjax" not in js.parts:
            words.update(_WORD.findall(js.read_text(encoding="utf-8", errors="replace")))
    return words


def _page_classes(pages: list[Path]) -> set[str]:
    classes: set[str] = set()
    for page in pages:
        for attr in _CLASS_ATTR.findall(page.read_text(encoding="utf-8")):
            classes.update(attr.split())
    return classes


def _selector_alive(selector: str, used: set[str]) -> bool:
    # classes inside :not()/:is()/:where()/:has() do not have to be present for the rest to match
    plain = _FUNCTIONAL_PSEUDO.sub("", selector)
    return all(name in used for name in _CLASS.findall(plain))


def _blocks(css: str):
    """Top-level (prelude, body) pairs of a minified style sheet; body without its braces."""
    i, n = 0, len(css)
    while i < n:
        start = css.find("{", i)
        if start < 0:
            return
        prelude, depth, j = css[i:start].strip(), 1, start + 1
        while j < n and depth:
            c = css[j]
            if c in "\"'":
                end = css.find(c, j + 1)
                j = n if end < 0 else end
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            j += 1
        yield prelude, css[start + 1:j - 1]
        i = j


def _purge_css(css: str, used: set[str]) -> str:
    css = _COMMENT.sub("", css)
    out = []
    for prelude, body in _blocks(css):
        if prelude.startswith(("@media", "@supports", "@layer", "@container")):
            inner = _purge_css(body, used)
            if inner:
                out.append(f"{prelude}{{{inner}}}")
        elif prelude.startswith("@") or not prelude:
            out.append(f"{prelude}{{{body}}}")
        else:
            alive = [sel for sel in _split_selectors(prelude) if _selector_alive(sel, used)]
            if alive:
                out.append(f"{','.join(alive)}{{{body}}}")
    return "".join(out)


def _split_selectors(prelude: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in prelude:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _slim_css(static: Path, pages: list[Path], classes: set[str], words: set[str]) -> None:
    """Purge the theme's style sheets down to the rules that the pages' classes and the scripts'
    words can match; sphinx-design's leaves the pages when none of them uses one of its classes."""
    for pattern in CSS_TO_PURGE:
        for css in static.glob(pattern):
            css.write_text(_purge_css(css.read_text(encoding="utf-8"), classes | words) + MARK, encoding="utf-8")
    if not any(cls.startswith("sd-") for cls in classes):
        for page in pages:
            text = page.read_text(encoding="utf-8")
            new = _DESIGN_TAGS.sub("", text)
            if new != text:
                page.write_text(new, encoding="utf-8")


def _subset_icon_font(static: Path) -> None:
    """The solid Font Awesome font cut to the glyphs the kept ``.fa-NAME:before`` rules draw."""
    css_path = static / "styles" / "pydata-sphinx-theme.css"
    font = static / "vendor" / "fontawesome" / "webfonts" / "fa-solid-900.woff2"
    source = font.with_suffix(".ttf")  # fontTools reads WOFF2 only with brotli; the TrueType copy needs nothing
    if not (css_path.is_file() and font.is_file() and source.is_file()):
        return
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont
    except ImportError:  # fontTools comes with matplotlib
        return
    css = css_path.read_text(encoding="utf-8")
    codes = {int(code, 16) for code in re.findall(r':before\{content:"\\([0-9a-f]{2,5})"\}', css)}
    if not codes:
        return
    ttf = TTFont(source)
    options = subset.Options()
    options.flavor = "woff"
    options.layout_features = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=codes)
    subsetter.subset(ttf)
    out = font.with_name("fa-solid-900.subset.woff")
    ttf.flavor = "woff"
    ttf.save(out)
    css = css.replace("fa-solid-900.woff2) format(\"woff2\")", "fa-solid-900.subset.woff) format(\"woff\")")
    css_path.write_text(css, encoding="utf-8")
    font.unlink()


def _shrink_figures(images: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    for png in images.glob("*.png"):
        with Image.open(png) as im:
            if im.mode == "P":
                continue  # done by an earlier build
            rgba = im.convert("RGBA")
        pixels = np.asarray(rgba)
        if (pixels[..., 3] < 255).any():
            continue
        rgb = rgba.convert("RGB")
        palette = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        error = np.abs(np.asarray(palette.convert("RGB"), dtype=np.int16) - pixels[..., :3]).mean()
        out = io.BytesIO()
        palette.save(out, "PNG", optimize=True)
        if error < MAX_PALETTE_ERROR and out.tell() < png.stat().st_size:
            png.write_bytes(out.getvalue())


def _slim(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    static = outdir / "_static"
    _pristine(static, Path(app.doctreedir) / "slim_static")
    _slim_mathjax(static)
    icons = _rewrite_pages(outdir)
    (static / "scripts" / "fontawesome.js").unlink(missing_ok=True)  # it names every icon there is
    words = _script_words(static)
    _slim_icons(static, icons | {w for w in words if w.startswith("fa-")})
    pages = list(outdir.rglob("*.html"))
    _slim_css(static, pages, _page_classes(pages), words)
    _subset_icon_font(static)
    for ttf in (static / "vendor").rglob("*.ttf"):
        ttf.unlink()
    _shrink_figures(outdir / "_images")
    for source_map in static.rglob("*.map"):
        source_map.unlink()


def _pristine(static: Path, keep: Path) -> None:
    """Sphinx (7.4) copies the static files only when some page was rebuilt, and never over a file
    already in the output: the files this extension rewrites would stay as the last build left
    them (a style sheet purged for other pages, a font already cut). So the first time it sees
    them as the theme ships them it keeps a copy beside the doctrees, and each later build starts
    from that copy."""
    for rel in [*(p.relative_to(static).as_posix() for pattern in CSS_TO_PURGE for p in static.glob(pattern)),
                *REWRITTEN]:
        here, saved = static / rel, keep / rel
        if here.is_file() and (here.suffix != ".css" or MARK not in here.read_text(encoding="utf-8")):
            saved.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(here, saved)  # as the theme ships it
        elif saved.is_file():
            here.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(saved, here)


def _use_startup(app, config):
    config.mathjax_path = MATHJAX_PATH  # after sphinx-mathjax-offline set tex-chtml.js


def setup(app):
    app.connect("config-inited", _use_startup, priority=900)
    app.connect("build-finished", _slim)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
