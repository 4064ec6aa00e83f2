"""Leave sphinx-thebe's scripts out of every page.

The book has no live-code buttons (``launch_buttons.thebe: false`` in ``_config.yml``), yet
jupyter-book always loads ``sphinx_thebe``, which adds its inline configuration to each page
twice: ``const THEBE_JS_URL`` declared twice is a SyntaxError in every page's console, and the
configuration names a script on unpkg.com. Nothing on the pages uses Thebe, so its scripts go.
"""


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    kept = []
    for script in scripts:
        filename = str(getattr(script, "filename", script) or "")
        body = str(getattr(script, "attributes", {}).get("body", ""))
        if "thebe" in filename.lower() or "THEBE" in body:
            continue
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
