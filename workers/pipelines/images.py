"""Getting a user's image safely: base64 or a fetched URL, decoded under hard limits.

Everything a user sends is hostile until decoded: the URL may point into our network, the
server may stream forever, the bytes may be a decompression bomb, a truncated file or not
an image at all. Each case ends as a `PermanentError`/`TransientError` with a clear code,
never as a crashed worker.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
import warnings
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.config import Settings
from workers.pipelines.base import PermanentError, TransientError

# Formats Pillow may decode for us. Pillow can open many more (EPS shells out to
# Ghostscript, some legacy formats are poorly fuzzed): only the web's common ones here.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
MAX_REDIRECTS = 3
USER_AGENT = "StudioX-ImageFetcher/1.0"


@dataclass
class SourceImage:
    """A decoded, fully loaded image and the bytes it came from."""

    data: bytes
    image: Image.Image
    format: str  # Pillow's name: PNG, JPEG, ...

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")


def decode_image(data: bytes, settings: Settings) -> SourceImage:
    """Sniff and decode `data` with Pillow under the size and pixel limits."""
    if len(data) > settings.image_max_bytes:
        raise PermanentError(
            f"The image is {len(data)} bytes; the limit is {settings.image_max_bytes}.",
            code="image_too_large",
        )
    # The header tells the size before any pixel is decoded: refuse bombs here, cheaply.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise PermanentError(
            f"The data is not an image in a supported format ({', '.join(ALLOWED_FORMATS)}).",
            code="invalid_image",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(settings) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"The image could not be read: {exc}.", code="invalid_image") from None
    width, height = image.size
    if width * height > settings.image_max_pixels:
        raise _too_many_pixels(settings, width, height)
    try:
        # ImageFile.LOAD_TRUNCATED_IMAGES stays False (Pillow's default): a cut-off file is
        # an error rather than an image with a grey bottom half.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(settings, width, height) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PermanentError(
            f"The image is damaged or truncated ({exc}).", code="invalid_image"
        ) from None
    return SourceImage(data=data, image=image, format=image.format or "PNG")


def oriented(image: Image.Image) -> Image.Image:
    """The first frame the way a viewer shows it (EXIF orientation applied, in place:
    the decoded image is ours, and a copy of a big one costs time and memory)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    ImageOps.exif_transpose(image, in_place=True)
    return image


def _too_many_pixels(
    settings: Settings, width: int | None = None, height: int | None = None
) -> PermanentError:
    size = f" ({width}x{height})" if width else ""
    return PermanentError(
        f"The image has too many pixels{size}; the limit is {settings.image_max_pixels}.",
        code="image_too_large",
    )


def decode_base64(value: str, settings: Settings) -> bytes:
    raw = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    # Check the encoded length first, so a huge string is refused before it is decoded.
    if len(raw) * 3 // 4 > settings.image_max_bytes + 3:
        raise PermanentError(
            f"The image is larger than {settings.image_max_bytes} bytes.", code="image_too_large"
        )
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise PermanentError("image_base64 is not valid base64.", code="invalid_image") from None


def load_source(source: dict, settings: Settings) -> SourceImage:
    """The image of an `{image_url | image_base64}` input, decoded."""
    if source.get("image_base64"):
        data = decode_base64(source["image_base64"], settings)
    elif source.get("image_url"):
        data = fetch_url(source["image_url"], settings)
    else:
        raise PermanentError("Give image_url or image_base64.", code="invalid_input")
    return decode_image(data, settings)


# -- fetching image_url ---------------------------------------------------------------


def _ip_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def resolve_public(host: str, port: int, settings: Settings) -> str:
    """One IP address of `host` that we may connect to, or PermanentError(fetch_refused).

    Every address the name resolves to must be acceptable: a name that resolves to one
    public and one private address is refused, so the choice of address cannot be steered.
    """
    allowed = host.lower().rstrip(".") in {h.lower() for h in settings.fetch_allow_hosts}
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise PermanentError(f"The host {host!r} does not resolve.", code="fetch_failed") from None
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not allowed and _ip_refused(ip):
            raise PermanentError(
                f"image_url points at a non-public address ({ip}); refused.",
                code="fetch_refused",
            )
        addresses.append(ip)
    if not addresses:
        raise PermanentError(f"The host {host!r} does not resolve.", code="fetch_failed")
    # Prefer IPv4: containers often have no IPv6 route.
    addresses.sort(key=lambda ip: ip.version)
    return str(addresses[0])


def fetch_url(
    url: str, settings: Settings, max_bytes: int | None = None, sink: BinaryIO | None = None
) -> bytes:
    """GET an http(s) URL under the SSRF rules, a size cap and an overall time cap.

    Returns the body, or writes it to `sink` (for big files such as videos) and returns b"".
    """
    max_bytes = settings.image_max_bytes if max_bytes is None else max_bytes
    deadline = time.monotonic() + settings.image_fetch_timeout_s
    timeout = httpx.Timeout(settings.image_fetch_timeout_s)
    # trust_env=False: no proxy from the environment may reroute (or reveal) the request.
    with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            response_or_next = _fetch_once(client, url, settings, max_bytes, deadline, sink)
            if isinstance(response_or_next, bytes):
                return response_or_next
            url = response_or_next
    raise PermanentError(
        f"image_url redirects more than {MAX_REDIRECTS} times.", code="fetch_failed"
    )


def _fetch_once(
    client: httpx.Client,
    url: str,
    settings: Settings,
    max_bytes: int,
    deadline: float,
    sink: BinaryIO | None,
) -> bytes | str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError("image_url must be an http(s) URL with a host.", code="fetch_refused")
    if parts.username or parts.password:
        raise PermanentError("image_url must not carry credentials.", code="fetch_refused")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ip = resolve_public(host, port, settings)
    # Connect to the address we checked, not to whatever the name resolves to a moment
    # later (DNS rebinding). Host header and TLS SNI/certificate check keep the name.
    ip_host = f"[{ip}]" if ":" in ip else ip
    target = parts._replace(netloc=f"{ip_host}:{port}").geturl()
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    # identity: the cap below counts the bytes on the wire, and no gzip bomb gets inflated.
    headers = {"Host": host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    try:
        with client.stream("GET", target, headers=headers, extensions=extensions) as response:
            if response.is_redirect and "location" in response.headers:
                return urljoin(url, response.headers["location"])
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientError(
                    f"image_url answered HTTP {response.status_code}.", code="fetch_failed"
                )
            if response.status_code != 200:
                raise PermanentError(
                    f"image_url answered HTTP {response.status_code}.", code="fetch_failed"
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise PermanentError(
                    f"The image is {declared} bytes; the limit is {max_bytes}.",
                    code="image_too_large",
                )
            chunks, size = [], 0
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > max_bytes:
                    raise PermanentError(
                        f"The image is larger than {max_bytes} bytes.", code="image_too_large"
                    )
                if time.monotonic() > deadline:
                    raise TransientError(
                        f"Fetching image_url took longer than {settings.image_fetch_timeout_s} s.",
                        code="fetch_failed",
                    )
                if sink is None:
                    chunks.append(chunk)
                else:
                    sink.write(chunk)
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise TransientError(
            f"Fetching image_url timed out after {settings.image_fetch_timeout_s} s.",
            code="fetch_failed",
        ) from None
    except httpx.HTTPError as exc:
        raise TransientError(
            f"Fetching image_url failed: {type(exc).__name__}.", code="fetch_failed"
        ) from None
