"""The `http` provider: an external model API with a Replicate-style predictions endpoint.

    POST {AI_HTTP_BASE_URL}/predictions   {"model": "<task type>", "input": {...}}
      -> {"id", "status": starting|processing|succeeded|failed|canceled, "output", "error",
          "urls": {"get", "cancel"}}
    GET  {AI_HTTP_BASE_URL}/predictions/<id>   (polled until the status is final)

Images go out as data URIs of the bytes we already fetched and checked, so the remote
side never sees a URL the user chose. Outputs per type:
- image_analysis: the output object itself (API.md field names; GPS dropped unless asked);
- advanced_editing: the edited image as a URL or data URI (re-encoded if the format differs);
- video_generation: the MP4 as a URL or data URI, checked by decoding it with ffmpeg.

429, 5xx, timeouts and connection errors are retried here with exponential backoff
(AI_HTTP_MAX_RETRIES, AI_HTTP_BACKOFF_S), then raised as TransientError so the task is
retried later (and, once its attempts are spent, failed and refunded). Other 4xx and
failed predictions are PermanentErrors: the same request would fail again.
"""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import imageio_ffmpeg

from workers.pipelines import advanced_editing, images
from workers.pipelines.base import PermanentError, TaskCanceled, TaskContext, TransientError
from workers.pipelines.video_generation import VideoResult

FINAL = {"succeeded", "failed", "canceled"}
POLL_FIRST_S = 0.25
POLL_MAX_S = 2.0
RETRY_AFTER_MAX_S = 30.0
VIDEO_MAX_BYTES = 512 * 1024 * 1024
ANALYSIS_FIELDS = (
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
)


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


class HttpProvider:
    name = "http"

    def __init__(self, settings, sleep=time.sleep):
        if not settings.ai_http_base_url:
            raise PermanentError(
                "AI_PROVIDERS names http but AI_HTTP_BASE_URL is not set.",
                code="provider_not_configured",
            )
        self.settings = settings
        self.base = settings.ai_http_base_url.rstrip("/")
        self.sleep = sleep
        headers = {"User-Agent": "StudioX/1.0"}
        if settings.ai_http_api_key:
            headers["Authorization"] = f"Bearer {settings.ai_http_api_key}"
        self.headers = headers
        # Files the model API hands back may live on its own host (often private in
        # self-hosted setups): that host is trusted, user-given URLs stay under the rules.
        host = urlsplit(self.base).hostname or ""
        self.download_settings = settings.with_(
            fetch_allow_hosts=(*settings.fetch_allow_hosts, host),
            image_fetch_timeout_s=settings.ai_http_timeout_s,
        )

    # -- the three task types -------------------------------------------------------

    def analyze_image(self, ctx: TaskContext, source: images.SourceImage) -> dict:
        include_gps = ctx.input.get("include_gps", False)
        output = self.predict(
            ctx,
            {
                "image": data_uri(source.data, source.content_type),
                "include_gps": include_gps,
                "max_colors": ctx.input.get("max_colors", 5),
            },
        )
        if not isinstance(output, dict) or any(f not in output for f in ANALYSIS_FIELDS):
            missing = [
                f for f in ANALYSIS_FIELDS if not isinstance(output, dict) or f not in output
            ]
            raise PermanentError(
                f"The model API's answer lacks {', '.join(missing)}.",
                code="upstream_invalid_response",
            )
        result = {f: output[f] for f in ANALYSIS_FIELDS}
        if not include_gps and isinstance(result["exif"], dict):
            # Our privacy promise holds whatever the remote model returns.
            result["exif"] = {k: v for k, v in result["exif"].items() if "gps" not in k.lower()}
        return result

    def edit_image(
        self, ctx: TaskContext, source: images.SourceImage
    ) -> advanced_editing.EditedImage:
        output_format = ctx.input.get("output_format", "png")
        quality = ctx.input.get("quality", 90)
        output = self.predict(
            ctx,
            {
                "image": data_uri(source.data, source.content_type),
                "operations": ctx.input["operations"],
                "output_format": output_format,
                "quality": quality,
            },
        )
        data = self._file_bytes(output, self.settings.image_max_bytes)
        try:
            edited = images.decode_image(data, self.download_settings)
        except PermanentError as exc:
            raise PermanentError(
                f"The model API returned a bad image: {exc.message}",
                code="upstream_invalid_response",
            ) from None
        if edited.format.lower() != advanced_editing.FORMATS[output_format][0].lower():
            data = advanced_editing.encode(edited.image, output_format, quality)
        return advanced_editing.EditedImage(
            data, edited.image.width, edited.image.height, output_format
        )

    def generate_video(self, ctx: TaskContext, workdir: Path) -> VideoResult:
        output = self.predict(ctx, dict(ctx.input))
        path = workdir / "video.mp4"
        self._file_to(output, path, VIDEO_MAX_BYTES)
        ctx.check_canceled()
        return probe_video(path)

    # -- predictions --------------------------------------------------------------------

    def predict(self, ctx: TaskContext, model_input: dict):
        """Create a prediction and wait for its output (progress while polling)."""
        with httpx.Client(
            timeout=self.settings.ai_http_timeout_s, headers=self.headers, trust_env=False
        ) as client:
            prediction = self._request(
                client,
                "POST",
                f"{self.base}/predictions",
                json={"model": ctx.type, "input": model_input},
            )
            delay, progress = POLL_FIRST_S, 0.4
            while prediction.get("status") not in FINAL:
                if not prediction.get("id"):
                    raise PermanentError(
                        "The model API's answer has no prediction id.",
                        code="upstream_invalid_response",
                    )
                try:
                    # Creeps towards 0.9: the remote side does not say how far it is.
                    progress += (0.9 - progress) * 0.1
                    ctx.progress(progress)
                except TaskCanceled:
                    self._cancel(client, prediction)
                    raise
                self.sleep(delay)
                delay = min(delay * 2, POLL_MAX_S)
                url = (prediction.get("urls") or {}).get("get") or (
                    f"{self.base}/predictions/{prediction['id']}"
                )
                prediction = self._request(client, "GET", url)
        status = prediction["status"]
        if status != "succeeded":
            message = str(prediction.get("error") or f"the prediction ended {status}")[:500]
            raise PermanentError(f"The model API failed: {message}", code="upstream_failed")
        return prediction.get("output")

    def _cancel(self, client: httpx.Client, prediction: dict) -> None:
        url = (prediction.get("urls") or {}).get("cancel") or (
            f"{self.base}/predictions/{prediction.get('id')}/cancel"
        )
        with contextlib.suppress(httpx.HTTPError):  # best effort: canceled either way
            client.post(url, timeout=5)

    def _request(self, client: httpx.Client, method: str, url: str, **kwargs) -> dict:
        """One API call with retries on 429/5xx/timeouts; the JSON answer."""
        retries = self.settings.ai_http_max_retries
        for attempt in range(retries + 1):
            last_try = attempt == retries
            backoff = self.settings.ai_http_backoff_s * 2**attempt
            try:
                response = client.request(method, url, **kwargs)
            except httpx.TimeoutException:
                if last_try:
                    raise TransientError(
                        f"The model API did not answer within {self.settings.ai_http_timeout_s}"
                        f" s ({retries + 1} tries).",
                        code="upstream_timeout",
                    ) from None
                self.sleep(backoff)
                continue
            except httpx.HTTPError as exc:
                if last_try:
                    raise TransientError(
                        f"The model API is unreachable ({type(exc).__name__}).",
                        code="upstream_unavailable",
                    ) from None
                self.sleep(backoff)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last_try:
                    code = (
                        "upstream_rate_limited"
                        if response.status_code == 429
                        else ("upstream_unavailable")
                    )
                    raise TransientError(
                        f"The model API answered HTTP {response.status_code} "
                        f"({retries + 1} tries).",
                        code=code,
                    )
                self.sleep(_retry_after(response) or backoff)
                continue
            if response.status_code in (401, 403):
                raise PermanentError(
                    "The model API refused our credentials (AI_HTTP_API_KEY).",
                    code="upstream_auth_failed",
                )
            if response.status_code >= 400:
                raise PermanentError(
                    f"The model API rejected the request (HTTP {response.status_code}): "
                    f"{response.text[:300]}",
                    code="upstream_rejected",
                )
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise PermanentError(
                    "The model API's answer is not a JSON object.", code="upstream_invalid_response"
                )
            return body
        raise AssertionError("unreachable")

    # -- files in outputs -----------------------------------------------------------

    @staticmethod
    def _file_ref(output) -> str:
        if isinstance(output, list) and output:
            output = output[0]
        if isinstance(output, dict):
            output = output.get("url") or output.get("image") or output.get("video")
        if not isinstance(output, str) or not output:
            raise PermanentError(
                "The model API's output names no file.", code="upstream_invalid_response"
            )
        return output

    def _file_bytes(self, output, max_bytes: int) -> bytes:
        ref = self._file_ref(output)
        if ref.startswith("data:"):
            try:
                return images.decode_base64(
                    ref, self.download_settings.with_(image_max_bytes=max_bytes)
                )
            except PermanentError as exc:
                raise PermanentError(exc.message, code="upstream_invalid_response") from None
        return images.fetch_url(ref, self.download_settings, max_bytes=max_bytes)

    def _file_to(self, output, path: Path, max_bytes: int) -> None:
        ref = self._file_ref(output)
        if ref.startswith("data:"):
            path.write_bytes(self._file_bytes(output, max_bytes))
            return
        with path.open("wb") as sink:
            images.fetch_url(ref, self.download_settings, max_bytes=max_bytes, sink=sink)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_S)
    except ValueError:
        return None


def probe_video(path: Path) -> VideoResult:
    """Decode a video we did not make: its size, fps, frame count and first frame."""
    from PIL import Image

    from workers.pipelines.video_generation import png_bytes

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        first = next(reader)
        reader.close()
        frames, _secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, StopIteration, OSError, KeyError) as exc:
        raise PermanentError(
            f"The model API returned a video that does not decode ({exc}).",
            code="upstream_invalid_response",
        ) from None
    fps = max(1, round(meta.get("fps") or 1))
    poster = Image.frombytes("RGB", (width, height), first)
    return VideoResult(path, png_bytes(poster), frames, fps, width, height)
