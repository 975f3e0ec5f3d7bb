"""The ShapeWorld TFDS build is deterministic; Grain batches and resumes exactly."""
import json

import numpy as np
import pytest

from configs import shapeworld
from unigrpo_jax.data import geneval, pipeline, prompts, tokenizer
from unigrpo_jax.data.detector import detect
from unigrpo_jax.data.tfds_shapeworld import prepare
from unigrpo_jax.train import tasks

pytestmark = pytest.mark.xdist_group("data")  # one built data set for the module

CONFIG = dict(num_train=48, num_heldout=12, seed=3, heldout_fraction=0.2, world=2)
CONFIG_FAMILIES = prompts.FAMILIES  # the builder's default


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  return prepare(str(tmp_path_factory.mktemp("tfds")), **CONFIG)


def _records(builder, split):
  source = builder.as_data_source(split)
  return [{k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in source[i].items()}
          for i in range(len(source))]


def test_build_is_deterministic_and_splits_are_disjoint(builder, tmp_path):
  again = prepare(str(tmp_path), **CONFIG)
  for split in ("train", "heldout"):
    assert _records(builder, split) == _records(again, split)
  train = {r["prompt"] for r in _records(builder, "train")}
  heldout = {r["prompt"] for r in _records(builder, "heldout")}
  # Disjoint but for single_object, whose every shape world 2 evaluates.
  shared = {p.text.encode() for p in prompts.all_prompts("single_object")}
  assert len(_records(builder, "train")) == 48 and len(heldout) > 0
  assert not (train & heldout) - shared
  # Every stored target image satisfies its prompt under the real detector.
  source = builder.as_data_source("heldout")
  for i in range(len(source)):
    ex = source[i]
    prompt = prompts.Prompt.from_json(json.loads(ex["metadata"]))
    assert geneval.strict(detect(ex["image"].astype(np.float32) / 127.5 - 1,
                                 world=prompt.domain), prompt)
  # World 2 lists distinct held-out prompts, the families taking turns.
  records = _records(builder, "heldout")
  assert len({r["prompt"] for r in records}) == len(records) == 12
  assert [r["family"].decode() for r in records[:6]] == list(CONFIG_FAMILIES)


def test_plans_in_prompt_order_and_the_raster_data_keeps_its_name(builder, tmp_path):
  ordered = prepare(str(tmp_path / "prompt"), **CONFIG, plan_order="prompt")
  raster, by_clause = _records(builder, "train"), _records(ordered, "train")
  # Only the plans change: the same prompts, scenes and images, objects listed clause by clause.
  assert [(r["prompt"], r["image"]) for r in raster] == [(r["prompt"], r["image"])
                                                         for r in by_clause]
  moved = 0
  for a, b in zip(raster, by_clause):
    prompt = prompts.Prompt.from_json(json.loads(b["metadata"]))
    old, new = (prompts.parse_plan(r["plan"].decode(), 4, prompt.domain) for r in (a, b))
    assert sorted(old, key=lambda o: (o.row, o.col)) == old and set(old) == set(new)
    assert new == prompts.clause_order(new, prompt)
    moved += old != new
  assert moved > 0
  # A raster plan is the order there was before plans had a choice: the same data set.
  assert (prepare(str(tmp_path / "raster"), **CONFIG, plan_order="raster",
                 plan_words="color_shape").builder_config.name
          == builder.builder_config.name != ordered.builder_config.name)


def test_rl_prompt_batches_and_exact_resume(builder):
  tok = tokenizer.load()
  make = lambda: pipeline.rl_prompts(builder.as_data_source("train"), tokenizer=tok,  # noqa
                                     prompt_len=16, prompts_per_batch=3, group_size=4, seed=7,
                                     grid=4)
  it = iter(make())
  first = next(it)
  assert first["tokens"].shape == (12, 16) and first["mask"].shape == (12, 16)
  assert (first["tokens"][:4] == first["tokens"][0]).all()  # one prompt per group of 4
  assert first["tokens"][0, first["mask"][0].argmax()] == tok.bos_token_id
  text = tok.decode(first["tokens"][0][first["mask"][0]][1:])
  assert text == first["metadata"][0]["prompt"]["text"]
  for _ in range(20):  # past an epoch (48 prompts / 3 a batch = 16 batches)
    next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(5)]
  resumed = iter(make())
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["tokens"], want)


def test_rl_prompts_come_only_from_the_configured_families(builder):
  c = shapeworld.get_config("tiny")
  c.rl.families = ("counting", "color_attr")
  families = tasks.get(c).train_families(c)
  assert families == ("counting", "color_attr")
  it = iter(pipeline.rl_prompts(builder.as_data_source("train"), tokenizer=tokenizer.load(),
                                prompt_len=16, prompts_per_batch=4, group_size=2, seed=0,
                                grid=4, families=families))
  seen = {m["family"] for _ in range(10) for m in next(it)["metadata"]}
  assert seen == set(families)
  c.rl.families = ()
  assert tasks.get(c).train_families(c) == prompts.FAMILIES


def test_over_long_prompt_is_an_error():
  tok = tokenizer.load()
  with pytest.raises(ValueError, match=r"longer than rollout\.prompt_len = 4"):
    pipeline.encode_prompt("a photo of a red circle", tok, 4)


def test_sft_mix_draws_kinds_by_weight_and_resumes(builder):
  encoders = dict(t2i=lambda exs: ("t2i", [e["prompt"] for e in exs]),
                  understanding=lambda exs: ("understanding", [e["caption"] for e in exs]),
                  interleaved=lambda exs: None)
  make = lambda: pipeline.sft_mix(builder.as_data_source("train"), encoders=encoders,  # noqa
                                  weights=dict(t2i=3.0, understanding=1.0, interleaved=0.0),
                                  batch_size=4, seed=5)
  it = iter(make())
  batches = [next(it) for _ in range(400)]
  kinds = [kind for kind, _ in batches]
  assert set(kinds) == {"t2i", "understanding"}  # weight 0 drops a kind
  assert abs(kinds.count("t2i") / 400 - 0.75) < 0.07
  for kind, (encoded_kind, texts) in batches:
    assert encoded_kind == kind and len(texts) == 4 and all(isinstance(t, str) for t in texts)
  state = it.get_state()
  json.dumps(state)  # checkpoints store it as JSON
  expected = [next(it) for _ in range(6)]
  resumed = iter(make())
  resumed.set_state(state)
  assert [next(resumed) for _ in range(6)] == expected
  with pytest.raises(ValueError, match=r"sft\.mix names unknown kinds \['captions'\]"):
    pipeline.sft_mix(builder.as_data_source("train"), encoders=encoders,
                     weights=dict(captions=1.0), batch_size=4, seed=0)


def test_process_shares_are_disjoint_and_together_the_one_process_batches(builder):
  tok = tokenizer.load()
  def batches(share, n=20):  # past an epoch: 48 prompts / 4 a batch = 12 batches
    it = iter(pipeline.rl_prompts(builder.as_data_source("train"), tokenizer=tok,
                                  prompt_len=16, prompts_per_batch=4, group_size=2, seed=7,
                                  grid=4, share=share))
    return [next(it) for _ in range(n)]
  whole, first, second = batches(slice(None)), batches(slice(0, 2)), batches(slice(2, 4))
  for w, a, b in zip(whole, first, second):
    assert a["tokens"].shape == b["tokens"].shape == (4, 16)
    np.testing.assert_array_equal(np.concatenate([a["tokens"], b["tokens"]]), w["tokens"])
    assert a["metadata"] + b["metadata"] == w["metadata"]
    assert not ({m["prompt"]["text"] for m in a["metadata"]}
                & {m["prompt"]["text"] for m in b["metadata"]})
  encoders = dict(t2i=lambda exs: [e["prompt"] for e in exs])
  def mix(share):
    it = iter(pipeline.sft_mix(builder.as_data_source("train"), encoders=encoders,
                               weights=dict(t2i=1.0), batch_size=4, seed=5, share=share))
    return [next(it)[1] for _ in range(15)]
  assert [a + b for a, b in zip(mix(slice(0, 2)), mix(slice(2, 4)))] == mix(slice(None))
