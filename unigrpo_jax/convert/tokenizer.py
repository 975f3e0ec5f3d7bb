"""A Hugging Face checkpoint's own tokenizer, with the tokens the unified model needs.

`config.hf.tokens` names the token of each role (pad, bos, eos, image start and end; for
Bagel's image blocks also block_start and block_end) and `config.hf.added_tokens` more special
tokens (the plan markers); whichever the tokenizer lacks is added as a special token (ids after
its vocabulary), and the roles are set. The model's
embedding rows grow to match on import (`qwen2.load_into`); `model.vocab_size` must cover
`len(tokenizer)`, which `data/tokenizer.for_config` checks.
"""
ROLES = ("pad", "bos", "eos", "image_start", "image_end")
BLOCK_ROLES = ("block_start", "block_end")  # optional: the markers inside a Bagel image block


def load(path: str, tokens: dict, added: tuple[str, ...] = ()):
  """The fast tokenizer saved in directory `path` (its tokenizer.json, read as it is: not
rebuilt by the model type's tokenizer class; local files only), extended.

  tokens: {role: token string} for every role in `ROLES` (and optionally `BLOCK_ROLES`);
  added: more special tokens.
  """
  from transformers import PreTrainedTokenizerFast  # heavy; only Hugging Face paths need it
  return extend(PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True), tokens,
                added)


def extend(tok, tokens: dict, added: tuple[str, ...] = ()):
  """`tok` with the tokens of `tokens`' roles and `added` (those it lacks appended as special
  tokens, in that order) and its pad, bos and eos roles set."""
  missing_roles = [r for r in ROLES if r not in tokens]
  if missing_roles:
    raise ValueError(f"config.hf.tokens names no token for {missing_roles}")
  vocab = tok.get_vocab()
  roles = [tokens[r] for r in ROLES + BLOCK_ROLES if r in tokens]
  new = [t for t in dict.fromkeys(roles + list(added)) if t not in vocab]
  if new:
    tok.add_tokens(new, special_tokens=True)
  tok.pad_token, tok.bos_token, tok.eos_token = tokens["pad"], tokens["bos"], tokens["eos"]
  return tok
