"""Hugging Face transformers backend (optionally with a peft LoRA adapter)."""
