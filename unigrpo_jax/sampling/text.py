"""Next-token sampling and the token log-probabilities the GRPO ratio is built from.

The policy π_θ is the temperature-scaled softmax over the full vocabulary (as TRL, verl and
Tunix score it); top-k only restricts which tokens are drawn. Rollout and teacher-forced
scoring both call `token_log_probs`, so the on-policy ratio is exactly 1.
"""
import jax
import jax.numpy as jnp


def _scaled(logits, temperature: float):
  return logits.astype(jnp.float32) / (temperature if temperature > 0 else 1.0)


def token_log_probs(logits, tokens, temperature: float):
  """log π(token) under softmax(logits / temperature). logits (…, V), tokens (…) → (…) f32."""
  logp = jax.nn.log_softmax(_scaled(logits, temperature), axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def token_entropy(logits, temperature: float):
  """Entropy of softmax(logits / temperature), (…, V) → (…) float32."""
  logp = jax.nn.log_softmax(_scaled(logits, temperature), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def sample_tokens(key, logits, temperature: float, top_k: int):
  """Draws one token per row. logits (B, V) → (tokens (B,) int32, log-probs (B,) f32).

  temperature ≤ 0 is greedy (log-probs then at temperature 1); top_k > 0 draws among the k
  most likely tokens only. Sampling inverts the CDF with one uniform per row: exact, and on CPU
  ~50× cheaper per decode step than Gumbel-max, which needs V random numbers per row.
  """
  scaled = _scaled(logits, temperature)
  if temperature <= 0:
    tokens = jnp.argmax(scaled, axis=-1)
  else:
    if top_k > 0:
      kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
      scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    cdf = jnp.cumsum(jax.nn.softmax(scaled, axis=-1), axis=-1)
    u = jax.random.uniform(key, (scaled.shape[0], 1), jnp.float32) * cdf[:, -1:]
    tokens = jnp.minimum(jnp.sum(cdf <= u, axis=-1), scaled.shape[-1] - 1)
  tokens = tokens.astype(jnp.int32)
  return tokens, token_log_probs(logits, tokens, temperature)
