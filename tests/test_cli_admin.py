"""The admin commands: budgets and the image store's clean-up, straight on the database, no API key needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main

pytestmark = pytest.mark.usefixtures("clean_env")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_budgets_are_set_listed_and_removed(capsys: pytest.CaptureFixture[str]) -> None:
    """budget set/list/remove round-trip, with dollars turned into exact micro-dollars."""
    assert run(capsys, "budget", "list")[1] == "no budgets: spending is not limited\n"
    code, out, _ = run(capsys, "budget", "set", "user", "day", "$0.50")
    assert (code, out) == (0, "budget 1: each user, per day is $0.500\n")
    run(capsys, "budget", "set", "role", "week", "2", "--guild", "5", "--target", "77")
    run(capsys, "budget", "set", "user", "day", "0.75")
    listing = run(capsys, "budget", "list")[1].splitlines()
    assert listing == ["   2  role 77 in server 5, per week: $2.00", "   1  each user, per day: $0.750"]
    assert run(capsys, "budget", "remove", "2")[1] == "budget 2 removed\n"
    assert len(run(capsys, "budget", "list")[1].splitlines()) == 1


def test_imagine_respects_a_budget_set_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """A zero budget stops a paid request before any call, with the budget's reset time."""
    run(capsys, "budget", "set", "user", "day", "0", "--target", "cli")
    code, _, err = run(capsys, "--provider", "compatible", "imagine", "a fox")
    assert code == 2
    assert "your daily budget has $0.00 left of $0.00; it resets" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["budget", "set", "role", "day", "1", "--guild", "5"], "error: A role budget needs --guild and --target"),
        (["budget", "set", "guild", "day", "1"], "error: A server budget needs --guild"),
        (["budget", "set", "user", "day", "lots"], "error: The limit 'lots' is not an amount of dollars"),
        (["budget", "set", "user", "day", "-1"], "error: The limit '-1' must be zero or more dollars."),
        (["budget", "remove", "9"], "error: There is no budget 9"),
        (["budget", "remove", "99999999999999999999"], "error: There is no budget 99999999999999999999"),
        (["budget", "set", "global", "day", "1e30"], "error: The limit '1e30' is more than $1,000,000,000"),
        (["cleanup", "--days", "nan"], "error: --days takes a number of days up to 36,500"),
        (["cleanup", "--days", "1e300"], "error: --days takes a number of days up to 36,500"),
        (["spend", "--until", "9999-12-31"], "error: --until takes a date as YYYY-MM-DD"),
        (["--provider", "mock", "imagine", "a fox", "--n", "99999999999999999999999"], "error: --n must be between"),
        (["budget", "set", "team", "day", "1"], "error: python -m bot budget set: argument scope: invalid choice"),
    ],
)
def test_budget_mistakes_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """Each mistake is one line and exit code 2, even a number too large for SQLite or a date."""
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(message)


def test_cleanup_applies_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cleanup with 0 for both limits keeps everything; a tiny age limit removes the files."""
    assert run(capsys, "--provider", "mock", "imagine", "a fox", "--n", "2")[0] == 0
    stored = [p for p in (tmp_path / "data" / "images").rglob("*") if p.is_file()]
    assert len(stored) == 2
    code, out, _ = run(capsys, "cleanup", "--max-mb", "0", "--days", "0")
    assert code == 0
    assert out.startswith("removed 0 file(s), 0.0 MB; kept 2 (")
    code, out, _ = run(capsys, "cleanup", "--days", "0.000000001")
    assert code == 0
    assert out.startswith("removed 2 file(s)")
    assert not [p for p in (tmp_path / "data" / "images").rglob("*") if p.is_file()]
