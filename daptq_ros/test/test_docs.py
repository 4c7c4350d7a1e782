"""The README and the architecture stay short, and every file they and docs/ link to exists."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # markdown [text](target), anchors dropped
MAX_LINES = {"README.md": 250, "docs/ARCHITECTURE.md": 80}  # a guide and a map, kept short


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """The targets of a page's markdown links that are files of this repository."""
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize(("page", "limit"), MAX_LINES.items())
def test_the_readme_and_the_architecture_stay_short(page: str, limit: int):
    lines = (REPO / page).read_text().splitlines()
    assert len(lines) <= limit, f"{page} has {len(lines)} lines (at most {limit})"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_every_linked_file_exists(page: Path):
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert missing == [], f"{page.name} links to missing files: {missing}"


def test_the_link_check_sees_a_missing_file(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](docs/none.md#part) [web](https://example.org)")
    assert relative_links(page) == ["page.md", "docs/none.md"]
