"""The MirrorPPR neural engine: extractor (MAE + R-Former), pre-training decoder, connector,
Qwen-Image-Edit DiT with LoRA. Configs in :mod:`.config`; weights in :mod:`.weights`."""
