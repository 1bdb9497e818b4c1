"""The dependency rules, checked on the source: the core never imports Discord or the cogs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Only the Discord application itself may touch discord.py and the cogs.
DISCORD_ALLOWED = {"bot/app.py", "bot/__main__.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


CORE = sorted(p for p in (ROOT / "bot").rglob("*.py") if p.relative_to(ROOT).as_posix() not in DISCORD_ALLOWED)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_core_module_does_not_import_discord_or_cogs(path: Path) -> None:
    """Core modules know nothing of Discord."""
    bad = _imports(path) & {"discord", "cogs"}
    assert not bad, f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"


@pytest.mark.parametrize("path", sorted((ROOT / "bot").rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_module_has_a_docstring(path: Path) -> None:
    """Each module starts by saying what it holds."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"


def test_the_checker_sees_discord_imports(tmp_path: Path) -> None:
    """The rule above would catch a violation."""
    sample = tmp_path / "sample.py"
    sample.write_text("import discord.ext.commands\nfrom cogs import EXTENSIONS\n")
    assert _imports(sample) >= {"discord", "cogs"}
