"""Pipeline overhead: each task type's handler beside the same work done by bare
Pillow / ffmpeg calls, in the same run.

    python -m bench.pipelines [--runs N]

Inputs: a 1024x1024 photo-like PNG for the image types; a 10 s 1280x720 24 fps video of a
title card and two 1024x1024 slides for video_generation. Each side runs in its own fresh
process (spawn), so peak RSS (ru_maxrss, plus ffmpeg's as a child) is not inflated by the
other side. Target: median overhead under 20%.
"""

from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SIZE = 1024
VIDEO = {"duration_s": 10, "fps": 24, "width": 1280, "height": 720}
EDIT_OPS = [
    {"op": "resize", "width": 800, "height": 800},
    {"op": "blur", "radius": 2},
    {"op": "text", "text": "StudioX", "x": 20, "y": 20, "size": 48, "color": "#ffffff"},
]


def _photo(seed: int = 1) -> bytes:
    """A 1024x1024 image with gradients, shapes and noise: compresses like a photo."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    base = np.stack([x * 255, y * 255, (1 - x) * 200], axis=-1)
    noise = rng.normal(0, 12, (SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x0, y0 = rng.integers(0, SIZE - 100, 2)
        draw.ellipse(
            (x0, y0, x0 + 90, y0 + 90), fill=tuple(int(c) for c in rng.integers(0, 255, 3))
        )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# -- the pipeline side ---------------------------------------------------------------------


def _context(type_name: str, payload: dict, root: Path):
    from shared.config import Settings
    from shared.storage import LocalStorage
    from workers.pipelines.base import TaskContext

    return TaskContext(
        task_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        type=type_name,
        input=payload,
        attempt=1,
        settings=Settings(),
        storage=LocalStorage(root),
        report_progress=lambda _fraction: True,
    )


def pipeline_input(type_name: str) -> dict:
    """The task input as the API stored it (validated at submit, so not timed here)."""
    from shared.tasks import registry

    return registry.get(type_name).validate(_raw_input(type_name))


def _raw_input(type_name: str) -> dict:
    photo = base64.b64encode(_photo()).decode()
    if type_name == "image_analysis":
        return {"image_base64": photo}
    if type_name == "advanced_editing":
        return {"image_base64": photo, "operations": EDIT_OPS, "output_format": "jpeg"}
    second = base64.b64encode(_photo(2)).decode()
    return {
        "prompt": "StudioX benchmark",
        **VIDEO,
        "images": [{"image_base64": photo}, {"image_base64": second}],
    }


def pipeline_run(type_name: str, payload: dict, root: Path) -> None:
    """What a worker does: validate, decode under limits, process, store the artifacts."""
    from workers.pipelines import get_handler

    get_handler(type_name)(_context(type_name, payload, root))


# -- the bare side: the same operation with the libraries called directly ---------------


def bare_input(type_name: str) -> bytes:
    return _photo()  # the bare side decodes the same PNG bytes the pipeline gets


def bare_run(type_name: str, data: bytes, root: Path) -> None:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    if type_name == "image_analysis":
        image = Image.open(io.BytesIO(data))
        image.load()
        rgb = image.convert("RGB")
        small = rgb.copy()
        small.thumbnail((128, 128))
        small.quantize(5, method=Image.Quantize.MEDIANCUT).getcolors(20)
        gray = np.asarray(rgb.convert("L"), dtype=np.float32) / 255
        gray.mean(), gray.std()
        lap = (
            gray[:-2, 1:-1]
            + gray[2:, 1:-1]
            + gray[1:-1, :-2]
            + gray[1:-1, 2:]
            - 4 * gray[1:-1, 1:-1]
        )
        lap.var()
        np.asarray(rgb.convert("L").resize((32, 32)), dtype=np.float64).mean()
        image.getexif()
    elif type_name == "advanced_editing":
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image = image.resize((800, 800), Image.Resampling.LANCZOS)
        image = image.filter(ImageFilter.GaussianBlur(2))
        ImageDraw.Draw(image).text(
            (20, 20), "StudioX", font=ImageFont.load_default(size=48), fill=(255, 255, 255)
        )
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        (root / "out.jpg").write_bytes(buffer.getvalue())
    else:
        import imageio_ffmpeg

        # The same video with ffmpeg doing everything: a title card and two slides
        # (Pillow), looped and crossfaded by ffmpeg's xfade filter, encoded with the
        # pipeline's x264 settings.
        w, h, fps, total = VIDEO["width"], VIDEO["height"], VIDEO["fps"], VIDEO["duration_s"]
        card = Image.new("RGB", (w, h), (60, 90, 140))
        ImageDraw.Draw(card).text(
            (w / 2, h / 2),
            "StudioX benchmark",
            anchor="mm",
            font=ImageFont.load_default(size=h // 10),
            fill="white",
        )
        card.save(root / "0.png", compress_level=1)
        for i, photo in enumerate((data, _photo(2)), start=1):
            slide = Image.open(io.BytesIO(photo)).convert("RGB")
            slide.thumbnail((w, h))
            framed = Image.new("RGB", (w, h))
            framed.paste(slide, ((w - slide.width) // 2, (h - slide.height) // 2))
            framed.save(root / f"{i}.png", compress_level=1)
        fade = 0.5
        each = (total + 2 * fade) / 3
        inputs = []
        for i in range(3):
            inputs += [
                "-loop",
                "1",
                "-framerate",
                str(fps),
                "-t",
                f"{each:.4f}",
                "-i",
                str(root / f"{i}.png"),
            ]
        graph = (
            f"[0][1]xfade=transition=fade:duration={fade}:offset={each - fade:.4f}[a];"
            f"[a][2]xfade=transition=fade:duration={fade}:"
            f"offset={2 * each - 2 * fade:.4f},format=yuv420p[v]"
        )
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                *inputs,
                "-filter_complex",
                graph,
                "-map",
                "[v]",
                "-r",
                str(fps),
                "-frames:v",
                str(total * fps),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                "23",
                "-movflags",
                "+faststart",
                str(root / "bare.mp4"),
            ],
            check=True,
        )


def _measure(side: str, type_name: str, runs: int, queue) -> None:
    """In a fresh process: time `runs` runs, then report peak RSS (self and ffmpeg)."""
    fn = pipeline_run if side == "pipeline" else bare_run
    data = (pipeline_input if side == "pipeline" else bare_input)(type_name)
    times = []
    for i in range(runs + 1):
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            fn(type_name, data, Path(root))
            if i:  # the first run warms imports and caches on both sides
                times.append(time.perf_counter() - start)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    queue.put((statistics.median(times), own, child))


def measure(side: str, type_name: str, runs: int) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(side, type_name, runs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per image type (video: 3)")
    # `python -m bench` calls main() with no arguments: use the defaults then, not
    # whatever its own command line holds.
    args = parser.parse_args([] if argv is None else argv)
    rows = []
    for type_name in ("image_analysis", "advanced_editing", "video_generation"):
        runs = args.runs if type_name != "video_generation" else max(1, min(args.runs, 3))
        bare = measure("bare", type_name, runs)
        pipe = measure("pipeline", type_name, runs)
        rows.append((type_name, runs, pipe, bare, (pipe[0] - bare[0]) / bare[0]))
    print(
        f"{'task type':<18}{'runs':>5}{'pipeline s':>12}{'bare s':>9}{'overhead':>10}"
        f"{'pipeline RSS MB':>17}{'bare RSS MB':>13}{'ffmpeg RSS MB':>15}"
    )
    for type_name, runs, pipe, bare, overhead in rows:
        ffmpeg = f"{pipe[2]:.0f} / {bare[2]:.0f}" if type_name == "video_generation" else "-"
        print(
            f"{type_name:<18}{runs:>5}{pipe[0]:>12.3f}{bare[0]:>9.3f}{overhead:>+10.1%}"
            f"{pipe[1]:>17.0f}{bare[1]:>13.0f}{ffmpeg:>15}"
        )
    worst = max(r[4] for r in rows)
    print(f"target: overhead < 20% -> {'met' if worst < 0.20 else 'NOT met'} (worst {worst:+.1%})")


if __name__ == "__main__":
    main(sys.argv[1:])
