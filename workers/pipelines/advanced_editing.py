"""advanced_editing: an ordered list of edits applied to an image, saved as `output.<ext>`.

`apply_operation()` and `encode()` are the local provider's work (Pillow); the handler
decodes the input, lets the configured provider edit it, and stores the result.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from workers.pipelines import handler, images, providers
from workers.pipelines.base import PermanentError, TaskContext

FORMATS = {  # output_format -> (Pillow format, extension, content type)
    "png": ("PNG", "png", "image/png"),
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "webp": ("WEBP", "webp", "image/webp"),
}


@dataclass
class EditedImage:
    data: bytes
    width: int
    height: int
    format: str  # png | jpeg | webp


@handler("advanced_editing")
def run(ctx: TaskContext) -> dict:
    ctx.progress(0.05)
    source = images.load_source(ctx.input, ctx.settings)
    ctx.progress(0.2)
    edited = providers.for_task(ctx).edit_image(ctx, source)
    _, ext, content_type = FORMATS[edited.format]
    ctx.save_artifact(f"output.{ext}", edited.data, content_type)
    ctx.progress(0.98)
    return {"width": edited.width, "height": edited.height, "format": edited.format}


def edit(ctx: TaskContext, source: images.SourceImage) -> EditedImage:
    """Apply the task's operations in order, reporting progress after each."""
    image = images.oriented(source.image)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    operations = ctx.input["operations"]
    for i, op in enumerate(operations, start=1):
        image = apply_operation(image, op, ctx.settings.image_max_pixels)
        ctx.progress(0.2 + 0.7 * i / len(operations))
    output_format = ctx.input.get("output_format", "png")
    data = encode(image, output_format, ctx.input.get("quality", 90))
    return EditedImage(data, image.width, image.height, output_format)


def _rgb(color: str | None, default=(255, 255, 255)) -> tuple[int, int, int]:
    if not color:
        return default
    value = color.lstrip("#")
    return tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))


def apply_operation(image: Image.Image, op: dict, max_pixels: int) -> Image.Image:
    name = op["op"]
    if name == "resize":
        if op["width"] * op["height"] > max_pixels:
            raise PermanentError(
                f"resize to {op['width']}x{op['height']} exceeds {max_pixels} pixels.",
                code="image_too_large",
            )
        return image.resize((op["width"], op["height"]), Image.Resampling.LANCZOS)
    if name == "crop":
        box = (op["left"], op["top"], op["right"], op["bottom"])
        if box[2] > image.width or box[3] > image.height:
            raise PermanentError(
                f"crop box {box} lies outside the {image.width}x{image.height} image.",
                code="invalid_operation",
            )
        return image.crop(box)
    if name == "rotate":
        # Positive degrees turn counter-clockwise (Pillow's and mathematics' convention);
        # the canvas grows to keep the corners, new areas are transparent or white.
        fill = (255, 255, 255, 0) if image.mode == "RGBA" else "white"
        rotated = image.rotate(
            op["degrees"], expand=True, resample=Image.Resampling.BICUBIC, fillcolor=fill
        )
        if rotated.width * rotated.height > max_pixels:
            raise PermanentError("The rotated image is too large.", code="image_too_large")
        return rotated
    if name == "flip":
        return ImageOps.mirror(image) if op["direction"] == "horizontal" else ImageOps.flip(image)
    if name == "grayscale":
        return image.convert("LA" if image.mode in ("RGBA", "LA") else "L")
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(op["radius"]))
    if name == "sharpen":
        return image.filter(ImageFilter.SHARPEN)
    if name in ("brightness", "contrast"):
        enhancer = ImageEnhance.Brightness if name == "brightness" else ImageEnhance.Contrast
        if image.mode in ("RGBA", "LA"):  # enhance colour, keep the alpha channel as is
            alpha = image.getchannel("A")
            out = enhancer(image.convert(image.mode[:-1])).enhance(op["factor"])
            out.putalpha(alpha)
            return out
        return enhancer(image).enhance(op["factor"])
    if name == "text":
        return draw_text(image, op)
    raise PermanentError(f"Unknown operation {name!r}.", code="invalid_operation")


def draw_text(image: Image.Image, op: dict) -> Image.Image:
    """Text or a watermark at (x, y); Pillow's bundled font, so no font files needed."""
    # Operations return new images, so drawing in place is safe (and spares a copy).
    out = (
        image
        if image.mode in ("RGB", "RGBA")
        else image.convert("RGBA" if image.mode == "LA" else "RGB")
    )
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=op.get("size", 24))
    r, g, b = _rgb(op.get("color"))
    fill = (r, g, b, 255) if out.mode == "RGBA" else (r, g, b)
    draw.text((op.get("x", 0), op.get("y", 0)), op["text"], font=font, fill=fill)
    return out


def encode(image: Image.Image, output_format: str, quality: int) -> bytes:
    pil_format, _, _ = FORMATS[output_format]
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        # JPEG has no alpha: flatten onto white as a viewer would show it.
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    buffer = io.BytesIO()
    # PNG ignores quality; zlib level 6 is Pillow's default balance of size and speed.
    options = {"compress_level": 6} if pil_format == "PNG" else {"quality": quality}
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()
