r"""The ShapeWorld tokenizer: a word-level model trained with `tokenizers` on the domain's text,
shipped inside the package and loaded through `transformers.PreTrainedTokenizerFast`.

Special tokens have fixed ids, the ones every config's `tokens` section names:
  [PAD]=0 [BOS]=1 [EOS]=2 <img>=3 </img>=4 <plan>=5 </plan>=6 [UNK]=7.
The vocabulary is closed (every word the domain can write); [UNK] marks anything else.
Rebuild the shipped file (deterministic; a test checks it is current):

  python -m unigrpo_jax.data.tokenizer
"""
import os

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from unigrpo_jax.data import prompts, shapeworld

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "<img>", "</img>", "<plan>", "</plan>", "[UNK]")
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer", "tokenizer.json")


def domain_corpus(seed: int = 0, samples: int = 400) -> list[str]:
  """Every kind of text the domain produces: prompts, plans, captions, plus each word alone
  (so rare words — every cell index, every plural — are in the vocabulary)."""
  rng = np.random.default_rng(seed)
  texts = []
  for family in prompts.FAMILIES:
    for _ in range(samples):
      prompt = prompts.sample_prompt(rng, family)
      scene = prompts.target_scene(rng, prompt, large_prob=0.2)
      texts += [prompt.text, prompts.plan_text(scene), prompts.caption(scene)]
  words = list(shapeworld.SHAPES) + [s + "s" for s in shapeworld.SHAPES] + list(
      shapeworld.PALETTE) + list(prompts.NUMBERS.values()) + [str(i) for i in range(10)] + [
          prompts.INTERLEAVED_MARKER]
  return texts + words


def build() -> Tokenizer:
  tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
  tok.train_from_iterator(domain_corpus(), trainer=trainer)
  return tok


def load(path: str = PATH) -> PreTrainedTokenizerFast:
  """The tokenizer as a `transformers` fast tokenizer; a missing file is a clear error."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"tokenizer file {path!r} does not exist (expected a tokenizers "
                            f"JSON; rebuild with `python -m unigrpo_jax.data.tokenizer`)")
  tok = PreTrainedTokenizerFast(tokenizer_file=path, pad_token="[PAD]", bos_token="[BOS]",
                                eos_token="[EOS]", unk_token="[UNK]",
                                additional_special_tokens=["<img>", "</img>", "<plan>",
                                                           "</plan>"])
  for want, name in enumerate(SPECIAL_TOKENS):
    if tok.convert_tokens_to_ids(name) != want:
      raise ValueError(f"tokenizer {path!r}: special token {name} has id "
                       f"{tok.convert_tokens_to_ids(name)}, expected {want}")
  return tok


if __name__ == "__main__":
  os.makedirs(os.path.dirname(PATH), exist_ok=True)
  build().save(PATH)
  print(f"wrote {PATH}")
