"""Hugging Face Qwen2 import/export, checked against PyTorch's own Qwen2 (golden logits).

Each case builds a tiny random `Qwen2ForCausalLM` from a config (no download), saves it with
`save_pretrained`, imports it into our unified model and compares text logits with PyTorch's
in float32; a greedy KV-cached rollout must produce `generate`'s tokens. Needs the optional
`torch` test extra (`.ci/run` installs it).
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ROOT, env_with_devices, text_logits
from unigrpo_jax.convert import qwen2, shards
from unigrpo_jax.convert import tokenizer as hf_tokenizer
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params
from unigrpo_jax.sampling import RolloutSpec, make_rollout

# Golden checks against PyTorch and runs of `main`; the module's checkpoints are made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("qwen2")]
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CASES = {  # name: (tied embeddings, KV heads of 4, save shard size)
    "tied_gqa": (True, 2, None),
    "untied_gqa_sharded": (False, 1, "20KB"),
    "untied_mha": (False, 4, None),
}


def hf_model(tied: bool, kv_heads: int, vocab: int = 64, seed: int = 0):
  """A tiny random Qwen2: every weight random (biases and norms too, so a mix-up shows)."""
  torch.manual_seed(seed)
  config = transformers.Qwen2Config(
      vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=8, rms_norm_eps=1e-6,
      rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
      tie_word_embeddings=tied, max_position_embeddings=128)
  model = transformers.Qwen2ForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_((0.3 if "bias" in name else 0.08) * torch.randn_like(p))
  return model


def our_spec(hf_config, **overrides) -> ModelSpec:
  fields = qwen2.spec_fields(hf_config)
  fields.update(image_size=8, patch_size=4, mot=True)
  fields.update(overrides)
  return ModelSpec(**fields)


@pytest.fixture(scope="module", params=list(CASES))
def imported(request, tmp_path_factory):
  tied, kv_heads, shard_size = CASES[request.param]
  model = hf_model(tied, kv_heads)
  path = str(tmp_path_factory.mktemp(request.param))
  kwargs = {"max_shard_size": shard_size} if shard_size else {}
  model.save_pretrained(path, **kwargs)
  spec = our_spec(qwen2.read_config(path))
  params = qwen2.load_into(init_params(spec, jax.random.key(0)), path, spec)
  return dict(model=model, path=path, spec=spec, params=params, sharded=bool(shard_size))


def test_golden_logits(imported):
  tokens = np.random.default_rng(0).integers(0, 64, (3, 20))
  with torch.no_grad():
    want = imported["model"](torch.tensor(tokens)).logits.numpy()
  got = text_logits(imported["spec"], imported["params"], jnp.asarray(tokens))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  assert imported["sharded"] == os.path.isfile(os.path.join(imported["path"], shards.INDEX))


def test_bagel_initialisation(imported):
  params, fresh = imported["params"], init_params(imported["spec"], jax.random.key(0))
  for a, b in zip(jax.tree.leaves(params["layers"]["text"]),
                  jax.tree.leaves(params["layers"]["image"])):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(params["image_norm"]["scale"], params["text_norm"]["scale"])
  assert not np.any(params["image_out"]["proj"]["kernel"])  # zero head: zero velocity
  for name in ("image_in", "image_out"):
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(fresh[name])):
      np.testing.assert_array_equal(a, b)


def test_cached_greedy_decode_matches_generate(imported):
  """Our rollout (left-padded prompts, KV cache, one token a step) = transformers' generate."""
  spec, model = imported["spec"], imported["model"]
  rng = np.random.default_rng(1)
  lengths, prompt_len, new = (7, 4, 5), 7, 10
  eos = 63  # roles at ids greedy decoding may well produce: stops are compared too
  rollout_spec = RolloutSpec(prompt_len=prompt_len, max_text_tokens=new, pad_id=0, eos_id=eos,
                             image_start_id=62, image_end_id=61, mode="ode", temperature=0.0,
                             draw_images=False)
  prompts = np.zeros((3, prompt_len), np.int64)
  mask = np.zeros((3, prompt_len), bool)
  for i, n in enumerate(lengths):
    prompts[i, prompt_len - n:] = rng.integers(4, 60, n)
    mask[i, prompt_len - n:] = True
  traj = make_rollout(UnifiedTransformer(spec), rollout_spec)(
      imported["params"], jnp.asarray(prompts), jnp.asarray(mask), jax.random.key(0))
  with torch.no_grad():
    out = model.generate(torch.tensor(prompts), attention_mask=torch.tensor(mask).long(),
                         max_new_tokens=new, do_sample=False, eos_token_id=[eos, 62],
                         pad_token_id=0)
    full_mask = torch.tensor(np.concatenate([mask, np.ones((3, new), bool)], 1)).long()
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(out, attention_mask=full_mask[:, :out.shape[1]],
                   position_ids=positions[:, :out.shape[1]]).logits
    logp = torch.log_softmax(logits.float(), -1).numpy()
  generated = out[:, prompt_len:].numpy()
  tokens, live = np.asarray(traj.tokens[:, 0]), np.asarray(traj.token_mask[:, 0])
  for i in range(3):
    ours = tokens[i][live[i]]
    np.testing.assert_array_equal(ours, generated[i, :len(ours)])
    assert len(ours) == new or ours[-1] in (eos, 62)
    want = logp[i, prompt_len - 1 + np.arange(len(ours)), ours]
    np.testing.assert_allclose(np.asarray(traj.token_logp[i, 0])[live[i]], want, atol=1e-4)


def test_export_round_trip_is_exact(imported, tmp_path):
  qwen2.export(imported["params"], imported["spec"], str(tmp_path), max_shard_bytes=30_000)
  original = dict(shards.iter_tensors(imported["path"]))
  exported = dict(shards.iter_tensors(str(tmp_path)))
  assert set(exported) == set(original) and len(shards.shard_files(str(tmp_path))) > 1
  for name, value in original.items():
    assert exported[name].dtype == value.dtype
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  assert (qwen2.spec_fields(qwen2.read_config(str(tmp_path)))
          == qwen2.spec_fields(qwen2.read_config(imported["path"])))
  reloaded = transformers.Qwen2ForCausalLM.from_pretrained(str(tmp_path)).eval()
  tokens = torch.tensor(np.random.default_rng(2).integers(0, 64, (2, 9)))
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(tokens).logits.numpy(),
                                  imported["model"](tokens).logits.numpy())


@pytest.fixture(scope="module")
def sharded_checkpoint(tmp_path_factory):
  """An untied, sharded checkpoint (path) for the tests that need only one."""
  path = str(tmp_path_factory.mktemp("sharded"))
  hf_model(tied=False, kv_heads=1).save_pretrained(path, max_shard_size="20KB")
  return path


def _damaged(src, dst, change):
  tensors = dict(shards.iter_tensors(src))
  change(tensors)
  shards.write(dst, tensors.items())
  shutil.copy(os.path.join(src, "config.json"), dst)
  return dst


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"),
     "missing: model.layers.1.self_attn.k_proj.bias"),
    (lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros((2,), np.float32)}),
     "unexpected: model.layers.0.mlp.extra.weight"),
    (lambda t: t.update({"model.layers.0.mlp.up_proj.weight": np.zeros((47, 32), np.float32)}),
     "differently shaped: model.layers.0.mlp.up_proj.weight (47, 32) (expected (48, 32))"),
])
def test_a_checkpoint_that_does_not_fit_is_named(sharded_checkpoint, tmp_path, damage, message):
  path = _damaged(sharded_checkpoint, str(tmp_path / "bad"), damage)
  spec = our_spec(qwen2.read_config(path))
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    qwen2.load_into(init_params(spec, jax.random.key(0)), path, spec)


def test_a_config_that_disagrees_with_the_checkpoint_is_named(sharded_checkpoint):
  spec = our_spec(qwen2.read_config(sharded_checkpoint), mlp_dim=64, rope_theta=1e6)
  with pytest.raises(ValueError, match=r"model\.mlp_dim is 64 but the checkpoint has 48; "
                                       r"model\.rope_theta"):
    qwen2.load_into(init_params(spec, jax.random.key(0)), sharded_checkpoint, spec)


def test_added_tokens_grow_the_embeddings(tmp_path):
  """A tokenizer without the image and plan tokens gets them (ids after its vocabulary); the
  embedding (and untied head) grows with rows at the mean; old tokens' logits unchanged."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  words = ["[PAD]", "[BOS]", "[EOS]"] + [f"w{i}" for i in range(61)]
  raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
  raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  transformers.PreTrainedTokenizerFast(tokenizer_object=raw).save_pretrained(str(tmp_path))
  model = hf_model(tied=False, kv_heads=2)
  model.save_pretrained(str(tmp_path))
  roles = dict(pad="[PAD]", bos="[BOS]", eos="[EOS]", image_start="<img>", image_end="</img>")
  tok = hf_tokenizer.load(str(tmp_path), roles, ("<plan>", "</plan>"))
  assert len(tok) == 68 and tok.convert_tokens_to_ids(["<img>", "</plan>"]) == [64, 67]
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
  assert tok.tokenize("w3 <img> w5 </plan>") == ["w3", "<img>", "w5", "</plan>"]
  spec = our_spec(qwen2.read_config(str(tmp_path)), vocab_size=len(tok))
  params = qwen2.load_into(init_params(spec, jax.random.key(0)), str(tmp_path), spec)
  embed = np.asarray(params["embed"]["embedding"])
  np.testing.assert_allclose(embed[64:], np.broadcast_to(embed[:64].mean(0), (4, 32)),
                             atol=1e-7)
  head = np.asarray(params["lm_head"]["kernel"])
  np.testing.assert_allclose(head[:, 64:].T, np.broadcast_to(head[:, :64].mean(1), (4, 32)),
                             atol=1e-7)
  tokens = np.random.default_rng(3).integers(0, 64, (2, 8))
  with torch.no_grad():
    want = model(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(text_logits(spec, params, jnp.asarray(tokens))[..., :64], want,
                             atol=1e-4, rtol=1e-4)


MESH_CHECK = """
import os, sys
import jax, numpy as np
sys.path[:0] = [sys.argv[2], os.path.dirname(sys.argv[2])]  # this file's folder, and helpers
from test_qwen2 import our_spec
from unigrpo_jax import sharding
from unigrpo_jax.convert import qwen2
from unigrpo_jax.model import init_params, param_logical_axes
assert jax.device_count() == 8
path = sys.argv[1]
spec = our_spec(qwen2.read_config(path))
mesh = sharding.make_mesh(dict(data=1, fsdp=4, tensor=2))
shapes = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
shardings = sharding.param_shardings(param_logical_axes(spec), mesh, shapes)
placed = jax.jit(lambda k: init_params(spec, k), out_shardings=shardings)(jax.random.key(0))
placed = qwen2.load_into(placed, path, spec)
single = qwen2.load_into(init_params(spec, jax.random.key(0)), path, spec)
split = 0
for (key, got), want, sh in zip(jax.tree_util.tree_leaves_with_path(placed),
                                jax.tree.leaves(single), jax.tree.leaves(shardings)):
  assert got.sharding == sh, key
  split += got.addressable_shards[0].data.size < got.size
  if "image_in" not in jax.tree_util.keystr(key):  # fresh random: not imported
    np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(key))
print("split leaves", split)
"""


def test_import_places_tensors_on_the_mesh(tmp_path):
  """Each tensor written straight into its sharding on a 4 × 2 (fsdp × tensor) mesh of 8
  devices: same values as the single-device import."""
  import subprocess
  import sys
  hf_model(tied=True, kv_heads=2).save_pretrained(str(tmp_path))
  env = env_with_devices(8)
  out = subprocess.run([sys.executable, "-c", MESH_CHECK, str(tmp_path),
                        os.path.dirname(os.path.abspath(__file__))],
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.split()[-1]) >= 20  # the big matrices really are split


def test_checkpoint_listing_gives_every_name_and_shape(imported):
  shapes = shards.tensor_shapes(imported["path"])
  with open(os.path.join(imported["path"], "config.json")) as f:
    hf = json.load(f)
  assert shapes["model.embed_tokens.weight"] == (hf["vocab_size"], hf["hidden_size"])
  assert ("lm_head.weight" in shapes) == (not hf["tie_word_embeddings"])


def test_main_starts_from_a_hugging_face_checkpoint(tmp_path):
  """`config.hf.checkpoint`: the tiny ShapeWorld job starts GRPO from a Qwen2 checkpoint whose
  directory also holds the tokenizer (the shipped one, saved in Hugging Face format)."""
  import subprocess
  import sys
  from unigrpo_jax import checkpoint
  from unigrpo_jax.data import tokenizer as tokenizer_lib
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import shapeworld
  cfg = shapeworld.get_config("tiny")
  cfg.model.depth = 1  # one block: the import, not the stack, is under test
  ckpt = str(tmp_path / "qwen2")
  torch.manual_seed(0)
  m = cfg.model
  model = transformers.Qwen2ForCausalLM(qwen2.hf_config_from_spec(ModelSpec(**m)))
  model.save_pretrained(ckpt)
  tokenizer_lib.load(tokenizer_lib.PATHS[1]).save_pretrained(ckpt)
  common = ["--config=configs/shapeworld.py:tiny", f"--config.model.depth={cfg.model.depth}",
            f"--config.data.data_dir={tmp_path / 'tfds'}", f"--config.hf.checkpoint={ckpt}"]
  bad = subprocess.run([sys.executable, "-m", "unigrpo_jax.main", *common,
                        f"--workdir={tmp_path / 'bad'}", "--config.model.mlp_dim=32"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1
  assert "config.hf.checkpoint: config does not match the checkpoint: model.mlp_dim is 32" \
      in bad.stderr
  out = subprocess.run([sys.executable, "-m", "unigrpo_jax.main", *common,
                        f"--workdir={tmp_path / 'run'}", "--config.stages=('grpo',)",
                        "--config.rl.init_params=none", "--config.rl.steps=2",
                        "--config.eval.every=2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  spec = our_spec(qwen2.read_config(ckpt), image_size=m.image_size, patch_size=m.patch_size,
                  prediction=m.prediction)
  trained = checkpoint.load_params(str(tmp_path / "run" / "grpo" / "params"),
                                   jax.eval_shape(lambda: init_params(spec, jax.random.key(0))))
  start = model.model.embed_tokens.weight.detach().numpy()
  fresh = np.asarray(init_params(spec, jax.random.key(cfg.seed))["embed"]["embedding"])
  # At most two small GRPO steps away from the imported weights, far from fresh ones.
  assert np.abs(np.asarray(trained["embed"]["embedding"]) - start).max() < 1e-3
  assert np.abs(fresh - start).max() > 0.02
