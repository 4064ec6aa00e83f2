"""The repository's pieces fit together: no page, lab or release is missing."""
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return files


def test_every_toc_entry_exists():
    for f in toc_files():
        candidates = [ROOT / f"{f}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.is_file() for c in candidates), f"_toc.yml lists {f}, which does not exist"


def test_every_lab_has_a_release_and_a_page():
    labs = sorted(p.parent.name for p in ROOT.glob("solutions/lab*/lab*.ipynb"))
    assert labs, "no labs found under solutions/"
    listed = set(toc_files())
    for lab in labs:
        assert (ROOT / "notebooks" / lab / f"{lab}.ipynb").is_file(), f"{lab} has no release in notebooks/"
        assert f"notebooks/{lab}/{lab}" in listed, f"{lab} is not shown in the book (_toc.yml)"


def test_every_chapter_links_its_lab():
    for page in sorted(ROOT.glob("book/ch[0-9][0-9]_*.md")):
        n = re.match(r"ch(\d\d)_", page.name).group(1)
        lab = ROOT / "solutions" / f"lab{n}" / f"lab{n}.ipynb"
        if lab.is_file():
            assert f"notebooks/lab{n}/lab{n}" in page.read_text(), f"{page.name} does not link lab{n}"


def test_cited_keys_exist_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for page in ROOT.glob("book/*.md"):
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page.read_text()):
            for key in group.split(","):
                assert key.strip() in keys, f"{page.name} cites {key.strip()!r}, missing from references.bib"


def _imports_after(code: str) -> set[str]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_gmlib_depends_on_the_numerical_stack_only():
    """gmlib (every module) never imports the autograder, nbgrader or the Jupyter machinery."""
    modules = sorted(p.stem for p in (ROOT / "gmlib").glob("*.py") if not p.stem.startswith("__"))
    loaded = _imports_after("\n".join(f"import gmlib.{m}" for m in modules))
    grader = {"autograder", "labrefs", "nbgrader", "nbformat", "nbclient", "traitlets", "jupyter_client",
              "dask", "distributed", "sqlalchemy", "IPython", "ipykernel"}
    assert not loaded & grader, sorted(loaded & grader)
    # and nothing beyond torch, numpy, scipy, matplotlib and what they load (pyproject's dependencies)
    import sys

    stack = _imports_after("import torch, numpy, scipy, scipy.special, scipy.stats, scipy.linalg, matplotlib, "
                           "matplotlib.pyplot")
    extra = loaded - stack - set(sys.stdlib_module_names) - {"gmlib"}
    assert not extra, f"gmlib imports {sorted(extra)}: not in its declared dependencies"
    for path in (ROOT / "gmlib").rglob("*.py"):
        text = path.read_text()
        assert "REPO_ROOT" not in text and "tests/mutants" not in text, f"{path} knows the checkout's layout"


def test_gmlib_reads_the_digits_without_scikit_learn():
    """The digits are gmlib's own copy (gmlib/assets/digits.npz): reading them imports no scikit-learn (a second
    or two in every lab's kernel). tests/test_data.py checks the copy against scikit-learn's."""
    loaded = _imports_after("import gmlib.data\nx = gmlib.data.digits('train', 'binary')\nassert x.shape == (1000, 64)")
    assert "sklearn" not in loaded


def test_the_kernel_side_of_the_autograder_imports_the_standard_library_only():
    loaded = _imports_after("import autograder.kernel.guard, autograder.kernel.references")
    third_party = {"nbgrader", "nbformat", "nbclient", "traitlets", "jupyter_client", "dask", "torch", "numpy", "gmlib"}
    assert not loaded & third_party, sorted(loaded & third_party)


def test_the_autograder_bakes_in_no_path_of_this_checkout():
    for path in (ROOT / "autograder").rglob("*.py"):
        text = path.read_text()
        for needle in ("REPO_ROOT", "tests/mutants", '"tests" / "mutants"', "tests/submissions", "/work/"):
            assert needle not in text, f"{path.relative_to(ROOT)} names {needle!r}"


def test_make_lab_gives_the_kernels_figures_and_the_device():
    """`make lab` runs JupyterLab without the tests' MPLBACKEND=Agg (with it plt.show() draws nothing in
    the labs) and without their GMLIB_DEVICE=cpu (gmlib picks CUDA when present); a GMLIB_DEVICE set by
    the user is kept. JupyterLab itself is replaced by a program that prints what it would get."""
    import shutil
    import subprocess

    if not shutil.which("make"):
        pytest.fail("make is needed (the README's commands use it)")
    show = f"{sys.executable} -c 'import os; print(os.environ.get(\"MPLBACKEND\"), os.environ.get(\"GMLIB_DEVICE\"))'"
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "GMLIB_DEVICE", "MAKEFLAGS", "MAKELEVEL")}
    for extra, expected in (({}, "None None"), ({"GMLIB_DEVICE": "cuda"}, "None cuda")):
        proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "lab", f"JUPYTER={show}"], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == expected, (extra, proc.stdout)


def test_every_exercise_has_a_collapsible_hint():
    """Each lab's exercise gets one hint, folded (<details>) so that a student opens it when stuck, placed
    before the exercise's solution cell."""
    import json

    for path in sorted((ROOT / "notebooks").glob("lab*/lab*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        exercise, hinted = None, {}
        for cell in cells:
            text = "".join(cell["source"])
            m = re.match(r"#+\s*Exercise (\d+)", text) if cell["cell_type"] == "markdown" else None
            if m:
                exercise = int(m.group(1))
                hinted.setdefault(exercise, False)
            elif cell["cell_type"] == "markdown" and "<details>" in text and "<summary>" in text and "Hint" in text:
                assert exercise is not None and not hinted[exercise], f"{path.name}: a second hint for Exercise {exercise}"
                hinted[exercise] = True
            elif cell.get("metadata", {}).get("nbgrader", {}).get("solution") and exercise is not None:
                assert hinted[exercise], f"{path.name}: Exercise {exercise} has no hint before its solution cell"
        assert hinted and all(hinted.values()), (path.name, hinted)


def _code_cells(page: Path):
    """(metadata, source) of each code cell of a MyST chapter page."""
    for body in re.findall(r"```\{code-cell\} ipython3\n(.*?)```", page.read_text(), re.S):
        meta = {}
        if body.startswith("---\n"):
            head, body = body[4:].split("\n---\n", 1)
            meta = yaml.safe_load(head) or {}
        elif body.startswith(":tags:"):
            body = body.split("\n", 1)[1]
        yield meta, body


CHAPTERS = sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md"))


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_fits_88_columns_and_every_figure_is_captioned(page):
    """Issue 18: code lines within 88 characters; every cell that draws shows one figure, with a
    numbered caption (a figure name), and alt text; the first cell draws them sharp (book_figures)."""
    cells = list(_code_cells(page))
    assert cells and "book_figures()" in cells[0][1], f"{page.name}: the first cell does not call book_figures()"
    names = set()
    for i, (meta, src) in enumerate(cells):
        long = [line for line in src.splitlines() if len(line) > 88]
        assert not long, f"{page.name}, cell {i}: lines over 88 characters: {long[:2]}"
        if "plt.show()" not in src:
            continue
        assert src.count("plt.show()") == 1, f"{page.name}, cell {i}: more than one figure in a cell"
        mystnb = meta.get("mystnb") or {}
        figure, image = mystnb.get("figure") or {}, mystnb.get("image") or {}
        assert figure.get("caption", "").strip() and figure.get("name", "").startswith(page.stem[:4] + "-fig-"), \
            f"{page.name}, cell {i}: a figure without a caption or a chNN-fig- name"
        assert len(str(image.get("alt", "")).strip()) >= 15, f"{page.name}, cell {i}: a figure without alt text"
        assert figure["name"] not in names, f"{page.name}: figure name {figure['name']} used twice"
        names.add(figure["name"])
    assert names, f"{page.name} draws no figure"
