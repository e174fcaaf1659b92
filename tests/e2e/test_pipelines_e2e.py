"""Every pipeline through the real API, Redis and a real `celery worker` process."""

from __future__ import annotations

import hashlib
import io
import pathlib
import uuid

import imageio_ffmpeg
from PIL import Image

from tests.e2e.conftest import wait_for
from tests.e2e.test_lifecycle import assert_audit_clean, balance, ledger_for, poll, submit
from tests.pipelines.conftest import b64, image_bytes
from tests.pipelines.fake_server import FakeServer, Reply


def download(client, auth, artifact, sub="user_test"):
    response = client.get(artifact["url"], headers=auth(sub))
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == artifact["content_type"]
    assert hashlib.sha256(response.data).hexdigest() == artifact["sha256"]
    assert len(response.data) == artifact["size"]
    return response.data


def test_each_task_type_succeeds_with_real_outputs(
    live_client, auth, celery_worker, database, tmp_path
):
    red = b64(image_bytes((64, 48), (255, 0, 0)))
    analysis = submit(live_client, auth, {"image_base64": red}, type="image_analysis")
    editing = submit(
        live_client,
        auth,
        {
            "image_base64": red,
            "output_format": "webp",
            "operations": [{"op": "resize", "width": 32, "height": 24}, {"op": "grayscale"}],
        },
        type="advanced_editing",
    )

    done = poll(live_client, auth, analysis["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["output"]["dominant_colors"][0] == {"hex": "#ff0000", "share": 1.0}
    assert (done["output"]["width"], done["output"]["height"]) == (64, 48)
    assert done["progress"] == 1.0 and done["artifacts"] == []

    done = poll(live_client, auth, editing["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == {"width": 32, "height": 24, "format": "webp"}
    [artifact] = done["artifacts"]
    assert artifact["name"] == "output.webp"
    image = Image.open(io.BytesIO(download(live_client, auth, artifact)))
    assert (image.format, image.size) == ("WEBP", (32, 24))
    other = live_client.get(artifact["url"], headers=auth("user_intruder"))
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "not_found"

    video = submit(
        live_client,
        auth,
        {
            "prompt": "StudioX end to end",
            "images": [{"image_base64": red, "caption": "red"}],
            "duration_s": 2,
            "fps": 12,
            "width": 128,
            "height": 72,
        },
        type="video_generation",
    )
    done = poll(live_client, auth, video["id"], timeout=60)
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == {
        "duration_s": 2.0,
        "fps": 12,
        "width": 128,
        "height": 72,
        "frames": 24,
    }
    by_name = {a["name"]: a for a in done["artifacts"]}
    assert by_name["video.mp4"]["content_type"] == "video/mp4"
    path = tmp_path / "video.mp4"
    path.write_bytes(download(live_client, auth, by_name["video.mp4"]))
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    assert meta["codec"] == "h264" and meta["size"] == (128, 72)
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert abs(frames - 24) <= 1 and abs(secs - 2.0) <= 1 / 12
    poster = Image.open(io.BytesIO(download(live_client, auth, by_name["poster.png"])))
    assert poster.size == (128, 72)

    # A truncated image passes the submit-time header check, then fails (and refunds).
    jpeg = image_bytes((200, 200), (0, 128, 0), fmt="JPEG")
    bad = submit(
        live_client, auth, {"image_base64": b64(jpeg[: len(jpeg) // 2])}, type="image_analysis"
    )
    done = poll(live_client, auth, bad["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_image"
    assert ledger_for(database, bad["id"]) == [
        ("task_charge", "plan", -1),
        ("task_refund", "plan", 1),
    ]
    assert balance(live_client, auth) == 10 - 1 - 3 - 5
    assert_audit_clean(database)


def test_non_image_is_rejected_at_submit(live_client, auth):
    response = live_client.post(
        "/api/tasks",
        headers=auth(),
        json={"type": "image_analysis", "input": {"image_base64": b64(b"definitely not an image")}},
    )
    assert response.status_code == 422
    assert "image_base64" in str(response.get_json()["error"]["details"])
    assert balance(live_client, auth) == 10


def test_http_provider_500s_until_give_up_fail_and_refund(
    live_client, auth, start_worker, database
):
    with FakeServer() as model_api:
        model_api.route("POST", "/predictions", Reply(500, {"detail": "overloaded"}))
        start_worker(
            AI_PROVIDERS="image_analysis=http",
            AI_HTTP_BASE_URL=model_api.url,
            AI_HTTP_MAX_RETRIES=1,
            AI_HTTP_BACKOFF_S=0.05,
            AI_HTTP_TIMEOUT_S=2,
        )
        task = submit(
            live_client, auth, {"image_base64": b64(image_bytes())}, type="image_analysis"
        )
        done = poll(live_client, auth, task["id"], timeout=60)
        calls = len(model_api.calls("POST", "/predictions"))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_unavailable"
    assert "gave up after 3 attempts" in done["error"]["message"]
    assert calls == 3 * 2  # 3 task attempts x (1 + AI_HTTP_MAX_RETRIES) requests
    assert balance(live_client, auth) == 10
    assert ledger_for(database, task["id"]) == [
        ("task_charge", "plan", -1),
        ("task_refund", "plan", 1),
    ]
    assert_audit_clean(database)


def test_http_provider_success_through_the_worker(live_client, auth, start_worker):
    output = {
        "width": 1,
        "height": 1,
        "format": "png",
        "mode": "RGB",
        "dominant_colors": [],
        "brightness": 0.5,
        "contrast": 0.1,
        "sharpness": 2.0,
        "exif": {},
        "phash": "0" * 16,
    }
    with FakeServer() as model_api:
        model_api.route(
            "POST",
            "/predictions",
            Reply(429, {"detail": "later"}, {"Retry-After": "0"}),
            Reply(201, {"id": "p1", "status": "succeeded", "output": output}),
        )
        start_worker(
            AI_PROVIDERS="image_analysis=http",
            AI_HTTP_BASE_URL=model_api.url,
            AI_HTTP_BACKOFF_S=0.05,
        )
        task = submit(
            live_client, auth, {"image_base64": b64(image_bytes())}, type="image_analysis"
        )
        done = poll(live_client, auth, task["id"], timeout=30)
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == output


def test_retention_job_deletes_files_and_keeps_metadata(
    live_client, auth, start_worker, app, settings
):
    start_worker(ARTIFACT_RETENTION_DAYS=0)
    task = submit(
        live_client,
        auth,
        {"image_base64": b64(image_bytes()), "operations": [{"op": "sharpen"}]},
        type="advanced_editing",
    )
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "succeeded", done["error"]
    [artifact] = done["artifacts"]
    download(live_client, auth, artifact)
    files = settings.storage_url[len("file://") :]

    app.extensions["studiox"].producer.send_task(
        "studiox.delete_expired_artifacts", task_id=str(uuid.uuid4())
    )
    response = wait_for(
        lambda: (r := live_client.get(artifact["url"], headers=auth())).status_code == 410 and r
    )
    assert response.get_json()["error"]["code"] == "artifact_expired"
    assert not (pathlib.Path(files) / task["id"]).exists()
    kept = live_client.get(f"/api/tasks/{task['id']}", headers=auth()).get_json()
    assert kept["status"] == "succeeded" and kept["output"] == done["output"]
    assert kept["artifacts"][0]["sha256"] == artifact["sha256"]
