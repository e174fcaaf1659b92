"""Imports the built-in pipelines so their handlers register."""

from workers.pipelines import advanced_editing, image_analysis, video_generation  # noqa: F401
