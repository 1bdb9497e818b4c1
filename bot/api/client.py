"""The core's front door: `ImagesClient.generate`, `edit`, `vary` and their streaming forms.

It resolves the model in the catalogue, refuses shut-down models with their replacement, checks the
request before any network call, hashes the end user's id, chooses how to vary (the variations endpoint,
or edit at a strength), calls the provider and stamps the provider time on the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from bot.api.provider import ImageProvider
from bot.api.types import (
    Completed,
    EditRequest,
    GenerateRequest,
    ImageResult,
    StreamEvent,
    VariationMode,
    VaryRequest,
)
from bot.api.validate import RequestChecker
from bot.catalogue import Catalogue, ModelSpec
from bot.errors import InvalidOption, ModelUnavailable

# How an edit stands in for the variations endpoint, per strength.
VARY_INSTRUCTIONS = {
    "subtle": (
        "Create a close variation of this image. Keep the composition, subjects, colours and style; "
        "change only small details, as if the same scene were captured a moment later."
    ),
    "strong": (
        "Create a free reinterpretation of this image. Keep its subject and mood, but feel free to change "
        "the composition, pose, framing, lighting and details."
    ),
}
VARY_FIDELITY = {"subtle": "high", "strong": "low"}


def hash_user(user: str, salt: str = "") -> str:
    """A stable, non-reversible stand-in for an end user's id, for the provider's abuse monitoring."""
    digest = hashlib.sha256(f"easel:{salt}:{user}".encode()).hexdigest()
    return f"easel-{digest[:32]}"


async def _timed_stream(stream: AsyncGenerator[StreamEvent, None]) -> AsyncGenerator[StreamEvent, None]:
    """Relay a provider's stream, stamping the provider time on its result; always closes the stream."""
    started = time.perf_counter()
    async with contextlib.aclosing(stream):
        async for event in stream:
            if isinstance(event, Completed):
                elapsed = int((time.perf_counter() - started) * 1000)
                yield Completed(dataclasses.replace(event.result, provider_ms=elapsed))
            else:
                yield event


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class ImagesClient:
    """Generate, edit and vary images through one provider, with the catalogue's rules enforced."""

    def __init__(
        self,
        provider: ImageProvider,
        catalogue: Catalogue,
        *,
        default_model: str,
        max_n: int | None = None,
        user_salt: str = "",
        today: Callable[[], dt.date] = utc_today,
    ) -> None:
        self.provider = provider
        self.catalogue = catalogue
        self.default_model = default_model
        self.max_n = max_n
        self._salt = user_salt
        self._today = today

    @property
    def _check(self) -> RequestChecker:
        """Checks whose advice names only models this provider still serves today."""
        today = self._today()
        usable = [
            spec
            for spec in self.catalogue
            if not (self.provider.follows_lifecycle and spec.status(today) == "shutdown")
        ]
        return RequestChecker(usable)

    def model(self, name: str | None = None) -> ModelSpec:
        """The model to use for `name` (default when None), refusing ones this provider no longer serves."""
        spec = self.catalogue.get(name or self.default_model)
        if self.provider.follows_lifecycle and spec.status(self._today()) == "shutdown":
            assert spec.shutdown is not None  # noqa: S101 - status() says so
            use = f" Use {spec.replacement} instead." if spec.replacement else ""
            raise ModelUnavailable(
                f"{spec.name} was shut down on {spec.shutdown.isoformat()}.{use}",
                model=spec.name,
                replacement=spec.replacement,
            )
        return spec

    def _user(self, user: str | None) -> str | None:
        return None if user is None else hash_user(user, self._salt)

    async def _timed(self, call: Callable[[], Awaitable[ImageResult]]) -> ImageResult:
        started = time.perf_counter()
        result = await call()
        elapsed = int((time.perf_counter() - started) * 1000)
        return dataclasses.replace(result, provider_ms=elapsed)

    # -- generate -----------------------------------------------------------------------------------

    def check_generate(self, req: GenerateRequest) -> tuple[ModelSpec, GenerateRequest]:
        """The model and the checked request, without calling anything (for estimates and previews)."""
        spec = self.model(req.model)
        return spec, self._check.generate(spec, req, max_n=self.max_n)

    async def generate(self, req: GenerateRequest) -> ImageResult:
        spec, checked = self.check_generate(req)
        checked = dataclasses.replace(checked, user=self._user(req.user))
        return await self._timed(lambda: self.provider.generate(spec, checked))

    async def generate_stream(self, req: GenerateRequest) -> AsyncGenerator[StreamEvent, None]:
        """Partial previews (for models that stream) and then one Completed event."""
        spec, checked = self.check_generate(req)
        checked = dataclasses.replace(checked, user=self._user(req.user))
        if not spec.streaming:
            yield Completed(await self._timed(lambda: self.provider.generate(spec, checked)))
            return
        async for event in _timed_stream(self.provider.stream_generate(spec, checked)):
            yield event

    # -- edit ---------------------------------------------------------------------------------------

    def _provider_can(self, endpoint: str) -> bool:
        return endpoint in self.provider.endpoints

    def check_edit(self, req: EditRequest) -> tuple[ModelSpec, EditRequest]:
        if not self._provider_can("edit"):
            raise InvalidOption(f"The {self.provider.name} image service cannot edit images.", param="model")
        spec = self.model(req.model)
        return spec, self._check.edit(spec, req, max_n=self.max_n)

    async def edit(self, req: EditRequest) -> ImageResult:
        spec, checked = self.check_edit(req)
        checked = dataclasses.replace(checked, user=self._user(req.user))
        return await self._timed(lambda: self.provider.edit(spec, checked))

    async def edit_stream(self, req: EditRequest) -> AsyncGenerator[StreamEvent, None]:
        spec, checked = self.check_edit(req)
        checked = dataclasses.replace(checked, user=self._user(req.user))
        if not spec.streaming:
            yield Completed(await self._timed(lambda: self.provider.edit(spec, checked)))
            return
        async for event in _timed_stream(self.provider.stream_edit(spec, checked)):
            yield event

    # -- vary ---------------------------------------------------------------------------------------

    def vary_model(self, name: str | None) -> ModelSpec:
        """The model a vary request will use: the one named, or the default, or else the newest that can."""
        if name is not None:
            return self.model(name)
        spec = self.model(None)
        if spec.can_vary():
            return spec
        for other in self.catalogue.active(self._today()):
            if other.can_vary():
                return self.model(other.name)
        return spec

    def vary_plan(self, req: VaryRequest) -> tuple[ModelSpec, VaryRequest, EditRequest | None]:
        """The model, the checked request and, when variations go through edit, the edit to send."""
        if not (self._provider_can("variations") or self._provider_can("edit")):
            raise InvalidOption(f"The {self.provider.name} image service cannot vary images.", param="model")
        spec = self.vary_model(req.model)
        checked = self._check.vary(spec, req, max_n=self.max_n)
        if spec.supports("variations") and self._provider_can("variations"):
            return spec, checked, None
        if not (spec.supports("edit") and self._provider_can("edit")):
            raise InvalidOption(
                f"{spec.name} can vary images only through its variations endpoint, which the "
                f"{self.provider.name} image service does not offer.",
                param="model",
            )
        instruction = VARY_INSTRUCTIONS[checked.strength]
        if checked.prompt:
            instruction = f"{instruction} Also: {checked.prompt}"
        fidelity = VARY_FIDELITY[checked.strength]
        edit = EditRequest(
            prompt=instruction[: spec.prompt_max],
            images=(checked.image,),
            model=spec.name,
            n=checked.n,
            size=checked.size,
            # A variation keeps the quality it was asked at when this model has it (a parent made by another
            # model may have one this model lacks: then the model's default, rather than a refusal).
            quality=checked.quality if checked.quality in spec.qualities else None,
            input_fidelity=fidelity if fidelity in spec.input_fidelity else None,
            user=checked.user,
        )
        return spec, checked, self._check.edit(spec, edit, max_n=self.max_n)

    async def vary(self, req: VaryRequest) -> ImageResult:
        spec, checked, edit = self.vary_plan(req)
        if edit is None:
            checked = dataclasses.replace(checked, user=self._user(req.user))
            result = await self._timed(lambda: self.provider.variations(spec, checked))
            return dataclasses.replace(result, variation="endpoint")
        edit = dataclasses.replace(edit, user=self._user(req.user))
        result = await self._timed(lambda: self.provider.edit(spec, edit))
        mode: VariationMode = "edit-subtle" if checked.strength == "subtle" else "edit-strong"
        return dataclasses.replace(result, variation=mode)
