r"""Warm-up SFT on ShapeWorld text-to-image data, evaluated on held-out prompts before and
after: prints JSON and writes it (with the markdown table) under experiments/results/.

  python experiments/sft_warmup.py --config=configs/shapeworld.py
"""
import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import evaluate as evaluation
from unigrpo_jax import visualize
from unigrpo_jax.data.pipeline import as_text, encode_prompts
from unigrpo_jax.sampling import make_rollout
from unigrpo_jax.data import tokenizer as tokenizer_lib
from unigrpo_jax.data.tfds_shapeworld import prepare
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params
from unigrpo_jax.rl import init_train_state, make_optimizer
from unigrpo_jax.sampling import RolloutSpec
from unigrpo_jax.train.sft import SFTSpec, make_sft_step, t2i_batch

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapeworld.py", "Config.")
_OUT = flags.DEFINE_string("out", "experiments/results/sft_warmup", "Output path prefix.")


def _sample_grid(params, examples, model, spec, tok, path):
  """A PNG of held-out samples (one per prompt), for a person to look at."""
  tokens, mask = encode_prompts([ex["prompt"] for ex in examples], tok, spec.prompt_len)
  traj = make_rollout(model, spec)(params, jnp.asarray(tokens), jnp.asarray(mask),
                                   jax.random.key(0))
  images = np.asarray(traj.images[:, 0]).reshape((2, len(examples) // 2) + traj.images.shape[2:])
  visualize.save_grid(images, path)
  for ex, text in zip(examples, evaluation.decode_texts(traj, tok)):
    print(f"{ex['prompt']!r} -> {text!r}")


def main(argv):
  del argv
  cfg = _CONFIG.value
  t_start = time.time()
  tok = tokenizer_lib.load()
  data = dict(cfg.data)
  builder = prepare(data.pop("data_dir"), **data)
  train, heldout = builder.as_data_source("train"), builder.as_data_source("heldout")
  ms = ModelSpec(**cfg.model)
  model = UnifiedTransformer(ms)
  train_spec = RolloutSpec.from_config(cfg.rollout, cfg.tokens)
  eval_spec = RolloutSpec.from_config(cfg.rollout, cfg.tokens, mode="ode", temperature=0.0)
  optimizer = make_optimizer(cfg.optim)
  state = init_train_state(init_params(ms, jax.random.key(cfg.seed)), optimizer)
  step = make_sft_step(model, train_spec, SFTSpec(**cfg.sft), optimizer)

  eval_examples = [dict(prompt=as_text(heldout[i]["prompt"]),
                        family=as_text(heldout[i]["family"]),
                        metadata=as_text(heldout[i]["metadata"]))
                   for i in range(min(cfg.eval.num_prompts, len(heldout)))]

  def run_eval(params):
    return evaluation.evaluate(params, eval_examples, model=model, spec=eval_spec, tokenizer=tok,
                               grid=cfg.data.grid, batch_size=cfg.eval.batch_size)

  before = run_eval(state.params)
  # Encode the whole training split once; each step then only gathers rows.
  everything = t2i_batch([dict(prompt=as_text(train[j]["prompt"]),
                               plan=as_text(train[j]["plan"]), image=train[j]["image"])
                              for j in range(len(train))],
                         tokenizer=tok, rollout=train_spec, model_spec=ms)
  rng = np.random.default_rng(cfg.seed)
  key = jax.random.key(cfg.seed + 1)
  curve, t_train = [], time.time()
  for i in range(cfg.sft_train.steps):
    idx = rng.integers(0, len(train), cfg.sft_train.batch_size)
    state, metrics = step(state, jax.tree.map(lambda x, idx=idx: x[idx], everything), key)
    if i % cfg.sft_train.log_every == 0 or i == cfg.sft_train.steps - 1:
      curve.append(dict(step=i, **{k: float(v) for k, v in metrics.items()}))
      print(json.dumps(curve[-1]), flush=True)
  train_s = time.time() - t_train
  after = run_eval(state.params)
  _sample_grid(state.params, eval_examples[:16], model, eval_spec, tok, _OUT.value + ".png")
  result = dict(before=before, after=after, curve=curve, train_s=train_s,
                wall_s=time.time() - t_start, steps=cfg.sft_train.steps,
                batch_size=cfg.sft_train.batch_size, seed=cfg.seed,
                params=int(sum(x.size for x in jax.tree.leaves(state.params))),
                heldout_prompts=len(eval_examples))
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(_OUT.value + ".md", "w") as f:
    f.write("Before SFT\n\n" + evaluation.markdown_table(before) + "\n\nAfter SFT\n\n"
            + evaluation.markdown_table(after) + "\n")
  print(json.dumps(dict(before=before["overall"], after=after["overall"], train_s=train_s)))


if __name__ == "__main__":
  app.run(main)
