"""Check a request against its model's catalogue entry before any network call.

Each check raises `InvalidOption` (or `BadImage`) with one sentence that says what is wrong and what
to use instead, and returns the request with the model's defaults filled in.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterable

from PIL import Image, UnidentifiedImageError

from bot.api.types import EditRequest, GenerateRequest, InputImage, VaryRequest
from bot.catalogue import ModelSpec, parse_size
from bot.errors import BadImage, InvalidOption, quoted

# The API takes masks under 4 MB whatever the image limit is.
MASK_MAX_BYTES = 4 * 1024 * 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format from its first bytes: png, jpeg, webp, gif, or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header (Pillow reads no pixels), or None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, ValueError):
        return None
    return width, height


def _choices(values: Iterable[str]) -> str:
    items = list(values)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _who(others: Iterable[ModelSpec], has: Callable[[ModelSpec], bool]) -> str:
    names = [s.name for s in others if has(s)]
    if not names:
        return "no model offered here does"
    return f"{_choices(names)} {'does' if len(names) == 1 else 'do'}"


class RequestChecker:
    """Validates requests for one catalogue; `others` names the models that do take an option."""

    def __init__(self, others: Iterable[ModelSpec] = ()) -> None:
        self._others = tuple(others)

    def _option(
        self, spec: ModelSpec, param: str, value: str | None, allowed: tuple[str, ...], label: str, *, field: str
    ) -> None:
        """`value` of request parameter `param` must be one of `allowed` (the spec's `field`)."""
        if value is None:
            return
        if not allowed:
            who = _who(self._others, lambda s: bool(getattr(s, field)))
            raise InvalidOption(f"{spec.name} takes no {label}; {who}.", param=param)
        if value not in allowed:
            raise InvalidOption(
                f"{label} {quoted(value)} is not offered by {spec.name}: use {_choices(allowed)}.",
                param=param,
            )

    def _prompt(self, spec: ModelSpec, prompt: str) -> None:
        if not prompt.strip():
            raise InvalidOption("The prompt is empty: describe the image you want.", param="prompt")
        if len(prompt) > spec.prompt_max:
            raise InvalidOption(
                f"The prompt is {len(prompt):,} characters; {spec.name} takes at most {spec.prompt_max:,}.",
                param="prompt",
            )

    def _n(self, spec: ModelSpec, n: int, cap: int | None) -> None:
        limit = min(spec.n_max, cap) if cap is not None else spec.n_max
        if limit == 1 and n != 1:
            raise InvalidOption(f"{spec.name} makes one image per request; use n=1.", param="n")
        if not 1 <= n <= limit:
            raise InvalidOption(f"n must be between 1 and {limit} for {spec.name}.", param="n")

    def _size(self, spec: ModelSpec, size: str | None) -> str:
        if size is None:
            return spec.default_size
        size = size.strip().lower()
        parsed = parse_size(size)
        if spec.size_allowed(size):
            # As the API writes it ("01536x01024" is 1536x1024): the request sends what was checked.
            return f"{parsed[0]}x{parsed[1]}" if parsed is not None else size
        if parsed is None:
            examples = [s for s in spec.sizes if parse_size(s) is not None][:3]
            raise InvalidOption(
                f"size {quoted(size)} is not a size: write WIDTHxHEIGHT, e.g. {_choices(examples)}.", param="size"
            )
        if spec.size_rule is None:
            raise InvalidOption(
                f"size {size} is not allowed for {spec.name}: use {_choices(spec.sizes)}.",
                param="size",
            )
        width, height = parsed
        why = "; ".join(spec.size_rule.problems(width, height))
        near_w, near_h = spec.size_rule.nearest(width, height)
        raise InvalidOption(
            f"size {size} is not allowed for {spec.name}: {why}; try {near_w}x{near_h}.",
            param="size",
        )

    def _quality(self, spec: ModelSpec, quality: str | None) -> str:
        if quality is None:
            return spec.default_quality
        self._option(spec, "quality", quality, spec.qualities, "quality", field="qualities")
        return quality

    def _output(
        self,
        spec: ModelSpec,
        *,
        background: str | None,
        output_format: str | None,
        output_compression: int | None,
    ) -> None:
        self._option(spec, "background", background, spec.backgrounds, "background", field="backgrounds")
        self._option(spec, "output_format", output_format, spec.output_formats, "output format", field="output_formats")
        if background == "transparent" and output_format not in (None, "png", "webp"):
            raise InvalidOption(
                f"A transparent background needs png or webp output, not {output_format}.", param="background"
            )
        if output_compression is not None:
            if output_format not in ("jpeg", "webp"):
                raise InvalidOption(
                    "output_compression works only with jpeg or webp output.", param="output_compression"
                )
            if not 0 <= output_compression <= 100:
                raise InvalidOption("output_compression must be between 0 and 100.", param="output_compression")

    def _partials(self, spec: ModelSpec, partial_images: int | None) -> None:
        if partial_images is None or partial_images == 0:
            return
        if not spec.streaming:
            raise InvalidOption(f"{spec.name} cannot stream partial images.", param="partial_images")
        if not 0 <= partial_images <= spec.partial_images_max:
            raise InvalidOption(
                f"partial_images must be between 0 and {spec.partial_images_max} for {spec.name}.",
                param="partial_images",
            )

    def generate(self, spec: ModelSpec, req: GenerateRequest, *, max_n: int | None = None) -> GenerateRequest:
        """`req` checked against `spec`, with model, size and quality filled in."""
        if not spec.supports("generate"):
            raise InvalidOption(f"{spec.name} cannot create images from text.", param="model")
        self._prompt(spec, req.prompt)
        self._n(spec, req.n, max_n)
        size = self._size(spec, req.size)
        quality = self._quality(spec, req.quality)
        self._option(spec, "style", req.style, spec.styles, "style", field="styles")
        self._option(spec, "moderation", req.moderation, spec.moderation, "moderation", field="moderation")
        self._option(spec, "complexity", req.complexity, spec.complexity, "complexity", field="complexity")
        self._output(
            spec,
            background=req.background,
            output_format=req.output_format,
            output_compression=req.output_compression,
        )
        self._partials(spec, req.partial_images)
        return dataclasses.replace(req, model=spec.name, size=size, quality=quality)

    def input_image(self, spec: ModelSpec, image: InputImage, what: str = "image") -> str:
        """The image's format, after checking it against the model's edit limits."""
        limits = spec.edit
        if not image.data:
            raise BadImage(f"The {what} is empty (0 bytes): upload the image file again.")
        found = sniff_format(image.data)
        if found is None:
            raise BadImage(f"The {what} is not a PNG, JPEG, WEBP or GIF image: upload one of those.")
        if limits is not None:
            if found not in limits.formats and what == "image":
                raise BadImage(
                    f"{spec.name} takes {_choices([f.upper() for f in limits.formats])} images, not {found.upper()}."
                )
            cap = min(limits.max_bytes, MASK_MAX_BYTES) if what == "mask" else limits.max_bytes
            if len(image.data) > cap:
                raise BadImage(
                    f"The {what} is {len(image.data) / 1_048_576:.1f} MB; {spec.name} takes at most "
                    f"{cap / 1_048_576:.0f} MB: use a smaller {what}."
                )
            if limits.square_only:
                size = image_size(image.data)
                if size is None:
                    raise BadImage(f"The {what} could not be read: upload it again as a {found.upper()} file.")
                if size[0] != size[1]:
                    raise BadImage(
                        f"{spec.name} takes only square images, and the {what} is {size[0]}x{size[1]}: "
                        "crop it to a square."
                    )
        return found

    def edit(self, spec: ModelSpec, req: EditRequest, *, max_n: int | None = None) -> EditRequest:
        """`req` checked against `spec`, with model, size and quality filled in."""
        if not spec.supports("edit") or spec.edit is None:
            who = _who(self._others, lambda s: s.supports("edit"))
            raise InvalidOption(f"{spec.name} cannot edit images; {who}.", param="model")
        self._prompt(spec, req.prompt)
        self._n(spec, req.n, max_n)
        if not req.images:
            raise BadImage("An edit needs an image: attach the picture to change.")
        if len(req.images) > spec.edit.max_images:
            raise InvalidOption(
                (
                    f"{spec.name} edits one image at a time; you gave {len(req.images)}."
                    if spec.edit.max_images == 1
                    else f"{spec.name} edits at most {spec.edit.max_images} images at once; you gave {len(req.images)}."
                ),
                param="images",
            )
        for image in req.images:
            self.input_image(spec, image)
        if req.mask is not None:
            if not spec.edit.mask:
                raise InvalidOption(f"{spec.name} takes no mask.", param="mask")
            if self.input_image(spec, req.mask, "mask") != "png":
                raise BadImage("The mask must be a PNG with transparent pixels where the image should change.")
        size = self._size(spec, req.size)
        quality = self._quality(spec, req.quality)
        self._option(
            spec, "input_fidelity", req.input_fidelity, spec.input_fidelity, "input_fidelity", field="input_fidelity"
        )
        self._option(spec, "complexity", req.complexity, spec.complexity, "complexity", field="complexity")
        self._output(
            spec,
            background=req.background,
            output_format=req.output_format,
            output_compression=req.output_compression,
        )
        self._partials(spec, req.partial_images)
        return dataclasses.replace(req, model=spec.name, size=size, quality=quality)

    def vary(self, spec: ModelSpec, req: VaryRequest, *, max_n: int | None = None) -> VaryRequest:
        """`req` checked against `spec` (either path: the variations endpoint or edit)."""
        if not spec.can_vary():
            who = _who(self._others, lambda s: s.can_vary())
            raise InvalidOption(f"{spec.name} cannot make variations; {who}.", param="model")
        self._n(spec, req.n, max_n)
        self.input_image(spec, req.image)
        size = self._size(spec, req.size)
        if req.prompt is not None and len(req.prompt) > spec.prompt_max:
            self._prompt(spec, req.prompt)
        return dataclasses.replace(req, model=spec.name, size=size)
