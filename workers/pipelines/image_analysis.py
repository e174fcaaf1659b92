"""image_analysis: what an image is (size, format, colours, exposure, focus, EXIF, pHash).

`analyze()` is the local provider's work, plain Pillow + NumPy; the handler fetches and
decodes the input and hands it to the provider configured for the type.
"""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image

from workers.pipelines import handler, images, providers
from workers.pipelines.base import TaskContext

# Statistics are computed on a copy at most this large: the numbers barely move, and a
# 40-megapixel input would otherwise cost seconds and hundreds of MB.
STATS_MAX_SIDE = 1024
COLOR_SAMPLE_SIDE = 128

# EXIF tags worth showing, by Pillow's tag name; everything else (maker notes, thumbnails,
# binary blobs) is left out of the output.
EXIF_BASE_TAGS = {
    "Orientation": "orientation",
    "Make": "make",
    "Model": "model",
    "Software": "software",
    "DateTime": "datetime",
    "Artist": "artist",
    "Copyright": "copyright",
    "ImageDescription": "description",
}
EXIF_IFD_TAGS = {
    "DateTimeOriginal": "datetime_original",
    "LensModel": "lens_model",
    "ExposureTime": "exposure_time",
    "FNumber": "f_number",
    "ISOSpeedRatings": "iso",
    "FocalLength": "focal_length",
}


@handler("image_analysis")
def run(ctx: TaskContext) -> dict:
    ctx.progress(0.05)
    source = images.load_source(ctx.input, ctx.settings)
    ctx.progress(0.4)
    output = providers.for_task(ctx).analyze_image(ctx, source)
    ctx.progress(0.95)
    return output


def analyze(
    source: images.SourceImage,
    *,
    include_gps: bool = False,
    max_colors: int = 5,
    check=lambda: None,
) -> dict:
    """The image_analysis output of API.md; `check` is called between steps (cancel)."""
    image = source.image
    rgb = _stats_copy(image)
    check()
    gray = np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0
    output = {
        "width": image.width,
        "height": image.height,
        "format": source.format.lower(),
        "mode": image.mode,
        "dominant_colors": dominant_colors(rgb, max_colors),
    }
    check()
    output.update(
        brightness=round(float(gray.mean()), 4),
        contrast=round(float(gray.std()), 4),  # RMS contrast, 0..0.5
        sharpness=sharpness(gray),
    )
    check()
    output.update(exif=exif_summary(image, include_gps), phash=phash(rgb))
    return output


def _stats_copy(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Judge colours as a viewer sees them: transparent areas over white.
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        rgb = flat
    else:
        rgb = image.convert("RGB")
    if max(rgb.size) > STATS_MAX_SIDE:
        rgb = rgb.copy()
        rgb.thumbnail((STATS_MAX_SIDE, STATS_MAX_SIDE), Image.Resampling.BILINEAR)
    return rgb


def dominant_colors(rgb: Image.Image, max_colors: int) -> list[dict]:
    """The `max_colors` most common colours (median cut) and their share of the pixels."""
    sample = rgb.copy()
    sample.thumbnail((COLOR_SAMPLE_SIDE, COLOR_SAMPLE_SIDE), Image.Resampling.BOX)
    quantized = sample.quantize(colors=max_colors, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    counts = quantized.getcolors(max_colors * 4) or []
    total = sum(count for count, _ in counts) or 1
    merged: dict[str, int] = {}
    for count, index in counts:
        r, g, b = palette[index * 3 : index * 3 + 3]
        key = f"#{r:02x}{g:02x}{b:02x}"
        merged[key] = merged.get(key, 0) + count
    ranked = sorted(merged.items(), key=lambda item: -item[1])[:max_colors]
    return [{"hex": hex_, "share": round(count / total, 4)} for hex_, count in ranked]


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian (x1000 on 0..1 pixels): low means blurry.

    A crisp photo scores in the tens to hundreds; a flat or heavily blurred one near 0.
    """
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    )
    return round(float(lap.var()) * 1000.0, 4)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT32 = _dct_matrix(32)


def phash(rgb: Image.Image) -> str:
    """64-bit perceptual hash (DCT of a 32x32 grey thumbnail), 16 hex digits.

    Same algorithm as the `imagehash` package's phash: near-identical images differ in a
    few bits (compare with Hamming distance).
    """
    small = rgb.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.float64)
    dct = _DCT32 @ pixels @ _DCT32.T
    low = dct[:8, :8]
    bits = (low > np.median(low)).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def _json_value(value):
    if isinstance(value, bytes):
        return None  # binary blobs are not for JSON clients
    if isinstance(value, tuple):
        items = [_json_value(v) for v in value]
        return None if any(v is None for v in items) else items
    if isinstance(value, (int, str, bool)):
        return value.strip("\x00 ") if isinstance(value, str) else value
    try:
        return round(float(value), 6)  # IFDRational and friends
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def exif_summary(image: Image.Image, include_gps: bool) -> dict:
    """Orientation, camera, dates and exposure; GPS only when asked (it locates people)."""
    exif = image.getexif()
    out: dict = {}
    names = {v: k for k, v in ExifTags.TAGS.items()}
    for tag, key in EXIF_BASE_TAGS.items():
        value = _json_value(exif.get(names[tag]))
        if value not in (None, ""):
            out[key] = value
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, key in EXIF_IFD_TAGS.items():
        value = _json_value(ifd.get(names[tag]))
        if value not in (None, ""):
            out[key] = value
    if include_gps:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        if gps:
            out["gps"] = {
                ExifTags.GPSTAGS.get(k, str(k)): v
                for k, v in ((k, _json_value(v)) for k, v in gps.items())
                if v is not None
            }
    return out
