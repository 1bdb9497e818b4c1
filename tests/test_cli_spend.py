"""`python -m bot spend`: the spending table, one user's summary, CSV and a chart, read from the database
alone (no API key), and bad dates as one line with exit code 2."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from bot.store.db import Database
from bot.store.ledger import JobDraft, Ledger
from bot.store.reports import CSV_COLUMNS

NOV = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)


pytestmark = pytest.mark.usefixtures("clean_env")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record(path: Path, jobs: list[tuple[dt.datetime, str, str, str, int, int | None]]) -> None:
    """Write jobs (when, user, guild, model, estimate, cost or None to leave reserved) through the ledger."""

    async def write() -> None:
        now = [NOV]
        clock: Callable[[], dt.datetime] = lambda: now[0]  # noqa: E731
        async with await Database.open(path) as db:
            ledger = Ledger(db, clock=clock)
            await ledger.set_budget("user", "day", 1_000_000)
            for when, user, guild, model, estimate, cost in jobs:
                now[0] = when
                job = await ledger.reserve(
                    JobDraft(kind="generate", user_id=user, guild_id=guild, model=model), estimate
                )
                if cost is not None:
                    assert await ledger.settle(job, cost)

    asyncio.run(write())


@pytest.fixture
def november(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "easel.db"
    record(
        path,
        [
            (NOV, "111", "g1", "gpt-image-2", 60_000, 53_000),
            (NOV + dt.timedelta(days=1), "111", "g2", "dall-e-2", 20_000, 20_000),
            (NOV + dt.timedelta(days=2), "222", "g1", "gpt-image-2", 300_000, 250_000),
            (NOV + dt.timedelta(days=3), "222", "g1", "gpt-image-1", 40_000, None),  # still reserved
            (NOV - dt.timedelta(days=20), "111", "g1", "gpt-image-2", 90_000, 90_000),  # October
        ],
    )
    return path


def test_table_for_a_period(november: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """By model, by server and top users, with totals; no API key is needed."""
    code, out, err = run(capsys, "spend", "--since", "2026-11-01", "--until", "2026-11-30")
    assert (code, err) == (0, "")
    assert "Spent 2026-11-01 to 2026-11-30 (UTC days), all servers:" in out
    lines = out.splitlines()
    assert any(line.split() == ["gpt-image-2", "$0.303", "2", "$0.00"] for line in lines), out
    assert any(line.split() == ["gpt-image-1", "$0.040", "1", "$0.040"] for line in lines), out
    assert any(line.split() == ["total", "$0.363", "4", "$0.040"] for line in lines), out
    assert any(line.split() == ["g1", "$0.343", "3", "$0.040"] for line in lines), out
    assert any(line.split() == ["222", "$0.290", "2", "$0.040"] for line in lines), out
    assert any(line.split() == ["111", "$0.073", "2", "$0.00"] for line in lines), out
    assert out.index("top users") > out.index("server")


def test_one_server_and_all_time(november: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spend", "--guild", "g2", "--since", "2026-01-01", "--until", "2026-12-31")
    assert code == 0
    assert "server g2" in out
    assert any(line.split() == ["total", "$0.020", "1", "$0.00"] for line in out.splitlines()), out
    assert "\nserver " not in out  # no per-server table when one server is asked for
    code, out, _ = run(capsys, "spend", "--since", "2026-10-01", "--until", "2026-10-31")
    assert any(line.split() == ["total", "$0.090", "1", "$0.00"] for line in out.splitlines()), out


def test_user_summary_with_budgets(november: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--user: today, this month and all time, the budgets with what is left and when they reset."""
    code, out, err = run(capsys, "spend", "--user", "111", "--since", "2026-11-01", "--until", "2026-11-30")
    assert (code, err) == (0, "")
    assert out.startswith("User 111: spend everywhere")
    all_time = next(line for line in out.splitlines() if line.startswith("all time"))
    assert all_time.split() == ["all", "time", "$0.163", "3", "$0.00"]
    budget = next(line for line in out.splitlines() if line.startswith("the user's daily budget"))
    assert "$1.00" in budget
    assert "UTC" in budget
    assert any(line.split() == ["total", "$0.073", "2", "$0.00"] for line in out.splitlines()), out
    assert "top users" not in out


def test_default_period_is_this_month(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --since the report starts on the first of the current month (UTC) and ends today."""
    now = dt.datetime.now(dt.UTC)
    record(
        tmp_path / "data" / "easel.db",
        [
            (now, "333", "g1", "gpt-image-2", 70_000, 70_000),
            (now.replace(day=1) - dt.timedelta(days=1), "333", "g1", "gpt-image-2", 500_000, 500_000),
        ],
    )
    code, out, _ = run(capsys, "spend")
    assert code == 0
    first = now.date().replace(day=1).isoformat()
    assert f"Spent {first} to {now.date().isoformat()}" in out
    assert any(line.split() == ["total", "$0.070", "1", "$0.00"] for line in out.splitlines()), out


def test_csv_to_stdout(november: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "spend", "--csv", "--user", "222", "--since", "2026-11-01")
    assert (code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 4  # settled: reserve, charge, refund; reserved: reserve
    assert {r["user_id"] for r in rows} == {"222"}
    assert sum(int(r["net_micros"]) for r in rows) == 250_000 + 40_000


def test_chart_file(november: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--chart writes a PNG of spend per day; with --csv the note goes to stderr, keeping stdout pure CSV."""
    target = tmp_path / "spend.png"
    code, out, _ = run(capsys, "spend", "--since", "2026-11-01", "--until", "2026-11-30", "--chart", str(target))
    assert code == 0
    assert f"chart: {target}" in out
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 500)
    code, out, err = run(capsys, "spend", "--since", "2026-11-01", "--csv", "--chart", str(target))
    assert code == 0
    assert out.startswith("ledger_id,")
    assert f"chart: {target}" in err


def test_no_database_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before the first job there is nothing to report, and nothing is created."""
    code, out, err = run(capsys, "spend")
    assert code == 0
    assert "Nothing." in out
    assert "no database" in err
    assert not (tmp_path / "data").exists()


def test_data_dir_setting_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record(tmp_path / "elsewhere" / "easel.db", [(NOV, "444", "", "gpt-image-2", 10_000, 10_000)])
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "elsewhere"))
    code, out, _ = run(capsys, "spend", "--since", "2026-11-01", "--until", "2026-11-30")
    assert code == 0
    assert any(line.split() == ["(no", "server)", "$0.010", "1", "$0.00"] for line in out.splitlines()), out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--since", "2026-13-01"], "error: --since takes a date as YYYY-MM-DD, such as 2026-11-01; '2026-13-01'"),
        (["--until", "yesterday"], "error: --until takes a date as YYYY-MM-DD"),
        (["--since", "20261101"], "error: --since takes a date as YYYY-MM-DD"),
        (["--since", "2026-11-05", "--until", "2026-11-01"], "error: --until 2026-11-01 is before --since 2026-11-05."),
        (["--chart", "missing-folder/x.png"], "error: Cannot write the chart to missing-folder/x.png"),
        (["--bogus"], "error: python -m bot: unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    november: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, _, err = run(capsys, "spend", *argv)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(expected), err
    assert "Traceback" not in err
