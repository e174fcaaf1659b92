"""The http provider against a model API served by the test on 127.0.0.1."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.pipelines.conftest import b64, image_bytes
from tests.pipelines.fake_server import Reply
from workers.pipelines.base import PermanentError, TransientError
from workers.pipelines.providers.http import data_uri

ANALYSIS = {
    "width": 64,
    "height": 48,
    "format": "png",
    "mode": "RGB",
    "dominant_colors": [{"hex": "#ff0000", "share": 1.0}],
    "brightness": 0.3,
    "contrast": 0.0,
    "sharpness": 0.0,
    "phash": "c629292929c6d629",
    "exif": {"make": "Cam", "gps": {"GPSLatitude": [1, 2, 3]}},
}


@pytest.fixture()
def http_settings(pipeline_settings, fake_server):
    return pipeline_settings.with_(
        ai_providers=("image_analysis=http", "advanced_editing=http", "video_generation=http"),
        ai_http_base_url=fake_server.url,
        ai_http_api_key="sk-test",
    )


def done(output, id="p1") -> dict:
    return {"id": id, "status": "succeeded", "output": output}


def test_success_sends_the_image_and_keeps_gps_out(run_handler, fake_server, http_settings):
    fake_server.route("POST", "/predictions", Reply(201, done(ANALYSIS)))
    out = run_handler(
        "image_analysis", {"image_base64": b64(image_bytes())}, settings=http_settings
    )()
    assert out == {**ANALYSIS, "exif": {"make": "Cam"}}
    [body] = fake_server.calls("POST", "/predictions")
    sent = json.loads(body)
    assert sent["model"] == "image_analysis"
    assert sent["input"]["image"] == data_uri(image_bytes(), "image/png")


def test_polls_until_the_prediction_finishes(run_handler, fake_server, http_settings):
    fake_server.route("POST", "/predictions", Reply(201, {"id": "p9", "status": "starting"}))
    fake_server.route(
        "GET",
        "/predictions/p9",
        Reply(200, {"id": "p9", "status": "processing"}),
        Reply(200, done(ANALYSIS, "p9")),
    )
    run = run_handler(
        "image_analysis", {"image_base64": b64(image_bytes())}, settings=http_settings
    )
    assert run()["phash"] == ANALYSIS["phash"]
    assert len(fake_server.calls("GET", "/predictions/p9")) == 2
    assert run.progress == sorted(run.progress) and len(run.progress) >= 4


def test_429_then_success(run_handler, fake_server, http_settings):
    fake_server.route(
        "POST",
        "/predictions",
        Reply(429, {"detail": "slow down"}, {"Retry-After": "0"}),
        Reply(503),
        Reply(201, done(ANALYSIS)),
    )
    out = run_handler(
        "image_analysis", {"image_base64": b64(image_bytes())}, settings=http_settings
    )()
    assert out["width"] == 64
    assert len(fake_server.calls("POST", "/predictions")) == 3


def test_500s_until_give_up_is_transient(run_handler, fake_server, http_settings):
    fake_server.route("POST", "/predictions", Reply(500, {"detail": "boom"}))
    run = run_handler(
        "image_analysis", {"image_base64": b64(image_bytes())}, settings=http_settings
    )
    with pytest.raises(TransientError) as err:
        run()
    assert err.value.code == "upstream_unavailable"
    assert len(fake_server.calls("POST", "/predictions")) == 3  # 1 + AI_HTTP_MAX_RETRIES


def test_timeout(run_handler, fake_server, http_settings):
    fake_server.route("POST", "/predictions", Reply(201, done(ANALYSIS), delay_s=1.0))
    run = run_handler(
        "image_analysis",
        {"image_base64": b64(image_bytes())},
        settings=http_settings.with_(ai_http_timeout_s=0.2, ai_http_max_retries=1),
    )
    with pytest.raises(TransientError) as err:
        run()
    assert err.value.code == "upstream_timeout"


@pytest.mark.parametrize(
    "reply, code",
    [
        (Reply(422, {"detail": "bad operation"}), "upstream_rejected"),
        (Reply(401, {"detail": "no"}), "upstream_auth_failed"),
        (Reply(201, {"id": "p1", "status": "failed", "error": "NSFW"}), "upstream_failed"),
        (Reply(201, done({"width": 1})), "upstream_invalid_response"),
        (Reply(200, b"<html>"), "upstream_invalid_response"),
    ],
)
def test_errors_map_to_task_codes(run_handler, fake_server, http_settings, reply, code):
    fake_server.route("POST", "/predictions", reply)
    run = run_handler(
        "image_analysis", {"image_base64": b64(image_bytes())}, settings=http_settings
    )
    with pytest.raises(PermanentError) as err:
        run()
    assert err.value.code == code


def test_editing_output_is_fetched_and_converted(run_handler, fake_server, http_settings):
    edited = image_bytes((33, 22), (0, 0, 255))
    fake_server.route(
        "POST", "/predictions", Reply(201, done([f"{fake_server.url}/files/out.png"]))
    )
    fake_server.route("GET", "/files/out.png", Reply(200, edited))
    run = run_handler(
        "advanced_editing",
        {
            "image_base64": b64(image_bytes()),
            "output_format": "jpeg",
            "operations": [{"op": "resize", "width": 33, "height": 22}],
        },
        settings=http_settings,
    )
    assert run() == {"width": 33, "height": 22, "format": "jpeg"}
    image = Image.open(io.BytesIO(run.artifact("output.jpg")))
    assert image.format == "JPEG" and image.size == (33, 22)


def test_video_output_is_checked_by_decoding(
    run_handler, fake_server, http_settings, pipeline_settings
):
    local = run_handler(
        "video_generation",
        {"prompt": "remote", "duration_s": 1, "fps": 8, "width": 64, "height": 48},
    )
    local()
    mp4 = local.artifact("video.mp4")
    fake_server.route("POST", "/predictions", Reply(201, done(data_uri(mp4, "video/mp4"))))
    run = run_handler(
        "video_generation",
        {"prompt": "remote", "duration_s": 1, "fps": 8, "width": 64, "height": 48},
        settings=http_settings,
    )
    assert run() == {"duration_s": 1.0, "fps": 8, "width": 64, "height": 48, "frames": 8}
    assert run.artifact("video.mp4") == mp4
    fake_server.route("POST", "/predictions", Reply(201, done(data_uri(b"junk", "video/mp4"))))
    with pytest.raises(PermanentError) as err:
        run_handler("video_generation", {"prompt": "x"}, settings=http_settings)()
    assert err.value.code == "upstream_invalid_response"
