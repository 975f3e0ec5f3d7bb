"""The ShapeWorld tokenizer: shipped file is current, special ids fixed, lossless round trip."""
import json

import numpy as np
import pytest

from unigrpo_jax.data import prompts, shapeworld, tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("version", sorted(tokenizer.PATHS))
def test_shipped_tokenizer_is_a_deterministic_fresh_build(version):
  shipped = json.load(open(tokenizer.PATHS[version]))
  world = shapeworld.get_world(version)
  assert json.loads(tokenizer.build(world).to_str()) == shipped
  assert json.loads(tokenizer.build(world).to_str()) == shipped


@pytest.mark.parametrize("version", sorted(tokenizer.PATHS))
def test_special_token_ids_and_round_trip(version):
  tok = tokenizer.load(tokenizer.PATHS[version])
  assert [tok.convert_tokens_to_ids(t) for t in tokenizer.SPECIAL_TOKENS] == list(range(8))
  assert tok.pad_token_id == 0 and tok.bos_token_id == 1 and tok.eos_token_id == 2
  rng = np.random.default_rng(7)  # other prompts than the training corpus's seed
  for family in prompts.ALL_FAMILIES:
    for _ in range(20):
      prompt = prompts.sample_prompt(rng, family, world=shapeworld.get_world(version))
      scene = prompts.target_scene(rng, prompt, large_prob=0.3)
      for text in (prompt.text, prompts.plan_text(scene), prompts.caption(scene),
                   f"<plan> {prompts.plan_text(scene)} </plan> <img>"):
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_unknown_words_and_missing_file():
  tok = tokenizer.load()
  assert tok("a photo of a hexagon")["input_ids"][-1] == tok.unk_token_id
  with pytest.raises(FileNotFoundError, match=r"tokenizer file '/nonexistent/tok\.json'"):
    tokenizer.load("/nonexistent/tok.json")
