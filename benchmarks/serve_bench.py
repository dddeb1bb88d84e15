"""``autolabel serve``: predictions per second answered from the store vs run by the model, and the second-click
latency of SAM with the embedding cached vs computed again.

    python benchmarks/serve_bench.py [--stored 8] [--requests 100] [--fresh 4] [--clicks 3] [--busy 8]
                                     [--model-sam tiny|vit-b] [--json out.json]

No weights exist offline, so the models are built from configs with random weights. The served pipeline is the
tests' tiny Grounding DINO + tiny SAM (``--model-sam vit-b`` swaps in the big SAM), so "by the model" is a *lower
bound* of a real model's cost; the clicks use a SAM with ViT-B's real dimensions (``SamConfig()``: 94M
parameters, 1024² input) — the cost of a real SAM ViT-B, answers aside. 640×480 images.

1. ``--stored`` images are labeled into a run store beforehand (same boxes and masks as the served pipeline).
2. ``autolabel serve`` (a subprocess, loopback) answers ``--requests`` one-task ``/predict`` requests for stored
   images (boxes-only project config, and one with brush masks), then ``--fresh`` one-task requests for new
   images (the pipeline runs: detector, SAM encoder, decoder).
3. The latency of an answer from the store with the server idle, and while ``--busy`` requests for new images keep
   the model's queue full (issue 19: store answers must never wait on the model).
4. SAM clicks, in-process on the same ViT-B SAM: a keypoint on an image, then ``--clicks`` further clicks on the
   same image with the embedding cache (decoder only) and with the cache off (encoder + decoder each time);
   ``--clicks 0`` leaves this part out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MACHINE = "2-core Intel Xeon VM, 24 GB, CPU only, shared with parallel work"


def vit_b_sam(path: Path) -> Path:
    """SAM with ViT-B's dimensions (random weights) and its real processor (1024 px, padded)."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    SamModel(SamConfig()).save_pretrained(path)
    SamProcessor(image_processor=SamImageProcessor()).save_pretrained(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stored", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--fresh", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--busy", type=int, default=8, help="model requests in flight while store latency is timed")
    parser.add_argument("--model-sam", choices=["tiny", "vit-b"], default="tiny", help="the served pipeline's SAM")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import yaml
    from test_serve import BOXES_CONFIG, CONFIG, Served, ls_task, predict_body
    from tiny_models import noise_image, tiny

    from autolabel.config import ModelSpec
    from autolabel.models.sam import Sam
    from autolabel import Pipeline
    from autolabel.serve.interactive import Interactive
    from autolabel.serve.protocol import Prompt

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    (work / "in").mkdir()
    (work / "new").mkdir()
    for i in range(args.stored):
        noise_image(640, 480, seed=i).save(work / "in" / f"s{i:03d}.jpg", quality=90)
    for i in range(args.fresh):
        noise_image(640, 480, seed=1000 + i).save(work / "new" / f"n{i:03d}.jpg", quality=90)
    sam_dir = vit_b_sam(work / "sam-vit-b")
    spec = {"name": "serve-bench", "ontology": {"cat": "cat", "dog": "dog"}, "batch_size": 4,
            "models": {"det": {"type": "grounding_dino", "id": tiny("grounding_dino")},
                       "seg": {"type": "sam", "id": str(sam_dir) if args.model_sam == "vit-b" else tiny("sam")}},
            "stages": [{"name": "boxes", "type": "detect", "model": "det", "box_threshold": 0.0,
                        "text_threshold": 0.0},
                       {"name": "masks", "type": "segment", "model": "seg"}]}
    pipeline = work / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    Pipeline.from_yaml(pipeline).run(input=work / "in", output=work / "out")
    print(f"store: {args.stored} images labeled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    figures: dict[str, float | int | str] = {"machine": MACHINE, "model_sam": args.model_sam, "stored": args.stored,
                                             "requests": args.requests, "fresh": args.fresh, "clicks": args.clicks}
    served = Served([str(pipeline), "--output", str(work / "out"), "--log-level", "warning", "--local-root", str(work),
                     "--max-queued", str(max(1, args.busy))], work / "serve.log", timeout=600)
    try:
        stored = sorted((work / "in").iterdir())
        with httpx.Client(timeout=600) as client:
            for name, config in (("store_boxes", BOXES_CONFIG), ("store_brush", CONFIG)):
                client.post(served.url + "/predict", json=predict_body([ls_task(1, str(stored[0]))], config=config))
                t0 = time.perf_counter()
                for i in range(args.requests):
                    r = client.post(served.url + "/predict", json=predict_body(
                        [ls_task(i, str(stored[i % len(stored)]))], config=config))
                    assert r.status_code == 200, r.text
                figures[f"{name}_per_s"] = round(args.requests / (time.perf_counter() - t0), 2)
            t0 = time.perf_counter()
            for i, path in enumerate(sorted((work / "new").iterdir())):
                r = client.post(served.url + "/predict", json=predict_body([ls_task(i, str(path))],
                                                                            config=BOXES_CONFIG))
                assert r.status_code == 200, r.text
            figures["model_boxes_per_s"] = round(args.fresh / (time.perf_counter() - t0), 3)
            stats = client.get(served.url + "/health").json()["stats"]
            assert stats["model_images"] == args.fresh, stats
            figures |= store_latency(served, client, stored[0], sorted((work / "new").iterdir()), args.busy)
        figures["server_rss_mb"] = round(served.rss_kb() / 1024)
    finally:
        served.stop()
    figures["store_vs_model"] = round(figures["store_boxes_per_s"] / figures["model_boxes_per_s"], 1)

    if args.clicks < 1:
        print(json.dumps(figures, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    sam = Sam.load(ModelSpec(type="sam", id=str(sam_dir)))
    image = noise_image(640, 480, seed=99)
    clicks = [Prompt(points=[(100.0 + 40 * k, 120.0 + 25 * k)], point_labels=[1]) for k in range(args.clicks + 1)]
    timings = {}
    for name, size in (("cached", 16), ("uncached", 0)):
        interactive = Interactive(sam, cache_size=size)
        interactive.mask("img", image, clicks[0])  # the first click: the embedding is computed either way
        spent = []
        for prompt in clicks[1:]:
            t0 = time.perf_counter()
            interactive.mask("img", image, prompt)
            spent.append(time.perf_counter() - t0)
        timings[name] = statistics.median(spent)
        figures[f"click_{name}_ms"] = round(timings[name] * 1000, 1)
        figures[f"encoder_calls_{name}"] = interactive.encoder_calls
    figures["click_speedup"] = round(timings["uncached"] / timings["cached"], 1)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def store_latency(served, client, stored: Path, fresh: list[Path], busy: int, samples: int = 20) -> dict[str, float]:
    """Median milliseconds of a one-task store answer: idle, then with ``busy`` model requests in flight."""
    from concurrent.futures import ThreadPoolExecutor

    from test_serve import BOXES_CONFIG, ls_task, predict_body

    def once() -> float:
        t0 = time.perf_counter()
        r = client.post(served.url + "/predict", json=predict_body([ls_task(1, str(stored))], config=BOXES_CONFIG))
        assert r.status_code == 200, r.text
        return time.perf_counter() - t0

    idle = statistics.median(once() for _ in range(samples))
    with httpx.Client(timeout=600) as other, ThreadPoolExecutor(busy) as pool:
        futures = [pool.submit(other.post, served.url + "/predict", json=predict_body(
            [ls_task(100 + i, str(fresh[i % len(fresh)]))], config=BOXES_CONFIG)) for i in range(busy)]
        while other.get(served.url + "/health").json()["stats"]["in_flight"]["queued"] < min(busy, 2):
            time.sleep(0.01)
        during = []
        while len(during) < samples and not all(f.done() for f in futures):
            during.append(once())
        codes = [f.result().status_code for f in futures]
    assert codes == [200] * busy, codes
    return {"store_ms_idle": round(idle * 1000, 1), "store_ms_model_busy": round(statistics.median(during) * 1000, 1),
            "store_samples_model_busy": len(during)}


if __name__ == "__main__":
    sys.exit(main())
