"""Hugging Face interoperability: Qwen2-family checkpoints in and out, their tokenizers."""
