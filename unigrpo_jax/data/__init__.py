"""Data: the built-in ShapeWorld domain (scenes, renderer, detector, prompts)."""
