"""video_generation: an H.264 MP4 of title cards and image slides with crossfades.

The local provider renders frames with Pillow/NumPy and streams them as raw RGB into the
ffmpeg binary that the `imageio-ffmpeg` package ships: at most two frames and the slide
being shown are in memory, whatever the duration. Slides are prepared first (so a bad
image fails the task before any encoding) and kept as PNG files in a scratch directory.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from workers.pipelines import handler, images, providers
from workers.pipelines.base import TaskContext

TRANSITION_S = 0.5
MAX_TITLE_CARDS = 6
X264_PRESET = "veryfast"
X264_CRF = 23


@dataclass
class VideoResult:
    path: Path
    poster_png: bytes
    frames: int
    fps: int
    width: int
    height: int


@handler("video_generation")
def run(ctx: TaskContext) -> dict:
    ctx.progress(0.02)
    with tempfile.TemporaryDirectory(prefix="studiox-video-") as workdir:
        result = providers.for_task(ctx).generate_video(ctx, Path(workdir))
        ctx.check_canceled()
        ctx.save_artifact_file("video.mp4", result.path, "video/mp4")
        ctx.save_artifact("poster.png", result.poster_png, "image/png")
    ctx.progress(0.99)
    return {
        "duration_s": round(result.frames / result.fps, 3),
        "fps": result.fps,
        "width": result.width,
        "height": result.height,
        "frames": result.frames,
    }


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 in yuv420p (what every player decodes) needs even sides: round odd ones down."""
    return max(2, width - width % 2), max(2, height - height % 2)


def generate(ctx: TaskContext, workdir: Path) -> VideoResult:
    """Render the task's video into `workdir`; progress 0.05..0.95, cancel between frames."""
    spec = ctx.input
    width, height = even_size(spec.get("width", 1280), spec.get("height", 720))
    fps = spec.get("fps", 24)
    total = max(1, round(spec.get("duration_s", 5) * fps))

    slides = prepare_slides(ctx, workdir, width, height)
    frames = render_frames(slides, total, fps, width, height)
    out = workdir / "video.mp4"
    encode(
        frames,
        out,
        width,
        height,
        fps,
        total,
        on_second=lambda done: ctx.progress(0.3 + 0.65 * done / total),
        chunk=fps,
    )
    # The poster shows the first image slide if there is one, else the title card.
    n_images = len(spec.get("images") or [])
    with Image.open(slides[len(slides) - n_images] if n_images else slides[0]) as poster:
        poster_png = png_bytes(poster)
    return VideoResult(out, poster_png, total, fps, width, height)


def prepare_slides(ctx: TaskContext, workdir: Path, width: int, height: int) -> list[Path]:
    """Title card(s) from the prompt, then one slide per image, as PNG files."""
    spec = ctx.input
    sources = spec.get("images") or []
    cards = [spec["prompt"]] if sources else _split_prompt(spec["prompt"])
    paths = []
    for i, text in enumerate(cards):
        paths.append(
            _save(
                title_card(text, width, height, seed=spec["prompt"] + str(i)),
                workdir / f"slide-{len(paths):03d}.png",
            )
        )
    for i, source_spec in enumerate(sources):
        source = images.load_source(source_spec, ctx.settings)
        slide = image_slide(
            images.oriented(source.image), width, height, source_spec.get("caption")
        )
        del source  # the decoded original can be far bigger than the slide
        paths.append(_save(slide, workdir / f"slide-{len(paths):03d}.png"))
        ctx.progress(0.05 + 0.25 * (i + 1) / len(sources))
    return paths


def _split_prompt(prompt: str) -> list[str]:
    """Without images, each sentence of the prompt gets its own card (up to a few)."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", prompt) if s.strip()]
    if len(sentences) <= 1:
        return [prompt.strip()]
    head = sentences[: MAX_TITLE_CARDS - 1]
    rest = " ".join(sentences[MAX_TITLE_CARDS - 1 :])
    return head + ([rest] if rest else [])


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path, format="PNG", compress_level=1)  # scratch file: speed over size
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _palette(seed: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(seed.encode()).digest()
    top = tuple(40 + digest[i] % 120 for i in range(3))
    bottom = tuple(max(0, c - 35) for c in top)
    return top, bottom


def title_card(text: str, width: int, height: int, seed: str = "") -> Image.Image:
    """Text centred on a vertical gradient whose colours derive from the prompt."""
    top, bottom = _palette(seed or text)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    gradient = np.array(top, np.float32) * (1 - ramp) + np.array(bottom, np.float32) * ramp
    card = Image.fromarray(np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8))
    size = max(8, min(height // 10, width // 16))
    font = ImageFont.load_default(size=size)
    chars_per_line = max(8, int(width * 0.85 / (size * 0.55)))
    lines = textwrap.wrap(text, chars_per_line)
    max_lines = max(1, int(height * 0.85 // (size * 1.25)))
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, chars_per_line - 1)] + "…"
    draw = ImageDraw.Draw(card)
    draw.multiline_text(
        (width / 2, height / 2),
        "\n".join(lines),
        font=font,
        anchor="mm",
        align="center",
        fill=(255, 255, 255),
        spacing=size // 4,
    )
    return card


def image_slide(
    image: Image.Image, width: int, height: int, caption: str | None = None
) -> Image.Image:
    """The image fitted inside the frame (letterboxed on black), with an optional caption."""
    rgb = image.convert("RGB")
    slide = ImageOps.pad(rgb, (width, height), method=Image.Resampling.LANCZOS, color=(0, 0, 0))
    if caption:
        size = max(8, height // 18)
        font = ImageFont.load_default(size=size)
        draw = ImageDraw.Draw(slide, "RGBA")
        band = int(size * 1.8)
        draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 150))
        draw.text(
            (width / 2, height - band / 2), caption, font=font, anchor="mm", fill=(255, 255, 255)
        )
    return slide


def render_frames(slides: list[Path], total: int, fps: int, width: int, height: int):
    """Yield `total` frames as RGB bytes: each slide an equal share, crossfading in."""
    per_slide = total / len(slides)
    fade = min(int(TRANSITION_S * fps), int(per_slide // 3))
    previous: np.ndarray | None = None
    current: np.ndarray | None = None
    current_bytes = b""
    shown = -1
    for frame in range(total):
        index = min(int(frame / per_slide), len(slides) - 1)
        if index != shown:
            previous = current
            current = np.asarray(Image.open(slides[index]).convert("RGB"), dtype=np.uint8)
            current_bytes = current.tobytes()
            start, shown = frame, index
        into = frame - start
        if previous is not None and into < fade:
            t = (into + 1) / (fade + 1)
            blended = previous * np.float32(1 - t) + current * np.float32(t)
            yield blended.astype(np.uint8).tobytes()
        else:
            yield current_bytes  # a still frame: the same bytes again, no copy


def encode(
    frames,
    out: Path,
    width: int,
    height: int,
    fps: int,
    total: int,
    on_second=lambda done: None,
    chunk: int = 24,
) -> None:
    """Pipe raw RGB frames into ffmpeg/libx264; `on_second(done)` runs every `chunk`
    frames (it raises TaskCanceled to stop, and the ffmpeg process is killed)."""
    log_path = out.with_suffix(".log")
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "-",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        X264_PRESET,
        "-crf",
        str(X264_CRF),
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        str(out),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            for done, frame in enumerate(frames, start=1):
                proc.stdin.write(frame)
                if done % chunk == 0 or done == total:
                    on_second(done)
            proc.stdin.close()
            code = proc.wait()
        except BrokenPipeError:
            code = proc.wait()
        finally:
            if proc.poll() is None:  # canceled or crashed mid-stream: stop the encoder
                proc.kill()
                proc.wait()
    if code != 0:
        raise RuntimeError(f"ffmpeg exited {code}: {log_path.read_text(errors='replace')[-500:]}")
