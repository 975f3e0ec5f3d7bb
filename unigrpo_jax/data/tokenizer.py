r"""The ShapeWorld tokenizer: a word-level model trained with `tokenizers` on the domain's text,
shipped inside the package and loaded through `transformers.PreTrainedTokenizerFast`.

Special tokens have fixed ids, the ones every config's `tokens` section names:
  [PAD]=0 [BOS]=1 [EOS]=2 <img>=3 </img>=4 <plan>=5 </plan>=6 [UNK]=7.
The vocabulary is closed (every word the domain can write); [UNK] marks anything else. Each
ShapeWorld version has its own file (`PATHS`), so a model trained on one keeps its ids. Rebuild
the shipped files (deterministic; a test checks they are current):

  python -m unigrpo_jax.data.tokenizer
"""
import os

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from unigrpo_jax.convert import tokenizer as hf_tokenizer
from unigrpo_jax.data import prompts, shapeworld

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "<img>", "</img>", "<plan>", "</plan>", "[UNK]")
_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer")
PATHS = {1: os.path.join(_FOLDER, "tokenizer.json"),
         2: os.path.join(_FOLDER, "tokenizer_v2.json")}
PATH = PATHS[shapeworld.LATEST.version]


def domain_corpus(world: shapeworld.World = shapeworld.LATEST, seed: int = 0,
                  samples: int = 400) -> list[str]:
  """Every kind of text the world's domain produces: prompts, plans, captions, plus each word
  alone (so rare words — every cell index, every plural — are in the vocabulary)."""
  rng = np.random.default_rng(seed)
  texts = []
  for family in prompts.ALL_FAMILIES:
    for _ in range(samples):
      prompt = prompts.sample_prompt(rng, family, world=world)
      scene = prompts.target_scene(rng, prompt, large_prob=0.2)
      texts += [prompt.text, prompts.plan_text(scene), prompts.caption(scene)]
  words = list(world.shapes) + [shapeworld.plural(s) for s in world.shapes] + list(
      world.colors) + [prompts.NUMBERS[n] for n in world.counts] + [
          str(i) for i in range(10)] + [prompts.INTERLEAVED_MARKER]
  return texts + words


def build(world: shapeworld.World = shapeworld.LATEST) -> Tokenizer:
  tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
  tok.train_from_iterator(domain_corpus(world), trainer=trainer)
  return tok


def load(path: str = PATH) -> PreTrainedTokenizerFast:
  """The tokenizer as a `transformers` fast tokenizer (read from JSON, nothing unpickled); a
  missing file, a file that is not a tokenizer, or other special ids is a clear error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer file {path!r} does not exist (expected a tokenizers "
                            f"JSON; rebuild with `python -m unigrpo_jax.data.tokenizer`)")
  try:
    tok = PreTrainedTokenizerFast(tokenizer_file=path, pad_token="[PAD]", bos_token="[BOS]",
                                  eos_token="[EOS]", unk_token="[UNK]",
                                  additional_special_tokens=["<img>", "</img>", "<plan>",
                                                             "</plan>"])
  except Exception as e:  # the tokenizers library raises plain Exceptions on bad JSON
    raise ValueError(f"tokenizer file {path!r} is not a tokenizers JSON (expected a saved "
                     f"`tokenizers.Tokenizer`; reading it gave {type(e).__name__}: "
                     f"{str(e)[:200]})") from e
  for want, name in enumerate(SPECIAL_TOKENS):
    if tok.convert_tokens_to_ids(name) != want:
      raise ValueError(f"tokenizer {path!r}: special token {name} has id "
                       f"{tok.convert_tokens_to_ids(name)}, expected {want}")
  return tok


def for_config(config):
  """The tokenizer of the config, checked against it: `config.tokenizer_path`, else the
  Hugging Face checkpoint `config.hf.checkpoint`, else the Bagel folder
  `config.bagel.checkpoint`, else the one shipped for `config.data.world`. A directory is read
  as a Hugging Face tokenizer; either kind is extended by `config.hf.tokens` / `added_tokens`
  (the tokens of the roles it lacks are added: `convert/tokenizer.py`). It must fit
  `model.vocab_size` and have the ids `config.tokens` names."""
  bagel = config.get("bagel", {}).get("checkpoint", "")
  shipped = PATHS[config.data.get("world", shapeworld.LATEST.version)]
  path = config.tokenizer_path or config.hf.checkpoint or bagel or shipped
  roles, added = dict(config.hf.tokens), tuple(config.hf.added_tokens)
  if os.path.isdir(path):
    tok = hf_tokenizer.load(path, roles, added)
  else:
    tok = hf_tokenizer.extend(load(path), roles, added)
  limit = config.model.get("vocab_limit", 0)
  if limit and len(tok) > limit:
    raise ValueError(f"config.model.vocab_limit ({limit}) is smaller than the vocabulary of "
                     f"tokenizer {path!r} ({len(tok)}): the policy could not emit its last ids")
  if len(tok) > config.model.vocab_size:
    raise ValueError(f"config.model.vocab_size ({config.model.vocab_size}) is smaller than the "
                     f"vocabulary of tokenizer {path!r} ({len(tok)})")
  ids = dict(pad_id=tok.pad_token_id, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id,
             **{f"{role}_id": tok.convert_tokens_to_ids(roles[role])
                for role in ("image_start", "image_end") + hf_tokenizer.BLOCK_ROLES
                if role in roles})
  for name, want in ids.items():
    if name not in config.tokens:
      raise ValueError(f"config.tokens has no {name} (config.hf.tokens names its token, "
                       f"{roles[name[:-3]]!r}, id {want})")
    if config.tokens[name] != want:
      raise ValueError(f"config.tokens.{name} is {config.tokens[name]} but tokenizer {path!r} "
                       f"has it at {want}")
  return tok


if __name__ == "__main__":
  os.makedirs(_FOLDER, exist_ok=True)
  for version, path in PATHS.items():
    build(shapeworld.get_world(version)).save(path)
    print(f"wrote {path}")
