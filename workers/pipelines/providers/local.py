"""The default provider: real work on this machine with Pillow, NumPy and ffmpeg."""

from __future__ import annotations

from pathlib import Path

from workers.pipelines import advanced_editing, image_analysis, video_generation
from workers.pipelines.base import TaskContext
from workers.pipelines.images import SourceImage


class LocalProvider:
    name = "local"

    def analyze_image(self, ctx: TaskContext, source: SourceImage) -> dict:
        return image_analysis.analyze(
            source,
            include_gps=ctx.input.get("include_gps", False),
            max_colors=ctx.input.get("max_colors", 5),
            check=ctx.check_canceled,
        )

    def edit_image(self, ctx: TaskContext, source: SourceImage) -> advanced_editing.EditedImage:
        return advanced_editing.edit(ctx, source)

    def generate_video(self, ctx: TaskContext, workdir: Path) -> video_generation.VideoResult:
        return video_generation.generate(ctx, workdir)
