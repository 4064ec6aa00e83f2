"""Student editions of the library (autograder.edition): what a graded kernel imports in place of gmlib
and labrefs. The rewriting on small modules, then the course's own editions, imported in a fresh
interpreter as a kernel would (the sandbox's mount itself: tests/test_sandbox*.py; a graded submission
that looks for the references on disk: the hostile kind ``reference_from_source`` of
autograder.integrity)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder import edition, grading
from autograder.preprocessors.execute import _merge_forbidden, _references_forbidden

MODULE = textwrap.dedent('''\
    """A module."""
    import math
    from os.path import join, sep as separator

    __all__ = ["kept", "secret", "Model"]

    RATE = 0.5
    alias = 1


    def kept(x):
        return x + 1


    @staticmethod
    def secret(x):
        """The answer."""
        return math.sqrt(x)


    class Model:
        """A model."""

        def sample(self):
            return 1

        def elbo(self):
            return secret(2)

        log_prob = sample


    class Empty:
        def only(self):
            return 0


    def after():
        return kept(1)
    ''')


def _load(source: str, name: str = "mod") -> dict:
    namespace = {"__name__": name}
    exec(compile(source, name, "exec"), namespace)
    return namespace


def test_strip_source_removes_the_names_and_keeps_every_other_line_in_place():
    names = ["secret", "Model.elbo", "Empty.only", "separator", "alias", "missing", "Model.missing"]
    new, removed = edition.strip_source(MODULE, names, "mod")
    assert sorted(removed) == sorted(["secret", "Model.elbo", "Empty.only", "separator", "alias"])
    old_lines, new_lines = MODULE.splitlines(), new.splitlines()
    for line in ("RATE = 0.5", "def kept(x):", "class Model:", "    def sample(self):", "    log_prob = sample",
                 "class Empty:", "def after():", "    return kept(1)"):  # where they were: tracebacks stay right
        assert new_lines[old_lines.index(line)] == line, line
    assert new_lines[old_lines.index("    def only(self):")].strip() == "pass"
    ns = _load(new)
    assert "secret" not in ns and "alias" not in ns and "separator" not in ns and ns["join"] is os.path.join
    assert ns["kept"](1) == 2 and ns["after"]() == 2 and ns["RATE"] == 0.5
    assert ns["Model"]().sample() == 1 and ns["Model"]().log_prob() == 1 and not hasattr(ns["Model"], "elbo")
    assert not hasattr(ns["Empty"], "only")  # its body became "pass"
    assert ns["__all__"] == ["kept", "Model"]
    with pytest.raises(AttributeError, match="mod.secret is not available while this lab is graded"):
        ns["__getattr__"]("secret")
    with pytest.raises(AttributeError, match="has no attribute 'other'"):
        ns["__getattr__"]("other")
    assert "The answer" not in new and "math.sqrt" not in new  # the definition is gone from the text


def test_strip_source_refuses_what_it_cannot_remove_alone():
    with pytest.raises(edition.EditionError, match="together with other names"):
        edition.strip_source("a, b = 1, 2\n", ["a"], "mod")
    with pytest.raises(edition.EditionError, match="defines __getattr__"):
        edition.strip_source("x = 1\n\ndef __getattr__(name):\n    raise AttributeError(name)\n", ["x"], "mod")


def _lab_forbidden(lab: str) -> dict:
    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    return _merge_forbidden(nb.metadata["autograder"]["forbidden"], _references_forbidden(["labrefs"]))


KERNEL_VIEW = r"""
import importlib, json, os, sys
root = sys.argv[1]
sys.path.insert(0, root)
forbidden = json.loads(sys.argv[2])
out = {"present": [], "unimportable": {}, "files": {}}
for module_name, names in forbidden.items():
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        out["unimportable"][module_name] = str(err)
        continue
    if not module_name.startswith(("gmlib", "labrefs")):
        continue
    out["files"][module_name] = module.__file__
    for name in names:
        owner = module
        for part in name.split("."):
            owner = getattr(owner, part, None)
        if owner is not None:
            out["present"].append(f"{module_name}.{name}")
import gmlib, labrefs
out["gmlib_dir"] = os.path.dirname(gmlib.__file__)
out["labrefs"] = sorted(vars(labrefs))
out["pycache"] = [d for d, _, _ in os.walk(root) if d.endswith("__pycache__") and os.listdir(d)]
print(json.dumps(out))
"""


LAB01_TOY = ("import sys; sys.path.insert(0, sys.argv[1]); import gmlib.probability as p; m = p.ConjugateGaussian(dim=2);"
             "z, x = m.sample(3); print(float(m.log_joint(x, z).sum()), float(m.log_evidence(x).sum()))")


@pytest.fixture(scope="module")
def course_editions(tmp_path_factory):
    """Every lab's edition, and what a fresh interpreter importing it sees (the six run at once)."""
    tmp = tmp_path_factory.mktemp("editions")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built, running = {}, {}
    for lab in grading.discover_labs():
        forbidden = _lab_forbidden(lab)
        root = tmp / lab
        built[lab] = (forbidden, edition.build(edition.package_dirs(["gmlib", "labrefs"]), forbidden, ["labrefs"],
                                               root=str(root)))
        running[lab] = subprocess.Popen([sys.executable, "-c", KERNEL_VIEW, str(root), json.dumps(forbidden)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp, env=env)
    toy = subprocess.Popen([sys.executable, "-c", LAB01_TOY, str(tmp / "lab01")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=tmp, env=env)
    views = {}
    for lab, proc in running.items():
        out, err = proc.communicate(timeout=300)
        views[lab] = (proc.returncode, out, err)
    toy_out = toy.communicate(timeout=300)
    return {"built": built, "views": views, "root": tmp, "toy": (toy.returncode, *toy_out)}


@pytest.mark.parametrize("lab", grading.discover_labs())
def test_the_course_edition_of_each_lab_lacks_its_references(lab, course_editions):
    """Each lab's edition, imported by a fresh interpreter: no forbidden reference of gmlib is there (only
    the guard's third-party ones, torch.distributions, are), labrefs is the stub, and no .pyc came along."""
    forbidden, built = course_editions["built"][lab]
    ours = {m: n for m, n in forbidden.items() if m.split(".")[0] in ("gmlib", "labrefs")}
    assert built.absent == {f"{m}.{n}" for m, names in ours.items() for n in names if n != "reference_versions"}
    assert not built.notes
    for path in built.substitutes.values():  # world-readable: a kernel run as nobody imports it
        assert os.stat(path).st_mode & 0o755 == 0o755
    code, out, err = course_editions["views"][lab]
    assert code == 0, err
    view = json.loads(out.strip().splitlines()[-1])
    assert view["gmlib_dir"] == str(course_editions["root"] / lab / "gmlib"), view  # the edition was imported
    assert view["present"] == ["labrefs.reference_versions"], view  # the stub's: the guard refuses it to student code
    assert view["labrefs"] == sorted(["REFERENCES", "reference_versions", "_bind_references", "__builtins__", "__cached__",
                                      "__doc__", "__file__", "__loader__", "__name__", "__package__", "__path__",
                                      "__spec__"])
    assert view["pycache"] == []  # no compiled copy of the original came along
    for module, path in view["files"].items():
        text = Path(path).read_text()
        for name in ours.get(module, []):
            if "." not in name and name != "reference_versions":
                assert f"def {name}(" not in text and f"class {name}(" not in text and f"class {name}:" not in text


def test_lab01_toy_model_works_in_its_edition(course_editions):
    code, out, err = course_editions["toy"]
    assert code == 0, err
    assert all(v == v and abs(float(v)) < 1e6 for v in out.split()), out


def test_lab01_toy_model_densities_agree_with_torch_distributions():
    """ConjugateGaussian computes its densities itself (the edition has no gaussian_log_prob): they are
    still the model's, against torch.distributions."""
    import torch
    from torch.distributions import Normal

    from gmlib.probability import ConjugateGaussian

    model = ConjugateGaussian(dim=3, prior_mean=0.7, prior_var=2.0, noise_var=0.3)
    z, x = model.sample(5, generator=torch.Generator().manual_seed(0))
    zs = torch.randn(4, 5, 3, dtype=torch.float64)
    expected = (Normal(0.7, 2.0**0.5).log_prob(zs).sum(-1) + Normal(zs, 0.3**0.5).log_prob(x).sum(-1))
    torch.testing.assert_close(model.log_joint(x, zs), expected)
    torch.testing.assert_close(model.log_evidence(x), Normal(0.7, 2.3**0.5).log_prob(x).sum(-1))


def test_edition_for_builds_once_and_again_after_a_change(tmp_path, monkeypatch):
    pkg = tmp_path / "lib" / "edpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def answer():\n    return 42\n\n\ndef other():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"autograder-editions-{os.geteuid()}" / "edition-999999999-left"  # no such process
    stale.mkdir(parents=True, mode=0o700)
    os.chmod(stale.parent, 0o700)
    first = edition.edition_for(["edpkg"], {"edpkg": ["answer"]})
    assert Path(first.root).parent == stale.parent and not stale.exists()  # a killed grader's edition is cleared
    assert edition.edition_for(["edpkg"], {"edpkg": ["answer"]}) is first
    assert first.absent == {"edpkg.answer"}
    text = (Path(first.substitutes[str(pkg)]) / "__init__.py").read_text()
    assert "return 42" not in text and "def other" in text
    (pkg / "__init__.py").write_text("def answer():\n    return 43\n\n\ndef other():\n    return 2\n\n")
    second = edition.edition_for(["edpkg"], {"edpkg": ["answer"]})
    assert second is not first and "return 2" in (Path(second.substitutes[str(pkg)]) / "__init__.py").read_text()


def test_reference_calls_and_injection_name_what_is_wrong():
    assert edition.reference_calls('with reference_versions(globals(), "lab01", "a", "b"):\n    f()\n') == [
        ("lab01", ("a", "b"))]
    with pytest.raises(edition.EditionError, match="string literals"):
        edition.reference_calls("names = ['a']\nwith reference_versions(globals(), 'lab01', *names):\n    pass\n")
    with pytest.raises(edition.EditionError, match="no reference version of \\['elbo_mc'\\]"):
        edition.injection_source(["labrefs"], [("lab01", ("elbo_mc",))])
    with pytest.raises(edition.EditionError, match="lab99"):
        edition.injection_source(["labrefs"], [("lab99", ("x",))])
    assert edition.injection_source(["labrefs"], []) == ""


def test_injection_changes_no_notebook_global():
    import types

    code = edition.injection_source(["labrefs"], [("lab02", ("e_step",))])
    stub = types.ModuleType("labrefs")
    stub.REFERENCES = {}
    namespace = {"__name__": "__main__", "x": 1}
    saved = sys.modules.get("labrefs")
    sys.modules["labrefs"] = stub
    try:
        exec(compile(code, "<probe>", "exec"), namespace)
    finally:
        if saved is None:
            del sys.modules["labrefs"]
        else:
            sys.modules["labrefs"] = saved
    assert set(namespace) == {"__name__", "x", "__builtins__"}
    assert set(stub.REFERENCES["lab02"]) == {"e_step"}  # log_gaussian came as e_step's helper, not as a reference
    assert "_lab02_log_gaussian" in code and "_lab02_m_step" not in code
