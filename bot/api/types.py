"""Plain typed values crossing the core's boundary: requests in, results and stream events out.

Requests hold what the user asked for; `None` means "the model's default". Results hold decoded
facts (bytes, mime, pixel size) so callers never parse provider JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Strength = Literal["subtle", "strong"]
VariationMode = Literal["endpoint", "edit-subtle", "edit-strong"]


@dataclass(frozen=True, slots=True)
class InputImage:
    """An image (or mask) to upload: raw bytes, a file name and its mime type."""

    data: bytes
    filename: str = "image.png"
    mime: str = "image/png"

    def __repr__(self) -> str:
        return f"InputImage({self.filename!r}, {self.mime}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateRequest:
    """Text to image."""

    prompt: str
    model: str | None = None
    n: int = 1
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    complexity: str | None = None
    partial_images: int | None = None
    user: str | None = None
    """The end user's own id (e.g. a Discord user id); only its hash leaves the process."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EditRequest:
    """Image(s) plus prompt to image; the mask's transparent pixels mark where to paint."""

    prompt: str
    images: tuple[InputImage, ...]
    mask: InputImage | None = None
    model: str | None = None
    n: int = 1
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    input_fidelity: str | None = None
    complexity: str | None = None
    partial_images: int | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VaryRequest:
    """One image to variations of it; `prompt` is an optional hint used when varying through edit."""

    image: InputImage
    model: str | None = None
    n: int = 1
    size: str | None = None
    strength: Strength = "subtle"
    prompt: str | None = None
    quality: str | None = None
    """Asked of models that vary through edit (e.g. the parent's quality); one the model lacks is dropped."""
    user: str | None = None


ImageRequest = GenerateRequest | EditRequest | VaryRequest


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them (GPT image models)."""

    input_text_tokens: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int = 0
    output_text_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_text_tokens + self.input_image_tokens + self.output_image_tokens + self.output_text_tokens


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One result image, decoded far enough to know its type and size."""

    data: bytes
    mime: str
    width: int
    height: int

    def __repr__(self) -> str:
        return f"GeneratedImage({self.mime}, {self.width}x{self.height}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResult:
    """What a generate, edit or vary call produced."""

    images: tuple[GeneratedImage, ...]
    model: str
    provider: str
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    revised_prompt: str | None = None
    usage: Usage | None = None
    request_id: str | None = None
    provider_ms: int = 0
    """Wall time spent waiting on the provider, retries included, in milliseconds."""
    credits: float | None = None
    """Credits the provider charged, for providers that bill in credits (the thread API)."""
    mock: bool = False
    """True when the images are placeholders drawn by the mock provider."""
    variation: VariationMode | None = None
    """How a vary request was served: the variations endpoint, or edit at a strength."""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartialImage:
    """A streamed preview of image `index` (0-based); `sequence` counts the previews of that image."""

    index: int
    sequence: int
    data: bytes
    mime: str


@dataclass(frozen=True, slots=True)
class Completed:
    """The last event of a stream: the whole result."""

    result: ImageResult


StreamEvent = PartialImage | Completed
