"""The repository's pieces fit together: no page, lab or release is missing."""
import re
from pathlib import Path

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
