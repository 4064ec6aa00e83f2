"""An author-year bibliography whose entries link back to where they are cited.

The chapters cite author-year (``bibtex_reference_style: author_year``), so the bibliography labels
its entries the same way, "[Kingma and Welling, 2014]", sorted by author (the ``dgm_authoryear``
style: pybtex's ``plain`` with author-year labels; a second work of the same authors and year gets
"a", "b"). sphinxcontrib-bibtex links an entry back to its citations only when they are on the
bibliography's own page; here every entry ends with "Cited in" and a link to each place a page
cites it, in reading order.
"""
from __future__ import annotations

from collections import defaultdict

from docutils import nodes
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from sphinxcontrib.bibtex.domain import get_docnames


def _surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabelStyle(BaseLabelStyle):
    """"Ackley et al., 1985", "Kingma and Welling, 2014", "Neal, 2001"; a, b for repeats."""

    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_surname(p) for p in people]
            if not names:
                who = entry.fields.get("organization", entry.fields.get("title", entry.key)).split(":")[0]
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
        counts = defaultdict(int)
        for label in labels:
            counts[label] += 1
        seen = defaultdict(int)
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield f"{label}{'abcdefghij'[seen[label] - 1]}"
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "dgm_authoryear", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "dgm_authoryear", AuthorYearStyle)


def _back_links(app, doctree, docname):
    if app.builder.format != "html":
        return
    domain = app.env.get_domain("cite")
    order = {name: i for i, name in enumerate(get_docnames(app.env))}  # the toc's reading order
    for citation in domain.citations:
        if citation.bibliography_key.docname != docname:
            continue
        node = domain.bibliographies[citation.bibliography_key].citation_nodes.get(citation.key)
        if node is None or node.parent is None:
            continue
        places = defaultdict(list)
        for ref in domain.citation_refs:
            if citation.key in {t.key for t in ref.targets}:
                places[ref.docname].append(ref.citation_ref_id)
        if not places:
            continue
        para = nodes.paragraph(classes=["dgm-cited-in"])
        para += nodes.Text("Cited in ")
        for i, doc in enumerate(sorted(places, key=lambda d: order.get(d, len(order)))):
            if i:
                para += nodes.Text("; ")
            uri = app.builder.get_relative_uri(docname, doc)
            title = app.env.titles[doc].astext() if doc in app.env.titles else doc
            number = app.env.toc_secnumbers.get(doc, {}).get("")
            if number:  # "5. Variational autoencoders", as the sidebar numbers it
                title = f"{'.'.join(map(str, number))}. {title}"
            ids = places[doc]
            if len(ids) == 1:
                para += nodes.reference("", title, refuri=f"{uri}#{ids[0]}", internal=True)
                continue
            para += nodes.Text(f"{title} (")
            for j, ref_id in enumerate(ids, 1):
                if j > 1:
                    para += nodes.Text(", ")
                para += nodes.reference("", str(j), refuri=f"{uri}#{ref_id}", internal=True)
            para += nodes.Text(")")
        node += para


def setup(app):
    app.setup_extension("sphinxcontrib.bibtex")
    app.connect("doctree-resolved", _back_links, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
