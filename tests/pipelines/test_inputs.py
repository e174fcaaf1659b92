"""Hostile inputs end as clear task errors (or 422 at submit), never a worker crash."""

from __future__ import annotations

import ipaddress
import struct
import zlib

import pytest

from shared.errors import ValidationFailed
from shared.tasks import registry
from tests.pipelines.conftest import b64, image_bytes
from tests.pipelines.fake_server import Reply
from workers.pipelines import images
from workers.pipelines.base import PermanentError


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height: a decompression bomb's header, a few bytes long."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def fails_with(run_handler, code: str, input: dict, settings=None, **kw) -> str:
    run = run_handler("image_analysis", input, settings=settings, validate=False, **kw)
    with pytest.raises(PermanentError) as err:
        run()
    assert err.value.code == code, err.value.message
    return err.value.message


def test_decompression_bomb(run_handler):
    message = fails_with(
        run_handler, "image_too_large", {"image_base64": b64(png_header_only(30000, 30000))}
    )
    assert "too many pixels" in message


def test_pixel_limit_from_settings(run_handler, pipeline_settings):
    small = pipeline_settings.with_(image_max_pixels=1000)
    fails_with(
        run_handler,
        "image_too_large",
        {"image_base64": b64(image_bytes((100, 100)))},
        settings=small,
    )


def test_truncated_file(run_handler):
    noisy = image_bytes((300, 300), (10, 200, 30), fmt="JPEG")
    fails_with(run_handler, "invalid_image", {"image_base64": b64(noisy[: len(noisy) // 2])})


def test_not_an_image(run_handler):
    fails_with(run_handler, "invalid_image", {"image_base64": b64(b"%PDF-1.4 not an image")})


def test_unsupported_format_is_not_decoded(run_handler):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    fails_with(run_handler, "invalid_image", {"image_base64": b64(eps)})


def test_oversized_bytes(run_handler, pipeline_settings):
    fails_with(
        run_handler,
        "image_too_large",
        {"image_base64": b64(image_bytes((64, 64)))},
        settings=pipeline_settings.with_(image_max_bytes=100),
    )


# -- at submit time ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, words",
    [
        (b"hello, not an image", "supported format"),
        (png_header_only(30000, 30000), "pixels"),
    ],
)
def test_submit_time_422_when_knowable(data, words):
    with pytest.raises(ValidationFailed) as err:
        registry.get("image_analysis").validate({"image_base64": b64(data)})
    assert words in str(err.value.details)


def test_submit_rejects_two_sources_and_huge_resize():
    with pytest.raises(ValidationFailed):
        registry.get("image_analysis").validate(
            {"image_base64": b64(image_bytes()), "image_url": "http://example.com/a.png"}
        )
    with pytest.raises(ValidationFailed):
        registry.get("advanced_editing").validate(
            {
                "image_base64": b64(image_bytes()),
                "operations": [{"op": "resize", "width": 8192, "height": 8192}],
            }
        )


# -- image_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "fc00::1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert images._ip_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert not images._ip_refused(ipaddress.ip_address(address))


def test_url_to_loopback_refused_by_default(run_handler, fake_server):
    fake_server.route("GET", "/red.png", Reply(200, image_bytes()))
    message = fails_with(run_handler, "fetch_refused", {"image_url": f"{fake_server.url}/red.png"})
    assert "127.0.0.1" in message
    assert fake_server.requests == []  # refused before connecting
    fails_with(
        run_handler, "fetch_refused", {"image_url": f"http://localhost:{fake_server.port}/red.png"}
    )


def test_url_allowed_when_configured(run_handler, fake_server, pipeline_settings):
    fake_server.route(
        "GET",
        "/photo",
        Reply(200, image_bytes((30, 20), (0, 255, 0)), {"Content-Type": "text/plain"}),
    )
    allowed = pipeline_settings.with_(fetch_allow_hosts=("127.0.0.1",))
    out = run_handler(
        "image_analysis", {"image_url": f"{fake_server.url}/photo"}, settings=allowed
    )()
    # Sniffed as PNG whatever the extension or content type say.
    assert (out["width"], out["format"], out["dominant_colors"][0]["hex"]) == (30, "png", "#00ff00")


def test_url_redirect_to_a_refused_host(run_handler, fake_server, pipeline_settings):
    target = f"http://localhost:{fake_server.port}/red.png"
    fake_server.route("GET", "/go", Reply(302, b"", {"Location": target}))
    allowed = pipeline_settings.with_(fetch_allow_hosts=("127.0.0.1",))
    fails_with(
        run_handler, "fetch_refused", {"image_url": f"{fake_server.url}/go"}, settings=allowed
    )


def test_url_size_cap_http_errors_and_timeout(run_handler, fake_server, pipeline_settings):
    settings = pipeline_settings.with_(
        fetch_allow_hosts=("127.0.0.1",), image_max_bytes=1000, image_fetch_timeout_s=0.5
    )
    fake_server.route("GET", "/big", Reply(200, b"\x00" * 5000))
    fake_server.route("GET", "/slow", Reply(200, image_bytes(), delay_s=2))
    fails_with(
        run_handler, "image_too_large", {"image_url": f"{fake_server.url}/big"}, settings=settings
    )
    fails_with(
        run_handler, "fetch_failed", {"image_url": f"{fake_server.url}/missing"}, settings=settings
    )
    run = run_handler("image_analysis", {"image_url": f"{fake_server.url}/slow"}, settings=settings)
    from workers.pipelines.base import TransientError

    with pytest.raises(TransientError) as err:
        run()
    assert err.value.code == "fetch_failed" and "timed out" in err.value.message


def test_non_http_schemes_refused(run_handler):
    fails_with(run_handler, "fetch_refused", {"image_url": "file:///etc/passwd"})
    fails_with(run_handler, "fetch_refused", {"image_url": "http://user:pw@example.com/a.png"})
