"""Fit result images into Discord's upload limits with the fewest encodes.

Discord takes at most `max_files` attachments a message and `max_bytes` per attachment (read
`interaction.filesize_limit` at run time; 10 MiB by default). `fit_images` keeps the provider's bytes
whenever they already fit (no decode, no encode). Anything larger is decoded once and encoded once in a
format and quality chosen from a size estimate:

- opaque images become JPEG: libjpeg-turbo encodes a 1536x1024 photo in under 10 ms, where WebP takes
  5-15 times longer for a similar size;
- images with real transparency stay transparent: PNG when a lossless copy is estimated to fit (only
  possible when the source was neither PNG nor WebP), else lossy WebP with a lossless alpha plane.

The estimate encodes a mosaic of small tiles spread over the image (about 260 000 pixels, ~1 ms a probe
for JPEG) and scales the bytes per pixel up to the whole image; it lands within a few percent for
photos and errs on the large side for flat artwork. Quality goes down a ladder to a floor first;
only when even the floor is estimated too large is the image downscaled, by a factor derived from the
byte ratio. If the real encode still overshoots, the observed overshoot tightens the next attempt, so
every call ends with a file that fits. `fit_one` is the unit of work: pure, synchronous and picklable
in and out, for `bot.imaging.pool.ImageWorkers` to run in a process pool; `decode` and `fit_decoded`
are its two halves, so a worker can also cut a grid cell from the same decoded pixels. Metadata (EXIF,
text chunks) is dropped on re-encode; an ICC profile is kept.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.api.types import GeneratedImage
from bot.errors import ProviderUnavailable

DISCORD_MAX_BYTES = 10 * 1024 * 1024
"""Discord's default per-attachment upload limit (`discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES`)."""
DISCORD_MAX_FILES = 10
"""Discord's limit on attachments per message."""
MIN_MAX_BYTES = 4096
"""The smallest per-file limit `fit_images` accepts: below it even a thumbnail cannot be promised."""

Format = Literal["JPEG", "WEBP", "PNG"]

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
    "image/avif": "avif",
}
_MIMES: dict[Format, str] = {"JPEG": "image/jpeg", "WEBP": "image/webp", "PNG": "image/png"}

_QUALITIES = (92, 90, 87, 84, 80, 75, 70, 65, 60)
"""Quality ladder, best first. Below the last rung a smaller image looks better than more artefacts."""
_RESCALE_QUALITY = 80
"""The quality a downscale aims at; the ladder then settles the exact rung on the smaller image."""
_MARGIN = 0.9
"""Share of the limit the estimate may fill, so one encode fits despite estimation error."""
_WEBP_METHOD = 2
"""libwebp effort 0-6: 2 is as fast as 0 here and ~10% smaller; 3 and up cost 2-3x the time."""
_PNG_LEVEL = 6

_TILE = 32
_TILES = 16
"""A 16 x 16 mosaic of 32 px tiles: dense enough to catch text lines and flat areas (see module doc)."""
_MAX_ATTEMPTS = 12


@dataclass(frozen=True, slots=True)
class FittedFile:
    """One file ready to attach.

    `index` is the image's 0-based position in the input; the filename counts from 1 to match grid labels.
    `reencoded` is False when `data` is the provider's own bytes.
    """

    data: bytes
    mime: str
    filename: str
    width: int
    height: int
    reencoded: bool
    index: int

    def __repr__(self) -> str:
        state = "re-encoded" if self.reencoded else "original"
        size = f"{self.width}x{self.height}, {len(self.data)} bytes"
        return f"FittedFile({self.filename!r}, {self.mime}, {size}, {state})"


@dataclass(frozen=True, slots=True)
class FitResult:
    """The files to send, how many full-image encodes it took, and how many images the count limit left out."""

    files: tuple[FittedFile, ...]
    encodes: int
    omitted: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(len(f.data) for f in self.files)


def fits_as_is(image: GeneratedImage, max_bytes: int) -> bool:
    """True when the provider's bytes can be sent unchanged."""
    return len(image.data) <= max_bytes


def fit_images(
    images: Sequence[GeneratedImage],
    *,
    max_bytes: int = DISCORD_MAX_BYTES,
    max_files: int = DISCORD_MAX_FILES,
    stem: str = "easel",
) -> FitResult:
    """The first `max_files` images as files of at most `max_bytes` each, re-encoding only those that are too large.

    Images beyond `max_files` are counted in `FitResult.omitted`, never dropped silently. CPU-bound when
    anything needs re-encoding: call it through `ImageWorkers` or `asyncio.to_thread`, not on the event loop.
    """
    check_limits(max_bytes, max_files)
    kept = images[:max_files]
    files: list[FittedFile] = []
    encodes = 0
    for index, image in enumerate(kept):
        fitted, count = fit_one(image, max_bytes=max_bytes, index=index, stem=stem)
        files.append(fitted)
        encodes += count
    return FitResult(files=tuple(files), encodes=encodes, omitted=len(images) - len(kept))


def check_limits(max_bytes: int, max_files: int) -> None:
    """ValueError unless the limits leave room for at least one small file."""
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
    if max_files < 1:
        raise ValueError(f"max_files must be at least 1, got {max_files}")


def fit_one(
    image: GeneratedImage, *, max_bytes: int = DISCORD_MAX_BYTES, index: int = 0, stem: str = "easel"
) -> tuple[FittedFile, int]:
    """One image as a file of at most `max_bytes`, and the number of full encodes that took (0 when kept as is)."""
    if fits_as_is(image, max_bytes):
        name = f"{stem}_{index + 1}.{_EXTENSIONS.get(image.mime, 'bin')}"
        kept = FittedFile(image.data, image.mime, name, image.width, image.height, reencoded=False, index=index)
        return kept, 0
    return fit_decoded(decode(image.data), max_bytes=max_bytes, index=index, stem=stem)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A result's pixels ready to encode: RGB or L, or RGBA only when some pixel is not fully opaque."""

    picture: Image.Image
    source_format: str
    """Pillow's name for the format the bytes were in (PNG, JPEG, ...)."""
    icc: bytes
    """The ICC colour profile, kept on re-encode; empty when there is none."""


def decode(data: bytes) -> Decoded:
    """Decode result bytes for re-encoding, upright; ProviderUnavailable when Pillow cannot read them."""
    try:
        # No `with`: closing would free the pixels, and a BytesIO holds no OS resource.
        opened = Image.open(io.BytesIO(data))
        source_format = opened.format or ""
        icc = opened.info.get("icc_profile") or b""
        opened.load()
        ImageOps.exif_transpose(opened, in_place=True)
        picture = _normalise(opened)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise ProviderUnavailable("A result image is too large to upload and could not be re-encoded.") from None
    return Decoded(picture, source_format, icc if isinstance(icc, bytes) else b"")


def fit_decoded(
    decoded: Decoded, *, max_bytes: int = DISCORD_MAX_BYTES, index: int = 0, stem: str = "easel"
) -> tuple[FittedFile, int]:
    """Encode `decoded` to at most `max_bytes`, usually in one go, and say how many encodes it took."""
    check_limits(max_bytes, 1)
    picture = decoded.picture
    alpha = picture.mode == "RGBA"
    target = int(max_bytes * _MARGIN) - len(decoded.icc)
    for encodes in range(1, _MAX_ATTEMPTS + 1):
        scaled, fmt, quality = _plan(picture, target=target, alpha=alpha, source_format=decoded.source_format)
        data = _encode(scaled, fmt, quality, decoded.icc)
        if len(data) <= max_bytes:
            name = f"{stem}_{index + 1}.{_EXTENSIONS[_MIMES[fmt]]}"
            fitted = FittedFile(data, _MIMES[fmt], name, scaled.width, scaled.height, reencoded=True, index=index)
            return fitted, encodes
        # The estimate missed: shrink the target by the observed overshoot (and a bit) and plan again.
        target = int(target * max_bytes / len(data) * _MARGIN)
    raise ProviderUnavailable("A result image could not be made small enough to upload.")


def _normalise(image: Image.Image) -> Image.Image:
    """`image` in a mode every target format takes; alpha survives only when it is really used."""
    may_have_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if may_have_alpha:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        lowest = rgba.getchannel("A").getextrema()[0]
        if isinstance(lowest, (int, float)) and lowest < 255:
            return rgba
        return rgba.convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")


def _plan(picture: Image.Image, *, target: int, alpha: bool, source_format: str) -> tuple[Image.Image, Format, int]:
    """The picture (downscaled if it must be), format and quality whose estimated size is at most `target`."""
    # Lossless PNG can only fit where the source's own encoding was wasteful (TIFF, BMP, ...): a PNG or
    # WebP that is over the limit would be over it again.
    if alpha and source_format not in ("PNG", "WEBP"):
        sample, ratio = _sample(picture)
        if _estimate(sample, ratio, "PNG", 0) <= target:
            return picture, "PNG", 0
    fmt: Format = "WEBP" if alpha else "JPEG"
    current = picture
    for _ in range(_MAX_ATTEMPTS):
        sample, ratio = _sample(current)
        quality = _best_quality(sample, ratio, fmt, target)
        if quality is not None:
            return current, fmt, quality
        # Bytes fall more slowly than pixels (detail gets denser), so aim at a mid rung, not the floor.
        estimate = _estimate(sample, ratio, fmt, _RESCALE_QUALITY)
        scale = math.sqrt(target / estimate) * (current.width / picture.width)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        if size == current.size:
            size = (max(1, current.width * 3 // 4), max(1, current.height * 3 // 4))
        current = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return current, fmt, _QUALITIES[-1]


def _best_quality(sample: Image.Image, ratio: float, fmt: Format, target: int) -> int | None:
    """The best ladder quality whose estimate fits `target` (binary search); None when even the floor is too big."""
    if _estimate(sample, ratio, fmt, _QUALITIES[0]) <= target:
        return _QUALITIES[0]
    low, high = 1, len(_QUALITIES) - 1  # search the rungs after the first, which is known not to fit
    best: int | None = None
    while low <= high:
        middle = (low + high) // 2
        if _estimate(sample, ratio, fmt, _QUALITIES[middle]) <= target:
            best = _QUALITIES[middle]
            high = middle - 1
        else:
            low = middle + 1
    return best


def _sample(picture: Image.Image) -> tuple[Image.Image, float]:
    """A mosaic of tiles spread over `picture` and the pixel ratio to scale by; a small picture is its own sample."""
    width, height = picture.size
    side = _TILES * _TILE
    if width * height <= 2 * side * side or width < 2 * _TILE or height < 2 * _TILE:
        return picture, 1.0
    mosaic = Image.new(picture.mode, (side, side))
    for row in range(_TILES):
        for column in range(_TILES):
            # Alternate rows shift by half a step so tiles do not line up with periodic structure; the
            # 16 px alignment keeps JPEG and WebP blocks whole.
            x = int((width - _TILE) * (column + (row % 2) / 2) / _TILES) // 16 * 16
            y = (height - _TILE) * row // (_TILES - 1) // 16 * 16
            mosaic.paste(picture.crop((x, y, x + _TILE, y + _TILE)), (column * _TILE, row * _TILE))
    return mosaic, (width * height) / (side * side)


def _estimate(sample: Image.Image, ratio: float, fmt: Format, quality: int) -> float:
    return len(_encode(sample, fmt, quality, b"")) * ratio


def _encode(picture: Image.Image, fmt: Format, quality: int, icc: bytes) -> bytes:
    out = io.BytesIO()
    extra: dict[str, object] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        picture.save(out, "JPEG", quality=quality, **extra)
    elif fmt == "WEBP":
        picture.save(out, "WEBP", quality=quality, method=_WEBP_METHOD, **extra)
    else:
        picture.save(out, "PNG", compress_level=_PNG_LEVEL, **extra)
    return out.getvalue()
