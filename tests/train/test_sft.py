"""Warm-up SFT: the loss is what it says, a short run lowers both losses; the evaluator runs."""
import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

from helpers import TOKENS
from unigrpo_jax import evaluation
from unigrpo_jax.data import prompts, shapeworld, tokenizer
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params
from unigrpo_jax.optim import OptimizerSpec, init_train_state, make_optimizer
from unigrpo_jax.sampling import RolloutSpec
from unigrpo_jax.train.sft import (SFTSpec, make_sft_step, sample_times, sft_loss, t2i_batch,
                                   text_reliance, understanding_batch)

V1 = shapeworld.WORLDS[1]  # the 32×32 canvas and vocabulary of this test-sized model
SPEC = ModelSpec(vocab_size=64, width=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8,
                 mlp_dim=64, image_size=32, patch_size=8, mot=True)
ROLLOUT = RolloutSpec(prompt_len=12, max_text_tokens=28, rounds=1, num_steps=4, **TOKENS)
OPTIM = dict(learning_rate=3e-3, schedule="constant", warmup_steps=0, total_steps=100, b1=0.9,
             b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)


def v1_tokenizer():
  return tokenizer.load(tokenizer.PATHS[1])


def jitted_loss(model, rollout, sft):
  """`sft_loss(params, batch, key)` jitted (run eagerly it compiles every op on its own)."""
  return jax.jit(functools.partial(sft_loss, model=model, rollout=rollout, sft=sft))


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    prompt = prompts.sample_prompt(rng, prompts.FAMILIES[i % len(prompts.FAMILIES)], world=V1)
    scene = prompts.target_scene(rng, prompt)
    image = np.round((shapeworld.render(scene) + 1) * 127.5).astype(np.uint8)
    out.append(dict(prompt=prompt.text, plan=prompts.plan_text(scene), image=image,
                    family=prompt.family, metadata=json.dumps(prompt.to_json())))
  return out


def test_times_are_shifted_logit_normal():
  t = np.asarray(sample_times(jax.random.key(0), (50_000,), SFTSpec(shift=1.0)))
  assert 0 < t.min() and t.max() < 1 and abs(np.median(t) - 0.5) < 0.01
  shifted = np.asarray(sample_times(jax.random.key(0), (50_000,), SFTSpec(shift=3.0)))
  np.testing.assert_allclose(shifted, 3 * t / (1 + 2 * t), rtol=1e-5)


def test_text_loss_is_the_cross_entropy_of_the_target_tokens():
  tok = v1_tokenizer()
  model = UnifiedTransformer(SPEC)
  params = init_params(SPEC, jax.random.key(0))
  batch = t2i_batch(_examples(4), tokenizer=tok, rollout=ROLLOUT, model_spec=SPEC)
  _, metrics = jitted_loss(model, ROLLOUT, SFTSpec())(params, batch, jax.random.key(1))
  # Fresh embeddings are N(0, 0.02²): the logits are nearly uniform, CE ≈ log V.
  assert abs(float(metrics["text_ce"]) - np.log(SPEC.vocab_size)) < 0.05
  # The flow target of a zero-velocity model: E‖x1 − x0‖² = 1 + E x0².
  x0 = np.asarray(batch.images)
  np.testing.assert_allclose(float(metrics["flow_mse"]), 1 + np.mean(x0**2), rtol=0.05)
  with pytest.raises(ValueError, match=r"longer than rollout\.max_text_tokens = 3"):
    t2i_batch(_examples(1), tokenizer=tok, rollout=RolloutSpec(prompt_len=12, max_text_tokens=3,
                                                               **TOKENS), model_spec=SPEC)


def _fresh_sft():
  """(tokenizer, model, fresh train state, compiled SFT step) of the test model."""
  model = UnifiedTransformer(SPEC)
  optimizer = make_optimizer(OptimizerSpec(**OPTIM))
  state = init_train_state(init_params(SPEC, jax.random.key(0)), optimizer)
  return v1_tokenizer(), model, state, make_sft_step(model, ROLLOUT, SFTSpec(), optimizer)


def test_short_sft_lowers_both_losses_and_evaluates():
  tok, model, state, step = _fresh_sft()
  data = _examples(64)
  rng = np.random.default_rng(0)
  history = []
  for _ in range(40):
    batch = t2i_batch([data[i] for i in rng.integers(0, 64, 16)], tokenizer=tok,
                      rollout=ROLLOUT, model_spec=SPEC)
    state, metrics = step(state, batch, jax.random.key(3))
    history.append((float(metrics["text_ce"]), float(metrics["flow_mse"])))
  first, last = np.mean(history[:5], axis=0), np.mean(history[-5:], axis=0)
  assert last[0] < 0.7 * first[0], history
  assert last[1] < 0.9 * first[1], history
  spec = RolloutSpec(prompt_len=12, max_text_tokens=28, mode="ode", temperature=0.0,
                     num_steps=4, **TOKENS)
  results = evaluation.score_examples(state.params, data[:12], model=model, spec=spec,
                                      tokenizer=tok, grid=4, batch_size=6)
  assert set(results["per_family"]) == set(prompts.FAMILIES) and results["n"] == 12
  for name in evaluation.REWARDS:
    assert 0.0 <= results["overall"][name] <= 1.0
  assert "| **overall** |" in evaluation.markdown_table(results)
  # Two samples a prompt (other noise, the same greedy plan): a prompt's score is their mean,
  # and the same first sample per prompt as one sample a prompt gives.
  twice = evaluation.score_examples(state.params, data[:12], model=model, spec=spec,
                                    tokenizer=tok, grid=4, batch_size=6, samples_per_prompt=2)
  assert twice["n"] == 12 and twice["samples_per_prompt"] == 2
  for family, scores in twice["per_prompt"].items():
    assert len(scores["geneval_strict"]) == len(results["per_prompt"][family]["geneval_strict"])
    for name, values in scores.items():
      assert np.isclose(np.mean(values), twice["per_family"][family][name])
  low, high = twice["intervals"]["overall"]["geneval_partial"]
  assert low <= twice["overall"]["geneval_partial"] <= high
  assert 0.0 <= twice["diversity"]["overall"]["cells"] <= 1.0 and "diversity" not in results


def test_non_finite_sft_loss_skips_the_step():
  tok, _, state, step = _fresh_sft()
  batch = t2i_batch(_examples(4), tokenizer=tok, rollout=ROLLOUT, model_spec=SPEC)
  images = np.array(batch.images)
  images[0] = np.nan
  bad = batch.replace(images=images)
  before = jax.tree.map(np.array, state)
  state, metrics = step(state, bad, jax.random.key(3))
  assert float(metrics["skipped"]) == 1.0 and int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, state), before)
  state, metrics = step(state, batch, jax.random.key(3))
  assert float(metrics["skipped"]) == 0.0 and int(state.step) == 1


def test_understanding_batches_condition_the_caption_on_the_image():
  tok = v1_tokenizer()
  rollout = RolloutSpec(prompt_len=12, max_text_tokens=28, rounds=2, num_steps=4, **TOKENS)
  model = UnifiedTransformer(SPEC)
  params = init_params(SPEC, jax.random.key(0))
  data = _examples(4)
  for ex in data:
    ex["caption"] = "there is a red circle at 0 0"
  batch = understanding_batch(data, tokenizer=tok, rollout=rollout, model_spec=SPEC)
  assert not np.asarray(batch.token_mask)[:, 0].any() and np.asarray(batch.token_mask)[:, 1].any()
  loss_fn = jitted_loss(model, rollout, SFTSpec())
  loss = lambda b: loss_fn(params, b, jax.random.key(0))[1]  # noqa: E731
  metrics = loss(batch)
  assert float(metrics["flow_mse"]) == 0.0  # context image only: no flow loss
  assert abs(float(metrics["text_ce"]) - np.log(SPEC.vocab_size)) < 0.05
  other = batch.replace(images=-np.asarray(batch.images))
  assert float(loss(other)["text_ce"]) != float(metrics["text_ce"])
  with pytest.raises(ValueError, match=r"understanding SFT uses two rounds"):
    understanding_batch(data, tokenizer=tok, rollout=ROLLOUT, model_spec=SPEC)


def _model_with_a_random_head():
  """The test model with a random image head: a fresh one's is zero (it predicts x0 = 0
  whatever the text), so nothing it reads would show in the flow loss."""
  model = UnifiedTransformer(SPEC)
  params = init_params(SPEC, jax.random.key(0))
  params["image_out"]["proj"]["kernel"] = 0.1 * jax.random.normal(
      jax.random.key(1), params["image_out"]["proj"]["kernel"].shape)
  return model, params


def test_condition_dropout_hides_prompt_and_plan_from_the_image():
  tok = v1_tokenizer()
  model, params = _model_with_a_random_head()
  batch = t2i_batch(_examples(4), tokenizer=tok, rollout=ROLLOUT, model_spec=SPEC)
  other = batch.replace(prompt_tokens=(np.asarray(batch.prompt_tokens) + 3) % 40 + 8,
                        tokens=(np.asarray(batch.tokens) + 3) % 40 + 8)
  flow = lambda b, p: float(jitted_loss(model, ROLLOUT, SFTSpec(cfg_dropout=p))(  # noqa: E731
      params, b, jax.random.key(2))[1]["flow_mse"])
  assert flow(batch, 0.0) != flow(other, 0.0)
  assert abs(flow(batch, 1 - 1e-7) - flow(other, 1 - 1e-7)) < 1e-6
  with pytest.raises(ValueError, match=r"sft\.cfg_dropout must be in \[0, 1\)"):
    SFTSpec(cfg_dropout=1.0)


def test_prompt_dropout_hides_the_prompt_and_only_the_prompt_from_the_image():
  model, params = _model_with_a_random_head()
  batch = t2i_batch(_examples(4), tokenizer=v1_tokenizer(), rollout=ROLLOUT, model_spec=SPEC)
  layout = ROLLOUT.layout(SPEC)
  text = np.zeros(layout.length, bool)
  text[layout.text_start(0):layout.image_start(0)] = True
  no_text = batch.replace(valid=np.asarray(batch.valid) & ~text)
  flow = lambda b, **kw: float(jitted_loss(model, ROLLOUT, SFTSpec(**kw))(  # noqa: E731
      params, b, jax.random.key(2))[1]["flow_mse"])
  almost = 1 - 1e-7
  # Without the plan in view, hiding the prompt leaves only the image: condition dropout.
  assert abs(flow(no_text, prompt_dropout=almost) - flow(no_text, cfg_dropout=almost)) < 1e-6
  assert abs(flow(no_text, prompt_dropout=almost) - flow(no_text)) > 1e-4
  # With the plan in view, the image still reads it.
  assert abs(flow(batch, prompt_dropout=almost) - flow(batch, cfg_dropout=almost)) > 1e-4
  # A sampler whose images never read the prompt trains every image that way.
  plan_only = dataclasses.replace(ROLLOUT, image_reads_prompt=False)
  hidden = float(jitted_loss(model, plan_only, SFTSpec())(params, batch, jax.random.key(2))[1][
      "flow_mse"])
  assert abs(hidden - flow(batch, prompt_dropout=almost)) < 1e-6
  with pytest.raises(ValueError, match=r"sft\.prompt_dropout must be in \[0, 1\)"):
    SFTSpec(prompt_dropout=-0.1)


def test_text_reliance_is_the_x0_error_beside_own_and_other_text_and_equal_when_text_is_hidden():
  model, params = _model_with_a_random_head()
  batch = t2i_batch(_examples(4), tokenizer=v1_tokenizer(), rollout=ROLLOUT, model_spec=SPEC)
  found = text_reliance(params, batch, (0.5, 0.95), model=model, rollout=ROLLOUT)
  assert set(found) == {"0.5", "0.95"}
  # The definition, computed apart: x0 error = t² · flow MSE at that t, and beside the text
  # of the row before.
  at = lambda b, t: float(jitted_loss(model, ROLLOUT, SFTSpec(  # noqa: E731
      t_mean=float(np.log(t / (1 - t))), t_std=0.0, shift=1.0))(
          params, b, jax.random.key(0))[1]["flow_mse"]) * t * t
  rolled = batch.replace(**{f: np.roll(getattr(batch, f), 1, axis=0) for f in (
      "prompt_tokens", "prompt_mask", "tokens", "token_mask", "valid")})
  np.testing.assert_allclose(found["0.95"]["matched"], at(batch, 0.95), rtol=1e-5)
  np.testing.assert_allclose(found["0.95"]["mismatched"], at(rolled, 0.95), rtol=1e-5)
  assert abs(found["0.95"]["matched"] - found["0.95"]["mismatched"]) > 1e-6
  # An image that sees neither prompt nor text cannot tell whose text it is beside.
  layout = ROLLOUT.layout(SPEC)
  text = np.zeros(layout.length, bool)
  text[:layout.image_start(0)] = True
  blind = batch.replace(valid=np.asarray(batch.valid) & ~text)
  found = text_reliance(params, blind, (0.5, 0.95), model=model, rollout=ROLLOUT)
  for t in found:
    assert found[t]["matched"] == found[t]["mismatched"]


def test_interleaved_batches_build_the_scene_one_object_per_round():
  from unigrpo_jax.train.sft import interleaved_batch
  tok = v1_tokenizer()
  ids = dict(pad_id=0, eos_id=2, image_start_id=3, image_end_id=4)  # the real tokenizer's
  rollout = RolloutSpec(prompt_len=12, max_text_tokens=12, rounds=3, num_steps=4, **ids)
  layout = rollout.layout(SPEC)
  two = prompts.Prompt("a photo of two circles", "counting", (prompts.Clause("circle", 2),),
                       world=1)
  ex = dict(prompt=two.text, plan="red circle at 0 1 ; blue circle at 2 3",
            metadata=json.dumps(two.to_json()))
  batch = interleaved_batch([ex], tokenizer=tok, rollout=rollout, model_spec=SPEC, grid=4)
  texts = [tok.decode(np.asarray(batch.tokens)[0, r][np.asarray(batch.token_mask)[0, r]])
           for r in range(3)]
  assert texts == ["<plan> red circle at 0 1 </plan> <img>",
                   "<plan> blue circle at 2 3 </plan> <img>", "[EOS]"]
  prompt = np.asarray(batch.prompt_tokens)[0][np.asarray(batch.prompt_mask)[0]]
  assert tok.decode(prompt) == "[BOS] stepwise a photo of two circles"
  assert np.asarray(batch.image_mask).tolist() == [[True, True, False]]
  images = np.asarray(batch.images)[0]
  first = shapeworld.render(shapeworld.Scene((shapeworld.Object("circle", "red", 0, 1),), 32, 4,
                                             V1))
  np.testing.assert_allclose(images[0], first, atol=1e-6)
  assert np.abs(images[1] - images[0]).max() > 0 and not images[2].any()
  valid = np.asarray(batch.valid)[0]
  assert valid[layout.image_end_slot(0)] and valid[layout.image_end_slot(1)]
  assert not valid[layout.image_start(2):layout.image_start(2) + SPEC.image_tokens].any()
  # Trains: the loss is finite and both kinds of term are on.
  _, metrics = jitted_loss(UnifiedTransformer(SPEC), rollout, SFTSpec())(
      init_params(SPEC, jax.random.key(0)), batch, jax.random.key(1))
  assert float(metrics["text_ce"]) > 0 and float(metrics["flow_mse"]) > 0
  with pytest.raises(ValueError, match=r"more rounds than sft_data\.interleaved_rounds = 1"):
    interleaved_batch([ex], tokenizer=tok, model_spec=SPEC, grid=4,
                      rollout=RolloutSpec(prompt_len=12, max_text_tokens=12, rounds=1, **ids))
  # A how-to story follows its recipe (base, then roof), not the plan's raster order.
  house = next(p for p in prompts.all_prompts(prompts.HOWTO, V1) if p.text.endswith("red house"))
  ex = dict(prompt=house.text, plan="red triangle at 1 1 ; red square at 2 1",
            metadata=json.dumps(house.to_json()))
  batch = interleaved_batch([ex], tokenizer=tok, rollout=rollout, model_spec=SPEC, grid=4)
  assert [tok.decode(np.asarray(batch.tokens)[0, r][np.asarray(batch.token_mask)[0, r]])
          for r in range(2)] == ["<plan> red square at 2 1 </plan> <img>",
                                 "<plan> red triangle at 1 1 </plan> <img>"]
