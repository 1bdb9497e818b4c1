"""A provider that draws labelled placeholder images locally: free trials and tests, at zero cost.

Each image says MOCK (MOCK EDIT, MOCK VARIATION) with the prompt, the size, its index and the model, on a
background colour hashed from the prompt and the index, so nobody mistakes it for a real picture and the
images of one result differ. Nothing leaves the process and nothing is charged; `latency` stands in for
the time a real provider takes. Drawing runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import colorsys
import contextlib
import dataclasses
import hashlib
import io
import re
import secrets
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from bot.api.http import Sleep
from bot.api.types import (
    Completed,
    EditRequest,
    GeneratedImage,
    GenerateRequest,
    ImageResult,
    InputImage,
    PartialImage,
    StreamEvent,
    VaryRequest,
)
from bot.api.validate import image_size
from bot.catalogue import ModelSpec, parse_size
from bot.errors import InvalidOption

LABEL_GENERATE = "MOCK"
LABEL_EDIT = "MOCK EDIT"
LABEL_VARIATION = "MOCK VARIATION"

_MIMES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
_FALLBACK_SIZE = (1024, 1024)
# Far beyond any catalogue size (gpt-image-2 tops out at 8.3 MP); stops a typo from allocating gigabytes.
_MAX_EDGE = 16383  # WebP's own limit
_MAX_PIXELS = 4 * 3840 * 2160
_MAX_PARTIALS = 3
_PARALLEL = 4  # renders at once per call: n=10 at 4K would otherwise hold ~10 full frames in memory
_DEFAULT_QUALITY = 90
_PROMPT_SHOWN = 600  # characters worth wrapping; a few lines hold far fewer, the rest becomes "…"
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont
_Measure = Callable[[str, int], float]


@dataclass(frozen=True, slots=True)
class _Thumb:
    """A small PNG of the input image, shown on edit and variation placeholders."""

    png: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class _Job:
    """Everything needed to draw the images of one call (plain data: safe to hand to threads)."""

    label: str
    prompt: str
    model: str
    width: int
    height: int
    count: int
    fmt: str
    transparent: bool
    compression: int | None
    thumb: _Thumb | None = None


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    size: int
    centre_y: int


# -- layout, shared by the raster and the SVG drawings ---------------------------------------------


def _clean(text: str) -> str:
    """One line of printable text: whitespace runs become single spaces, control characters go."""
    cleaned = _UNPRINTABLE.sub("", " ".join(text.split()))
    return cleaned if len(cleaned) <= _PROMPT_SHOWN else f"{cleaned[:_PROMPT_SHOWN].rstrip()}…"


def _longest_prefix(word: str, fits: Callable[[str], bool]) -> int:
    """Length of the longest prefix of `word` that fits; at least 1 so wrapping always moves on."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(word[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


def _wrap(text: str, fits: Callable[[str], bool], max_lines: int) -> list[str]:
    """Greedy word wrap into at most `max_lines` lines; text that does not fit ends in an ellipsis."""
    lines: list[str] = []
    current = ""
    pending = list(reversed(text.split()))
    while pending:
        word = pending.pop()
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            pending.append(word)
        else:
            # A single word wider than the line: break it where it stops fitting.
            cut = _longest_prefix(word, fits)
            current = word[:cut]
            pending.append(word[cut:])
        lines.append(current)
        current = ""
        if len(lines) == max_lines:
            break
    else:
        if current:
            lines.append(current)
        return lines
    last = lines[-1]
    while last and not fits(f"{last}…"):
        last = last[:-1].rstrip()
    lines[-1] = f"{last}…"
    return lines


def _layout(
    job: _Job, index: int, measure: _Measure, thumb: tuple[int, int] | None
) -> tuple[tuple[int, int] | None, list[_Line]]:
    """Where the thumbnail (top-left corner) and each text line go: one block, centred on the canvas."""
    width, height = job.width, job.height
    base = min(width, height)
    room = width * 0.86
    title = max(10, round(base * 0.16))
    title = max(8, min(title, int(title * room / max(1.0, measure(job.label, title)))))
    body = max(10, round(base * 0.05))
    meta = max(9, round(base * 0.035))
    gap = round(body * 0.8)
    facts = [f"image {index + 1} of {job.count}", f"{width}x{height}", job.model]
    thumb_height = thumb[1] + gap if thumb else 0
    # Fewer prompt lines on short canvases, so the facts below them stay on the image.
    for max_lines in range(5, 0, -1):
        prompt = _wrap(job.prompt, lambda text: measure(text, body) <= room, max_lines)
        total = (
            thumb_height
            + round(title * 1.2)
            + (len(prompt) * round(body * 1.3) + gap if prompt else 0)
            + gap
            + len(facts) * round(meta * 1.3)
        )
        if total <= height * 0.9:
            break
    top = max(0, (height - total) // 2)
    spot = None
    if thumb:
        spot = ((width - thumb[0]) // 2, top)
        top += thumb_height
    lines: list[_Line] = []

    def add(text: str, size: int, line_height: int) -> None:
        nonlocal top
        lines.append(_Line(text, size, top + line_height // 2))
        top += line_height

    add(job.label, title, round(title * 1.2))
    for text in prompt:
        add(text, body, round(body * 1.3))
    top += gap * 2 if prompt else gap
    for text in facts:
        add(text, meta, round(meta * 1.3))
    return spot, lines


def _colour(prompt: str, index: int) -> tuple[int, int, int]:
    """A calm background colour, the same for the same prompt and index."""
    digest = hashlib.sha256(f"{index}\x00{prompt}".encode("utf-8", "replace")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536
    saturation = 0.35 + digest[2] / 255 * 0.3
    value = 0.55 + digest[3] / 255 * 0.35
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def _ink(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Near-black or near-white, whichever reads better on `background`."""
    red, green, blue = background
    return (20, 20, 20) if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 140 else (250, 250, 250)


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


# -- raster drawing (runs in a worker thread) --------------------------------------------------------


def _thumbnail(data: bytes, edge: int) -> _Thumb | None:
    """The input image shrunk to fit `edge`x`edge`, as PNG; None when Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            source.draft("RGB", (edge, edge))  # JPEG decodes straight at a fraction of full size
            picture = ImageOps.exif_transpose(source).convert("RGBA")
        picture.thumbnail((edge, edge))
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
    except Exception:  # Pillow raises many types on bad uploads; no thumbnail is the whole cost
        return None
    return _Thumb(buffer.getvalue(), picture.width, picture.height)


def _raster(job: _Job, index: int) -> Image.Image:
    """The placeholder as a Pillow image: RGBA with a clear background when transparent, else RGB."""
    width, height = job.width, job.height
    base = min(width, height)
    colour = _colour(job.prompt, index)
    ink = _ink(colour)
    if job.transparent:
        image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        fill: tuple[int, ...] = (*colour, 255)
        outline: tuple[int, ...] = (*ink, 255)
        faint: tuple[int, ...] = (*colour, 96)
    else:
        image = Image.new("RGB", (width, height), colour)
        fill, outline = ink, colour
        faint = tuple((c * 3 + i) // 4 for c, i in zip(colour, ink, strict=True))
    draw = ImageDraw.Draw(image)
    fonts: dict[int, _FontType] = {}

    def font(size: int) -> _FontType:
        if size not in fonts:
            fonts[size] = ImageFont.load_default(size=size)
        return fonts[size]

    thumb = None
    if job.thumb is not None:
        with Image.open(io.BytesIO(job.thumb.png)) as opened:
            thumb = opened.convert("RGBA")
    spot, lines = _layout(job, index, lambda text, size: font(size).getlength(text), thumb.size if thumb else None)

    inset, stroke = max(2, base // 40), max(2, base // 200)
    right, bottom = width - 1 - inset, height - 1 - inset
    draw.line((inset, inset, right, bottom), fill=faint, width=stroke)
    draw.line((inset, bottom, right, inset), fill=faint, width=stroke)
    draw.rectangle((inset, inset, right, bottom), outline=fill, width=stroke)
    if thumb is not None and spot is not None:
        x, y = spot
        draw.rectangle((x - stroke, y - stroke, x + thumb.width + stroke - 1, y + thumb.height + stroke - 1), fill=fill)
        image.paste(thumb, spot, thumb)
    for line in lines:
        draw.text(
            (width / 2, line.centre_y),
            line.text,
            font=font(line.size),
            fill=fill,
            anchor="mm",
            stroke_width=max(1, line.size // 16),
            stroke_fill=outline,
        )
    return image


def _encode(image: Image.Image, fmt: str, compression: int | None) -> bytes:
    buffer = io.BytesIO()
    # OpenAI's output_compression runs 0-100 with 100 the best looking, so it maps straight onto quality.
    quality = _DEFAULT_QUALITY if compression is None else max(0, min(100, compression))
    if fmt == "jpeg":
        (image if image.mode == "RGB" else image.convert("RGB")).save(buffer, "JPEG", quality=quality)
    elif fmt == "webp":
        # method 2 encodes a 4K frame about twice as fast as the default 4, for a few per cent more bytes.
        image.save(buffer, "WEBP", quality=quality, method=2)
    elif fmt == "gif":
        image.save(buffer, "GIF")
    else:
        # zlib's fastest level: a quarter less CPU than the default on these flat pictures, ~20 KB more a 1024² image.
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _previews(image: Image.Image, job: _Job, count: int) -> tuple[bytes, ...]:
    """`count` previews, blurry and small first, then sharper and larger (64, 128, 256 px long side)."""
    longest = max(image.width, image.height)
    found: list[bytes] = []
    for sequence in range(count):
        edge = min(longest, 64 << sequence)
        scale = edge / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        small = small.filter(ImageFilter.GaussianBlur(radius=(count - sequence) * edge / 128))
        found.append(_encode(small, job.fmt, job.compression))
    return tuple(found)


# -- SVG drawing -------------------------------------------------------------------------------------


def _svg(job: _Job, index: int, blur: float = 0.0) -> bytes:
    """The placeholder as a small SVG document; `blur` > 0 makes a soft preview of it."""
    width, height = job.width, job.height
    base = min(width, height)
    colour = _colour(job.prompt, index)
    ink = _ink(colour)
    fill, outline = (_hex(colour), _hex(ink)) if job.transparent else (_hex(ink), _hex(colour))
    thumb = job.thumb
    # No font metrics in SVG: an average sans-serif glyph is about 0.55 em wide.
    spot, lines = _layout(
        job, index, lambda text, size: len(text) * size * 0.55, (thumb.width, thumb.height) if thumb else None
    )
    inset, stroke = max(2, base // 40), max(2, base // 200)
    right, bottom = width - inset, height - inset
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(job.label)}: {escape(job.prompt)}</title>",
    ]
    if blur > 0:
        parts.append(f'<filter id="soft"><feGaussianBlur stdDeviation="{blur:.1f}"/></filter><g filter="url(#soft)">')
    if not job.transparent:
        parts.append(f'<rect width="{width}" height="{height}" fill="{_hex(colour)}"/>')
    parts.append(
        f'<path d="M{inset} {inset}L{right} {bottom}M{inset} {bottom}L{right} {inset}" '
        f'stroke="{fill}" stroke-opacity="0.25" stroke-width="{stroke}"/>'
        f'<rect x="{inset}" y="{inset}" width="{right - inset}" height="{bottom - inset}" '
        f'fill="none" stroke="{fill}" stroke-width="{stroke}"/>'
    )
    if thumb is not None and spot is not None:
        data = base64.b64encode(thumb.png).decode("ascii")
        parts.append(
            f'<image x="{spot[0]}" y="{spot[1]}" width="{thumb.width}" height="{thumb.height}" '
            f'href="data:image/png;base64,{data}"/>'
        )
    for line in lines:
        parts.append(
            f'<text x="{width / 2:g}" y="{line.centre_y}" font-family="sans-serif" font-size="{line.size}" '
            f'text-anchor="middle" dominant-baseline="central" fill="{fill}" stroke="{outline}" '
            f'stroke-width="{max(1, line.size // 16)}" paint-order="stroke">{escape(line.text)}</text>'
        )
    if blur > 0:
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8", "replace")


def _render(job: _Job, index: int, partials: int) -> tuple[GeneratedImage, tuple[bytes, ...]]:
    """Image `index` of `job`, and `partials` previews of it. Blocking: call through asyncio.to_thread."""
    if job.fmt == "svg":
        data = _svg(job, index)
        base = min(job.width, job.height)
        previews = tuple(_svg(job, index, blur=base * 0.02 * (partials - seq)) for seq in range(partials))
    else:
        image = _raster(job, index)
        data = _encode(image, job.fmt, job.compression)
        previews = _previews(image, job, partials)
    return GeneratedImage(data=data, mime=_MIMES[job.fmt], width=job.width, height=job.height), previews


# -- the provider ------------------------------------------------------------------------------------


def _like(spec: ModelSpec, source: tuple[int, int]) -> tuple[int, int]:
    """The size the model would pick for "auto" from an input of `source` pixels: its shape, allowed."""
    if spec.size_rule is not None:
        return spec.size_rule.nearest(*source)
    listed = [p for p in map(parse_size, spec.sizes) if p is not None]
    if not listed:
        return _FALLBACK_SIZE
    aspect = source[0] / max(source[1], 1)
    return min(listed, key=lambda p: abs(p[0] / p[1] - aspect))


def _pixels(spec: ModelSpec, size: str | None, source: tuple[int, int] | None = None) -> tuple[int, int]:
    """`"WxH"` exactly; "auto" → the input's shape for edits, else the model's first concrete size."""
    parsed = parse_size(size or spec.default_size)
    if parsed is None and source is not None:
        parsed = _like(spec, source)
    if parsed is None:
        parsed = next((p for p in map(parse_size, spec.sizes) if p is not None), _FALLBACK_SIZE)
    width, height = parsed
    if not (0 < width <= _MAX_EDGE and 0 < height <= _MAX_EDGE and width * height <= _MAX_PIXELS):
        raise InvalidOption(f"The mock provider cannot draw {width}x{height} images.", param="size")
    return width, height


def _format(output_format: str | None) -> str:
    fmt = (output_format or "png").lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    return fmt if fmt in _MIMES else "png"


def _request_id() -> str:
    return f"mock-{secrets.token_hex(6)}"


class MockProvider:
    """Draws placeholder images locally; free, offline, and honest about it (`ImageResult.mock`)."""

    name = "mock"
    follows_lifecycle = False
    endpoints = frozenset({"generate", "edit", "variations"})

    def __init__(self, *, latency: float = 0.0, sleep: Sleep = asyncio.sleep) -> None:
        """`latency` seconds are spent per call through `sleep` (spread over a stream's events)."""
        if latency < 0:
            raise ValueError("latency must not be negative")
        self._latency = latency
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"{type(self).__name__}(latency={self._latency!r})"

    # -- building blocks ----------------------------------------------------------------------------

    def _job(
        self,
        spec: ModelSpec,
        label: str,
        prompt: str,
        *,
        n: int,
        size: str | None,
        output_format: str | None = None,
        output_compression: int | None = None,
        background: str | None = None,
        source: tuple[int, int] | None = None,
    ) -> _Job:
        if n < 1:
            raise InvalidOption("n must be at least 1.", param="n")
        width, height = _pixels(spec, size, source)
        fmt = _format(output_format)
        return _Job(
            label=label,
            prompt=_clean(prompt),
            model=spec.name,
            width=width,
            height=height,
            count=n,
            fmt=fmt,
            transparent=background == "transparent" and fmt != "jpeg",
            compression=output_compression if fmt in ("jpeg", "webp") else None,
        )

    async def _with_thumb(self, job: _Job, source: InputImage | None) -> _Job:
        if source is None:
            return job
        edge = max(16, round(min(job.width, job.height) * 0.22))
        return dataclasses.replace(job, thumb=await asyncio.to_thread(_thumbnail, source.data, edge))

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await self._sleep(seconds)

    async def _draw(self, job: _Job, source: InputImage | None) -> tuple[GeneratedImage, ...]:
        await self._wait(self._latency)
        job = await self._with_thumb(job, source)
        limit = asyncio.Semaphore(_PARALLEL)

        async def one(index: int) -> GeneratedImage:
            async with limit:
                image, _ = await asyncio.to_thread(_render, job, index, 0)
                return image

        return tuple(await asyncio.gather(*(one(index) for index in range(job.count))))

    async def _stream(
        self,
        job: _Job,
        source: InputImage | None,
        partials: int | None,
        finish: Callable[[tuple[GeneratedImage, ...]], ImageResult],
    ) -> AsyncGenerator[StreamEvent, None]:
        count = max(0, min(partials or 0, _MAX_PARTIALS))
        step = self._latency / (job.count * count + 1)
        job = await self._with_thumb(job, source)
        images: list[GeneratedImage] = []
        # One image after another, as a real stream delivers them: image 0's previews come first.
        for index in range(job.count):
            image, previews = await asyncio.to_thread(_render, job, index, count)
            images.append(image)
            for sequence, data in enumerate(previews):
                await self._wait(step)
                yield PartialImage(index=index, sequence=sequence, data=data, mime=image.mime)
        await self._wait(step)
        yield Completed(finish(tuple(images)))

    def _result(
        self,
        spec: ModelSpec,
        job: _Job,
        images: tuple[GeneratedImage, ...],
        *,
        quality: str | None = None,
        background: str | None = None,
        revised_prompt: str | None = None,
    ) -> ImageResult:
        return ImageResult(
            images=images,
            model=spec.name,
            provider=self.name,
            size=f"{job.width}x{job.height}",
            quality=quality,
            background="transparent" if job.transparent else ("opaque" if background else None),
            output_format=job.fmt,
            revised_prompt=revised_prompt,
            usage=None,
            request_id=_request_id(),
            credits=None,
            mock=True,
            extra={"label": job.label},
        )

    def _generate_job(self, spec: ModelSpec, req: GenerateRequest) -> _Job:
        return self._job(
            spec,
            LABEL_GENERATE,
            req.prompt,
            n=req.n,
            size=req.size,
            output_format=req.output_format,
            output_compression=req.output_compression,
            background=req.background,
        )

    async def _edit_job(self, spec: ModelSpec, req: EditRequest) -> _Job:
        source = await asyncio.to_thread(image_size, req.images[0].data) if req.images else None
        return self._job(
            spec,
            LABEL_EDIT,
            req.prompt,
            n=req.n,
            size=req.size,
            output_format=req.output_format,
            output_compression=req.output_compression,
            background=req.background,
            source=source,
        )

    # -- the ImageProvider interface ----------------------------------------------------------------

    async def generate(self, spec: ModelSpec, req: GenerateRequest) -> ImageResult:
        """Placeholders for a text prompt; `revised_prompt` is the prompt marked "[mock]"."""
        job = self._generate_job(spec, req)
        images = await self._draw(job, None)
        return self._result(
            spec,
            job,
            images,
            quality=req.quality,
            background=req.background,
            revised_prompt=f"[mock] {req.prompt}",
        )

    async def edit(self, spec: ModelSpec, req: EditRequest) -> ImageResult:
        """Placeholders labelled MOCK EDIT, with a thumbnail of the first input image when it is readable."""
        job = await self._edit_job(spec, req)
        images = await self._draw(job, req.images[0] if req.images else None)
        return self._result(spec, job, images, quality=req.quality, background=req.background)

    async def variations(self, spec: ModelSpec, req: VaryRequest) -> ImageResult:
        """PNG placeholders labelled MOCK VARIATION, with a thumbnail of the input image."""
        shown = req.prompt or f"variation of {req.image.filename}"
        source = await asyncio.to_thread(image_size, req.image.data)
        job = self._job(spec, LABEL_VARIATION, shown, n=req.n, size=req.size, source=source)
        images = await self._draw(job, req.image)
        return self._result(spec, job, images)

    async def stream_generate(self, spec: ModelSpec, req: GenerateRequest) -> AsyncGenerator[StreamEvent, None]:
        """`req.partial_images` previews per image (0-3), then Completed with the same result as generate."""
        job = self._generate_job(spec, req)

        def finish(images: tuple[GeneratedImage, ...]) -> ImageResult:
            return self._result(
                spec,
                job,
                images,
                quality=req.quality,
                background=req.background,
                revised_prompt=f"[mock] {req.prompt}",
            )

        async with contextlib.aclosing(self._stream(job, None, req.partial_images, finish)) as events:
            async for event in events:
                yield event

    async def stream_edit(self, spec: ModelSpec, req: EditRequest) -> AsyncGenerator[StreamEvent, None]:
        """`req.partial_images` previews per image (0-3), then Completed with the same result as edit."""
        job = await self._edit_job(spec, req)

        def finish(images: tuple[GeneratedImage, ...]) -> ImageResult:
            return self._result(spec, job, images, quality=req.quality, background=req.background)

        source = req.images[0] if req.images else None
        async with contextlib.aclosing(self._stream(job, source, req.partial_images, finish)) as events:
            async for event in events:
                yield event

    async def aclose(self) -> None:
        """Nothing to release: the mock opens no connections or files."""
