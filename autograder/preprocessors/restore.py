"""``RestoreCells``: every read-only and test cell of the lab, once, in the lab's order."""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from autograder.common import METADATA_KEY, GradingError
from autograder.common import nbgrader_meta as _nbgrader

__all__ = ["RestoreCells"]


class RestoreCells(NbGraderPreprocessor):
    """Rebuild a submission around the course's own cells before nbgrader sanitises it.

    nbgrader alone restores the *source* of a locked cell it finds by ``grade_id``, but a test
    cell that was deleted, renamed (``grade_id`` changed), stripped of its metadata or moved
    is simply not run, and a duplicated one is run twice. This preprocessor (first of
    ``Autograde.sanitize_preprocessors``) makes the cells of the source notebook authoritative:

    - every read-only and test cell of the lab appears once, in the lab's order, with the
      source stored in the gradebook (hidden tests included) and the release's nbgrader
      metadata, whether the student kept, edited, moved, duplicated or deleted it;
    - each solution cell keeps the student's source (the first cell carrying its ``grade_id``);
      a deleted solution cell is not brought back (the student's code may live elsewhere);
    - every other cell of the submission (the student's own cells, renamed or stripped cells,
      duplicates) is kept as a plain cell without nbgrader metadata, right after the course
      cell it followed in the submission, so nothing the student wrote is lost and nothing
      the student wrote can claim points;
    - the notebook metadata ``autograder`` (the lab's grading settings, e.g. the reference
      functions it forbids) is taken from the release.

    The lab's order and metadata come from the release notebook ``release_directory/LAB/NB.ipynb``
    (set in ``nbgrader_config.py``); the sources from the gradebook.
    """

    release_directory = Unicode("", help="Directory holding LAB/NOTEBOOK.ipynb release notebooks").tag(config=True)

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook

        info = resources["nbgrader"]
        lab, notebook_id = info["assignment"], info["notebook"]
        release_file = Path(self.release_directory) / lab / f"{notebook_id}.ipynb"
        if not release_file.is_file():
            raise GradingError(f"RestoreCells: no release notebook {release_file}")
        release = nbformat.read(str(release_file), as_version=4)
        with Gradebook(info["db_url"]) as gb:
            stored = gb.find_notebook(notebook_id, lab)
            sources = {c.name: c.source for c in stored.source_cells}
        course = [c for c in release.cells if isinstance(_nbgrader(c).get("grade_id"), str)]
        course_ids = {_nbgrader(c)["grade_id"] for c in course}

        anchors: dict[str, nbformat.NotebookNode] = {}
        extras: dict[str | None, list] = {None: []}
        current = None
        for cell in nb.cells:
            grade_id = _nbgrader(cell).get("grade_id")
            if isinstance(grade_id, str) and grade_id in course_ids and grade_id not in anchors:
                anchors[grade_id] = cell
                current = grade_id
                continue
            if "nbgrader" in cell.get("metadata", {}):
                del cell.metadata["nbgrader"]
            extras.setdefault(current, []).append(cell)

        cells = list(extras[None])
        restored = []
        for course_cell in course:
            meta = _nbgrader(course_cell)
            grade_id = meta["grade_id"]
            mine = anchors.get(grade_id)
            if meta.get("solution"):
                if mine is not None:
                    new = copy.deepcopy(course_cell)
                    new.source = mine.source
                    cells.append(new)
            else:
                new = copy.deepcopy(course_cell)
                new.source = sources.get(grade_id, course_cell.source)
                # against the release, what the student got (a hidden test's source is the gradebook's)
                if mine is None or mine.source != course_cell.source or mine.cell_type != new.cell_type:
                    restored.append(grade_id)
                cells.append(new)
            cells.extend(extras.get(grade_id, []))
        if restored:  # deleted, moved, edited or retyped: an honest submission has none
            self.log.warning("RestoreCells: restored course cells %s", ", ".join(restored))
        ids = set()
        for i, cell in enumerate(cells):  # unique cell ids (nbformat 4.5)
            if cell.get("id") in ids or not cell.get("id"):
                cell["id"] = f"autograder-restored-{i}"
            ids.add(cell["id"])
        nb.cells = cells
        # the lab's grading settings come from the release, whatever the submission says
        nb.metadata.pop(METADATA_KEY, None)
        if METADATA_KEY in release.metadata:
            nb.metadata[METADATA_KEY] = copy.deepcopy(release.metadata[METADATA_KEY])
        return nb, resources
