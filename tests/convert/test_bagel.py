"""Bagel checkpoints: the language model read from a tiny random folder in Bagel's exact names
and shapes. The understanding path must give the logits of `transformers.Qwen3ForCausalLM`
(Qwen2 with per-head q/k norms; `attention_bias=True`) on the same weights; the `_moe_gen`
twins must land in the generation expert."""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import text_logits
from unigrpo_jax.convert import bagel
from unigrpo_jax.model import ModelSpec, init_params

# Golden checks against PyTorch; the module's checkpoint folder is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bagel")]
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LLM = dict(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
           rope_theta=10_000.0, max_position_embeddings=256, tie_word_embeddings=False,
           hidden_act="silu", model_type="qwen2")


def qwen3(seed=0):
  """A tiny random Qwen3 (attention biases on, o_proj's zeroed: Bagel's has none)."""
  torch.manual_seed(seed)
  config = transformers.Qwen3Config(
      vocab_size=LLM["vocab_size"], hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
      rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
      attention_bias=True, tie_word_embeddings=False, max_position_embeddings=256)
  model = transformers.Qwen3ForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "o_proj.bias" in name:
        p.zero_()
      elif "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_((0.3 if "bias" in name else 0.08) * torch.randn_like(p))
  return model


def bagel_tensors(model, seed=1):
  """The Qwen3's weights under Bagel's names, plus random `_moe_gen` twins."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, p in model.state_dict().items():
    if "o_proj.bias" in name:
      continue
    x = p.numpy().astype(np.float32)
    out[bagel.PREFIX + name] = x
    twin = bagel.gen_name(name)
    if twin != name:
      out[bagel.PREFIX + twin] = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
  return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  path = tmp_path_factory.mktemp("bagel")
  model = qwen3()
  tensors = bagel_tensors(model)
  save_file(tensors, str(path / bagel.EMA))
  (path / bagel.LLM_CONFIG).write_text(json.dumps(LLM))
  return path, model, tensors


def spec_for(path):
  return ModelSpec(**bagel.llm_spec_fields(str(path)), image_size=8, patch_size=4)


def test_twin_names_follow_bagels_modules():
  assert bagel.gen_name("model.layers.3.self_attn.q_proj.weight") == \
      "model.layers.3.self_attn.q_proj_moe_gen.weight"
  assert bagel.gen_name("model.layers.0.self_attn.k_norm.weight") == \
      "model.layers.0.self_attn.k_norm_moe_gen.weight"
  assert bagel.gen_name("model.layers.0.mlp.down_proj.weight") == \
      "model.layers.0.mlp_moe_gen.down_proj.weight"
  assert bagel.gen_name("model.layers.1.post_attention_layernorm.weight") == \
      "model.layers.1.post_attention_layernorm_moe_gen.weight"
  assert bagel.gen_name("model.norm.weight") == "model.norm_moe_gen.weight"


def test_understanding_logits_equal_qwen3_and_generation_weights_land_in_the_image_expert(
    folder):
  path, model, tensors = folder
  spec = spec_for(path)
  assert spec.qk_norm and spec.mot and not spec.tie_embeddings
  params = bagel.load_llm_into(init_params(spec, jax.random.key(0)), str(path), spec)
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 11), 0, LLM["vocab_size"]))
  with torch.no_grad():
    want = model(torch.from_numpy(tokens.copy())).logits.numpy()
  got = text_logits(spec, params, tokens)
  assert np.abs(want).max() > 0.5
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

  image = params["layers"]["image"]
  np.testing.assert_array_equal(
      np.asarray(image["q_norm"]["scale"][1]),
      tensors["language_model.model.layers.1.self_attn.q_norm_moe_gen.weight"])
  np.testing.assert_array_equal(
      np.asarray(image["mlp"]["down"]["kernel"][0]),
      tensors["language_model.model.layers.0.mlp_moe_gen.down_proj.weight"].T)
  np.testing.assert_array_equal(np.asarray(params["image_norm"]["scale"]),
                                tensors["language_model.model.norm_moe_gen.weight"])


def test_a_folder_that_does_not_fit_is_named(folder, tmp_path):
  path, _, tensors = folder
  spec = spec_for(path)
  params = init_params(spec, jax.random.key(0))
  with pytest.raises(FileNotFoundError, match=r"has no llm_config\.json: not a Bagel"):
    bagel.load_llm_into(params, str(tmp_path), spec)
  (tmp_path / bagel.LLM_CONFIG).write_text(json.dumps(LLM))
  with pytest.raises(FileNotFoundError, match=r"has no ema\.safetensors"):
    bagel.load_llm_into(params, str(tmp_path), spec)
  with pytest.raises(ValueError, match=r"model\.depth is 3 but the checkpoint has 2"):
    bagel.load_llm_into(params, str(path), ModelSpec(**{**spec.__dict__, "depth": 3}))
  broken = dict(tensors)
  del broken["language_model.model.layers.1.mlp_moe_gen.up_proj.weight"]
  broken["language_model.model.layers.0.self_attn.q_norm.weight"] = np.ones(9, np.float32)
  broken["language_model.model.extra.weight"] = np.ones(2, np.float32)
  save_file(broken, str(tmp_path / bagel.EMA))
  with pytest.raises(ValueError) as e:
    bagel.load_llm_into(params, str(tmp_path), spec)
  message = str(e.value)
  assert "missing: language_model.model.layers.1.mlp_moe_gen.up_proj.weight" in message
  assert "unexpected: language_model.model.extra.weight" in message
  assert "self_attn.q_norm.weight (9,) (expected (8,))" in message
