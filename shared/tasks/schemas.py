"""Input schemas of the task types (marshmallow). `GET /api/task-types` shows them."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

# marshmallow compiles its URL pattern (huge Unicode classes, ~40-400 ms) on first use:
# do it while the process starts, not inside some user's first request.
validate.URL(require_tld=False)("http://localhost/")

# Limits users can read in the docs; the worker enforces them again (with the deployment's
# IMAGE_MAX_BYTES / IMAGE_MAX_PIXELS) when it decodes the image.
IMAGE_BASE64_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MAX_PIXELS = 40_000_000
MAX_EDIT_OPERATIONS = 20
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def _sniff_image(data: bytes) -> str | None:
    """Why inline image bytes cannot work, or None. Reads the header only (cheap): no
    pixels are decoded in the API, so a truncated file is only found by the worker."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
    except UnidentifiedImageError:
        return f"Not an image in a supported format ({', '.join(IMAGE_FORMATS)})."
    except Image.DecompressionBombError:
        return f"The image has more than {IMAGE_MAX_PIXELS} pixels."
    except (OSError, SyntaxError, ValueError):
        return "The image header is damaged."
    if width * height > IMAGE_MAX_PIXELS:
        return f"The image has {width}x{height} pixels; the limit is {IMAGE_MAX_PIXELS}."
    return None


class ImageSourceSchema(Schema):
    """Exactly one of `image_url` (http/https) or `image_base64`."""

    class Meta:
        unknown = RAISE

    image_url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
        metadata={"description": "http(s) URL of the image; private addresses are refused."},
    )
    image_base64 = fields.String(
        metadata={
            "description": f"The image bytes, base64 (at most {IMAGE_BASE64_MAX_BYTES} bytes decoded)."
        }
    )

    @validates_schema
    def _one_source(self, data, **_kwargs):
        given = [k for k in ("image_url", "image_base64") if data.get(k)]
        if len(given) != 1:
            raise ValidationError(
                "Give exactly one of image_url or image_base64.", field_name="image_url"
            )
        if "image_base64" in given:
            raw = data["image_base64"]
            if raw.startswith("data:") and "," in raw:
                raw = raw.split(",", 1)[1]
            if len(raw) * 3 // 4 > IMAGE_BASE64_MAX_BYTES:
                raise ValidationError(
                    f"The image is larger than {IMAGE_BASE64_MAX_BYTES} bytes.",
                    field_name="image_base64",
                )
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError("Not valid base64.", field_name="image_base64") from None
            if len(data) > IMAGE_BASE64_MAX_BYTES:
                raise ValidationError(
                    f"The image is larger than {IMAGE_BASE64_MAX_BYTES} bytes.",
                    field_name="image_base64",
                )
            problem = _sniff_image(data)
            if problem:
                raise ValidationError(problem, field_name="image_base64")


class ImageAnalysisInput(ImageSourceSchema):
    include_gps = fields.Boolean(
        load_default=False, metadata={"description": "Keep GPS EXIF tags in the output."}
    )
    max_colors = fields.Integer(load_default=5, validate=validate.Range(min=1, max=16))


OPS = (
    "resize",
    "crop",
    "rotate",
    "flip",
    "grayscale",
    "blur",
    "sharpen",
    "brightness",
    "contrast",
    "text",
)


class OperationSchema(Schema):
    """One edit; which other fields apply depends on `op`."""

    class Meta:
        unknown = RAISE

    op = fields.String(
        required=True,
        validate=validate.OneOf(OPS),
        metadata={"description": "Applied in list order."},
    )
    width = fields.Integer(validate=validate.Range(min=1, max=8192))
    height = fields.Integer(validate=validate.Range(min=1, max=8192))
    left = fields.Integer(validate=validate.Range(min=0))
    top = fields.Integer(validate=validate.Range(min=0))
    right = fields.Integer(validate=validate.Range(min=1))
    bottom = fields.Integer(validate=validate.Range(min=1))
    degrees = fields.Float(
        validate=validate.Range(min=-360, max=360),
        metadata={"description": "Counter-clockwise; the canvas grows to fit."},
    )
    direction = fields.String(validate=validate.OneOf(("horizontal", "vertical")))
    radius = fields.Float(validate=validate.Range(min=0, max=100))
    factor = fields.Float(validate=validate.Range(min=0, max=10))
    text = fields.String(validate=validate.Length(min=1, max=500))
    x = fields.Integer(validate=validate.Range(min=0))
    y = fields.Integer(validate=validate.Range(min=0))
    size = fields.Integer(validate=validate.Range(min=4, max=512))
    color = fields.String(validate=validate.Regexp(r"^#?[0-9a-fA-F]{6}$"))

    _required = {
        "resize": ("width", "height"),
        "crop": ("left", "top", "right", "bottom"),
        "rotate": ("degrees",),
        "flip": ("direction",),
        "blur": ("radius",),
        "brightness": ("factor",),
        "contrast": ("factor",),
        "text": ("text",),
    }

    @validates_schema
    def _op_fields(self, data, **_kwargs):
        missing = [f for f in self._required.get(data.get("op"), ()) if f not in data]
        if missing:
            raise ValidationError({f: [f"Required by op {data['op']!r}."] for f in missing})
        if data.get("op") == "resize" and data["width"] * data["height"] > IMAGE_MAX_PIXELS:
            raise ValidationError(
                f"width x height must be at most {IMAGE_MAX_PIXELS} pixels.", field_name="width"
            )
        if data.get("op") == "crop" and (
            data["right"] <= data["left"] or data["bottom"] <= data["top"]
        ):
            raise ValidationError("right/bottom must exceed left/top.", field_name="right")


class AdvancedEditingInput(ImageSourceSchema):
    operations = fields.List(
        fields.Nested(OperationSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_EDIT_OPERATIONS),
    )
    output_format = fields.String(
        load_default="png", validate=validate.OneOf(("png", "jpeg", "webp"))
    )
    quality = fields.Integer(
        load_default=90,
        validate=validate.Range(min=1, max=100),
        metadata={"description": "JPEG/WebP quality (PNG is lossless and ignores it)."},
    )


class VideoImageSchema(ImageSourceSchema):
    caption = fields.String(validate=validate.Length(max=200))


class VideoGenerationInput(Schema):
    class Meta:
        unknown = RAISE

    prompt = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    images = fields.List(
        fields.Nested(VideoImageSchema), load_default=list, validate=validate.Length(max=20)
    )
    duration_s = fields.Float(load_default=5, validate=validate.Range(min=1, max=60))
    fps = fields.Integer(load_default=24, validate=validate.Range(min=1, max=60))
    width = fields.Integer(
        load_default=1280,
        validate=validate.Range(min=16, max=1920),
        metadata={"description": "Frame width; an odd value is rounded down (H.264 4:2:0)."},
    )
    height = fields.Integer(
        load_default=720,
        validate=validate.Range(min=16, max=1080),
        metadata={"description": "Frame height; an odd value is rounded down."},
    )
