"""The README and the docs/ pages: their links resolve, every page is reachable, and the
README's install and test commands are exactly the ones CI runs.

The README is the short first layer and docs/ the second; a section moved between them
must not leave a link pointing at where it used to be.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.timeout(60)

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks (a `# comment` in a bash block is no heading)."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page's headings define; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def links(page: Path) -> list[str]:
    """The targets of a page's Markdown links, outside code blocks and inline code."""
    return [target for line in prose_lines(page.read_text())
            for target in LINK.findall(INLINE_CODE.sub("", line))]


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file or heading anchor does not exist, with why."""
    broken = []
    for target in links(page):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: here\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-code-heading-here) [self](#page) [web](https://example.org)\n"
                    "[gone](missing.md) [wrong](other.md#nowhere) `[code](missing.md)`\n"
                    "```bash\n[fenced](missing.md)\n```\n")
    assert broken_links(page) == ["missing.md: no such file",
                                  "other.md#nowhere: no heading with anchor #nowhere in other.md"]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(REPO / "README.md")
              if not target.startswith(EXTERNAL)}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def ci_commands() -> list[str]:
    """The commands .ci/run runs, without its shell options and its cd to the repository."""
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def readme_install_block() -> list[str]:
    """The commands of the first bash block under the README's "Install and test", comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Install and test\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_the_readme_install_and_test_commands_are_what_ci_runs():
    ci = ci_commands()
    assert ci == ["pip install -e '.[dev]'", "pytest"]
    block = readme_install_block()
    # Only the virtual environment's creation comes before CI's two commands.
    assert block[-len(ci):] == ci and all(line.startswith("python -m venv ") for line in block[:-len(ci)]), block
    # The workflow's test job: PyTorch's CPU build first (no CUDA libraries on a runner), then
    # exactly those two commands (tests/test_ci_report.py checks its Pythons and the report job).
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step["run"].strip() for step in workflow["jobs"]["test"]["steps"] if "run" in step]
    assert steps == ["pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu", *ci]
