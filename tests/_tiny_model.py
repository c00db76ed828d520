"""The tiny preset's modules with random weights and a non-zero LoRA, for weight-file tests."""

from __future__ import annotations

import torch

from mirrorppr_cli.model.config import tiny_config
from mirrorppr_cli.model.connector import Connector
from mirrorppr_cli.model.dit import add_lora, build_dit
from mirrorppr_cli.model.extractor import OperationExtractor


def tiny_modules(seed: int = 0):
    """``(config, extractor, connector, dit)``: the tiny preset built from ``seed``, its LoRA's
    B matrices drawn N(0, 0.05) so that the LoRA changes the output."""
    torch.manual_seed(seed)
    config = tiny_config()
    extractor = OperationExtractor(config.mae, config.rformer)
    connector = Connector(config.connector, config.rformer.hidden_size)
    dit = build_dit(config.dit)
    add_lora(dit.transformer, config.lora)
    with torch.no_grad():
        for name, p in dit.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return config, extractor, connector, dit
