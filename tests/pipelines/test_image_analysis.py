"""image_analysis on generated images: the numbers describe the image for real."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.pipelines.conftest import b64, image_bytes
from workers.pipelines.base import TaskCanceled

FIELDS = {
    "width",
    "height",
    "format",
    "mode",
    "dominant_colors",
    "brightness",
    "contrast",
    "sharpness",
    "exif",
    "phash",
}


def _png(image: Image.Image, fmt="PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _checkerboard(size=128, cell=8) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for y in range(0, size, cell):
        for x in range((y // cell % 2) * cell, size, 2 * cell):
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill="black")
    return image


def test_red_image_is_red_with_exact_fields(run_handler):
    run = run_handler("image_analysis", {"image_base64": b64(image_bytes((80, 60)))})
    out = run()
    assert set(out) == FIELDS
    assert (out["width"], out["height"], out["format"], out["mode"]) == (80, 60, "png", "RGB")
    assert out["dominant_colors"][0] == {"hex": "#ff0000", "share": 1.0}
    assert out["contrast"] == 0.0
    assert out["sharpness"] == 0.0
    assert len(out["phash"]) == 16
    assert run.progress == sorted(run.progress) and run.progress[-1] > 0.9


def test_colour_shares_brightness_and_contrast(run_handler):
    image = Image.new("RGB", (100, 100), (0, 0, 255))
    image.paste((255, 255, 255), (0, 0, 100, 25))  # top quarter white
    out = run_handler("image_analysis", {"image_base64": b64(_png(image)), "max_colors": 3})()
    colours = {c["hex"]: c["share"] for c in out["dominant_colors"]}
    assert colours["#0000ff"] == pytest.approx(0.75, abs=0.02)
    assert colours["#ffffff"] == pytest.approx(0.25, abs=0.02)
    white = run_handler(
        "image_analysis", {"image_base64": b64(image_bytes(color=(255, 255, 255)))}
    )()
    black = run_handler("image_analysis", {"image_base64": b64(image_bytes(color=(0, 0, 0)))})()
    assert white["brightness"] == 1.0 and black["brightness"] == 0.0
    assert out["contrast"] > 0.1


def test_sharp_image_scores_higher_than_its_blurred_copy(run_handler):
    crisp = _checkerboard()
    blurred = crisp.filter(ImageFilter.GaussianBlur(4))
    sharp_score = run_handler("image_analysis", {"image_base64": b64(_png(crisp))})()["sharpness"]
    blur_score = run_handler("image_analysis", {"image_base64": b64(_png(blurred))})()["sharpness"]
    assert sharp_score > 10 * blur_score > 0


def _scene() -> Image.Image:
    """Shapes on a gradient: clear low-frequency structure, like a photo. (A checkerboard
    is a poor subject: most of its low DCT coefficients are ~0, so their order against
    the median flips with the floating-point rounding of the CPU the test runs on.)"""
    image = Image.radial_gradient("L").resize((256, 256)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 40, 120, 130), fill=(220, 40, 40))
    draw.rectangle((150, 140, 230, 220), fill=(30, 30, 200))
    draw.polygon([(140, 20), (240, 60), (180, 110)], fill=(250, 250, 250))
    return image


def test_phash_survives_resizing_and_tells_images_apart(run_handler):
    scene = _scene()

    def phash(image):
        return int(run_handler("image_analysis", {"image_base64": b64(_png(image))})()["phash"], 16)

    original = phash(scene)
    resized = [bin(original ^ phash(scene.resize((n, n)))).count("1") for n in (128, 200)]
    others = [
        bin(original ^ phash(other)).count("1")
        for other in (
            Image.linear_gradient("L").convert("RGB"),
            scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        )
    ]
    assert max(resized) <= 4 < 16 <= min(others), (resized, others)


def _jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotated
    exif[0x010F] = "StudioCam"  # Make
    exif[0x0110] = "X100"  # Model
    exif[0x0132] = "2024:05:01 10:00:00"  # DateTime
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return _png(Image.new("RGB", (40, 30), "green"), "JPEG", exif=exif)


def test_exif_reported_and_gps_stripped_unless_asked(run_handler):
    data = _jpeg_with_exif()
    out = run_handler("image_analysis", {"image_base64": b64(data)})()
    assert out["format"] == "jpeg"
    assert out["exif"]["orientation"] == 6
    assert out["exif"]["make"] == "StudioCam" and out["exif"]["model"] == "X100"
    assert out["exif"]["datetime"] == "2024:05:01 10:00:00"
    assert "gps" not in out["exif"]
    with_gps = run_handler("image_analysis", {"image_base64": b64(data), "include_gps": True})()
    assert with_gps["exif"]["gps"]["GPSLatitudeRef"] == "N"
    assert with_gps["exif"]["gps"]["GPSLatitude"] == [48.0, 51.0, 24.0]


def test_transparent_and_palette_images(run_handler):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent: seen as white
    out = run_handler("image_analysis", {"image_base64": b64(_png(rgba))})()
    assert out["mode"] == "RGBA" and out["dominant_colors"][0]["hex"] == "#ffffff"
    gif = _png(Image.new("RGB", (20, 20), (0, 255, 0)).convert("P"), "GIF")
    out = run_handler("image_analysis", {"image_base64": b64(gif)})()
    assert out["format"] == "gif" and out["dominant_colors"][0]["hex"] == "#00ff00"


def test_cancel_between_steps(run_handler):
    run = run_handler("image_analysis", {"image_base64": b64(image_bytes())}, cancel_after=1)
    with pytest.raises(TaskCanceled):
        run()
    assert len(run.progress) == 2
