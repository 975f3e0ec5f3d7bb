"""Grain pipelines over the ShapeWorld data sources: seeded, repeatable, checkpointable.

`rl_prompts` feeds GRPO: shuffled prompts (a new order every epoch, from the seed), encoded as
[BOS] + words, left-padded to `prompt_len`, batched `prompts_per_batch` at a time, each prompt
repeated `group_size` times (rows group-contiguous). Its iterator's `get_state()` goes into
checkpoints and `set_state()` resumes at the same element. A prompt longer than `prompt_len`
is an error, never truncated.

`sft_mix` feeds the warm-up SFT: one Grain stream per kind of example (text-to-image,
understanding, …), each shuffled, repeated and batched on its own, mixed batch by batch with the
config's weights. A batch holds one kind only, so each kind keeps one fixed layout and the
trainer compiles one step per kind.

Both read ahead in background threads as `read_options` say (`reading`: `data.read_threads`,
`data.read_ahead` batches). Grain's own default (16 threads, 500 elements ahead) would encode
hundreds of batches per stream before the first step, competing with it for the host's cores;
how far a pipeline reads ahead never changes what it yields or where it resumes.
"""
import json

import grain
import numpy as np


PROMPT = "{prompt}"  # where a template puts the prompt


def as_prompt(text: str, template: str = PROMPT) -> str:
  """The prompt as the model reads it: `template` with `{prompt}` replaced by the text (a
  task's marker before it, e.g. "stepwise {prompt}"; Bagel's chat splits around it)."""
  return template.replace(PROMPT, text)


def encode_prompt(text: str, tokenizer, prompt_len: int):
  """[BOS] + the prompt's words, left-padded: (tokens (P,) int32, mask (P,) bool)."""
  ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]
  if len(ids) > prompt_len:
    raise ValueError(f"prompt {text!r} is {len(ids)} tokens with BOS, longer than "
                     f"rollout.prompt_len = {prompt_len}")
  pad = prompt_len - len(ids)
  tokens = np.array([tokenizer.pad_token_id] * pad + ids, np.int32)
  return tokens, np.arange(prompt_len) >= pad


def check_prompt_lengths(texts, tokenizer, prompt_len: int, what: str):
  """Raises naming `rollout.prompt_len` — the KV cache's prompt slots — if any of `texts`
  (with BOS) does not fit it: found at start-up, not mid-run."""
  texts = sorted(set(texts))
  lengths = [len(ids) + 1 for ids in tokenizer(texts)["input_ids"]]
  longest = int(np.argmax(lengths))
  if lengths[longest] > prompt_len:
    raise ValueError(f"rollout.prompt_len = {prompt_len} is too short for {what}: the prompt "
                     f"{texts[longest]!r} is {lengths[longest]} tokens with BOS")


def encode_prompts(texts, tokenizer, prompt_len: int):
  """`encode_prompt` over a list: (tokens (B, P) int32, mask (B, P) bool)."""
  encoded = [encode_prompt(t, tokenizer, prompt_len) for t in texts]
  return np.stack([t for t, _ in encoded]), np.stack([m for _, m in encoded])


# The `data` fields that say how the data is read, not what it is, with their least values.
READ_FIELDS = {"read_threads": 0, "read_ahead": 1}


def reading(data) -> grain.ReadOptions:
  """The `data` config section's read-ahead: `read_threads` threads, `read_ahead` batches."""
  return grain.ReadOptions(num_threads=data.read_threads, prefetch_buffer_size=data.read_ahead)


def as_text(value) -> str:
  """A TFDS text field (bytes from an array_record data source) as str."""
  return value.decode() if isinstance(value, bytes) else str(value)


class Subset:
  """The examples of a random-access source whose family is in `families` (all if None): a
  random-access source itself, so Grain shuffles and checkpoints it like any other."""

  def __init__(self, source, families=None):
    self.source = source
    self.indices = [i for i in range(len(source)) if families is None
                    or as_text(source[i]["family"]) in families]
    if not self.indices:
      raise ValueError(f"no example of the families {families} in the data")

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, index):
    return self.source[self.indices[index]]


def rl_prompts(source, *, tokenizer, prompt_len: int, prompts_per_batch: int,
               group_size: int, seed: int, grid: int, template: str = PROMPT,
               families=None, share: slice = slice(None),
               read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """Batches of dict(tokens (B, P) int32, mask (B, P) bool, metadata: B dicts with the
  prompt's JSON, its family and the scene grid — what rewards read), B = prompts_per_batch ×
  group_size. `families` keeps only those prompt families; each prompt is written into
  `template` (`as_prompt`). `share`: the prompts of each batch this process draws (every
  process reads the same order; with several processes each keeps its own block, so together
  they draw what one process would); `read_options`: see the module docstring (Grain's default
  if None)."""
  def encode(example):
    text = as_text(example["prompt"])
    tokens, mask = encode_prompt(as_prompt(text, template), tokenizer, prompt_len)
    meta = dict(prompt=json.loads(as_text(example["metadata"])),
                family=as_text(example["family"]),
                grid=grid)
    return dict(tokens=tokens, mask=mask, metadata=json.dumps(meta))

  def group(batch):
    return dict(tokens=np.repeat(batch["tokens"], group_size, axis=0),
                mask=np.repeat(batch["mask"], group_size, axis=0),
                metadata=[json.loads(m) for m in batch["metadata"] for _ in range(group_size)])

  def stack(examples):
    return dict(tokens=np.stack([e["tokens"] for e in examples]),
                mask=np.stack([e["mask"] for e in examples]),
                metadata=[e["metadata"] for e in examples])

  return (grain.MapDataset.source(Subset(source, families)).shuffle(seed=seed).repeat()
          .batch(prompts_per_batch, drop_remainder=True, batch_fn=lambda b: b[share])
          .map(lambda examples: stack([encode(e) for e in examples])).map(group)
          .to_iter_dataset(read_options))


def decode_example(example) -> dict:
  """A TFDS example with its text fields as str (arrays, e.g. the image, unchanged)."""
  return {k: v if isinstance(v, np.ndarray) else as_text(v) for k, v in example.items()}


def sft_mix(source, *, encoders: dict, weights: dict, batch_size: int,
            seed: int, share: slice = slice(None),
            read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """Batches of (kind, encoded batch), kinds drawn by `weights` (name → weight ≥ 0; zero drops
  the kind). `encoders[name]` turns a list of decoded examples into that kind's batch; `share`
  keeps this process's rows of each batch (as in `rl_prompts`); `read_options` each stream's.
  Checkpointable: the iterator's `get_state()` / `set_state()` restore every stream and the mix."""
  unknown = sorted(set(weights) - set(encoders))
  if unknown:
    raise ValueError(f"sft.mix names unknown kinds {unknown}; known: {sorted(encoders)}")
  if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
    raise ValueError(f"sft.mix weights must be >= 0 with one positive, got {dict(weights)}")
  streams = {}
  for index, name in enumerate(sorted(weights)):
    if weights[name] > 0:
      encode = encoders[name]
      streams[name] = (grain.MapDataset.source(source).shuffle(seed=seed + index).repeat()
                       .batch(batch_size, drop_remainder=True, batch_fn=lambda b: b[share])
                       .map(lambda examples: [decode_example(e) for e in examples])
                       .map(lambda examples, name=name, encode=encode:
                            (name, encode(examples)))
                       .to_iter_dataset(read_options))
  return grain.IterDataset.mix(streams, {name: weights[name] for name in streams})
