"""Flax modules of the unified model; it knows nothing of RL."""
from unigrpo_jax.model.layout import SequenceLayout
from unigrpo_jax.model.spec import ModelSpec
from unigrpo_jax.model.transformer import (IMAGE, TEXT, UnifiedTransformer, empty_cache,
                                           init_params, param_logical_axes, run_blocks,
                                           unstack_layers)
