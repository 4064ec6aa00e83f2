r"""Student editions of the course's library packages: what a grading kernel imports instead.

A lab forbids some library functions to student code (``metadata.autograder.forbidden`` of the
source notebook: Lab 1 forbids ``gmlib.probability.reparameterize``, ...), and the course's
reference modules (``labrefs``) hold the reference versions that isolate a later exercise from an
earlier mistake. The in-kernel guard (:mod:`autograder.kernel.guard`) refuses calls to them, but
everything inside one Python process can in the end be undone. So the grader builds, for each
lab, a *student edition* of every library package and the sandbox mounts it, read-only, over the
package's directory in the kernel's view (:attr:`SandboxPolicy.substitute
<autograder.sandbox.launcher.SandboxPolicy>`):

- each forbidden module is rewritten without the forbidden definitions (functions, classes,
  assignments, imported names; ``"Class.method"`` entries lose the method) and answers an
  attribute lookup of one of them with an ``AttributeError`` that says why (the rest of the module,
  line numbers included, is unchanged; what still uses a removed name fails when called);
- a reference module becomes a stub with the same interface (``REFERENCES``, empty, and
  ``reference_versions``) and nothing else;
- no compiled ``__pycache__`` is copied (a ``.pyc`` of the original would hold the references).

The kernel then cannot call a reference by any trick: its code is not in the files the kernel
can open. (``torch.distributions`` and other third-party names stay with the guard: the
interpreter's own packages are shared with every process on the machine.)

A probe cell that isolates an exercise still calls ``reference_versions(globals(), lab, names...)``.
The grader finds those calls in the course's own cell source (:func:`reference_calls`) and puts
the reference versions they name, as source code, in front of the code the kernel runs for that
cell (:func:`injection_source`): they reach the kernel only when a later exercise's test needs
them, after every test of their own exercise has run (``tests/test_references.py`` checks that
order for every lab). The adapters must therefore be self-contained: the functions of the
reference module they call (found from their code) and the module's imports come with them.
"""
from __future__ import annotations

import ast
import atexit
import importlib.util
import json
import os
import shutil
import tempfile
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

__all__ = ["Edition", "EditionError", "ReferenceModule", "build", "edition_for", "injection_source", "package_dirs",
           "reference_calls", "reference_module", "strip_source"]


class EditionError(ValueError):
    """A student edition that cannot be made as asked (one line: what and where)."""


@dataclass
class Edition:
    """A built student edition: ``substitutes`` maps each package's directory to its edition."""

    root: str
    substitutes: dict[str, str]
    #: ``"module.name"`` labels of the forbidden references the edition leaves out
    absent: set[str] = field(default_factory=set)
    #: modules rewritten or replaced (their import may fail in the kernel: they need what is gone)
    changed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def package_dirs(packages: Iterable[str]) -> dict[str, str]:
    """``{package: its directory}`` as the grader's interpreter finds them (without importing them)."""
    out = {}
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.submodule_search_locations:
            raise EditionError(f"library package {name!r} is not an importable package")
        out[name] = os.path.dirname(os.path.realpath(spec.origin))
    return out


# -- rewriting a module ----------------------------------------------------------------------------


def _bound(node: ast.stmt) -> list[str]:
    """Names a top-level (or class-level) statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _alias_name(alias: ast.alias, is_from: bool) -> str:
    return alias.asname or (alias.name if is_from else alias.name.split(".")[0])


def strip_source(source: str, names: Iterable[str], module: str) -> tuple[str, list[str]]:
    """``source`` without the definitions of ``names`` (top-level names, or ``"Class.attr"``).

    Removed statements become blank lines, so every line left keeps its number. Returns the new
    source and the names removed (a name not defined plainly at top level, or in a top-level
    class's body, is not removed: the guard keeps it). A module-level ``__getattr__`` is added that
    names what is missing and why."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    top = {n for n in names if "." not in n}
    members: dict[str, set[str]] = {}
    for n in names:
        if n.count(".") == 1:
            owner, attr = n.split(".")
            members.setdefault(owner, set()).add(attr)
    removed: list[str] = []
    edits: list[tuple[int, int, str]] = []  # (first line, last line) 1-based, replacement text

    def first_line(node: ast.stmt) -> int:
        decorators = getattr(node, "decorator_list", [])
        return min([node.lineno] + [d.lineno for d in decorators])

    def blank(node: ast.stmt, replacement: str = "") -> None:
        edits.append((first_line(node), node.end_lineno, replacement))

    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            is_from = isinstance(node, ast.ImportFrom)
            gone = [a for a in node.names if _alias_name(a, is_from) in top]
            if gone:
                removed += [_alias_name(a, is_from) for a in gone]
                kept = [a for a in node.names if a not in gone]
                indent = lines[node.lineno - 1][: node.col_offset]
                text = ""
                if kept:
                    new = ast.ImportFrom(module=node.module, names=kept, level=node.level) if is_from else ast.Import(names=kept)
                    text = indent + ast.unparse(new)
                blank(node, text)
            continue
        bound = _bound(node)
        hit = [n for n in bound if n in top]
        if hit:
            if isinstance(node, ast.AugAssign) or (len(set(bound)) > len(hit)):
                raise EditionError(f"{module}: line {node.lineno} binds {hit} together with other names: "
                                   "cannot remove it alone")
            removed += hit
            blank(node)
            continue
        if isinstance(node, ast.ClassDef) and node.name in members:
            body_left = []
            for item in node.body:
                attrs = [n for n in _bound(item) if n in members[node.name]]
                if attrs:
                    removed += [f"{node.name}.{a}" for a in attrs]
                    blank(item)
                else:
                    body_left.append(item)
            if not body_left:  # a class body cannot be empty
                item = node.body[0]
                edits[-len(node.body)] = (first_line(item), item.end_lineno,
                                          lines[item.lineno - 1][: item.col_offset] + "pass")
    if any(isinstance(n, (ast.FunctionDef, ast.Assign)) and "__getattr__" in _bound(n) for n in tree.body):
        raise EditionError(f"{module} defines __getattr__: its student edition cannot name what is missing")
    for first, last, text in sorted(edits, reverse=True):
        count = last - first + 1
        ending = "\n"
        replacement = [text + ending] if text else []
        replacement += [ending] * (count - len(replacement))
        lines[first - 1:last] = replacement
    gone_top = sorted({n for n in removed if "." not in n})
    tail = ""
    if removed:
        tail = textwrap.dedent(f'''

            # -- student edition (autograder.edition): what grading kernels do not get ------------------
            _STUDENT_EDITION_ABSENT = frozenset({gone_top!r})


            def __getattr__(name):
                if name in _STUDENT_EDITION_ABSENT:
                    raise AttributeError(
                        f"{{__name__}}.{{name}} is not available while this lab is graded: the lab asks you to write "
                        "it yourself, and the grader gives your code a copy of the library without it")
                raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")
            ''')
    new_source = "".join(lines) + tail
    # the __all__ of a module lists only what it defines
    new_tree = ast.parse(new_source)
    for node in new_tree.body:
        if isinstance(node, ast.Assign) and _bound(node) == ["__all__"] and isinstance(node.value, (ast.List, ast.Tuple)):
            items = node.value.elts
            if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
                kept = [e.value for e in items if e.value not in gone_top]
                if len(kept) != len(items):
                    count = node.end_lineno - node.lineno + 1
                    new_lines = new_source.splitlines(keepends=True)
                    new_lines[node.lineno - 1:node.end_lineno] = [f"__all__ = {kept!r}\n"] + ["\n"] * (count - 1)
                    new_source = "".join(new_lines)
            break
    compile(new_source, f"<student edition of {module}>", "exec")
    return new_source, removed


# -- building an edition ----------------------------------------------------------------------------


def _stub_source(module: str) -> str:
    return textwrap.dedent(f'''\
        """The student edition of {module}, which a grading kernel imports: no reference versions.

        Written by autograder.edition. A probe cell that isolates a later exercise gets the reference
        versions it names from the grader, in the code it runs (they are added to REFERENCES then).
        """
        from autograder.kernel.references import bind_references as _bind_references

        REFERENCES = {{}}


        def reference_versions(namespace, lab, *names):
            """Within the block, namespace[name] is the reference version of name in lab (given by the grader)."""
            return _bind_references(REFERENCES, namespace, lab, *names)
        ''')


def copy_package(source: str, target: str) -> None:
    """Regular files and folders of ``source`` (no ``__pycache__``, no ``.pyc``, no links), world-readable
    (also the student distribution's copy, :mod:`autograder.student_dist`)."""
    os.makedirs(target, mode=0o755)
    os.chmod(target, 0o755)
    for entry in os.scandir(source):
        if entry.is_symlink() or entry.name == "__pycache__" or entry.name.endswith((".pyc", ".pyo")):
            continue
        path = os.path.join(target, entry.name)
        if entry.is_dir(follow_symlinks=False):
            copy_package(entry.path, path)
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(entry.path, path, follow_symlinks=False)
            os.chmod(path, 0o644)


def _module_file(package_dir: str, package: str, module: str) -> str | None:
    """The file of ``module`` in a copy of ``package`` at ``package_dir`` (None: no such file)."""
    if module == package:
        candidates = [os.path.join(package_dir, "__init__.py")]
    else:
        base = os.path.join(package_dir, *module[len(package) + 1:].split("."))
        candidates = [base + ".py", os.path.join(base, "__init__.py")]
    return next((c for c in candidates if os.path.isfile(c)), None)


def build(packages: Mapping[str, str], forbidden: Mapping[str, Sequence[str]],
          reference_modules: Sequence[str] = (), root: str | None = None, parent: str | None = None) -> Edition:
    """Make the student edition of ``packages`` (``{name: directory}``) in the new directory ``root``
    (default: a fresh one in ``parent``, else in the temp dir).

    ``forbidden``: ``{module: [names]}``; entries outside the packages are left to the guard.
    ``reference_modules``: modules (inside the packages) replaced by a stub of their interface."""
    if root is None:
        root = tempfile.mkdtemp(prefix=f"edition-{os.getpid()}-", dir=parent)
    else:
        os.makedirs(root)
    os.chmod(root, 0o755)
    edition = Edition(root=root, substitutes={})
    try:
        for package, source_dir in sorted(packages.items()):
            target = os.path.join(root, package)
            copy_package(source_dir, target)
            edition.substitutes[source_dir] = target
        for module in reference_modules:
            package = next((p for p in packages if module == p or module.startswith(p + ".")), None)
            if package is None:
                raise EditionError(f"reference module {module!r} is not in the library packages {sorted(packages)}")
            path = _module_file(os.path.join(root, package), package, module)
            if path is None:
                raise EditionError(f"reference module {module!r} has no file in {packages[package]}")
            if module == package:  # the package holds nothing else
                for entry in os.scandir(os.path.dirname(path)):
                    if entry.path != path:
                        shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
            with open(path, "w") as f:
                f.write(_stub_source(module))
            edition.changed.add(module)
            edition.absent |= {f"{module}.{name}" for name in forbidden.get(module, ()) if name != "reference_versions"}
        for module, names in sorted(forbidden.items()):
            if module in reference_modules:
                continue
            package = next((p for p in packages if module == p or module.startswith(p + ".")), None)
            if package is None:
                continue  # the guard's (torch.distributions, ...)
            path = _module_file(os.path.join(root, package), package, module)
            if path is None:
                edition.notes.append(f"forbidden module {module} has no file in {packages[package]}: left to the guard")
                continue
            with open(path) as f:
                text = f.read()
            new, removed = strip_source(text, list(names), module)
            missing = sorted(set(names) - set(removed))
            if missing:
                edition.notes.append(f"{module}: {', '.join(missing)} not removed (not defined plainly): left to the guard")
            with open(path, "w") as f:
                f.write(new)
            edition.changed.add(module)
            edition.absent |= {f"{module}.{name}" for name in removed}
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return edition


_EDITIONS: dict[str, Edition] = {}
_LOCK = threading.Lock()


def _stamp(packages: Mapping[str, str]) -> list:
    out = []
    for name, directory in sorted(packages.items()):
        for base, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                if f.endswith(".py"):
                    st = os.stat(os.path.join(base, f))
                    out.append([os.path.relpath(os.path.join(base, f), directory), st.st_mtime_ns, st.st_size])
    return out


def _editions_dir() -> str | None:
    """The grader's private directory of editions (``$TMPDIR/autograder-editions-UID``), cleared of
    those whose process is gone (killed before it could remove them); None where it cannot be had."""
    from autograder.sandbox.launcher import private_tmp_dir

    try:
        parent = private_tmp_dir("editions")
    except OSError:
        return None
    for entry in os.scandir(parent):
        pid = entry.name.split("-")[1] if entry.name.startswith("edition-") else ""
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass
    return parent


def edition_for(packages: Sequence[str], forbidden: Mapping[str, Sequence[str]],
                reference_modules: Sequence[str] = ()) -> Edition:
    """The student edition for this forbidden map, built once per process (and per change of the
    packages' sources) in the grader's private directory, removed when the process exits."""
    dirs = package_dirs(packages)
    key = json.dumps([dirs, {m: sorted(n) for m, n in sorted(forbidden.items())}, list(reference_modules),
                      _stamp(dirs)], sort_keys=True)
    with _LOCK:
        edition = _EDITIONS.get(key)
        if edition is None or not all(os.path.isdir(p) for p in edition.substitutes.values()):
            edition = _EDITIONS[key] = build(dirs, forbidden, reference_modules, parent=_editions_dir())
            atexit.register(shutil.rmtree, edition.root, True)
        return edition


# -- reference versions, as source, for one probe cell ----------------------------------------------


def reference_calls(source: str) -> list[tuple[str, tuple[str, ...]]]:
    """The ``reference_versions(namespace, "lab", "name", ...)`` calls of ``source``: ``[(lab, names)]``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name != "reference_versions":
            continue
        args = node.args[1:]
        if not args or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
            raise EditionError(f"line {node.lineno}: reference_versions needs the lab and the names as string literals")
        calls.append((args[0].value, tuple(a.value for a in args[1:])))
    return calls


def _module_source(name: str) -> tuple[str, str]:
    """The source and file of module ``name``, found without importing it (nor torch with it)."""
    parent = name.rpartition(".")[0]
    if parent:
        spec = importlib.util.find_spec(parent)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = next((p for base in locations for p in (os.path.join(base, name.rpartition(".")[2] + ".py"),
                                                       os.path.join(base, name.rpartition(".")[2], "__init__.py"))
                     if os.path.isfile(p)), None)
    else:
        spec = importlib.util.find_spec(name)
        path = spec.origin if spec is not None else None
    if not path or not os.path.isfile(path):
        raise EditionError(f"reference module {name!r} not found")
    with open(path, encoding="utf-8") as f:
        return f.read(), path


class ReferenceModule:
    """A reference module read statically (no import: a grading process need not load torch for it).

    Its tables are the statements ``REFERENCES["lab"] = {"name": function, ...}`` (a dict of string
    keys and names of functions defined at the module's top level)."""

    def __init__(self, name: str):
        self.name = name
        self.source, self.path = _module_source(name)
        tree = ast.parse(self.source, self.path)
        self.functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        self.order = list(self.functions)
        self.imports = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
        self.tables: dict[str, dict[str, str]] = {}
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)):
                continue
            target = node.targets[0]
            if not (isinstance(target.value, ast.Name) and target.value.id == "REFERENCES"):
                continue
            lab = target.slice
            if not (isinstance(lab, ast.Constant) and isinstance(lab.value, str) and isinstance(node.value, ast.Dict)):
                raise EditionError(f"{self.path}:{node.lineno}: REFERENCES[...] = must take a string and a dict literal")
            table = {}
            for key, value in zip(node.value.keys, node.value.values):
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, ast.Name)
                        and value.id in self.functions):
                    raise EditionError(f"{self.path}:{node.lineno}: each entry of REFERENCES[{lab.value!r}] must map a "
                                       "string to a function defined at the top of the module")
                table[key.value] = value.id
            self.tables[lab.value] = table

    def closure(self, functions: Iterable[str]) -> list[str]:
        """The functions and every function of the module they use by name, in the module's order."""
        seen: set[str] = set()
        todo = list(functions)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += [n.id for n in ast.walk(self.functions[name]) if isinstance(n, ast.Name)
                     and n.id in self.functions and n.id not in seen]
        return sorted(seen, key=self.order.index)

    def function_source(self, name: str) -> str:
        return ast.get_source_segment(self.source, self.functions[name], padded=False)


_REFERENCE_MODULES: dict[tuple[str, str], ReferenceModule] = {}


def reference_module(name: str) -> ReferenceModule:
    """:class:`ReferenceModule` ``name``, read once per change of its file."""
    source, path = _module_source(name)
    key = (name, source)
    if key not in _REFERENCE_MODULES:
        _REFERENCE_MODULES.clear()  # one checkout's at a time
        _REFERENCE_MODULES[key] = ReferenceModule(name)
    return _REFERENCE_MODULES[key]


def _module_for(reference_modules: Sequence[str], lab: str) -> ReferenceModule:
    for name in reference_modules:
        module = reference_module(name)
        if lab in module.tables:
            return module
    raise EditionError(f"no reference module among {list(reference_modules)} has reference versions for {lab!r}")


def injection_source(reference_modules: Sequence[str], calls: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Code that adds the reference versions ``calls`` name to the kernel's (stub) reference module:
    the functions' source and that of the module functions they call, with the module's imports,
    defined inside one function so that no notebook global changes. Empty when there are no calls."""
    if not calls:
        return ""
    groups: dict[str, tuple[ReferenceModule, dict[str, dict[str, str]]]] = {}
    for lab, names in calls:
        module = _module_for(reference_modules, lab)
        unknown = [n for n in names if n not in module.tables[lab]]
        if unknown:
            raise EditionError(f"{module.name} has no reference version of {unknown} for {lab}")
        labs = groups.setdefault(module.name, (module, {}))[1]
        labs.setdefault(lab, {}).update({n: module.tables[lab][n] for n in names})
    out = []
    for index, (module_name, (module, labs)) in enumerate(sorted(groups.items())):
        body = list(module.imports)
        for name in module.closure(f for table in labs.values() for f in table.values()):
            body += ["", module.function_source(name)]
        body += ["", "return {" + ", ".join(
            f"{lab!r}: {{" + ", ".join(f"{n!r}: {f}" for n, f in table.items()) + "}" for lab, table in labs.items()
        ) + "}"]
        helper = f"_autograder_reference_versions_{index}"
        out += [f"def {helper}():", textwrap.indent("\n".join(body), "    "),
                f"for _autograder_lab, _autograder_refs in {helper}().items():",
                f"    __import__({module_name!r}, fromlist=['REFERENCES']).REFERENCES.setdefault("
                "_autograder_lab, {}).update(_autograder_refs)",
                f"del {helper}, _autograder_lab, _autograder_refs"]
    return "\n".join(out) + "\n"
