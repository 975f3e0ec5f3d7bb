"""Token sampling: the inverse-CDF sampler draws from softmax(logits / T) (and top-k) exactly."""
import jax
import jax.numpy as jnp
import numpy as np

from unigrpo_jax.sampling.text import sample_tokens, token_log_probs


def test_sampled_frequencies_match_the_tempered_softmax():
  logits = jnp.array([[2.0, 0.5, -1.0, 1.0, -3.0, 0.0]])
  draws = 20_000
  keys = jax.random.split(jax.random.key(0), draws)
  for temperature, top_k in ((1.0, 0), (0.7, 0), (1.0, 3)):
    tokens, logp = jax.vmap(lambda k: sample_tokens(k, logits, temperature, top_k))(keys)
    tokens = np.asarray(tokens)[:, 0]
    scaled = np.asarray(logits[0]) / temperature
    if top_k:
      scaled = np.where(scaled < np.sort(scaled)[-top_k], -np.inf, scaled)
    want = np.exp(scaled - scaled.max())
    want /= want.sum()
    freq = np.bincount(tokens, minlength=6) / draws
    # 4 standard errors of a binomial proportion.
    tolerance = 4 * np.sqrt(want * (1 - want) / draws) + 1e-9
    assert np.all(np.abs(freq - want) <= tolerance), (freq, want)
    # The recorded log-prob is the tempered full-vocabulary one (top-k only limits the draw).
    full = jax.nn.log_softmax(logits[0] / temperature)
    np.testing.assert_allclose(np.asarray(logp)[:, 0], np.asarray(full)[tokens], rtol=1e-6)


def test_greedy_and_log_probs():
  logits = jnp.array([[0.1, 3.0, -2.0], [5.0, 1.0, 0.0]])
  tokens, logp = sample_tokens(jax.random.key(0), logits, 0.0, 0)
  np.testing.assert_array_equal(np.asarray(tokens), [1, 0])
  np.testing.assert_allclose(np.asarray(logp),
                             np.asarray(token_log_probs(logits, tokens, 1.0)), rtol=1e-6)
