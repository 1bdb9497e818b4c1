"""`python -m bot`: the core's face for admins and scripts.

    python -m bot imagine "a lighthouse at dusk" [--model --size --quality --style --n --background --format --out]
    python -m bot edit --image photo.png [--mask mask.png] "add a red balloon"
    python -m bot vary --image photo.png [--n 2 --strength strong]
    python -m bot models [--all]
    python -m bot budget list | set SCOPE PERIOD DOLLARS [--guild ID --target ID] | remove ID
    python -m bot cleanup [--days N --max-mb N]
    python -m bot spend [--user ID] [--guild ID] [--since DATE] [--until DATE] [--csv] [--chart FILE.png]

Expected errors are one line on stderr and exit code 2 (bad input or settings) or 1 (the provider failed);
never a traceback. `--provider mock` works with no API key at all.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import NoReturn, TextIO

from bot import charts, pricing
from bot.api.client import utc_today
from bot.api.types import EditRequest, GenerateRequest, ImageResult, InputImage, VaryRequest
from bot.api.validate import sniff_format
from bot.catalogue import Catalogue
from bot.config import PROVIDERS, Settings, load_settings
from bot.errors import BadImage, ConfigError, EaselError, ProviderError
from bot.imaging.edits import prepare_edit
from bot.imaging.inputs import SquareMode
from bot.imaging.masks import Region, parse_region, preview, transparent_fraction
from bot.jobs import JobOutcome, Requester
from bot.log import redact, setup_logging
from bot.services import DATABASE_FILE, IMAGES_FOLDER, Core, load_catalogue, open_core, settings_problems
from bot.store.db import Database
from bot.store.images import ImageStore
from bot.store.ledger import CLI_USER_ID, PERIODS, SCOPES, Budget, Ledger, describe_budget
from bot.store.reports import Reports, Spend, UserSummary, to_csv

EXIT_OK = 0
EXIT_PROVIDER = 1
EXIT_USAGE = 2
MAX_INPUT_BYTES = 64 * 1024 * 1024
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
}
_MIMES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bot", description="Easel: prompts into images, on Discord and here.")
    parser.add_argument("--env-file", default=".env", help="settings file to read (default .env)")
    parser.add_argument("--provider", choices=PROVIDERS, help="override EASEL_PROVIDER for this run")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="model name (default EASEL_MODEL)")
        p.add_argument("--size", help="WIDTHxHEIGHT or auto")
        p.add_argument("--n", type=int, default=1, help="how many images")
        p.add_argument("--out", type=Path, default=Path(), help="folder for the images (default: here)")

    imagine = sub.add_parser("imagine", help="create images from a prompt")
    imagine.add_argument("prompt")
    common(imagine)
    imagine.add_argument("--quality")
    imagine.add_argument("--style")
    imagine.add_argument("--background", choices=("auto", "opaque", "transparent"))
    imagine.add_argument("--format", dest="output_format")
    imagine.add_argument("--compression", type=int, dest="output_compression", help="0-100, jpeg/webp only")
    imagine.add_argument("--complexity")

    edit = sub.add_parser("edit", help="change an image where the mask (or its transparency) says")
    edit.add_argument("prompt")
    edit.add_argument("--image", type=Path, action="append", required=True, help="input image (repeatable)")
    edit.add_argument("--mask", type=Path, help="PNG whose transparent pixels mark the area to change")
    edit.add_argument(
        "--region", help='area to change instead of a mask: "x=10 y=20 w=50 h=40" (percent) or top, center, ...'
    )
    edit.add_argument("--crop", action="store_true", help="crop to a square for square-only models (default: pad)")
    edit.add_argument("--preview-mask", type=Path, metavar="FILE", help="only write a picture of the area to change")
    common(edit)
    edit.add_argument("--quality")
    edit.add_argument("--background", choices=("auto", "opaque", "transparent"))
    edit.add_argument("--format", dest="output_format")
    edit.add_argument("--fidelity", dest="input_fidelity", choices=("low", "high"))

    vary = sub.add_parser("vary", help="make variations of an image")
    vary.add_argument("--image", type=Path, required=True)
    common(vary)
    vary.add_argument("--strength", choices=("subtle", "strong"), default="subtle")
    vary.add_argument("--prompt", help="an optional hint for the variation")

    out_paint = sub.add_parser("outpaint", help="zoom out or pan: paint around an image")
    out_paint.add_argument("--image", type=Path, required=True)
    way = out_paint.add_mutually_exclusive_group(required=True)
    way.add_argument("--zoom", type=float, help="zoom out by this factor (1.5, 2, ... up to 4)")
    way.add_argument("--pan", choices=("left", "right", "up", "down"), help="extend the picture this way")
    out_paint.add_argument("--prompt", default="", help="what to paint in the new area (optional)")
    out_paint.add_argument("--model", help="model name (default EASEL_MODEL)")
    out_paint.add_argument("--out", type=Path, default=Path(), help="folder for the images (default: here)")

    models = sub.add_parser("models", help="list the model catalogue with status and prices")
    models.add_argument("--all", action="store_true", help="include shut-down models")

    budget = sub.add_parser("budget", help="list, set or remove spending budgets (needs no API key)")
    budget_sub = budget.add_subparsers(dest="budget_command", parser_class=_Parser, required=True)
    budget_sub.add_parser("list", help="every budget with its limit")
    budget_set = budget_sub.add_parser("set", help="create a budget, or change its limit")
    budget_set.add_argument("scope", choices=SCOPES, help="whose spending it limits")
    budget_set.add_argument("period", choices=PERIODS, help="day, week, month (UTC) or all time")
    budget_set.add_argument("limit", help="US dollars, e.g. 2.50")
    budget_set.add_argument("--guild", default="", help="the server (Discord id) it applies in; default everywhere")
    budget_set.add_argument("--target", default="", help="the user or role id; a user budget without one is per user")
    budget_remove = budget_sub.add_parser("remove", help="remove a budget by its id (see budget list)")
    budget_remove.add_argument("id", type=int)

    cleanup = sub.add_parser("cleanup", help="apply the image store's retention limits now")
    cleanup.add_argument("--days", type=float, help="days to keep images, 0: for ever")
    cleanup.add_argument("--max-mb", type=int, help="most MB to keep, 0: no cap")

    spend = sub.add_parser("spend", help="what was spent: per user, server, model and day (needs no API key)")
    spend.add_argument("--user", help="one user's spend (a Discord user id, or cli) and their budgets")
    spend.add_argument("--guild", help="only this server (its Discord id); with --user, whose budgets to show")
    spend.add_argument("--since", help="first day, YYYY-MM-DD in UTC (default: the first of this month)")
    spend.add_argument("--until", help="last day, YYYY-MM-DD in UTC, included (default: today)")
    spend.add_argument("--csv", action="store_true", help="print the period's ledger rows as CSV instead")
    spend.add_argument("--chart", type=Path, metavar="FILE.png", help="also draw spend per day by model as a PNG")
    return parser


def _read_image(path: Path) -> InputImage:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise BadImage(
                f"{path} is {size / 1_048_576:.0f} MB; use an image under {MAX_INPUT_BYTES // 1_048_576} MB."
            )
        # At most one byte past the limit: a pipe or a device (/dev/zero) reports no size and never ends.
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise BadImage(f"{path} is over {MAX_INPUT_BYTES // 1_048_576} MB; use a smaller image.")
    except FileNotFoundError:
        raise BadImage(f"There is no file {path}.") from None
    except IsADirectoryError:
        raise BadImage(f"{path} is a folder, not an image.") from None
    except OSError as exc:
        raise BadImage(f"Cannot read {path} ({exc.strerror}).") from None
    kind = sniff_format(data) or "png"
    return InputImage(data=data, filename=path.name, mime=_MIMES.get(kind, "image/png"))


def _check_text(args: argparse.Namespace) -> None:
    """Refuse a prompt the shell passed as bytes that are not UTF-8 (it could be neither sent nor kept)."""
    prompt = getattr(args, "prompt", None)
    if isinstance(prompt, str):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError("The prompt is not valid UTF-8 text; type it again.") from None


def _ready_folder(out: Path) -> None:
    """Make the output folder, or say in one line why it cannot be written (before any job is paid for)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".easel-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise ConfigError(f"--out {out} is a file, not a folder.") from None
    except OSError as exc:
        raise ConfigError(f"--out {out} cannot be written ({exc.strerror or exc}).") from None


def _save(result: ImageResult, out: Path, now: dt.datetime) -> list[Path]:
    """Write the images as EASEL-YYYYmmdd_HHMMSS_<i>.<ext>, never overwriting a file."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%d_%H%M%S")
    paths: list[Path] = []
    for index, image in enumerate(result.images, start=1):
        ext = _EXTENSIONS.get(image.mime, "bin")
        path = out / f"EASEL-{stamp}_{index}.{ext}"
        bump = 1
        while path.exists():
            bump += 1
            path = out / f"EASEL-{stamp}_{index}-{bump}.{ext}"
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(image.data)
        tmp.replace(path)
        paths.append(path)
    return paths


CLI_USER = Requester(user_id=CLI_USER_ID)
"""Who the CLI's jobs belong to in the ledger, so an admin's test runs show up in reports at their real cost."""


def _report(outcome: JobOutcome, paths: Sequence[Path], out: TextIO) -> None:
    result = outcome.result
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    for path, image in zip(paths, result.images, strict=True):
        print(f"{path}  ({image.width}x{image.height} {image.mime})", file=out)
    if result.mock:
        print("mock: these are placeholder images drawn locally; nothing was charged", file=out)
    if result.revised_prompt:
        print(f"revised prompt: {result.revised_prompt}", file=out)
    if result.variation and result.variation != "endpoint":
        print(f"variation: through edit ({result.variation.removeprefix('edit-')})", file=out)
    credits = f" ({result.credits:g} credits)" if result.credits is not None else ""
    print(
        f"job {outcome.job_id}: model {result.model} via {result.provider}, {result.provider_ms / 1000:.1f}s; "
        f"estimate {pricing.format_usd(outcome.estimate)}, cost {pricing.format_usd(outcome.cost)}{credits}",
        file=out,
    )


async def _imagine(core: Core, args: argparse.Namespace, out: TextIO) -> None:
    req = GenerateRequest(
        prompt=args.prompt,
        model=args.model,
        n=args.n,
        size=args.size,
        quality=args.quality,
        style=args.style,
        background=args.background,
        output_format=args.output_format,
        output_compression=args.output_compression,
        complexity=args.complexity,
    )
    await _finish(await core.studio.generate(req, CLI_USER), args.out, out)


async def _edit(core: Core, args: argparse.Namespace, out: TextIO) -> None:
    images = tuple([await asyncio.to_thread(_read_image, path) for path in args.image])
    mask = await asyncio.to_thread(_read_image, args.mask) if args.mask else None
    req = EditRequest(
        prompt=args.prompt,
        images=images,
        mask=mask,
        model=args.model,
        n=args.n,
        size=args.size,
        quality=args.quality,
        background=args.background,
        output_format=args.output_format,
        input_fidelity=args.input_fidelity,
    )
    region = parse_region(args.region) if args.region else None
    if args.preview_mask:
        await _preview_mask(core, req, region, args.preview_mask, out)
        return
    square: SquareMode = "crop" if args.crop else "pad"
    await _finish(await core.studio.edit(req, CLI_USER, region=region, square=square), args.out, out)


async def _preview_mask(core: Core, req: EditRequest, region: Region | None, path: Path, out: TextIO) -> None:
    """Write the image with the area to change tinted, at no cost."""
    spec = core.images.model(req.model)
    uploads = [image.data for image in req.images]
    mask = req.mask.data if req.mask else None
    ready = await asyncio.to_thread(prepare_edit, uploads, spec, mask=mask, region=region)
    if ready.mask is None:
        raise BadImage("There is no area to change: give --region or --mask, or use an image with transparency.")
    picture = await asyncio.to_thread(preview, ready.images[0].data, ready.mask.data)
    await asyncio.to_thread(path.write_bytes, picture)
    share = await asyncio.to_thread(transparent_fraction, ready.mask.data)
    print(f"{path}: the tinted area ({share:.0%} of the image) would be repainted; nothing was charged", file=out)


async def _outpaint(core: Core, args: argparse.Namespace, out: TextIO) -> None:
    image = await asyncio.to_thread(_read_image, args.image)
    outcome = await core.studio.outpaint(
        image, CLI_USER, prompt=args.prompt, factor=args.zoom, direction=args.pan, model=args.model
    )
    await _finish(outcome, args.out, out)


async def _vary(core: Core, args: argparse.Namespace, out: TextIO) -> None:
    image = await asyncio.to_thread(_read_image, args.image)
    req = VaryRequest(
        image=image, model=args.model, n=args.n, size=args.size, strength=args.strength, prompt=args.prompt
    )
    await _finish(await core.studio.vary(req, CLI_USER), args.out, out)


async def _finish(outcome: JobOutcome, folder: Path, out: TextIO) -> None:
    paths = await asyncio.to_thread(_save, outcome.result, folder, dt.datetime.now(dt.UTC).astimezone())
    _report(outcome, paths, out)


def list_models(catalogue: Catalogue, settings: Settings, *, show_all: bool, today: dt.date, out: TextIO) -> None:
    """The catalogue as a table: name, status, endpoints, sizes and price."""
    rows = [("model", "status", "does", "sizes", "price")]
    for spec in sorted(catalogue, key=lambda s: s.released or dt.date.min, reverse=True):
        status = spec.status(today)
        if status == "shutdown" and not show_all:
            continue
        label: str = status
        if status == "deprecated" and spec.shutdown:
            label = f"deprecated, shuts down {spec.shutdown.isoformat()}"
        elif status == "shutdown" and spec.shutdown:
            label = f"shut down {spec.shutdown.isoformat()}" + (
                f" (use {spec.replacement})" if spec.replacement else ""
            )
        if spec.name == settings.model:
            label += ", default"
        does = "/".join(e for e in ("generate", "edit", "variations") if e in spec.endpoints)
        if "variations" not in spec.endpoints and "edit" in spec.endpoints:
            does += " (+vary)"
        sizes = "any WxH (" + ", ".join(spec.sizes[:4]) + ", …)" if spec.size_rule else ", ".join(spec.sizes)
        rows.append((spec.name, label, does, sizes, pricing.price_summary(spec)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
    if not show_all:
        print("(shut-down models hidden; --all shows them)", file=out)


BotStarter = Callable[[Settings], int]


def run(argv: Sequence[str], *, out: TextIO | None = None, start_bot: BotStarter | None = None) -> int:
    """Parse `argv` and run the command (no command: the Discord bot); raises EaselError for expected failures."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    overrides = {"provider": args.provider} if args.provider else {}
    settings = load_settings(args.env_file if Path(args.env_file).exists() else None, **overrides)
    quiet = args.command is not None and settings.log_level == "INFO"
    setup_logging("WARNING" if quiet else settings.log_level, settings.secrets())
    if args.command is None:
        problems = settings_problems(settings, load_catalogue(settings))
        if settings.discord_token is None:
            problems.insert(
                0, "DISCORD_TOKEN is not set: create a bot at https://discord.com/developers and copy its token"
            )
        if problems:
            raise ConfigError("\n".join(problems))
        if start_bot is None:
            print("The Discord bot starts with `python -m bot`; this entry point only runs commands.", file=sys.stderr)
            return EXIT_PROVIDER
        return start_bot(settings)
    if args.command == "models":
        list_models(load_catalogue(settings), settings, show_all=args.all, today=utc_today(), out=out)
        return EXIT_OK
    if args.command == "budget":
        asyncio.run(budget_command(settings, args, out))
        return EXIT_OK
    if args.command == "cleanup":
        asyncio.run(cleanup_command(settings, args, out))
        return EXIT_OK
    if args.command == "spend":
        asyncio.run(spend_report(settings, args, out, today=utc_today()))
        return EXIT_OK
    if not 1 <= getattr(args, "n", 1) <= MAX_N:
        raise ConfigError(f"--n must be between 1 and {MAX_N}.")
    _check_text(args)
    # Before anything is paid for: the images must have somewhere to go.
    _ready_folder(args.out)
    asyncio.run(_dispatch(settings, args, out))
    return EXIT_OK


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_N = 10
"""The most images one request asks for (no model makes more; Discord shows ten at most)."""
MAX_LIMIT_USD = Decimal(1_000_000_000)
"""The largest budget limit the CLI takes, in dollars: "no limit" is removing the budget."""
MAX_ROW_ID = 2**63 - 1
"""SQLite's largest row id: a budget id above it names no budget."""
MAX_DAYS = 36_500
"""The longest retention `cleanup --days` takes (a hundred years, as EASEL_IMAGE_RETENTION_DAYS; 0: for ever)."""


def _cli_day(value: str, flag: str) -> dt.date:
    """A YYYY-MM-DD option as a date, or a ConfigError that says what is wrong."""
    try:
        if _DATE.match(value):
            day = dt.date.fromisoformat(value)
            if day < dt.date.max:  # the reports end the day after the last one asked for
                return day
    except ValueError:
        pass
    raise ConfigError(f"{flag} takes a date as YYYY-MM-DD, such as 2026-11-01; {value!r} is not one.")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Aligned columns: the first left-aligned, the rest (numbers) right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))]
        print("  ".join(cells).rstrip(), file=out)


def _spend_cells(label: str, spend: Spend) -> list[str]:
    return [label, pricing.format_usd(spend.net), f"{spend.jobs:,}", pricing.format_usd(spend.held)]


def _spend_notes(spend: Spend, out: TextIO) -> None:
    """Refunds and the unknown charges, under a table, when there are any."""
    if spend.refunded_jobs:
        print(f"{spend.refunded_jobs:,} of the jobs failed and were refunded (they count $0).", file=out)
    if spend.unknowns:
        jobs = "job" if spend.unknowns == 1 else "jobs"
        print(
            f"{pricing.format_usd(spend.unknown)} of it is the estimate of {spend.unknowns:,} {jobs} that may have "
            "been billed without an answer (cost unknown).",
            file=out,
        )


def _place(guild_id: str) -> str:
    return guild_id or "(no server)"


def _print_user(summary: UserSummary, out: TextIO) -> None:
    where = f"; budgets in server {summary.guild_id}" if summary.guild_id else ""
    print(f"User {summary.user_id}: spend everywhere{where}", file=out)
    _table(
        ("", "spent", "jobs", "held"),
        [
            _spend_cells(f"today ({summary.day.isoformat()})", summary.today),
            _spend_cells(f"this month (from {summary.month_start.isoformat()})", summary.month),
            _spend_cells("all time", summary.all_time),
        ],
        out,
    )
    _spend_notes(summary.all_time, out)
    print(file=out)
    if not summary.budgets:
        print("No budget applies to this user.", file=out)
        return
    rows = [
        [
            describe_budget(status.budget).replace("your ", "the user's ", 1).replace("this server's", "the server's"),
            pricing.format_usd(status.remaining),
            pricing.format_usd(status.budget.limit),
            status.resets_at.strftime("%Y-%m-%d %H:%M UTC") if status.resets_at else "never",
        ]
        for status in summary.budgets
    ]
    _table(("budget", "left", "of", "resets"), rows, out)


def _dollars(text: str) -> int:
    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise ConfigError(f"The limit {text!r} is not an amount of dollars, such as 2.50.") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"The limit {text!r} must be zero or more dollars.")
    if value > MAX_LIMIT_USD:
        raise ConfigError(f"The limit {text!r} is more than ${MAX_LIMIT_USD:,}; remove the budget for no limit.")
    return int((value * pricing.MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


async def budget_command(settings: Settings, args: argparse.Namespace, out: TextIO) -> None:
    """`budget list|set|remove`: the admin's spending limits, straight in the database."""
    async with await Database.open(settings.data_dir / DATABASE_FILE) as db:
        ledger = Ledger(db)
        if args.budget_command == "set":
            if args.scope == "role" and not (args.guild and args.target):
                raise ConfigError("A role budget needs --guild and --target (the role's id).")
            if args.scope == "guild" and not args.guild:
                raise ConfigError("A server budget needs --guild (the server's id).")
            made = await ledger.set_budget(
                args.scope, args.period, _dollars(args.limit), guild_id=args.guild, target_id=args.target
            )
            print(f"budget {made.id}: {_budget_words(made)} is {pricing.format_usd(made.limit)}", file=out)
        elif args.budget_command == "remove":
            if not 0 < args.id <= MAX_ROW_ID or not await ledger.remove_budget(args.id):
                raise ConfigError(f"There is no budget {args.id}; `python -m bot budget list` shows them.")
            print(f"budget {args.id} removed", file=out)
        else:
            found = await ledger.budgets()
            for item in found:
                print(f"{item.id:>4}  {_budget_words(item)}: {pricing.format_usd(item.limit)}", file=out)
            if not found:
                print("no budgets: spending is not limited", file=out)


def _budget_words(budget: Budget) -> str:
    where = f" in server {budget.guild_id}" if budget.guild_id and budget.scope != "guild" else ""
    match budget.scope:
        case "user":
            who = f"user {budget.target_id}" if budget.target_id else "each user"
        case "role":
            who = f"role {budget.target_id}"
        case "guild":
            who = f"server {budget.guild_id}"
        case _:
            who = "everyone together"
    period = {"day": "per day", "week": "per week", "month": "per month", "all": "in all"}[budget.period]
    return f"{who}{where}, {period}"


async def cleanup_command(settings: Settings, args: argparse.Namespace, out: TextIO) -> None:
    """`cleanup`: apply the image store's retention limits once."""
    days, size = settings.retention()
    if args.days is not None:
        if not math.isfinite(args.days) or args.days > MAX_DAYS:
            raise ConfigError(f"--days takes a number of days up to {MAX_DAYS:,}, or 0 to keep images for ever.")
        days = args.days or None
    if args.max_mb is not None:
        size = args.max_mb * 1024 * 1024 or None
    if (days is not None and days < 0) or (size is not None and size < 0):
        raise ConfigError("--days and --max-mb must not be negative.")
    async with await Database.open(settings.data_dir / DATABASE_FILE) as db:
        store = ImageStore(db, settings.data_dir / IMAGES_FOLDER)
        report = await store.cleanup(max_age_days=days, max_total_bytes=size)
    print(
        f"removed {report.deleted_files} file(s), {report.freed_bytes / 1_048_576:.1f} MB; "
        f"kept {report.kept_files} ({report.kept_bytes / 1_048_576:.1f} MB)",
        file=out,
    )


async def spend_report(settings: Settings, args: argparse.Namespace, out: TextIO, *, today: dt.date) -> None:
    """`spend`: the table, the CSV or the chart, read from the database alone (no provider, no API key)."""
    since = _cli_day(args.since, "--since") if args.since else today.replace(day=1)
    last = _cli_day(args.until, "--until") if args.until else today
    if last < since:
        raise ConfigError(f"--until {last.isoformat()} is before --since {since.isoformat()}.")
    until = last + dt.timedelta(days=1)
    path = settings.data_dir / DATABASE_FILE
    if not path.exists():
        # An empty database in memory answers every report with nothing, without creating files.
        print(f"note: there is no database at {path} yet, so nothing has been spent.", file=sys.stderr)
    async with await Database.open(path if path.exists() else ":memory:") as db:
        reports = Reports(db, Ledger(db))
        if args.csv:
            rows = await reports.csv_rows(since, until, guild_id=args.guild, user_id=args.user)
            out.write(to_csv(rows))
        else:
            await _print_spend(reports, args, since, until, out)
        if args.chart is not None:
            days = await reports.by_day(since, until, guild_id=args.guild, user_id=args.user)
            png = await asyncio.to_thread(charts.spend_per_day_png, days, since=since, until=until)
            try:
                await asyncio.to_thread(args.chart.write_bytes, png)
            except OSError as exc:
                raise ConfigError(f"Cannot write the chart to {args.chart} ({exc.strerror or exc}).") from None
            print(f"chart: {args.chart}", file=sys.stderr if args.csv else out)


async def _print_spend(reports: Reports, args: argparse.Namespace, since: dt.date, until: dt.date, out: TextIO) -> None:
    last = until - dt.timedelta(days=1)
    if args.user is not None:
        _print_user(await reports.user_summary(args.user, guild_id=args.guild or ""), out)
        print(file=out)
    where = f"server {_place(args.guild)}" if args.guild is not None else "all servers"
    who = f"user {args.user}, " if args.user is not None else ""
    print(f"Spent {since.isoformat()} to {last.isoformat()} (UTC days), {who}{where}:", file=out)
    total = await reports.totals(since, until, guild_id=args.guild, user_id=args.user)
    if total.jobs == 0:
        print("Nothing.", file=out)
        return
    models = await reports.by_model(since, until, guild_id=args.guild, user_id=args.user)
    _table(
        ("model", "spent", "jobs", "held"),
        [*(_spend_cells(m.model, m.spend) for m in models), _spend_cells("total", total)],
        out,
    )
    _spend_notes(total, out)
    if args.user is not None:
        return
    if args.guild is None:
        guilds = await reports.by_guild(since, until)
        print(file=out)
        _table(("server", "spent", "jobs", "held"), [_spend_cells(_place(g.guild_id), g.spend) for g in guilds], out)
    users = await reports.top_users(since, until, guild_id=args.guild)
    print(file=out)
    _table(("top users", "spent", "jobs", "held"), [_spend_cells(u.user_id, u.spend) for u in users], out)


async def _dispatch(settings: Settings, args: argparse.Namespace, out: TextIO) -> None:
    async with open_core(settings) as core:
        handler = {"imagine": _imagine, "edit": _edit, "vary": _vary, "outpaint": _outpaint}[args.command]
        await handler(core, args, out)


def main(argv: Sequence[str] | None = None, *, start_bot: BotStarter | None = None) -> int:
    """Entry point: run and turn expected errors into one line on stderr and an exit code."""
    try:
        return run(sys.argv[1:] if argv is None else argv, start_bot=start_bot)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except ProviderError as exc:
        print(f"error: {redact(exc.message)}", file=sys.stderr)
        return EXIT_PROVIDER
    except EaselError as exc:
        print(f"error: {redact(exc.message)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_PROVIDER
