"""The reference versions that isolate the labs' exercises (labrefs, bound by autograder.kernel.references).

Each one must agree with the solution notebook's own function (``tests/references/<lab>.py`` lists the
inputs, random functions included: with the same seed they must draw the same noise), every one is
covered there, and ``reference_versions`` binds them only for the duration of its block.
"""
from __future__ import annotations

import contextlib
import io
import re
import runpy
from pathlib import Path

import nbformat
import pytest
import torch

import labrefs as references
from autograder import edition, grading
from autograder.kernel import references as mechanism
from labrefs import REFERENCES, reference_versions

CASES_DIR = Path(__file__).resolve().parent / "references"


def _cases(lab: str) -> dict:
    path = CASES_DIR / f"{lab}.py"
    return runpy.run_path(str(path))["CASES"] if path.is_file() else {}


def _solution_namespace(lab: str) -> dict:
    """The setup, read-only and solution cells of the lab's source notebook, run in process."""
    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    namespace: dict = {"__name__": "__lab__"}
    sink = io.StringIO()
    with torch.random.fork_rng(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type == "code" and meta and not meta.get("grade"):
                exec(compile(cell.source, f"<{meta.get('grade_id')}>", "exec"), namespace)
    return namespace


PAIRS = [(lab, name) for lab in sorted(REFERENCES) for name in sorted(REFERENCES[lab])]


def injected(lab: str, name: str):
    """The reference version as a graded kernel gets it: from the source the grader injects
    (autograder.edition.injection_source), run against a stub of the module (as the student edition's)."""
    import sys
    import types

    stub = types.ModuleType("labrefs")
    stub.REFERENCES = {}
    code = edition.injection_source(["labrefs"], [(lab, (name,))])
    saved = sys.modules["labrefs"]  # imported at the top of this module
    sys.modules["labrefs"] = stub
    try:
        exec(compile(code, f"<injected {lab} {name}>", "exec"), {"__name__": "__lab__"})
    finally:
        sys.modules["labrefs"] = saved
    assert set(stub.REFERENCES) == {lab} and set(stub.REFERENCES[lab]) == {name}
    return stub.REFERENCES[lab][name]


@pytest.fixture(scope="module")
def namespaces():
    cache: dict = {}

    def get(lab):
        if lab not in cache:
            cache[lab] = _solution_namespace(lab)
        return cache[lab]

    return get


@pytest.mark.parametrize("lab,name", PAIRS, ids=[f"{lab}-{name}" for lab, name in PAIRS])
def test_reference_version_agrees_with_the_solution(namespaces, lab, name):
    cases = _cases(lab).get(name)
    assert cases, f"tests/references/{lab}.py lists no inputs for the reference version of {name}"
    ns = namespaces(lab)
    assert callable(ns.get(name)), f"the {lab} solution defines no {name}"
    for index, case in enumerate(cases):
        outputs = []
        for fn in (ns[name], REFERENCES[lab][name], injected(lab, name)):
            with torch.random.fork_rng():
                torch.manual_seed(index)
                made = case(ns)
                args, kwargs = made[0], made[1]
                extract = made[2] if len(made) > 2 else (lambda result, args, kwargs: result)
                outputs.append(extract(fn(*args, **kwargs), args, kwargs))
        torch.testing.assert_close(outputs[1], outputs[0], msg=lambda m: f"{lab} {name}, case {index}: {m}")
        torch.testing.assert_close(outputs[2], outputs[1], rtol=0, atol=0,
                                   msg=lambda m: f"{lab} {name}, case {index}, as injected: {m}")


def _probe_cells(lab: str):
    """(grade_id, the PROBE and INPUTS code) of every probe cell of the lab's source notebook."""
    from autograder import probes

    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade"):
            parsed = probes.parse(cell.source)
            if parsed is not None:
                yield meta["grade_id"], parsed.inputs + "\n" + parsed.probe


def _exercise(grade_id: str) -> int:
    assert grade_id.startswith("ex") and grade_id[2:].split("_")[0].isdigit(), grade_id
    return int(grade_id[2:].split("_")[0])


@pytest.mark.parametrize("lab", sorted(REFERENCES))
def test_a_probe_gets_only_reference_versions_of_exercises_already_graded(lab):
    """The grader injects the reference versions a probe cell binds (and the module functions they call)
    into the kernel: each must be the answer of an earlier exercise than the cell's, whose every test
    has run before (a solution cell defines it, grade_id exN_...). A later exercise's reference would
    be there for the student's code to take."""
    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    defined_in = {}  # function name -> exercise of the solution cell that defines it
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            for fn in re.findall(r"^def (\w+)\(", cell.source, re.M):
                defined_in[fn] = _exercise(meta["grade_id"])
    module = edition.reference_module("labrefs")
    adapter_of = {f: n for n, f in module.tables[lab].items()}  # adapter function -> name in the notebook
    for other, table in module.tables.items():
        if other != lab:
            adapter_of.update({f: f"{other}:{n}" for n, f in table.items()})
    seen = 0
    for grade_id, code in _probe_cells(lab):
        for call_lab, names in edition.reference_calls(code):
            assert call_lab == lab, f"{grade_id} binds reference versions of {call_lab}"
            for fn in module.closure(module.tables[lab][n] for n in names):
                if fn not in adapter_of:
                    continue  # a helper that is no lab function's answer
                name = adapter_of[fn]
                assert name in defined_in, f"{grade_id}: the injected {fn} answers {name}, which no solution defines"
                assert defined_in[name] < _exercise(grade_id), (
                    f"{grade_id} would give the kernel the reference version of {name} (Exercise {defined_in[name]})")
                seen += 1
    assert seen, f"no probe cell of {lab} binds a reference version"


def test_every_lab_with_cases_has_references():
    for path in sorted(CASES_DIR.glob("lab*.py")):
        assert path.stem in REFERENCES, f"{path.name} lists cases but labrefs has no {path.stem}"
        assert set(_cases(path.stem)) <= set(REFERENCES[path.stem]), path.name


def test_reference_versions_binds_for_the_block_only():
    def mine(*args):
        return "student"

    ns = {"reparameterize": mine}
    with reference_versions(ns, "lab01", "reparameterize", "gaussian_log_prob"):
        z = ns["reparameterize"](torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 4)
        assert z.shape == (4, 3)
        assert ns["gaussian_log_prob"].__name__ == "gaussian_log_prob"
    assert ns == {"reparameterize": mine}  # the student's binding back, the absent name absent again
    with pytest.raises(AssertionError), reference_versions(ns, "lab01", "reparameterize"):
        assert ns["reparameterize"] is not mine
        raise AssertionError("a failing test")
    assert ns["reparameterize"] is mine


def test_reference_versions_names_what_is_wrong():
    with pytest.raises(KeyError, match="lab99"), reference_versions({}, "lab99", "x"):
        pass
    with pytest.raises(KeyError, match="no reference version of \\['elbo_mc'\\]"), reference_versions({}, "lab01", "elbo_mc"):
        pass
    with pytest.raises(TypeError, match="globals"), reference_versions([], "lab01", "reparameterize"):
        pass


def test_the_guard_forbids_every_function_of_the_module():
    from autograder.preprocessors.execute import _references_forbidden

    forbidden = _references_forbidden(["labrefs"])
    names = forbidden["labrefs"]
    assert "reference_versions" in names
    assert {"bind_references", "module_functions"} <= set(forbidden[mechanism.__name__])
    assert {fn.__name__ for table in REFERENCES.values() for fn in table.values()} <= set(names)
    assert all(callable(getattr(references, n)) for n in names)


def test_the_forbidden_lists_are_cached_and_follow_the_module_files(tmp_path):
    """A list found once is read back by a fresh process without importing the module; a change
    of any Python file of the module's package means a fresh import, and its new functions."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    lib = tmp_path / "lib"
    pkg = lib / "refs_under_test"
    pkg.mkdir(parents=True)
    # a function, a lambda (its __module__ is the package's too) and an import from a submodule (not its own)
    (pkg / "__init__.py").write_text("from .helpers import helper\n\n\ndef first(x):\n    return x\n\n\nsecond = lambda x: x\n")
    (pkg / "helpers.py").write_text("def helper():\n    pass\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    probe = textwrap.dedent(f"""
        import json, sys, tempfile
        tempfile.tempdir = {str(scratch)!r}
        sys.path.insert(0, {str(lib)!r})
        sys.modules["rfc3987_syntax"] = None  # a quicker start (autograder.run_nbgrader.skip_iri_grammar)
        from autograder.preprocessors.execute import _references_forbidden
        names = _references_forbidden(["refs_under_test"])["refs_under_test"]
        print(json.dumps({{"names": names, "imported": "refs_under_test" in sys.modules}}))
    """)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])}

    def run():
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run() == {"names": ["first", "second"], "imported": True}
    assert run() == {"names": ["first", "second"], "imported": False}  # from the cache
    cached = list((scratch / f"autograder-cache-{os.geteuid()}").glob("functions-refs_under_test-*.json"))
    assert len(cached) == 1 and (cached[0].parent.stat().st_mode & 0o777) == 0o700
    (pkg / "helpers.py").write_text("def helper():\n    pass\n\n\ndef other():\n    pass\n")  # another file
    assert run() == {"names": ["first", "second"], "imported": True}
    (pkg / "__init__.py").write_text("def third():\n    pass\n")
    assert run() == {"names": ["third"], "imported": True}
    assert run() == {"names": ["third"], "imported": False}
