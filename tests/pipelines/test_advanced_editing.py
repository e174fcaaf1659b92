"""advanced_editing: the stored artifact is the edited image the user asked for."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.pipelines.conftest import b64, image_bytes
from workers.pipelines.base import PermanentError, TaskCanceled


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_resize_and_convert_to_jpeg(run_handler):
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(image_bytes((200, 100))),
            "operations": [{"op": "resize", "width": 50, "height": 40}],
            "output_format": "jpeg",
            "quality": 70,
        },
    )
    assert run() == {"width": 50, "height": 40, "format": "jpeg"}
    [artifact] = run.ctx.artifacts
    assert artifact["name"] == "output.jpg" and artifact["content_type"] == "image/jpeg"
    image = _open(run.artifact("output.jpg"))
    assert (image.format, image.size) == ("JPEG", (50, 40))
    r, g, b = image.getpixel((25, 20))
    assert r > 240 and g < 15 and b < 15
    assert artifact["size"] == len(run.artifact("output.jpg"))


def test_operations_apply_in_order(run_handler):
    source = Image.new("RGB", (100, 60), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 50, 60))  # left half red, right half blue
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(buffer.getvalue()),
            "operations": [
                {"op": "crop", "left": 0, "top": 0, "right": 80, "bottom": 60},
                {"op": "flip", "direction": "horizontal"},
                {"op": "rotate", "degrees": 90},
            ],
            "output_format": "webp",
            "quality": 100,
        },
    )
    assert run() == {"width": 60, "height": 80, "format": "webp"}
    image = _open(run.artifact("output.webp")).convert("RGB")
    # After the flip, blue is on the left; a counter-clockwise quarter turn puts it at the bottom.
    assert image.getpixel((30, 75))[2] > 200 and image.getpixel((30, 5))[0] > 200
    assert run.progress == sorted(run.progress) and len(run.progress) == 6


def test_filters_text_and_tones(run_handler):
    ops = [
        {"op": "grayscale"},
        {"op": "brightness", "factor": 0.5},
        {"op": "contrast", "factor": 1.2},
        {"op": "blur", "radius": 1},
        {"op": "sharpen"},
        {"op": "text", "text": "StudioX", "x": 2, "y": 2, "size": 20, "color": "#ff0000"},
    ]
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(image_bytes((120, 40), (255, 255, 255))),
            "operations": ops,
        },
    )
    assert run() == {"width": 120, "height": 40, "format": "png"}
    image = _open(run.artifact("output.png")).convert("RGB")
    grey = image.getpixel((110, 35))
    assert grey[0] == grey[1] == grey[2] and 100 < grey[0] < 160  # grey, darker than white
    pixels = np.asarray(image)
    reds = ((pixels[..., 0] > 200) & (pixels[..., 1] < 80)).sum()
    assert reds > 20  # the red text is there


def test_rgba_to_jpeg_flattens_onto_white(run_handler):
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(image_bytes((10, 10), (0, 0, 0, 0), mode="RGBA")),
            "operations": [{"op": "sharpen"}],
            "output_format": "jpeg",
        },
    )
    run()
    assert _open(run.artifact("output.jpg")).getpixel((5, 5))[0] > 245


def test_crop_outside_the_image_is_a_clear_error(run_handler):
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(image_bytes((20, 20))),
            "operations": [{"op": "crop", "left": 0, "top": 0, "right": 50, "bottom": 10}],
        },
    )
    with pytest.raises(PermanentError) as err:
        run()
    assert err.value.code == "invalid_operation" and "outside" in err.value.message
    assert run.ctx.artifacts == []


def test_cancel_between_operations(run_handler):
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(image_bytes()),
            "operations": [{"op": "blur", "radius": 1}] * 5,
        },
        cancel_after=3,
    )
    with pytest.raises(TaskCanceled):
        run()
    assert run.ctx.artifacts == []
