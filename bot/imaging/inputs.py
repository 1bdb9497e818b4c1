"""Uploads made ready for edit and vary: any common image in, what the model accepts out, or a `BadImage`.

`load` is the shared safe loader (the masks code uses it too): it refuses empty files, files over the upload
cap, things that are not images, decompression bombs (from the header, before a pixel is decoded) and
truncated or corrupt files; it takes the first frame of animations, turns the image upright from its EXIF
orientation and converts every mode to RGB or RGBA, keeping transparency.

`prepare` applies one model's `InputRules` on top: square only (pad with transparency or crop the centre),
the largest edge and pixel count worth sending, the accepted formats and the byte limit. It does the least
work that satisfies them: an upload that already fits is passed on untouched with no encode at all, a large
JPEG is decoded at a reduced scale when it will be scaled down anyway, and an image that is too large is
scaled down once, just enough.

Everything here is synchronous and CPU-bound; callers run it with `asyncio.to_thread`.
"""

from __future__ import annotations

import io
import math
import struct
import threading
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

from bot.api.types import InputImage
from bot.catalogue import ModelSpec
from bot.errors import BadImage

DEFAULT_UPLOAD_CAP = 25 * 1024 * 1024
"""Uploads larger than this many bytes are refused before they are even opened."""

DEFAULT_PIXEL_CAP = 40_000_000
"""Images whose header promises more pixels than this are refused before decoding (decompression bombs)."""

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""The byte limit assumed for a model whose catalogue entry has no edit limits (GPT image models take 50 MB)."""

SquareMode = Literal["pad", "crop"]

# Pillow format name -> Easel's name. Restricting Image.open to these keeps exotic decoders (EPS runs
# Ghostscript, for one) away from untrusted uploads.
_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
# JPEG's opener returns an MPO image itself when the file has several pictures (phone cameras).
_OPEN_FORMATS = tuple(name for name in _FORMATS if name != "MPO")
_NAMES = {**_FORMATS, "HEIF": "heic"}
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})
_ANIMATED_FORMATS = frozenset({"gif", "png", "webp"})

_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_ENCODABLE = tuple(_MIME)
_JPEG_QUALITY = 90
_WEBP_QUALITY = 90
# Level 3 is within a few percent of level 6's size at a third of its time on photos.
_PNG_LEVEL = 3
# Below the byte limit with some room: encoded size does not shrink exactly with the pixel count.
_BYTES_MARGIN = 0.9
_REDUCING_GAP = 3.0

# EXIF orientation -> the transpose that makes the image upright (the same table as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112

# What Pillow's decoders raise on malformed input besides OSError (which includes UnidentifiedImageError).
_DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError)
_EXIF_ERRORS: tuple[type[Exception], ...] = (*_DECODE_ERRORS, KeyError, TypeError)

_heif_lock = threading.Lock()
_heif_available: bool | None = None


def _heif_ready() -> bool:
    """Register pillow-heif's HEIC opener once, on first need; False when the package is not installed."""
    global _heif_available
    with _heif_lock:
        if _heif_available is None:
            try:
                import pillow_heif
            except ImportError:
                _heif_available = False
            else:
                pillow_heif.register_heif_opener()
                _heif_available = True
        return _heif_available


def open_formats(data: bytes) -> tuple[str, ...]:
    """The Pillow formats an upload may be opened as (`Image.open(..., formats=)`): the ones Easel takes, or
    HEIF for an HEIC file (its opener registered first), so no exotic decoder ever sees an upload."""
    if not _looks_heif(data):
        return _OPEN_FORMATS
    if not _heif_ready():
        raise BadImage("HEIC images need the pillow-heif package; upload a PNG or JPEG instead.")
    return ("HEIF",)


def _looks_heif(data: bytes) -> bool:
    """True when `data` starts like an HEIF/HEIC file (an ISO-BMFF `ftyp` box with a HEIF brand)."""
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


@dataclass(frozen=True, slots=True)
class InputRules:
    """What one model takes as an input image.

    `formats` are the encodings the API accepts (png, jpeg, webp); `max_bytes` the file size limit;
    `max_edge` and `max_pixels` the largest image worth sending (larger ones are scaled down).
    """

    formats: tuple[str, ...] = ("png", "jpeg", "webp")
    max_bytes: int = DEFAULT_MAX_BYTES
    square_only: bool = False
    max_edge: int | None = None
    max_pixels: int | None = None
    rgba: bool = False
    """Send an alpha channel even when the image is opaque: DALL·E 2's edit endpoint refuses RGB PNGs."""

    def __post_init__(self) -> None:
        formats = tuple("jpeg" if f.lower() == "jpg" else f.lower() for f in self.formats)
        object.__setattr__(self, "formats", formats)
        if not set(formats) & set(_ENCODABLE):
            raise ValueError(f"input formats {formats} include none of png, jpeg or webp")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self.max_edge is not None and self.max_edge < 1:
            raise ValueError("max_edge must be at least 1")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError("max_pixels must be at least 1")

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> InputRules:
        """The rules from the model's edit limits; a model without them gets permissive GPT-style rules."""
        limits = spec.edit
        if limits is None:
            return cls()
        return cls(
            formats=limits.formats,
            max_bytes=limits.max_bytes,
            square_only=limits.square_only,
            max_edge=limits.max_edge,
            max_pixels=limits.max_pixels,
            # The PNG-only models are the DALL·E 2 style ones, whose edit endpoint wants RGBA, LA or L.
            rgba=tuple(f.lower() for f in limits.formats) == ("png",),
        )


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """What `load` learnt from the upload's header.

    `width` and `height` are upright (after the EXIF orientation); `mode` is Pillow's mode as stored;
    `notes` are plain sentences for the user (e.g. that an animation's first frame was used).
    """

    format: str
    width: int
    height: int
    mode: str
    orientation: int = 1
    animated: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An input image ready to upload, with plain-sentence `notes` about anything done to it."""

    data: bytes
    mime: str
    width: int
    height: int
    has_alpha: bool
    """True when some pixel is not fully opaque."""
    notes: tuple[str, ...]
    original_format: str

    @property
    def format(self) -> str:
        """The encoding of `data`: png, jpeg or webp."""
        return self.mime.removeprefix("image/")

    def as_input(self, filename_stem: str = "image") -> InputImage:
        """The image as an upload for the API, named `<filename_stem>.<extension>`."""
        return InputImage(self.data, filename=f"{filename_stem}.{_EXTENSION[self.format]}", mime=self.mime)

    def __repr__(self) -> str:
        return f"PreparedImage({self.mime}, {self.width}x{self.height}, {len(self.data)} bytes, notes={self.notes})"


def _amount(size: int, *, limit: bool = False) -> str:
    """`size` bytes for people: "4 MB", "30.2 MB", "12 KB"; sizes round up and limits down, so no excess reads as 0."""
    if size < 1024:
        return f"{size} bytes"
    unit, name = (1_048_576, "MB") if size >= 1_048_576 else (1024, "KB")
    tenths = size * 10 / unit
    tenths = math.floor(tenths) if limit else math.ceil(tenths)
    return f"{tenths / 10:.1f}".removesuffix(".0") + f" {name}"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) without decoding pixels; 1 when absent or unreadable."""
    # A PNG's eXIf chunk after the pixel data would make Pillow decode the whole image to find it;
    # such chunks are rare and ignored.
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _EXIF_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _animation(image: Image.Image, fmt: str, what: str) -> tuple[bool, tuple[str, ...]]:
    """Whether the image has more frames or pages than the one used, and the note that says so."""
    try:
        if fmt in _ANIMATED_FORMATS and getattr(image, "is_animated", False):
            return True, (f"The {fmt.upper()} is animated; its first frame was used.",)
        pages = int(getattr(image, "n_frames", 1)) if fmt == "tiff" else 1
    except _DECODE_ERRORS:
        # A broken later frame does not matter: only the first one is used.
        return False, ()
    if pages > 1:
        return True, (f"The TIFF has {pages} pages; the first page was used as the {what}.",)
    return False, ()


def _open(data: bytes, *, upload_cap: int, pixel_cap: int, what: str) -> tuple[Image.Image, LoadInfo]:
    """Open `data` and read its header, refusing what must not be decoded. No pixel is decoded."""
    if not data:
        raise BadImage(f"The {what} is empty (0 bytes): upload the image file again.")
    if len(data) > upload_cap:
        raise BadImage(
            f"The {what} is {_amount(len(data))}, over the {_amount(upload_cap, limit=True)} upload limit: "
            "upload a smaller file."
        )
    try:
        image = Image.open(io.BytesIO(data), formats=open_formats(data))
    except UnidentifiedImageError:
        raise BadImage(
            f"The {what} is not an image Easel can read: upload a PNG, JPEG, WEBP, GIF, BMP, TIFF or HEIC file."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard, for headers far beyond ours; it warns (an error under pytest) before it refuses.
        raise BadImage(
            f"The {what} has more than {pixel_cap:,} pixels, too many to open safely: upload a smaller image."
        ) from None
    except _DECODE_ERRORS:
        raise BadImage(f"The {what} is damaged and cannot be read: upload the original file again.") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"The {what} is damaged and cannot be read: upload the original file again.")
    if width * height > pixel_cap:
        raise BadImage(
            f"The {what} is {width}x{height}, more than the {pixel_cap:,} pixels Easel will open: "
            "upload a smaller image."
        )
    fmt = _NAMES[image.format or ""]
    orientation = _orientation(image)
    if orientation >= 5:
        width, height = height, width
    animated, notes = _animation(image, fmt, what)
    info = LoadInfo(fmt, width, height, image.mode, orientation, animated, notes)
    return image, info


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit "L", scaled rather than clipped to white."""
    if image.mode.startswith("I;16"):
        # Pillow's own I;16 -> L conversion clips every value above 255 to white.
        image = image.convert("I")
        low, high = 0.0, 65535.0
    else:
        low, high = _extrema(image)
        if image.mode == "I" and low >= 0 and high <= 255:
            return image.convert("L")
        if image.mode == "I" and low >= 0 and high <= 65535:
            low, high = 0.0, 65535.0
        elif image.mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
    scale = 255 / (high - low) if high > low else 0.0
    offset = -low * scale
    return image.point(lambda value: value * scale + offset).convert("L")


def _extrema(image: Image.Image) -> tuple[float, float]:
    """The lowest and highest value of a one-band image."""
    low, high = image.getextrema()
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        raise TypeError(f"expected a one-band image, got {image.mode}")
    return float(low), float(high)


def _normalise(image: Image.Image) -> Image.Image:
    """`image` in RGB, or RGBA when it has any kind of transparency."""
    transparency = "transparency" in image.info
    if image.mode == "RGBA" or (image.mode == "RGB" and not transparency):
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _to_8bit(image).convert("RGB")
    if image.mode == "La":
        image = image.convert("LA")
    alpha = transparency or image.mode in ("LA", "PA", "RGBa")
    return image.convert("RGBA" if alpha else "RGB")


def _decode(image: Image.Image, info: LoadInfo, *, what: str, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode the pixels of an opened image (at a reduced JPEG scale when `draft` asks), upright, RGB or RGBA."""
    try:
        if draft is not None and info.format == "jpeg":
            # Lets libjpeg decode at 1/2, 1/4 or 1/8 scale, never below `draft` in either side.
            image.draft(None, draft)
        image.load()
    except _DECODE_ERRORS:
        raise BadImage(
            f"The {what} is damaged or incomplete and cannot be read: upload the original file again."
        ) from None
    if info.orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[info.orientation])
    try:
        return _normalise(image)
    except ValueError:
        raise BadImage(
            f"The {what} uses a colour format Easel cannot convert ({info.mode}): save it as PNG or JPEG and retry."
        ) from None


def load(
    data: bytes,
    *,
    upload_cap: int = DEFAULT_UPLOAD_CAP,
    pixel_cap: int = DEFAULT_PIXEL_CAP,
    what: str = "image",
) -> tuple[Image.Image, LoadInfo]:
    """The upload decoded safely: upright, RGB or RGBA, the first frame of an animation.

    Raises `BadImage` (naming the upload as `what`, e.g. "mask") for empty files, files over `upload_cap`
    bytes, non-images, headers over `pixel_cap` pixels (checked before decoding) and damaged files.
    """
    image, info = _open(data, upload_cap=upload_cap, pixel_cap=pixel_cap, what=what)
    return _decode(image, info, what=what), info


def image_info(
    data: bytes,
    *,
    upload_cap: int = DEFAULT_UPLOAD_CAP,
    pixel_cap: int = DEFAULT_PIXEL_CAP,
    what: str = "image",
) -> tuple[str, int, int]:
    """Format, upright width and height from the header alone; the same refusals as `load` short of decoding."""
    _, info = _open(data, upload_cap=upload_cap, pixel_cap=pixel_cap, what=what)
    return info.format, info.width, info.height


def _fit(width: int, height: int, max_edge: int | None, max_pixels: int | None) -> tuple[int, int]:
    """The largest size of `width`x`height`'s shape within `max_edge` and `max_pixels`; a square stays square."""
    scale = 1.0
    if max_edge is not None:
        scale = min(scale, max_edge / max(width, height))
    if max_pixels is not None:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if scale >= 1:
        return width, height
    w = max(1, min(width, math.floor(width * scale + 1e-6)))
    h = max(1, min(height, math.floor(height * scale + 1e-6)))
    # The small tolerance above can leave a side one pixel over a limit.
    while (max_edge is not None and max(w, h) > max_edge) or (max_pixels is not None and w * h > max_pixels):
        if w == h:
            w, h = max(1, w - 1), max(1, h - 1)
        elif w > h:
            w -= 1
        else:
            h -= 1
        if w == h == 1:
            break
    return w, h


def _has_alpha(image: Image.Image) -> bool:
    """True when some pixel is not fully opaque."""
    return image.mode == "RGBA" and _extrema(image.getchannel("A"))[0] < 255


def _output_format(rules: InputRules, alpha: bool) -> str:
    """The encoding to send: PNG (or WEBP) for transparency, otherwise JPEG when the model takes it."""
    order = ("png", "webp", "jpeg") if alpha or rules.rgba else ("jpeg", "png", "webp")
    return next(f for f in order if f in rules.formats)


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, format="JPEG", quality=_JPEG_QUALITY)
    elif fmt == "webp":
        image.save(out, format="WEBP", quality=_WEBP_QUALITY)
    else:
        image.save(out, format="PNG", compress_level=_PNG_LEVEL)
    return out.getvalue()


def _resize(image: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)


def _square(
    image: Image.Image, target: tuple[int, int], upright: tuple[int, int], canvas: tuple[int, int], square: SquareMode
) -> Image.Image:
    """`image` made square at `target` size: centred on a transparent canvas (pad) or its centre (crop).

    `upright` is the image's full-scale size and `canvas` the square it makes at full scale; `image` itself
    may be smaller when it was decoded at a reduced JPEG scale.
    """
    width, height = image.size
    if square == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
        return image.crop(box) if (side, side) == target else _resize(image, target, box)
    content = (
        max(1, min(target[0], round(upright[0] * target[0] / canvas[0]))),
        max(1, min(target[1], round(upright[1] * target[1] / canvas[1]))),
    )
    if content != image.size:
        image = _resize(image, content)
    padded = Image.new("RGBA", target, (0, 0, 0, 0))
    padded.paste(image, ((target[0] - content[0]) // 2, (target[1] - content[1]) // 2))
    return padded


def prepare(
    data: bytes,
    rules: InputRules,
    *,
    square: SquareMode = "pad",
    upload_cap: int = DEFAULT_UPLOAD_CAP,
    pixel_cap: int = DEFAULT_PIXEL_CAP,
    what: str = "image",
) -> PreparedImage:
    """The upload `data` made into an image the model accepts under `rules`, or `BadImage`.

    A non-square image for a square-only model is padded with transparency (`square="pad"`) or cropped
    to its centre (`"crop"`); an image over `rules.max_edge` / `rules.max_pixels`, or whose encoding is over
    `rules.max_bytes`, is scaled down just enough. An upload that needs none of this and is already in an
    accepted format is returned byte for byte, without re-encoding.
    """
    image, info = _open(data, upload_cap=upload_cap, pixel_cap=pixel_cap, what=what)
    upright = (info.width, info.height)
    canvas = upright
    if rules.square_only and info.width != info.height:
        side = max(upright) if square == "pad" else min(upright)
        canvas = (side, side)
    target = _fit(*canvas, rules.max_edge, rules.max_pixels)
    notes = list(info.notes)

    untouched = (
        canvas == upright == target
        and not info.animated
        and info.orientation == 1
        and info.format in rules.formats
        and info.format in _ENCODABLE
        and len(data) <= rules.max_bytes
        and info.mode in (("RGBA",) if rules.rgba else ("RGB", "RGBA"))
    )
    if untouched:
        # Decoded only to prove it is whole; a JPEG at 1/8 scale, which still reads every byte of it.
        decoded = _decode(image, info, what=what, draft=(1, 1))
        return PreparedImage(
            data=data,
            mime=_MIME[info.format],
            width=info.width,
            height=info.height,
            has_alpha=_has_alpha(decoded),
            notes=tuple(notes),
            original_format=info.format,
        )

    draft = None
    if target != canvas:
        scale = target[0] / canvas[0]
        stored = (info.height, info.width) if info.orientation >= 5 else upright
        draft = (max(1, math.ceil(stored[0] * scale)), max(1, math.ceil(stored[1] * scale)))
    image = _decode(image, info, what=what, draft=draft)

    if canvas != upright:
        image = _square(image, target, upright, canvas, square)
        if square == "pad":
            notes.append(f"The {what} was padded to a square with transparency.")
        else:
            notes.append(f"The {what} was cropped to a square from its centre.")
    elif image.size != target:
        image = _resize(image, target)

    alpha = _has_alpha(image)
    fmt = _output_format(rules, alpha)
    if fmt == "jpeg" and alpha:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
        notes.append(f"The {what}'s transparent areas were filled with white: the model takes no transparency.")
        alpha = False
    if rules.rgba and fmt == "png":
        image = image.convert("RGBA") if image.mode != "RGBA" else image
    elif not alpha and image.mode == "RGBA":
        image = image.convert("RGB")

    encoded = _encode(image, fmt)
    if len(encoded) > rules.max_bytes:
        shrink = math.sqrt(rules.max_bytes / len(encoded)) * _BYTES_MARGIN
        smaller = _fit(*image.size, None, max(1, math.floor(image.size[0] * image.size[1] * shrink * shrink)))
        image = _resize(image, smaller)
        encoded = _encode(image, fmt)
        if len(encoded) > rules.max_bytes:
            raise BadImage(
                f"The {what} is still {_amount(len(encoded))} after scaling it down, over the model's "
                f"{_amount(rules.max_bytes, limit=True)} limit: upload a smaller or simpler image."
            )
    if image.size != canvas:
        notes.append(
            f"The {what} was scaled down from {canvas[0]}x{canvas[1]} to {image.size[0]}x{image.size[1]} "
            "to fit the model's limits."
        )
    return PreparedImage(
        data=encoded,
        mime=_MIME[fmt],
        width=image.size[0],
        height=image.size[1],
        has_alpha=alpha,
        notes=tuple(notes),
        original_format=info.format,
    )
