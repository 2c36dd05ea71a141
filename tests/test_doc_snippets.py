"""Every ```python block of README.md and docs/*.md runs.

The blocks of one page run in page order in one namespace, as a reader would type them: a block
may use what an earlier block of the same page defined. Each block is one test, which first runs
the blocks before it. A block that cannot run is marked by the line ``<!-- skip-snippet -->``
right before its fence (blank lines between are allowed); use it sparingly.

Pages may use a few names without defining them, as Sphinx's ``doctest_global_setup`` allows:
``process_function`` (``lambda engine, batch: batch``), and a small PyTorch regression problem,
``model``, ``optimizer``, ``loss_fn`` and ``data`` (a list of ``(x, y)`` batches). They are made
only for the pages that use them, so a page without them does not import torch.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "<!-- skip-snippet -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^\n`]*)$")
TORCH_NAMES = {"model", "optimizer", "loss_fn", "data"}


class Snippet:
    def __init__(self, page: Path, line: int, code: str, skipped: bool) -> None:
        self.page = page
        self.line = line  # of the first line of code
        self.code = code
        self.skipped = skipped

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def extract(page: Path) -> list[Snippet]:
    """The ```python blocks of a page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        ticks, indent = opening["ticks"], opening["indent"]
        language = opening["info"].strip().split(maxsplit=1)[0] if opening["info"].strip() else ""
        end = index + 1
        closing = re.compile(rf"`{{{len(ticks)},}}")  # as many backticks or more, nothing else
        while end < len(lines) and not closing.fullmatch(lines[end].strip()):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{index + 1}: unclosed code fence")
        if language == "python":
            previous = index - 1
            while previous >= 0 and not lines[previous].strip():
                previous -= 1
            skipped = previous >= 0 and lines[previous].strip() == SKIP_MARK
            body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
            code = textwrap.dedent("\n".join(body)) + "\n"
            snippets.append(Snippet(page, index + 2, code, skipped))
        index = end + 1
    return snippets


SNIPPETS = [snippet for page in PAGES for snippet in extract(page)]


def _torch_names() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(32, 3)
    y = x.sum(dim=1, keepdim=True)
    return {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loss_fn": torch.nn.functional.mse_loss,
        "data": [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)],
    }


def _namespace(page_code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "__name__": "__doc_snippet__",
        "process_function": lambda engine, batch: batch,
    }
    if any(re.search(rf"\b{name}\b", page_code) for name in TORCH_NAMES):
        namespace.update(_torch_names())
    return namespace


def _run(snippet: Snippet, namespace: dict[str, Any]) -> None:
    # Padded so that line numbers in tracebacks point into the page.
    code = compile("\n" * (snippet.line - 1) + snippet.code, str(snippet.page), "exec")
    exec(code, namespace)  # noqa: S102 (running the documentation is the point)


def test_the_pages_have_snippets() -> None:
    assert (ROOT / "README.md").is_file(), "README.md must sit next to tests/"
    assert SNIPPETS, "no ```python block found in README.md and docs/*.md"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.name for snippet in SNIPPETS])
def test_snippet_runs(snippet: Snippet) -> None:
    if snippet.skipped:
        pytest.skip(f"marked {SKIP_MARK}")
    same_page = [other for other in SNIPPETS if other.page == snippet.page and not other.skipped]
    namespace = _namespace("".join(other.code for other in same_page))
    for earlier in same_page[: same_page.index(snippet)]:
        _run(earlier, namespace)
    _run(snippet, namespace)
