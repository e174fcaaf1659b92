"""Who does a task's AI work: the `local` provider (Pillow, NumPy, ffmpeg; no network)
or the `http` provider (an external model API), chosen per task type by `AI_PROVIDERS`
(`image_analysis=http,video_generation=local`; unlisted types use `local`).

Handlers fetch and decode user input themselves (so the same SSRF and decode limits apply
whichever provider runs) and then call one method of the provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from workers.pipelines.base import PermanentError, TaskContext

if TYPE_CHECKING:
    from workers.pipelines.advanced_editing import EditedImage
    from workers.pipelines.images import SourceImage
    from workers.pipelines.video_generation import VideoResult

DEFAULT_PROVIDER = "local"


class Provider(Protocol):
    name: str

    def analyze_image(self, ctx: TaskContext, source: SourceImage) -> dict:
        """The image_analysis output (API.md field names)."""

    def edit_image(self, ctx: TaskContext, source: SourceImage) -> EditedImage:
        """The edited image, encoded in the requested output format."""

    def generate_video(self, ctx: TaskContext, workdir: Path) -> VideoResult:
        """An H.264 MP4 in `workdir` and a PNG poster frame."""


def provider_name(settings, type_name: str) -> str:
    """The provider configured for `type_name` (AI_PROVIDERS), default `local`."""
    for entry in settings.ai_providers:
        name, _, provider = entry.partition("=")
        if name.strip() == type_name and provider.strip():
            return provider.strip().lower()
    return DEFAULT_PROVIDER


def for_task(ctx: TaskContext) -> Provider:
    name = provider_name(ctx.settings, ctx.type)
    if name == "local":
        from workers.pipelines.providers.local import LocalProvider

        return LocalProvider()
    if name == "http":
        from workers.pipelines.providers.http import HttpProvider

        return HttpProvider(ctx.settings)
    # A deployment mistake, not the user's: fail (and refund) with a code operators grep for.
    raise PermanentError(
        f"No AI provider named {name!r} (AI_PROVIDERS).", code="provider_not_configured"
    )
