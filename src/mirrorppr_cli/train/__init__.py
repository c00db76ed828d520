"""Training loops of the neural engine: extractor pre-training and joint LoRA fine-tuning."""
