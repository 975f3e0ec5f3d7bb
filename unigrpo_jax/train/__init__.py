"""Training: the warm-up SFT (and, later, the GRPO loop)."""
