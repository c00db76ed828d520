"""CPU learning check of the extractor (issue #6): does pre-training learn operations?

Trains the extractor + decoder at a small resolution on simulated pairs (self-augmented views,
build-dataset shards) from one set of identities, then evaluates on held-out cross-identity
quadruplets (a SimFace-style benchmark built from *other* identities):

* the model's prediction of the retouched query vs the unchanged query (the identity
  baseline), PSNR over the pooled MSE as in the official evaluation;
* a control: the same model given a *mismatched* exemplar (another item's pair). If the model
  only copied the query it would score the same with either; learning operations means the
  true exemplar does better than a wrong one.

No pretrained MAE exists offline, so this run trains the MAE encoder from scratch as a
substitute (``mae.frozen = false``), at small sizes (see ``SMALL`` below).

    python benchmarks/learning_check.py --faces FOLDER --work /tmp/lc [--steps 1500]

FOLDER holds portraits, one identity per file (identities are split by file name: every third
sorted file is held out). Prints the result and writes ``WORK/RUN/learning_check.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SIDE = 128
SMALL = {
    "base": "tiny",
    "name": "small",
    "mae": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512,
            "patch_size": 8, "image_size": SIDE, "frozen": False},
    "rformer": {"num_queries": 8, "num_layers": 2, "hidden_size": 128, "num_heads": 4},
    "decoder": {"patch_size": 8, "num_layers": 4, "hidden_size": 128, "num_heads": 4,
                "image_size": SIDE},
    "extractor_training": {"batch_size": 16, "lr_max": 3e-4, "lr_min": 3e-5,
                           "warmup_steps": 50, "lpips_weight": 1.0,
                           "lpips_net": "alex",  # VGG LPIPS is ~8x slower on this CPU
                           # Subtle edits at 128²: the MSE's gradients are 1e-10–1e-9, below
                           # AdamW's default ε (1e-8), which then damps every update ~100×.
                           "adam_eps": 1e-12},
}


def mirrorppr(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mirrorppr_cli", *args], check=True)


def prepare(faces: Path, work: Path, pairs: int, seed: int,
            max_ops: int = 8) -> tuple[Path, Path]:
    """Face crops of the training identities → shards; held-out identities → SimFace set."""
    from PIL import Image

    from mirrorppr_cli.data.simface import face_crop
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.io import read_image

    files = sorted(p for p in faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    held = [p for i, p in enumerate(files) if i % 3 == 2]
    train = [p for p in files if p not in held]
    crops, held_dir = work / "train_faces", work / "heldout_faces"
    for folder, members in ((crops, train), (held_dir, held)):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for path in members:
            if folder is held_dir:
                shutil.copy(path, folder / path.name)
                continue
            rgb = read_image(path).rgb8()
            found = find_faces(rgb)
            if len(found) != 1:
                continue
            crop, _ = face_crop(rgb, found[0].points, 384)
            Image.fromarray(crop).save(folder / f"{path.stem}.png")
    shards, bench = work / "shards", work / "heldout"
    mirrorppr("build-dataset", "--faces", str(crops), "--out", str(shards), "--pairs",
              str(pairs), "--augment", "3", "--size", str(SIDE), "--seed", str(seed),
              "--max-ops", str(max_ops), "--workers", "2", "--force", "--json")
    mirrorppr("build-dataset", "--benchmark", "simface", "--faces", str(held_dir), "--out",
              str(bench), "--combos", "100", "--size", str(SIDE), "--seed", str(seed + 1),
              "--max-ops", str(max_ops), "--force", "--json")
    return shards, bench


def evaluate(run: Path, bench: Path, weights: Path | None = None) -> dict:
    """PSNR (pooled MSE) of identity, model, and model with mismatched exemplars.

    ``weights``: a safetensors file of the run's trainable parameters (default: the final
    ``extractor.safetensors``; a checkpoint's ``trainable.safetensors`` works too)."""
    from PIL import Image
    from safetensors.torch import load_file

    from mirrorppr_cli.model.config import from_dict
    from mirrorppr_cli.train.data import letterbox
    from mirrorppr_cli.train.loops import PretrainModel

    config = from_dict(json.loads((run / "config.json").read_text()))
    model = PretrainModel(config)
    state = load_file(str(weights or run / "extractor.safetensors"))
    model.load_state_dict(state, strict=False)
    model.eval()
    items = json.loads((bench / "dataset.json").read_text())

    def load(rel):
        rgb = np.asarray(Image.open(bench / rel).convert("RGB"))
        return torch.from_numpy(letterbox(rgb, SIDE)).permute(2, 0, 1)[None]

    quads = [[load(it[k]) for k in ("pair1_origin", "pair1_edited", "pair2_origin",
                                     "pair2_edited")] for it in items]
    sq = {"identity": [], "model": [], "mismatched exemplar": []}
    with torch.no_grad():
        for i, (a, b, q, t) in enumerate(quads):
            wrong_a, wrong_b = quads[(i + 1) % len(quads)][:2]
            sq["identity"].append(float(((q - t) ** 2).mean()))
            pred = model(a, b, q).clamp(0, 1)
            sq["model"].append(float(((pred - t) ** 2).mean()))
            pred_w = model(wrong_a, wrong_b, q).clamp(0, 1)
            sq["mismatched exemplar"].append(float(((pred_w - t) ** 2).mean()))
    return {k: {"psnr": float(10 * np.log10(1 / np.mean(v))),
                "items_better_than_identity": int(np.sum(np.array(v) < np.array(sq["identity"])))}
            for k, v in sq.items()} | {"items": len(quads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mirrorppr-learning-check"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-data", action="store_true", help="Reuse WORK's shards.")
    parser.add_argument("--max-ops", type=int, default=8,
                        help="Operations per simulated pair and held-out item, 1 to N "
                             "(official: 8).")
    parser.add_argument("--difference-tokens", action="store_true",
                        help="R-Former variant that also reads after − before (not in the paper).")
    parser.add_argument("--pixel-difference", action="store_true",
                        help="R-Former variant that also reads the pixels' after − before, "
                             "RMS-normalised (not in the paper).")
    parser.add_argument("--lpips-weight", type=float, default=1.0,
                        help="λ of MSE + λ·LPIPS (paper: 1). At this size and edit strength the "
                             "LPIPS term is ~20× the MSE term.")
    parser.add_argument("--adam-eps", type=float, default=1e-12,
                        help="AdamW's ε (PyTorch's default 1e-8 damps this run's updates).")
    parser.add_argument("--run", default="run", help="Run folder name inside WORK.")
    parser.add_argument("--evaluate", type=Path, metavar="SAFETENSORS",
                        help="Only evaluate these weights of WORK/RUN (e.g. a checkpoint's "
                             "trainable.safetensors) on WORK's held-out set.")
    args = parser.parse_args()
    if args.evaluate:
        print(json.dumps(evaluate(args.work / args.run, args.work / "heldout", args.evaluate)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    tick = time.time()
    if args.skip_data:
        shards, bench = args.work / "shards", args.work / "heldout"
    else:
        shards, bench = prepare(args.faces, args.work, args.pairs, args.seed, args.max_ops)
    data_s = time.time() - tick
    small = json.loads(json.dumps(SMALL))
    small["rformer"]["difference_tokens"] = args.difference_tokens
    small["rformer"]["pixel_difference"] = args.pixel_difference
    small["extractor_training"]["lpips_weight"] = args.lpips_weight
    small["extractor_training"]["adam_eps"] = args.adam_eps
    config_file = args.work / f"{args.run}.json"
    config_file.write_text(json.dumps(small, indent=1))
    run = args.work / args.run
    tick = time.time()
    mirrorppr("train", "extractor", "--data", str(shards), "--out", str(run), "--config",
              str(config_file), "--steps", str(args.steps), "--seed", str(args.seed),
              "--save-every", "250", "--force", "--json")
    train_s = time.time() - tick
    result = evaluate(run, bench) | {"steps": args.steps, "data_s": round(data_s, 1),
                                     "train_s": round(train_s, 1), "side": SIDE}
    result["difference_tokens"] = args.difference_tokens
    result["pixel_difference"] = args.pixel_difference
    result["lpips_weight"] = args.lpips_weight
    result["max_ops"] = args.max_ops
    result["adam_eps"] = args.adam_eps
    (run / "learning_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
