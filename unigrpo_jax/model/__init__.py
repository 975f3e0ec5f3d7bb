"""Flax modules of the unified model; it knows nothing of RL."""
from unigrpo_jax.model.layout import SequenceLayout
from unigrpo_jax.model.spec import ModelSpec
from unigrpo_jax.model.stack import StackParams, for_decoding, for_training, run_blocks
from unigrpo_jax.model.transformer import (IMAGE, TEXT, UnifiedTransformer, count_params,
                                           init_params, param_logical_axes)
