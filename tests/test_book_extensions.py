"""The book's own Sphinx extensions (book/_ext), on small pages written here."""
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import equation_numbers_in_code  # noqa: E402
import hide_glue  # noqa: E402
import no_thebe  # noqa: E402


def _app(outdir):
    return SimpleNamespace(outdir=str(outdir), doctreedir=str(Path(outdir) / ".doctrees"), builder=SimpleNamespace(format="html"))


def test_equation_labels_become_numbers_across_pages(tmp_path):
    (tmp_path / "a.html").write_text('<div class="math" id="equation-ch05-loss">\n<span class="eqno">(5.15)'
                                     '<a class="headerlink" href="#equation-ch05-loss" title="x">#</a></span>\\[ \\ell \\]</div>')
    (tmp_path / "sub").mkdir()
    page = tmp_path / "sub" / "b.html"
    page.write_text('<span class="c1"># (ch05-loss), averaged</span> <pre>eq. (ch05-loss): 1.0 and (ch09-unknown)</pre>')
    equation_numbers_in_code._replace_labels(_app(tmp_path), None)
    assert page.read_text() == '<span class="c1"># (5.15), averaged</span> <pre>eq. (5.15): 1.0 and (ch09-unknown)</pre>'
    assert 'href="#equation-ch05-loss"' in (tmp_path / "a.html").read_text()  # the anchors stay


def test_glue_lines_and_loops_of_glue_leave_the_shown_code(tmp_path):
    block = ('<div class="highlight"><pre><span class="kn">from</span> myst_nb <span class="kn">import</span> glue\n'
             '<span class="n">x</span> = 1\n'
             '<span class="n">glue</span><span class="p">(</span>"a", x, display=False<span class="p">)</span>\n'
             'for name in masks:\n    for m, k in pairs:\n        glue(f"b-{k}",\n             e[name][m], display=False)\n'
             'for n in ns:\n    print(n)\n    glue("c", n, display=False)\n'
             'glue("d", fig)\ny = 2\n</pre></div>')
    page = tmp_path / "p.html"
    page.write_text(block)
    hide_glue._hide_glue(_app(tmp_path), None)
    assert page.read_text() == ('<div class="highlight"><pre><span class="n">x</span> = 1\n'
                                'for n in ns:\n    print(n)\n'
                                'glue("d", fig)\ny = 2\n</pre></div>')


def test_thebe_scripts_are_dropped_and_the_others_kept():
    scripts = [SimpleNamespace(filename=None, attributes={"body": 'const THEBE_JS_URL = "x"'}),
               SimpleNamespace(filename="sphinx-thebe.js", attributes={}),
               SimpleNamespace(filename="mathjax/tex-chtml.js", attributes={}), "_static/doctools.js"]
    context = {"script_files": list(scripts)}
    no_thebe._drop_thebe(None, "page", "page.html", context, None)
    assert context["script_files"] == scripts[2:]


def test_slim_static_keeps_what_the_pages_load(tmp_path):
    import slim_static

    mathjax = tmp_path / "_static" / "mathjax"
    files = ["startup.js", "core.js", "input/tex.js", "output/chtml.js", "a11y/assistive-mml.js", "tex-chtml.js",
             "tex-svg-full.js", "sre/speech.js", "output/chtml/fonts/woff-v2/MathJax_Main.woff", "output/svg/fonts/tex.js",
             "input/tex/extensions/cancel.js", "input/mml.js", "ui/menu.js", "a11y/explorer.js"]
    for f in files + ["../scripts/theme.js", "../scripts/theme.js.map", "../scripts/fontawesome.js"]:
        (mathjax / f).parent.mkdir(parents=True, exist_ok=True)
        (mathjax / f).write_text("x")
    slim_static._slim(_app(tmp_path), None)
    left = sorted(p.relative_to(tmp_path / "_static").as_posix() for p in (tmp_path / "_static").rglob("*") if p.is_file())
    assert left == ["mathjax/a11y/assistive-mml.js", "mathjax/core.js", "mathjax/input/tex.js",
                    "mathjax/input/tex/extensions/cancel.js", "mathjax/output/chtml.js",
                    "mathjax/output/chtml/fonts/woff-v2/MathJax_Main.woff", "mathjax/startup.js", "scripts/theme.js"]


def test_slim_static_rewrites_pages(tmp_path):
    """The icon script and (but on search.html) the search index leave the pages; figures load lazily;
    the code spans that carry no colour of their own are unwrapped, the others kept."""
    import slim_static

    head = ('<script defer src="../_static/scripts/fontawesome.js?digest=1"></script>\n'
            '    <script src="../_static/searchtools.js"></script>\n    <script src="../searchindex.js"></script>')
    body = ('<img alt="a" src="x.png"/><pre><span class="n">x</span><span class="w"> </span><span class="o">=</span>'
            '<span class="p">(</span><span class="mi">1</span><span class="p">)</span>'
            '<span class="c1"># (5.1)</span></pre><i class="fa-solid fa-bars"></i>')
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.html").write_text(head + body)
    (tmp_path / "search.html").write_text(head)
    used = slim_static._rewrite_pages(tmp_path)
    page = (tmp_path / "book" / "ch.html").read_text()
    assert page == ('<img loading="lazy" decoding="async" alt="a" src="x.png"/><pre>x <span class="o">=</span>('
                    '<span class="mi">1</span>)<span class="c1"># (5.1)</span></pre><i class="fa-solid fa-bars"></i>')
    assert "fontawesome" not in (tmp_path / "search.html").read_text()
    assert "searchindex.js" in (tmp_path / "search.html").read_text()
    assert {"fa-solid", "fa-bars"} <= used


def test_purged_css_keeps_the_rules_some_page_or_script_can_use():
    import slim_static

    css = ("/*! banner */.a{color:red}.b,.used{x:1}.b .used{y:2}.used:not(.b){z:3}.x:is(.b,.used){w:4}"
           "@media (min-width:720px){.b{q:1}.used>p{q:2}}@font-face{font-family:F;src:url(f.woff)}"
           ":root{--c:1}html[data-theme=dark] .used{v:1}.fa-bars:before,.fa-navicon:before{content:\"\\f0c9\"}"
           ".s{content:\"}{\"}")
    out = slim_static._purge_css(css, {"used", "a", "x", "fa-bars", "s"})
    assert out == (".a{color:red}.used{x:1}.used:not(.b){z:3}.x:is(.b,.used){w:4}@media (min-width:720px){.used>p{q:2}}"
                   "@font-face{font-family:F;src:url(f.woff)}:root{--c:1}html[data-theme=dark] .used{v:1}"
                   ".fa-bars:before{content:\"\\f0c9\"}.s{content:\"}{\"}")


def test_bibliography_labels_are_author_year():
    from pybtex.database import parse_string

    import bibliography_links

    bib = parse_string("""
    @article{a, author={Ackley, David and Hinton, Geoffrey and Sejnowski, Terrence}, title={A}, journal={J}, year={1985}}
    @article{b, author={Kingma, Diederik and Welling, Max}, title={B}, journal={J}, year={2014}}
    @article{c, author={Kingma, Diederik and Welling, Max}, title={C}, journal={J}, year={2014}}
    @article{d, author={Neal, Radford}, title={D}, journal={J}, year={2001}}
    @misc{e, title={Optical digits: data}, year={1998}}
    """, "bibtex")
    style = bibliography_links.AuthorYearStyle()
    labels = [e.label for e in style.format_entries(bib.entries.values())]
    # sorted by author, then year and title (pybtex's author_year_title; a work without authors first)
    assert labels == ["Optical digits, 1998", "Ackley et al., 1985", "Kingma and Welling, 2014a",
                      "Kingma and Welling, 2014b", "Neal, 2001"]


def test_figures_get_a_palette_only_when_it_changes_nothing_visible(tmp_path):
    """An opaque figure with few colours is stored with a palette (smaller, within half a grey level);
    a transparent one, or a photo-like one a palette would change more, is left as drawn."""
    import numpy as np
    from PIL import Image

    import slim_static

    rng = np.random.default_rng(0)
    plot = np.full((200, 300, 4), 255, np.uint8)
    plot[50:150, 100:200, :3] = (31, 119, 180)  # a blue bar
    plot[::7, :, :3] = rng.integers(0, 255, (1, 300, 3))  # some antialiasing-like rows
    noise = np.concatenate([rng.integers(0, 256, (200, 300, 3)), np.full((200, 300, 1), 255)], 2).astype(np.uint8)
    clear = plot.copy()
    clear[0, 0, 3] = 0
    for name, array in (("plot", plot), ("noise", noise), ("clear", clear)):
        Image.fromarray(array, "RGBA").save(tmp_path / f"{name}.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    slim_static._shrink_figures(tmp_path)
    with Image.open(tmp_path / "plot.png") as im:
        assert im.mode == "P"
        assert np.abs(np.asarray(im.convert("RGB"), dtype=int) - plot[..., :3]).mean() < 0.5
    assert (tmp_path / "plot.png").stat().st_size < len(before["plot.png"])
    assert (tmp_path / "noise.png").read_bytes() == before["noise.png"]
    assert (tmp_path / "clear.png").read_bytes() == before["clear.png"]


def test_each_build_starts_from_the_theme_s_files(tmp_path):
    """Sphinx leaves a static file in the output as the last build left it: the style sheet purged for
    the pages of then is purged again from the theme's copy, so a class a new page uses keeps its rules."""
    import slim_static

    static = tmp_path / "_static" / "styles"
    static.mkdir(parents=True)
    (static / "pydata-sphinx-theme.css").write_text(".old{a:1}.new{b:2}")
    (tmp_path / "page.html").write_text('<p class="old">x</p>')
    slim_static._slim(_app(tmp_path), None)
    assert (static / "pydata-sphinx-theme.css").read_text() == ".old{a:1}" + slim_static.MARK
    (tmp_path / "page.html").write_text('<p class="old new">x</p>')  # a later build, no static copy
    slim_static._slim(_app(tmp_path), None)
    assert (static / "pydata-sphinx-theme.css").read_text() == ".old{a:1}.new{b:2}" + slim_static.MARK


def test_sphinx_design_leaves_pages_that_use_none_of_its_classes(tmp_path):
    """Its script names its classes (sd-tab-label); only a page's own classes decide."""
    import slim_static

    static = tmp_path / "_static"
    static.mkdir()
    (static / "design-tabs.js").write_text('label.classList.add("sd-tab-label")')
    (static / "sphinx-design.min.css").write_text(".sd-card{a:1}.sd-tab-label{b:2}")
    tags = ('<link rel="stylesheet" type="text/css" href="../_static/sphinx-design.min.css?v=1" />'
            '<script src="../_static/design-tabs.js?v=2"></script>')
    plain, cards = tmp_path / "plain.html", tmp_path / "cards.html"
    plain.write_text(tags + '<p class="x">text</p>')
    cards.write_text(tags + '<div class="sd-card">card</div>')
    words = slim_static._script_words(static)
    slim_static._slim_css(static, [plain], slim_static._page_classes([plain]), words)
    assert plain.read_text() == '<p class="x">text</p>'
    slim_static._slim_css(static, [cards], slim_static._page_classes([cards]), words)
    assert cards.read_text().startswith(tags)
