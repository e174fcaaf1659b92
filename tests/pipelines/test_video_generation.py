"""video_generation: the MP4 decodes as H.264 with the requested size, fps and duration."""

from __future__ import annotations

import io

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from tests.pipelines.conftest import b64, image_bytes
from workers.pipelines.base import TaskCanceled


def probe(path) -> dict:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = [
        np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader
    ]
    count, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    return {**meta, "frames": frames, "count": count, "secs": secs}


def test_slides_from_images_with_titles(run_handler, tmp_path):
    run = run_handler(
        "video_generation",
        {
            "prompt": "A red and a blue slide",
            "images": [
                {"image_base64": b64(image_bytes((64, 64), (255, 0, 0))), "caption": "red"},
                {"image_base64": b64(image_bytes((64, 64), (0, 0, 255)))},
            ],
            "duration_s": 3,
            "fps": 10,
            "width": 160,
            "height": 96,
        },
    )
    out = run()
    assert out == {"duration_s": 3.0, "fps": 10, "width": 160, "height": 96, "frames": 30}
    assert [a["name"] for a in run.ctx.artifacts] == ["video.mp4", "poster.png"]
    assert run.ctx.artifacts[0]["content_type"] == "video/mp4"
    path = tmp_path / "video.mp4"
    path.write_bytes(run.artifact("video.mp4"))
    video = probe(path)
    assert video["codec"] == "h264" and video["pix_fmt"].startswith("yuv420p")
    assert video["size"] == (160, 96) and video["fps"] == 10
    assert abs(video["count"] - 30) <= 1 and abs(video["secs"] - 3.0) <= 0.1
    # Each image gets its own stretch of the video: red in the middle, blue at the end.
    middle, last = video["frames"][15].astype(int), video["frames"][-1].astype(int)
    assert middle[48, 80, 0] > 180 and middle[48, 80, 2] < 80
    assert last[48, 80, 2] > 180 and last[48, 80, 0] < 80
    # A crossfade: some frame between red and blue is a mix of both.
    mixes = [f[48, 80] for f in video["frames"][18:24]]
    assert any(60 < int(p[0]) < 200 and 60 < int(p[2]) < 200 for p in mixes)
    poster = Image.open(io.BytesIO(run.artifact("poster.png")))
    assert poster.size == (160, 96) and poster.getpixel((80, 40))[0] > 200  # the first slide
    assert run.progress == sorted(run.progress) and len(run.progress) >= 5


def test_title_cards_only_and_odd_sizes(run_handler, tmp_path):
    run = run_handler(
        "video_generation",
        {
            "prompt": "First card. Second card!",
            "duration_s": 1,
            "fps": 24,
            "width": 101,
            "height": 57,
        },
    )
    out = run()
    assert out == {"duration_s": 1.0, "fps": 24, "width": 100, "height": 56, "frames": 24}
    path = tmp_path / "v.mp4"
    path.write_bytes(run.artifact("video.mp4"))
    video = probe(path)
    assert video["size"] == (100, 56) and abs(video["count"] - 24) <= 1
    # Text is drawn: the card is not a flat colour.
    assert video["frames"][5].std() > 5


def test_cancel_stops_encoding(run_handler):
    run = run_handler(
        "video_generation",
        {
            "prompt": "long",
            "duration_s": 10,
            "fps": 10,
            "width": 64,
            "height": 64,
        },
        cancel_after=3,
    )
    with pytest.raises(TaskCanceled):
        run()
    assert run.ctx.artifacts == []
    assert max(run.progress) < 0.6
