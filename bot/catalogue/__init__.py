"""The model catalogue: every image model's rules, prices and lifecycle, loaded from TOML data.

`models.toml` beside this file ships the known models; an admin's file (EASEL_CATALOGUE_FILE) may add
models or override fields of shipped ones. An entry may `extends` another and change only what it lists.
Code asks the catalogue, never hard-codes a model name.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from bot.errors import ConfigError, ModelUnavailable, quoted

Endpoint = Literal["generate", "edit", "variations"]
Status = Literal["active", "deprecated", "shutdown"]

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$", re.ASCII)  # ASCII digits only: "１５３６x１０２４" is no size
_ENDPOINTS = frozenset({"generate", "edit", "variations"})


def parse_size(size: str) -> tuple[int, int] | None:
    """`"1024x1536"` → (1024, 1536); anything else (including "auto") → None."""
    match = _SIZE.match(size.strip().lower())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True, slots=True)
class SizeRule:
    """Free-form sizes: both edges multiples of `multiple_of`, within aspect, edge and pixel limits."""

    multiple_of: int = 1
    max_aspect: float = 1.0
    max_edge: int = 1024
    min_pixels: int = 0
    max_pixels: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.multiple_of < 1:
            raise ValueError("size_rule.multiple_of must be at least 1")
        if self.max_aspect < 1:
            raise ValueError("size_rule.max_aspect must be at least 1 (it bounds longer side / shorter side)")
        if self.max_edge < self.multiple_of:
            raise ValueError("size_rule.max_edge must be at least multiple_of")
        if not 0 <= self.min_pixels <= self.max_pixels:
            raise ValueError("size_rule needs 0 <= min_pixels <= max_pixels")

    def problems(self, width: int, height: int) -> list[str]:
        """Why `width`x`height` breaks the rule; empty when it is allowed."""
        found: list[str] = []
        if width % self.multiple_of or height % self.multiple_of:
            found.append(f"both sides must be multiples of {self.multiple_of}")
        if max(width, height) > self.max_edge:
            found.append(f"the longer side may be at most {self.max_edge}")
        if min(width, height) <= 0 or max(width, height) / min(width, height) > self.max_aspect + 1e-9:
            found.append(f"the aspect ratio must be between 1:{self.max_aspect:g} and {self.max_aspect:g}:1")
        pixels = width * height
        if pixels > self.max_pixels:
            found.append(f"at most {self.max_pixels:,} pixels in all")
        if pixels < self.min_pixels:
            found.append(f"at least {self.min_pixels:,} pixels in all")
        return found

    def nearest(self, width: int, height: int) -> tuple[int, int]:
        """The allowed size closest to `width`x`height`, keeping its orientation (landscape stays landscape or square).

        The shape is first brought within the aspect limit and scaled into the edge and pixel limits; then the grid
        of multiples around that target is searched for the closest size the rule allows.
        """
        width, height = max(width, 1), max(height, 1)
        w, h = float(width), float(height)
        if w / h > self.max_aspect:
            h = w / self.max_aspect
        elif h / w > self.max_aspect:
            w = h / self.max_aspect
        scale = min(1.0, self.max_edge / max(w, h), (self.max_pixels / (w * h)) ** 0.5)
        if w * h * scale * scale < self.min_pixels:
            scale = (self.min_pixels / (w * h)) ** 0.5
        w, h = w * scale, h * scale
        m = self.multiple_of
        cw, ch = round(w / m), round(h / m)
        # Rounding to the grid can break a limit at the edge of the allowed region; widen the search until it fits.
        for radius in (3, 12, 48, 192):
            best: tuple[float, int, int] | None = None
            for i in range(max(1, cw - radius), cw + radius + 1):
                for j in range(max(1, ch - radius), ch + radius + 1):
                    bw, bh = i * m, j * m
                    if (width > height and bw < bh) or (width < height and bw > bh) or self.problems(bw, bh):
                        continue
                    cost = (bw - w) ** 2 + (bh - h) ** 2
                    if best is None or cost < best[0]:
                        best = (cost, bw, bh)
            if best is not None:
                return best[1], best[2]
        raise ValueError(f"no size near {width}x{height} satisfies {self}")


@dataclass(frozen=True, slots=True)
class EditLimits:
    """What the edit endpoint takes as input."""

    max_images: int = 1
    max_bytes: int = 4 * 1024 * 1024
    formats: tuple[str, ...] = ("png",)
    square_only: bool = True
    mask: bool = True
    max_edge: int | None = None
    """The longest input side worth sending; larger inputs are scaled down first. None: no limit."""
    max_pixels: int | None = None
    """The most input pixels worth sending; larger inputs are scaled down first. None: no limit."""

    def __post_init__(self) -> None:
        if self.max_edge is not None and self.max_edge < 1:
            raise ValueError("edit.max_edge must be at least 1")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError("edit.max_pixels must be at least 1")


@dataclass(frozen=True, slots=True)
class Prices:
    """Price rows in US dollars. Token prices are per 1M tokens; `per_image[quality][size]` per image."""

    unit: Literal["image", "tokens"] = "image"
    text_in: float = 0.0
    cached_text_in: float = 0.0
    image_in: float = 0.0
    cached_image_in: float = 0.0
    image_out: float = 0.0
    per_image: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    output_tokens: Mapping[str, int] = field(default_factory=dict)
    """Expected output tokens of one 1024x1024 image per quality, for token-priced estimates."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model's rules, as the catalogue describes it."""

    name: str
    label: str
    family: str
    endpoints: frozenset[str]
    sizes: tuple[str, ...]
    default_size: str
    qualities: tuple[str, ...]
    default_quality: str
    prompt_max: int
    n_max: int = 1
    aliases: tuple[str, ...] = ()
    size_rule: SizeRule | None = None
    styles: tuple[str, ...] = ()
    default_style: str | None = None
    output_formats: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    moderation: tuple[str, ...] = ()
    input_fidelity: tuple[str, ...] = ()
    complexity: tuple[str, ...] = ()
    default_complexity: str | None = None
    streaming: bool = False
    partial_images_max: int = 0
    response_format: bool = False
    """True for models that answer with URLs unless asked for `response_format=b64_json`."""
    edit: EditLimits | None = None
    prices: Prices = field(default_factory=Prices)
    released: dt.date | None = None
    deprecated: dt.date | None = None
    shutdown: dt.date | None = None
    replacement: str | None = None
    thread_version_code: str | None = None

    def status(self, today: dt.date) -> Status:
        """Lifecycle on `today` (UTC) at OpenAI."""
        if self.shutdown is not None and today >= self.shutdown:
            return "shutdown"
        if self.deprecated is not None:
            return "deprecated" if today >= self.deprecated else "active"
        # A shutdown on the calendar without a deprecation date: deprecated until then.
        return "deprecated" if self.shutdown is not None else "active"

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in self.endpoints

    def can_vary(self) -> bool:
        """Variations either through the endpoint or emulated through edit."""
        return self.supports("variations") or self.supports("edit")

    def size_allowed(self, size: str) -> bool:
        if size in self.sizes:
            return True
        parsed = parse_size(size)
        return parsed is not None and self.size_rule is not None and not self.size_rule.problems(*parsed)


_FIELDS = {
    "label",
    "family",
    "aliases",
    "released",
    "deprecated",
    "shutdown",
    "replacement",
    "endpoints",
    "sizes",
    "size_rule",
    "default_size",
    "qualities",
    "default_quality",
    "styles",
    "default_style",
    "n_max",
    "prompt_max",
    "output_formats",
    "backgrounds",
    "moderation",
    "input_fidelity",
    "complexity",
    "default_complexity",
    "streaming",
    "partial_images_max",
    "response_format",
    "edit",
    "prices",
    "output_tokens",
    "per_image",
    "thread_version_code",
    "extends",
}
_REQUIRED = ("family", "endpoints", "sizes", "default_size", "qualities", "default_quality", "prompt_max")


def _date(value: Any, where: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a date like 2026-12-01, got {value!r}")


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    """A true/false field: TOML's booleans only ("false" in quotes would read as true)."""
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return tuple(value)


def _amount(value: Any) -> bool:
    """A price or token count: a finite, non-negative TOML number."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf")


def _prices(raw: Mapping[str, Any], where: str) -> Prices:
    rows = raw.get("prices", {})
    if not isinstance(rows, dict):
        raise ConfigError(f'{where}.prices: expected a table like {{ unit = "tokens", text_in = 5.0 }}')
    if rows.get("unit", "image") not in ("image", "tokens"):
        raise ConfigError(f'{where}.prices.unit: expected "image" or "tokens", got {rows["unit"]!r}')
    for key, value in rows.items():
        if key != "unit" and not _amount(value):
            raise ConfigError(f"{where}.prices.{key}: expected dollars as a non-negative number, got {value!r}")
    per_image = raw.get("per_image", {})
    if not isinstance(per_image, dict) or not all(
        isinstance(row, dict) and all(_amount(v) for v in row.values()) for row in per_image.values()
    ):
        raise ConfigError(f'{where}.per_image: expected {{ quality = {{ "WxH" = dollars, ... }}, ... }}')
    output_tokens = raw.get("output_tokens", {})
    if not isinstance(output_tokens, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in output_tokens.values()
    ):
        raise ConfigError(f"{where}.output_tokens: expected {{ quality = whole number of tokens, ... }}")
    return Prices(**rows, per_image=per_image, output_tokens=output_tokens)


def _build(name: str, raw: Mapping[str, Any], source: str) -> ModelSpec:
    where = f"{source}: model {name!r}"
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(unknown)}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{where} is missing {', '.join(missing)}")
    try:
        endpoints = frozenset(_strs(raw["endpoints"], f"{where}.endpoints"))
        if not endpoints <= _ENDPOINTS:
            raise ConfigError(f"{where}.endpoints: only generate, edit and variations exist")
        rule = SizeRule(**raw["size_rule"]) if raw.get("size_rule") else None
        edit_raw = raw.get("edit")
        edit = None
        if edit_raw is not None and not isinstance(edit_raw, dict):
            raise ConfigError(f"{where}.edit: expected a table such as {{ max_images = 1, mask = true }}")
        if edit_raw:
            edit = EditLimits(
                max_images=int(edit_raw.get("max_images", 1)),
                max_bytes=int(edit_raw.get("max_bytes", 4 * 1024 * 1024)),
                formats=_strs(edit_raw.get("formats", ["png"]), f"{where}.edit.formats"),
                square_only=_flag(edit_raw, "square_only", True, f"{where}.edit"),
                mask=_flag(edit_raw, "mask", True, f"{where}.edit"),
                max_edge=None if edit_raw.get("max_edge") is None else int(edit_raw["max_edge"]),
                max_pixels=None if edit_raw.get("max_pixels") is None else int(edit_raw["max_pixels"]),
            )
        prices = _prices(raw, where)
        spec = ModelSpec(
            name=name,
            label=str(raw.get("label", name)),
            family=str(raw["family"]),
            endpoints=endpoints,
            aliases=_strs(raw.get("aliases", []), f"{where}.aliases"),
            sizes=_strs(raw["sizes"], f"{where}.sizes"),
            size_rule=rule,
            default_size=str(raw["default_size"]),
            qualities=_strs(raw["qualities"], f"{where}.qualities"),
            default_quality=str(raw["default_quality"]),
            styles=_strs(raw.get("styles", []), f"{where}.styles"),
            default_style=raw.get("default_style") or None,
            n_max=int(raw.get("n_max", 1)),
            prompt_max=int(raw["prompt_max"]),
            output_formats=_strs(raw.get("output_formats", []), f"{where}.output_formats"),
            backgrounds=_strs(raw.get("backgrounds", []), f"{where}.backgrounds"),
            moderation=_strs(raw.get("moderation", []), f"{where}.moderation"),
            input_fidelity=_strs(raw.get("input_fidelity", []), f"{where}.input_fidelity"),
            complexity=_strs(raw.get("complexity", []), f"{where}.complexity"),
            default_complexity=raw.get("default_complexity") or None,
            streaming=_flag(raw, "streaming", False, where),
            partial_images_max=int(raw.get("partial_images_max", 0)),
            response_format=_flag(raw, "response_format", False, where),
            edit=edit,
            prices=prices,
            released=_date(raw.get("released"), f"{where}.released"),
            deprecated=_date(raw.get("deprecated"), f"{where}.deprecated"),
            shutdown=_date(raw.get("shutdown"), f"{where}.shutdown"),
            replacement=raw.get("replacement") or None,
            thread_version_code=raw.get("thread_version_code") or None,
        )
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} is malformed: {exc}") from None
    if spec.default_quality not in spec.qualities:
        raise ConfigError(f"{where}: default_quality {spec.default_quality!r} is not among its qualities")
    if not spec.size_allowed(spec.default_size):
        raise ConfigError(f"{where}: default_size {spec.default_size!r} is not among its sizes")
    if "edit" in spec.endpoints and spec.edit is None:
        raise ConfigError(f"{where}: lists the edit endpoint but has no [edit] limits")
    return spec


def _own_prices(table: Mapping[str, Any]) -> frozenset[str]:
    """The fields an entry that sets `prices` (and no `per_image`) does not take from what it changes."""
    return frozenset({"per_image"}) if "prices" in table and "per_image" not in table else frozenset()


def _resolve(raw: Mapping[str, Mapping[str, Any]], source: str) -> dict[str, dict[str, Any]]:
    """Expand `extends` chains into flat tables."""
    done: dict[str, dict[str, Any]] = {}

    def flat(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in done:
            return done[name]
        if name in seen:
            cycle = " -> ".join((*seen[seen.index(name) :], name))
            raise ConfigError(f"{source}: model {name!r} extends itself ({cycle})")
        table = dict(raw[name])
        parent = table.pop("extends", None)
        if parent is not None:
            if not isinstance(parent, str):
                raise ConfigError(f"{source}: model {name!r}: extends must be a model name, got {parent!r}")
            if parent not in raw:
                raise ConfigError(f"{source}: model {name!r} extends unknown model {parent!r}")
            # Aliases name one model each, so they are not inherited; nor are per-image prices by an entry
            # with prices of its own (they would take precedence over them).
            skipped = {"aliases", *_own_prices(table)}
            inherited = {k: v for k, v in flat(parent, (*seen, name)).items() if k not in skipped}
            table = {**inherited, **table}
        done[name] = table
        return table

    for name in raw:
        flat(name, ())
    return done


class Catalogue:
    """The models Easel knows, by name and alias."""

    def __init__(self, specs: Mapping[str, ModelSpec]) -> None:
        self._specs = dict(specs)
        self._names: dict[str, str] = {}
        for spec in self._specs.values():
            self._names[spec.name.lower()] = spec.name
            for alias in spec.aliases:
                self._names.setdefault(alias.lower(), spec.name)

    @classmethod
    def load(cls, override: Path | None = None) -> Catalogue:
        """The shipped catalogue, with the admin's file (if any) merged over it."""
        text = resources.files("bot.catalogue").joinpath("models.toml").read_text(encoding="utf-8")
        shipped = tomllib.loads(text).get("models", {})
        merged: dict[str, dict[str, Any]] = {name: dict(table) for name, table in shipped.items()}
        source = "models.toml"
        if override is not None:
            source = str(override)
            try:
                document = tomllib.loads(override.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(
                    f"EASEL_CATALOGUE_FILE: cannot read {override} ({exc.strerror})", variable="EASEL_CATALOGUE_FILE"
                ) from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(
                    f"EASEL_CATALOGUE_FILE: {override} is not valid TOML ({exc})", variable="EASEL_CATALOGUE_FILE"
                ) from None
            stray = sorted(set(document) - {"models"})
            if stray:
                raise ConfigError(
                    f"EASEL_CATALOGUE_FILE: {override} has unknown top-level key(s) {', '.join(stray)}; "
                    'models go in [models."name"] tables',
                    variable="EASEL_CATALOGUE_FILE",
                )
            extra = document.get("models", {})
            if not isinstance(extra, dict):
                raise ConfigError(
                    f'EASEL_CATALOGUE_FILE: {override}: models must be tables like [models."name"]',
                    variable="EASEL_CATALOGUE_FILE",
                )
            for name, table in extra.items():
                if not isinstance(table, dict):
                    raise ConfigError(f'{override}: [models."{name}"] must be a table')
                # An override of a shipped model changes only the fields it lists (its own prices replace
                # the per-image ones too, which would otherwise take precedence over them).
                base = merged.get(name, {}) if "extends" not in table else {}
                base = {k: v for k, v in base.items() if k not in _own_prices(table)}
                merged[name] = {**base, **table}
        flat = _resolve(merged, source)
        catalogue = cls({name: _build(name, table, source) for name, table in flat.items()})
        for spec in catalogue:
            if spec.replacement is not None and spec.replacement not in catalogue:
                raise ConfigError(f"{source}: model {spec.name!r} names unknown replacement {spec.replacement!r}")
        return catalogue

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def find(self, name: str) -> ModelSpec | None:
        key = self._names.get(name.strip().lower())
        return None if key is None else self._specs[key]

    def get(self, name: str) -> ModelSpec:
        """The model called `name` (or one of its aliases); ModelUnavailable when unknown."""
        spec = self.find(name)
        if spec is None:
            known = ", ".join(s.name for s in self)
            raise ModelUnavailable(f"There is no model called {quoted(name)}; choose one of: {known}.", model=name)
        return spec

    def active(self, today: dt.date) -> list[ModelSpec]:
        """Models not shut down on `today`, newest first."""
        alive = [s for s in self if s.status(today) != "shutdown"]
        return sorted(alive, key=lambda s: s.released or dt.date.min, reverse=True)
