"""Controlled CPU learning check (issue #6): which half of extractor + decoder learns an operation?

The full check (``learning_check.py``) trains on build-dataset shards: 1–8 operations per pair at
the official strengths, faces at half the frame. At 128² those edits move pixels by a fraction of
a pixel, and the model first learns what every pair shares: the generator's resampling blur,
which beats the unchanged query without looking at the exemplar. This check makes the
operation the only thing to learn:

* one catalog operation (``--op``, default ``eye_resize``) at strength −100 or +100 (sign drawn
  per item), so that a model that ignores the exemplar cannot do better than the average;
* tight face crops (1.2 × the landmark box) at 128², so the edit moves pixels by 1–3 px;
* cross-identity quadruplets made in memory with the project's own generator
  (``plan_warp`` + ``apply_local_warp``): exemplar pair of one person, query of another;
  held-out items use identities not seen in training (every third portrait, sorted by name).

``--extractor`` chooses what produces the operation tokens:

* ``paper``: the extractor of ``SMALL`` (MAE trained from scratch as the substitute, R-Former);
* ``pixel-difference``: the same plus the R-Former's pixel-difference stream (not in the paper);
* ``oracle``: no extractor — a learned table of two token sets indexed by the true sign, an upper
  bound that shows whether the decoder side can carry the operation to another face.

Every 100 steps it prints the squared error relative to the unchanged query (1 = no better than
copying), with the item's own exemplar and with a mismatched one (the previous item's), on 64
training and 64 held-out items. Learning the operation shows as matched ≪ mismatched.

    python benchmarks/learning_check_controlled.py --faces FOLDER [--extractor paper] [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from learning_check import SIDE, SMALL  # noqa: E402

from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.io import read_image  # noqa: E402
from mirrorppr_cli.model.config import from_dict  # noqa: E402
from mirrorppr_cli.ops import OpRequest, plan_warp  # noqa: E402
from mirrorppr_cli.train.loops import PretrainModel  # noqa: E402

#: Crop side as a multiple of the landmarks' bounding box.
CROP = 1.2
TRAIN_ITEMS, EVAL_ITEMS, BATCH = 512, 64, 16


def tight_faces(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, crop (SIDE, SIDE, 3) uint8, landmarks on it)`` for each one-face portrait."""
    out = []
    for path in sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        rgb = read_image(path).rgb8()
        found = find_faces(rgb)
        if len(found) != 1:
            continue
        points = found[0].points
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        half = CROP * max(x1 - x0, y1 - y0) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        top, left = int(max(cy - half, 0)), int(max(cx - half, 0))
        crop = rgb[top : int(cy + half), left : int(cx + half)]
        crop = cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        again = find_faces(crop)
        if len(again) == 1:
            out.append((path.name, crop, again[0].points))
    return out


def quadruplets(faces: list, op: str, count: int, rng: np.random.Generator) -> dict:
    """``count`` cross-identity items: ``before, after, query, target`` (B, 3, S, S) in [0, 1]
    and ``sign`` (B,) 0/1 of the strength (−100/+100)."""
    images: dict[str, list] = {k: [] for k in ("before", "after", "query", "target")}
    signs = []
    for _ in range(count):
        strength = float(rng.choice([-100.0, 100.0]))
        signs.append(int(strength > 0))
        first, second = rng.choice(len(faces), 2, replace=False)
        for (_, img, points), keys in ((faces[first], ("before", "after")),
                                       (faces[second], ("query", "target"))):
            images[keys[0]].append(img)
            images[keys[1]].append(apply_local_warp(img, plan_warp(points, [OpRequest(op, strength)])))
    batch = {k: torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).float() / 255
             for k, v in images.items()}
    batch["sign"] = torch.tensor(signs)
    return batch


class SignOracle(torch.nn.Module):
    """Operation tokens looked up by the true sign: what a perfect extractor could pass on."""

    def __init__(self, tokens: int, hidden: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(2, tokens, hidden))

    def forward(self, sign: torch.Tensor) -> torch.Tensor:
        return self.table[sign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True, help="Portraits, one per identity.")
    parser.add_argument("--op", default="eye_resize")
    parser.add_argument("--extractor", choices=("paper", "pixel-difference", "oracle"),
                        default="paper")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="Write the curve as JSON here.")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    faces = tight_faces(args.faces)
    held = [f for i, f in enumerate(faces) if i % 3 == 2]
    train = [f for f in faces if f not in held]
    data = quadruplets(train, args.op, TRAIN_ITEMS, rng)
    heldout = quadruplets(held, args.op, EVAL_ITEMS, rng)
    config = json.loads(json.dumps(SMALL))
    config["rformer"]["pixel_difference"] = args.extractor == "pixel-difference"
    model = PretrainModel(from_dict(config))
    if args.extractor == "oracle":
        model.extractor = SignOracle(config["rformer"]["num_queries"],
                                     config["rformer"]["hidden_size"])
    train_cfg = config["extractor_training"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=train_cfg["lr_max"], eps=train_cfg["adam_eps"])

    def predict(batch: dict, order: torch.Tensor) -> torch.Tensor:
        if args.extractor == "oracle":
            return model.decoder(batch["query"], model.extractor(batch["sign"][order]))
        return model(batch["before"][order], batch["after"][order], batch["query"])

    def score(batch: dict) -> dict:
        items = torch.arange(len(batch["query"]))
        with torch.no_grad():
            base = float(((batch["query"] - batch["target"]) ** 2).mean())
            return {name: float(((predict(batch, order) - batch["target"]) ** 2).mean()) / base
                    for name, order in (("matched", items), ("mismatched", items.roll(1)))}

    evaluation = {"train": {k: v[:EVAL_ITEMS] for k, v in data.items()}, "held-out": heldout}
    identity_db = {name: 10 * np.log10(1 / float(((b["query"] - b["target"]) ** 2).mean()))
                   for name, b in evaluation.items()}
    print(f"{len(train)} training and {len(held)} held-out identities; unchanged query "
          f"{identity_db['held-out']:.2f} dB on the held-out items", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    curve, tick = [], time.time()
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, TRAIN_ITEMS, (BATCH,), generator=generator)
        batch = {k: v[pick] for k, v in data.items()}
        loss = ((predict(batch, torch.arange(BATCH)) - batch["target"]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            model.eval()
            row = {"step": step} | {name: score(b) for name, b in evaluation.items()}
            model.train()
            curve.append(row)
            print(f"step {step}: " + " | ".join(
                f"{name} matched {row[name]['matched']:.3f} mismatched "
                f"{row[name]['mismatched']:.3f}" for name in evaluation)
                + f" ({time.time() - tick:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "identity_db": identity_db, "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
