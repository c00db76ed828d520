"""The MirrorPPR neural engine: extractor (MAE + R-Former), pre-training decoder, connector,
Qwen-Image-Edit DiT with LoRA. Configs in :mod:`.config`; weights in :mod:`.weights`."""


def quiet_hub_libraries() -> None:
    """Silence transformers' / diffusers' own progress bars and info logs: the CLI shows its
    own progress, and a JSON report on stdout must stay parseable."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
