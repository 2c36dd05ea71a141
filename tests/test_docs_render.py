"""docs/render_checks.py, the mkdocs hook that fails the build where Markdown rendered as
something else (a table cell ending in ``{...}`` read as HTML attributes, as the B6 row was)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parent.parent / "docs" / "render_checks.py"
spec = importlib.util.spec_from_file_location("render_checks", HOOK)
assert spec is not None and spec.loader is not None
render_checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_checks)

ROW = "| program | ember |\n|---|---|\n| B6 | stored kwargs {cell} |\n"


def test_attributes_made_from_a_cell_are_problems() -> None:
    html = "<table><tr><td 'tag':=\"'tag':\" mine=\"mine\">stored kwargs</td></tr></table>"
    assert render_checks.rendering_problems(html)
    aligned = '<table><tr><th style="text-align: left;">a</th><td>b</td></tr></table>'
    assert render_checks.rendering_problems(aligned) == []
    assert render_checks.rendering_problems('<a href="x" title="y">z</a>') == []


def test_the_b6_row_as_mkdocs_renders_it() -> None:
    markdown = pytest.importorskip("markdown")
    extensions = ["attr_list", "tables"]
    broken = markdown.markdown(ROW.format(cell="{'tag': 'mine'}"), extensions=extensions)
    assert render_checks.rendering_problems(broken)
    escaped = markdown.markdown(ROW.format(cell="\\{'tag': 'mine'\\}"), extensions=extensions)
    assert render_checks.rendering_problems(escaped) == []
    assert "stored kwargs {'tag': 'mine'}" in escaped


def test_sphinx_roles_become_code_and_cross_references() -> None:
    html = (
        "<p>See :meth:<code>run</code>, :class:<code>~ember.engine.Engine</code> and "
        ":func:<code>ember.patch_ignite</code>.</p>"
    )
    assert render_checks.render_roles(html) == (
        "<p>See <code>run()</code>, "
        '<autoref identifier="ember.engine.Engine" optional><code>Engine</code></autoref> and '
        '<autoref identifier="ember.patch_ignite" optional><code>ember.patch_ignite()</code>'
        "</autoref>.</p>"
    )
