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
    return SimpleNamespace(outdir=str(outdir), builder=SimpleNamespace(format="html"))


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


def test_slim_static_keeps_what_tex_chtml_loads(tmp_path):
    import slim_static

    mathjax = tmp_path / "_static" / "mathjax"
    files = ["tex-chtml.js", "tex-svg-full.js", "sre/speech.js", "output/chtml/fonts/woff-v2/MathJax_Main.woff",
             "output/svg/fonts/tex.js", "input/tex/extensions/cancel.js", "input/mml.js", "ui/menu.js", "a11y/explorer.js"]
    for f in files + ["../scripts/theme.js", "../scripts/theme.js.map"]:
        (mathjax / f).parent.mkdir(parents=True, exist_ok=True)
        (mathjax / f).write_text("x")
    slim_static._slim(_app(tmp_path), None)
    left = sorted(p.relative_to(tmp_path / "_static").as_posix() for p in (tmp_path / "_static").rglob("*") if p.is_file())
    assert left == ["mathjax/a11y/explorer.js", "mathjax/input/tex/extensions/cancel.js",
                    "mathjax/output/chtml/fonts/woff-v2/MathJax_Main.woff", "mathjax/tex-chtml.js", "mathjax/ui/menu.js",
                    "scripts/theme.js"]
