"""The official MirrorPPR release layout (SJTU-DENG-Lab/MirrorPPR @ 42f1200): converted, checked
and loaded tensor by tensor, at tiny sizes written by the test in the official key names; and
the real configuration's shapes against the official code's numbers (meta device, nothing
allocated).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _tiny_model import tiny_modules
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.errors import InputError, MissingWeightsError
from mirrorppr_cli.model.config import paper_config
from mirrorppr_cli.model.dit import build_dit, lora_state_dict
from mirrorppr_cli.model.engine import NeuralEngine
from mirrorppr_cli.model.official import (
    check_release,
    convert_release,
    expected_shapes,
    find_release,
    map_key,
    release_config,
)

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("torch_one_thread")
TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
           "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")


def legacy(name: str, mae: bool = False) -> str:
    """Our (transformers 5) ViT names → the release's (transformers 4.x) spelling."""
    if mae:
        name = name.replace("layers.", "encoder.layer.", 1) if name.startswith("layers.") else name
    for ours, theirs in (("attention.q_proj.", "attention.attention.query."),
                         ("attention.k_proj.", "attention.attention.key."),
                         ("attention.v_proj.", "attention.attention.value."),
                         ("attention.o_proj.", "attention.output.dense."),
                         ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")):
        name = name.replace(ours, theirs)
    return name


def _official_tensors(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Tiny modules' tensors under the official files' key names (DiffSynth's)."""
    config, extractor, connector, dit = tiny_modules(seed)
    mae = {"vit." + legacy(k, mae=True): v for k, v in extractor.mae.model.state_dict().items()}
    # The MAE pre-training checkpoint also holds its decoder (the official converter drops it).
    mae["decoder.decoder_pred.weight"] = torch.zeros(3, 4)
    lora = {}
    for k, v in lora_state_dict(dit.transformer).items():  # DiffSynth/peft: ".default"
        lora[k.replace(".lora_A.weight", ".lora_A.default.weight")
             .replace(".lora_B.weight", ".lora_B.default.weight")] = v
    return {"mae": mae, "rformer": {legacy(k): v for k, v in extractor.rformer.state_dict().items()},
            "connector": dict(connector.state_dict()), "lora": lora, "dit": dit,
            "config": config}


def _write_release(root: Path, tensors: dict, *, with_dit: bool = True) -> Path:
    face = root / "mirrorppr_face"
    names = {"mae": "mae/mae_pretrained.safetensors", "rformer": "rformer/rformer.safetensors",
             "connector": "connector/connector.safetensors", "lora": "lora/lora.safetensors"}
    for part, name in names.items():
        (face / name).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors[part].items()}, str(face / name))
    # Not part of the release: tiny sizes instead of the paper preset.
    (face / "mirrorppr.json").write_text(json.dumps({"base": "tiny"}))
    if with_dit:
        dit, qwen = tensors["dit"], root / "qwen_image_edit"
        base = {k.replace(".base_layer", ""): v.contiguous()
                for k, v in dit.transformer.state_dict().items() if "lora_" not in k}
        (qwen / "transformer").mkdir(parents=True, exist_ok=True)
        dit.transformer.save_config(qwen / "transformer")
        save_file(base, str(qwen / "transformer" / "diffusion_pytorch_model.safetensors"))
        dit.vae.save_pretrained(qwen / "vae")
        dit.scheduler.save_pretrained(qwen / "scheduler")
    return root


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    tensors = _official_tensors()
    return tensors, _write_release(tmp_path_factory.mktemp("release"), tensors)


def test_every_tensor_maps_with_no_missing_and_no_unexpected_key(official):
    tensors, root = official
    release = find_release(root)
    config = release_config(release)
    assert (config.lora.rank, config.lora.alpha) == (4, 4)
    assert config.lora.target_modules == tuple(sorted(TARGETS))
    report = check_release(release, config)
    assert report["mae"]["tensors"] == len(tensors["mae"]) - 1 and report["mae"]["dropped"] == 1
    for part in ("rformer", "connector", "lora"):
        assert report[part]["tensors"] == len(tensors[part]) and report[part]["dropped"] == 0

    engine = NeuralEngine.load(root)  # the release folder itself, as --weights takes it
    rformer = {legacy(k): v for k, v in engine.extractor.rformer.state_dict().items()}
    for ours, theirs in ((rformer, tensors["rformer"]),
                         (engine.connector.state_dict(), tensors["connector"])):
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    mae = {"vit." + legacy(k, mae=True): v
           for k, v in engine.extractor.mae.model.state_dict().items()}
    assert mae.keys() == tensors["mae"].keys() - {"decoder.decoder_pred.weight"}
    assert all(torch.equal(mae[k], tensors["mae"][k]) for k in mae)
    lora = lora_state_dict(engine.dit.transformer)
    assert len(lora) == len(tensors["lora"])
    assert all(torch.equal(lora[k], tensors["lora"][k.replace(".weight", ".default.weight")])
               for k in lora)
    # The conditioning of the paper: the query's VL stream followed by the 4 operation tokens.
    assert engine.vl is not None


def test_retouch_cli_reads_the_release_and_convert_weights_gives_the_same_model(
        official, tmp_path):
    tensors, root = official
    face = data.astronaut()
    before = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)
    after = before.copy()
    after[24:40, 20:44] //= 2
    query = cv2.resize(face[40:400, 60:420], (64, 64), interpolation=cv2.INTER_AREA)
    paths = {}
    for name, array in (("before", before), ("after", after), ("query", query)):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(array).save(paths[name])
    args = ["retouch", "--ex", str(paths["before"]), str(paths["after"]), "--query",
            str(paths["query"]), "--backend", "eager", "--steps", "2", "--json", "--force"]
    first = runner.invoke(app, args + ["--weights", str(root)])
    assert first.exit_code == 0, first.output
    written = Path(json.loads(first.stdout)["items"][0]["output"])
    direct = np.asarray(Image.open(written))

    converted = runner.invoke(app, ["convert-weights", str(root), "--out",
                                    str(tmp_path / "ours"), "--json"])
    assert converted.exit_code == 0, converted.output
    assert json.loads(converted.stdout)["parts"]["lora"]["tensors"] == len(tensors["lora"])
    second = runner.invoke(app, args + ["--weights", str(tmp_path / "ours")])
    assert second.exit_code == 0, second.output
    assert np.array_equal(np.asarray(Image.open(written)), direct)


def test_a_wrong_shape_or_a_foreign_key_is_refused_in_one_line(official, tmp_path):
    tensors, _ = official
    bad = {**tensors, "rformer": dict(tensors["rformer"])}
    bad["rformer"]["embeddings.position_embeddings"] = torch.zeros(1, 7, 32)
    root = _write_release(tmp_path / "shape", bad, with_dit=False)
    with pytest.raises(InputError) as err:
        check_release(find_release(root), release_config(find_release(root)))
    message = str(err.value)
    assert "\n" not in message and "position_embeddings" in message and "[1, 7, 32]" in message

    foreign = {**tensors, "connector": {**tensors["connector"], "encoder.norm.weight":
                                        torch.ones(32)}}
    root = _write_release(tmp_path / "foreign", foreign, with_dit=False)
    result = runner.invoke(app, ["convert-weights", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == InputError.exit_code == 3
    assert "encoder.norm.weight" in result.output and "unexpected tensor" in result.output

    (root / "mirrorppr_face" / "lora" / "lora.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="lora/lora.safetensors is missing"):
        find_release(root)
    result = runner.invoke(app, ["convert-weights", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == MissingWeightsError.exit_code == 5


def test_lora_keys_in_every_spelling_differ_only_in_prefix(official, tmp_path):
    tensors, _ = official
    spelled = {**tensors, "lora": {"pipe.dit." + k.replace(".default", ""): v
                                   for k, v in tensors["lora"].items()}}
    root = _write_release(tmp_path / "r", spelled, with_dit=False)
    release = find_release(root / "mirrorppr_face")  # the face folder works as well
    assert check_release(release, release_config(release))["lora"]["tensors"] == len(spelled["lora"])


def test_real_configuration_matches_the_official_shapes():
    """Numbers from the official code (SJTU-DENG-Lab/MirrorPPR @ 42f1200), on the meta device:

    * diffsynth/models/qwen_image_mae.py: ViTMAEConfig hidden 1024, 24 layers, 16 heads,
      intermediate 4096, patch 16, image_size 224 (position embeddings 14² + CLS = 197),
      forward with ``interpolate_pos_encoding=True``;
    * diffsynth/pipelines/qwen_image.py (QwenImageUnit_MirrorPPROperationEncoder): the MAE
      reads 1024 × 1024, so 64² + 1 = 4097 tokens per image;
    * diffsynth/models/qwen_image_rformer.py (RFormer): hidden 768, 4 layers, 12 heads,
      intermediate 3072, query_num 8, input_hidden_size 1024, num_patches 4097 → position
      embeddings 2·4097 + 1 + 8 = 8203; token types 2; sep token 1;
    * diffsynth/models/qwen_image_connector.py + configs/model_configs.py: input_dim 768,
      6 layers, intermediate 4·768, heads 768/64 = 12 (q/k head norms ``gamma`` (12, 1, 64)),
      proj Linear(768, 3584), Linear(3584, 3584), RMSNorm(3584);
    * diffsynth/models/qwen_image_dit.py: 60 blocks of width 3072 (24 × 128), txt_in 3584 →
      3072, img_in 64 → 3072; LoRA rank 32 (paper table 8) on 3072 → 3072 projections.
    """
    config = paper_config()
    shapes = expected_shapes(config)
    mae, rformer, connector, lora = (shapes[p] for p in ("mae", "rformer", "connector", "lora"))
    # Official (transformers 4.x) names, as in the released files, mapped onto ours.
    def ours(part, key):
        return shapes[part][map_key(part, key, set(shapes[part]))]

    assert ours("mae", "vit.embeddings.position_embeddings") == (1, 197, 1024)
    assert ours("mae", "vit.embeddings.patch_embeddings.projection.weight") == (1024, 3, 16, 16)
    assert ours("mae", "vit.encoder.layer.23.intermediate.dense.weight") == (4096, 1024)
    assert ours("mae", "vit.encoder.layer.23.attention.attention.query.weight") == (1024, 1024)
    assert len(mae) == 4 + 24 * 16 + 2  # embeddings, 24 layers of 16 tensors, final norm
    assert config.mae.image_size == 1024
    assert ours("rformer", "embeddings.position_embeddings") == (1, 8203, 768)
    assert ours("rformer", "embeddings.latent_motion_token") == (1, 8, 768)
    assert ours("rformer", "embeddings.sep_token") == (1, 1, 768)
    assert ours("rformer", "embeddings.token_type_embeddings") == (2, 768)
    assert ours("rformer", "embeddings.projection.weight") == (768, 1024)
    assert ours("rformer", "encoder.layer.3.attention.attention.query.weight") == (768, 768)
    assert ours("rformer", "encoder.layer.3.intermediate.dense.weight") == (3072, 768)
    assert ours("rformer", "layernorm.weight") == (768,)
    assert len(rformer) == 6 + 4 * 16 + 2  # embeddings, 4 layers, final norm
    c = "connector."
    assert connector[c + "encoder.layers.5.self_attn.q_proj.weight"] == (768, 768)
    assert connector[c + "encoder.layers.5.self_attn.q_norm.gamma"] == (12, 1, 64)
    assert connector[c + "encoder.layers.5.self_attn.k_norm.gamma"] == (12, 1, 64)
    assert connector[c + "encoder.layers.5.mlp.gate_proj.weight"] == (3072, 768)
    assert connector[c + "proj.0.weight"] == (3584, 768)
    assert connector[c + "proj.2.weight"] == (3584, 3584)
    assert connector[c + "proj.3.weight"] == (3584,)
    assert not any(k.startswith(c + "encoder.layers.6.") for k in connector)
    assert lora["lora.transformer_blocks.59.attn.to_q.lora_A.weight"] == (32, 3072)
    assert lora["lora.transformer_blocks.59.attn.to_add_out.lora_B.weight"] == (3072, 32)
    assert len(lora) == 60 * 8 * 2
    totals = {p: sum(int(np.prod(s)) for s in d.values()) for p, d in shapes.items()}
    assert totals == {"mae": 303_301_632, "rformer": 35_448_576, "connector": 72_263_680,
                      "lora": 94_371_840}
    dit = build_dit(config.dit, meta=True).transformer
    assert tuple(dit.txt_in.weight.shape) == (3072, 3584)
    assert tuple(dit.img_in.weight.shape) == (3072, 64)
    assert len(dit.transformer_blocks) == 60 and dit.zero_cond_t is False


def test_convert_output_is_refused_when_not_empty(official, tmp_path):
    _, root = official
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = runner.invoke(app, ["convert-weights", str(root), "--out", str(tmp_path / "full")])
    assert result.exit_code == 4 and "--force" in result.output
    out = convert_release(root, tmp_path / "ok")
    assert set(load_file(str(Path(out["out"]) / "connector.safetensors"))) == {
        "connector." + k for k in _official_tensors()["connector"]}
