"""Each real task type, run through the client (and the CLI) against a real worker, with
its output files downloaded and opened."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from studiox_client.cli import main

pytestmark = pytest.mark.e2e


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    """A small picture with structure (two colour halves and a square) to analyse."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 30, 200), (width // 2, 0, width, height))
    image.paste((250, 250, 250), (8, 8, 24, 24))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_image_analysis(sx, worker):
    task = sx.tasks.run("image_analysis", {"image_base64": b64(png_bytes())}, timeout=60)
    out = task.output
    assert (out["width"], out["height"], out["format"].lower()) == (64, 48, "png")
    for field in (
        "mode",
        "dominant_colors",
        "brightness",
        "contrast",
        "sharpness",
        "exif",
        "phash",
    ):
        assert field in out
    assert out["dominant_colors"] and out["dominant_colors"][0]["hex"].startswith("#")
    assert sx.credits().total == 9


def test_advanced_editing_makes_a_downloadable_image(sx, worker, tmp_path):
    task = sx.tasks.run(
        "advanced_editing",
        {
            "image_base64": b64(png_bytes()),
            "operations": [{"op": "resize", "width": 32, "height": 24}, {"op": "grayscale"}],
            "output_format": "png",
        },
        timeout=60,
    )
    assert (task.output["width"], task.output["height"]) == (32, 24)
    assert [a.name for a in task.artifacts] == ["output.png"]
    [path] = sx.artifacts.download_all(task, tmp_path / "edited")
    assert path == tmp_path / "edited" / "output.png"
    with Image.open(path) as edited:
        assert edited.size == (32, 24)
    assert sx.credits().total == 7


def test_video_generation_makes_a_video_and_a_poster(sx, worker, tmp_path):
    task = sx.tasks.run(
        "video_generation",
        {
            "prompt": "a red and blue card",
            "images": [{"image_base64": b64(png_bytes())}],
            "duration_s": 1,
            "fps": 4,
            "width": 64,
            "height": 48,
        },
        timeout=90,
    )
    assert (task.output["width"], task.output["height"], task.output["fps"]) == (64, 48, 4)
    assert {a.name for a in task.artifacts} == {"video.mp4", "poster.png"}
    video = sx.artifacts.download(task, "video.mp4", tmp_path / "clip.mp4")
    assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    poster = sx.artifacts.download(task, "poster.png", tmp_path)
    with Image.open(poster) as frame:
        assert frame.size == (64, 48)


def test_cli_runs_an_image_task_and_saves_its_files(
    base_url, new_key, worker, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("STUDIOX_URL", base_url)
    monkeypatch.setenv("STUDIOX_API_KEY", new_key())
    picture = tmp_path / "cat.png"
    picture.write_bytes(png_bytes())

    assert main(["run", "image_analysis", "--image", str(picture)]) == 0
    out, err = capsys.readouterr()
    assert "width: 64" in out and "100%" in err

    operations = json.dumps([{"op": "flip", "direction": "horizontal"}])
    status = main(
        [
            "run",
            "advanced_editing",
            "--image",
            str(picture),
            "--input",
            f"operations={operations}",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    saved = tmp_path / "out" / "output.png"
    assert f"saved {saved}" in out
    with Image.open(saved) as edited:
        assert edited.size == (64, 48)
