"""The one interface every image provider implements.

Providers receive requests the client has already checked against the catalogue, with the model's
defaults filled in and the end user's id already hashed. They return plain results or raise EaselErrors.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from bot.api.types import EditRequest, GenerateRequest, ImageResult, StreamEvent, VaryRequest
from bot.catalogue import ModelSpec


class ImageProvider(Protocol):
    """Something that turns requests into images."""

    name: str
    """Short id shown in results and logs: openai, azure, compatible, thread, mock."""
    follows_lifecycle: bool
    """True when the provider retires models on OpenAI's dates (so shut-down models are refused)."""
    endpoints: frozenset[str]
    """What this provider can do at all: generate, edit, variations (each model may do less)."""

    async def generate(self, spec: ModelSpec, req: GenerateRequest) -> ImageResult: ...

    async def edit(self, spec: ModelSpec, req: EditRequest) -> ImageResult: ...

    async def variations(self, spec: ModelSpec, req: VaryRequest) -> ImageResult: ...

    def stream_generate(self, spec: ModelSpec, req: GenerateRequest) -> AsyncGenerator[StreamEvent, None]:
        """Partial images as they come, then one Completed; only called for models that stream."""
        ...

    def stream_edit(self, spec: ModelSpec, req: EditRequest) -> AsyncGenerator[StreamEvent, None]: ...

    async def aclose(self) -> None:
        """Release what the provider itself opened (never the shared HTTP client)."""
        ...
