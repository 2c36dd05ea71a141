"""mkdocs hook (mkdocs.yml ``hooks:``): fail the build when Markdown renders as something else,
and render the Sphinx roles of ember's docstrings.

A table cell that ends in ``{...}`` (a dict in a generated result) is read by the attr_list
extension as HTML attributes: the cell loses its text and gets ``'tag':="'tag':"`` attributes.
``mkdocs build --strict`` does not warn about that; this hook does, for every page.

The docstrings use Sphinx roles (``:meth:`run```, ``:class:`~ember.engine.Engine```), which
Markdown shows raw (``:meth:`` before a code span). The hook turns each into the code span alone,
``~`` keeping the last component as Sphinx does, and a dotted target into a cross-reference that
mkdocs-autorefs resolves (optional: a target without a page stays plain code).
"""

from __future__ import annotations

import re
from typing import Any

CELL = re.compile(r"<t[dh]\b([^>]*)>")
ALIGNMENT = re.compile(r'^\s*(style="text-align: (left|right|center);")?\s*$')
ATTRIBUTE_NAME = re.compile(r"""\s([^\s=>]*['"{}:][^\s=>]*)=""")


def rendering_problems(html: str) -> list[str]:
    """Table cells with attributes other than alignment, and attribute names no author writes
    (quotes, braces, colons: what attr_list makes of a dict)."""
    problems = [
        f"table cell rendered with attributes {match.group(1).strip()!r}"
        for match in CELL.finditer(html)
        if not ALIGNMENT.match(match.group(1))
    ]
    problems += [
        f"attribute {match.group(1)!r} made from text"
        for match in ATTRIBUTE_NAME.finditer(html)
        if not CELL.match(html, html.rfind("<", 0, match.start()))
    ]
    return problems


ROLE = re.compile(
    r":(?:py:)?(?P<role>meth|func|class|mod|attr|data|exc|obj|const):<code>(?P<tilde>~?)"
    r"(?P<target>[\w.]+)(?P<call>\(\))?</code>"
)
CALLABLE_ROLES = {"meth", "func"}


def render_roles(html: str) -> str:
    """Sphinx roles rendered as Markdown showed them (``:meth:<code>x</code>``) become code, or
    a cross-reference for a dotted target."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        if match["role"] in CALLABLE_ROLES:
            shown += "()"
        code = f"<code>{shown}</code>"
        if "." not in target:
            return code
        return f'<autoref identifier="{target}" optional>{code}</autoref>'

    return ROLE.sub(replace, html)


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    html = render_roles(html)
    problems = rendering_problems(html)
    if problems:
        from mkdocs.exceptions import PluginError

        raise PluginError(
            f"{page.file.src_path}: {'; '.join(problems[:3])}. A cell or line that ends in "
            "{...} is read as HTML attributes (attr_list): escape the braces (\\{ \\}) or put "
            "the text in a code span."
        )
    return html
