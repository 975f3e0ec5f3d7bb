"""Bagel: a tiny random folder in Bagel's exact names and shapes (llm_config.json,
ema.safetensors, ae.safetensors), read by `unigrpo_jax.bagel.load`.

  * the understanding path gives the logits of `transformers.Qwen3ForCausalLM` (Qwen2 with
    per-head q/k norms; `attention_bias=True`) on the same weights;
  * the generation path's velocity, and the Euler sampler built on it, equal a float64 NumPy
    reference of Bagel's equations written here from the checkpoint's tensors by name;
  * the vision encoder gives the features of `transformers.SiglipVisionModel` on the same
    weights (its patch convolution stored as Bagel's linear layer);
  * a folder or config that does not fit is named before anything runs.
"""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from test_flux_ae import SPEC as AE_SPEC
from test_flux_ae import random_bfl_tensors
from unigrpo_jax import bagel
from unigrpo_jax.convert import bagel as convert

# Golden checks against PyTorch; the module's checkpoint folder is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bagel")]
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LLM = dict(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
           rope_theta=10_000.0, max_position_embeddings=256, tie_word_embeddings=False,
           hidden_act="silu", model_type="qwen2")
HEADS, KV_HEADS, HEAD_DIM, MAX_LATENT = 4, 2, 8, 4
TOKEN_IDS = dict(bos=1, eos=2, start_of_image=3, end_of_image=4)


def qwen3(seed=0):
  """A tiny random Qwen3 (attention biases on, o_proj's zeroed: Bagel's has none)."""
  torch.manual_seed(seed)
  config = transformers.Qwen3Config(
      vocab_size=LLM["vocab_size"], hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
      rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
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
  """The Qwen3's weights under Bagel's names, random `_moe_gen` twins, random generation
  tensors (latent 2×2 patches of AE_SPEC's channels) and a few vision-encoder tensors."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, p in model.state_dict().items():
    if "o_proj.bias" in name:
      continue
    x = p.numpy().astype(np.float32)
    out[convert.PREFIX + name] = x
    twin = convert.gen_name(name)
    if twin != name:
      out[convert.PREFIX + twin] = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
  width, patch = LLM["hidden_size"], 4 * AE_SPEC.z_channels
  for name, shape, scale in (
      ("time_embedder.mlp.0.weight", (width, 256), 0.1), ("time_embedder.mlp.0.bias", (width,), 0.1),
      ("time_embedder.mlp.2.weight", (width, width), 0.15), ("time_embedder.mlp.2.bias", (width,), 0.1),
      ("vae2llm.weight", (width, patch), 0.3), ("vae2llm.bias", (width,), 0.1),
      ("llm2vae.weight", (patch, width), 0.2), ("llm2vae.bias", (patch,), 0.1),
      ("latent_pos_embed.pos_embed", (MAX_LATENT ** 2, width), 0.5),
      ("connector.fc1.weight", (width, VIT["hidden_size"]), 0.2), ("connector.fc1.bias", (width,), 0.1),
      ("connector.fc2.weight", (width, width), 0.2), ("connector.fc2.bias", (width,), 0.1),
      ("vit_pos_embed.pos_embed", (VIT_SIDE ** 2, width), 0.5)):
    out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
  for name, p in siglip().state_dict().items():  # Bagel's names wrap the tower's own
    x = p.numpy().astype(np.float32)
    if name.endswith("patch_embedding.weight"):  # Bagel stores the conv as a linear layer
      x = x.transpose(0, 2, 3, 1).reshape(x.shape[0], -1)
    out["vit_model.vision_model." + name.removeprefix("vision_model.")] = x
  return out


VIT = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
           image_size=28, patch_size=7, num_channels=3, layer_norm_eps=1e-6,
           hidden_act="gelu_pytorch_tanh")
VIT_SIDE = VIT["image_size"] // VIT["patch_size"]


def siglip(seed=2):
  """A tiny random SigLIP vision tower (no pooling head, as Bagel uses it)."""
  torch.manual_seed(seed)
  model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
      **VIT, vision_use_head=False)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_((0.1 if "bias" in name else 0.15) * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  path = tmp_path_factory.mktemp("bagel")
  model = qwen3()
  tensors = bagel_tensors(model)
  save_file(tensors, str(path / convert.EMA))
  save_file(random_bfl_tensors(AE_SPEC), str(path / convert.AE))
  (path / convert.LLM_CONFIG).write_text(json.dumps(LLM))
  (path / convert.VIT_CONFIG).write_text(json.dumps(VIT))
  return path, model, tensors


@pytest.fixture(scope="module")
def loaded(folder):
  return bagel.load(str(folder[0]), token_ids=TOKEN_IDS)


# --------------------------------------------------------- Bagel's equations, float64 NumPy


class Reference:
  """Bagel's forward for one sample, from the checkpoint tensors `T` by name."""

  def __init__(self, tensors):
    self.T = {k: v.astype(np.float64) for k, v in tensors.items()}
    self.eps, self.theta = LLM["rms_norm_eps"], LLM["rope_theta"]

  def w(self, name, gen):
    return self.T["language_model." + (convert.gen_name(name) if gen else name)]

  def rms(self, x, weight):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

  def rope(self, x, pos):  # x (N, heads, D), pos (N,): Hugging Face's rotate-half
    inv = 1.0 / self.theta ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    ang = np.concatenate([pos[:, None] * inv] * 2, axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., HEAD_DIM // 2:], x[..., :HEAD_DIM // 2]], axis=-1)
    return x * np.cos(ang) + rot * np.sin(ang)

  def per_token(self, fn, x, gen):
    """fn(x, expert) with each row's expert: generation where `gen`, understanding else."""
    return np.where(gen[:, None], fn(x, True), fn(x, False))

  def layer(self, i, h, pos, gen, past, causal):
    """One MoT decoder layer over tokens h (N, W) after `past` (K, V) keys/values; returns
    (h, this layer's keys/values of the N tokens)."""
    p = f"model.layers.{i}."

    def lin(name, bias=True):
      def f(x, g):
        y = x @ self.w(p + name + ".weight", g).T
        return y + self.w(p + name + ".bias", g) if bias else y
      return f

    x = self.per_token(lambda x, g: self.rms(x, self.w(p + "input_layernorm.weight", g)), h,
                       gen)
    n = len(h)
    q = self.per_token(lin("self_attn.q_proj"), x, gen).reshape(n, HEADS, HEAD_DIM)
    k = self.per_token(lin("self_attn.k_proj"), x, gen).reshape(n, KV_HEADS, HEAD_DIM)
    v = self.per_token(lin("self_attn.v_proj"), x, gen).reshape(n, KV_HEADS, HEAD_DIM)
    q = np.where(gen[:, None, None], self.rms(q, self.w(p + "self_attn.q_norm.weight", True)),
                 self.rms(q, self.w(p + "self_attn.q_norm.weight", False)))
    k = np.where(gen[:, None, None], self.rms(k, self.w(p + "self_attn.k_norm.weight", True)),
                 self.rms(k, self.w(p + "self_attn.k_norm.weight", False)))
    q, k = self.rope(q, pos), self.rope(k, pos)
    keys = np.concatenate([past[0], k]) if past is not None else k
    values = np.concatenate([past[1], v]) if past is not None else v
    m = len(keys)
    out = np.zeros((n, HEADS, HEAD_DIM))
    for head in range(HEADS):
      kv = head // (HEADS // KV_HEADS)
      scores = q[:, head] @ keys[:, kv].T / np.sqrt(HEAD_DIM)
      if causal:  # the query block is the last n of the m keys
        scores = np.where(np.arange(m)[None] <= (m - n + np.arange(n))[:, None], scores,
                          -np.inf)
      probs = np.exp(scores - scores.max(-1, keepdims=True))
      out[:, head] = (probs / probs.sum(-1, keepdims=True)) @ values[:, kv]
    h = h + self.per_token(lin("self_attn.o_proj", bias=False), out.reshape(n, -1), gen)
    y = self.per_token(lambda x, g: self.rms(x, self.w(p + "post_attention_layernorm.weight",
                                                       g)), h, gen)

    def mlp(x, g):
      gate = x @ self.w(p + "mlp.gate_proj.weight", g).T
      up = x @ self.w(p + "mlp.up_proj.weight", g).T
      return (gate / (1 + np.exp(-gate)) * up) @ self.w(p + "mlp.down_proj.weight", g).T

    return h + self.per_token(mlp, y, gen), (k, v)

  def latent_tokens(self, x, t):
    """(2h, 2w, C) latents at time t → (h·w, width): vae2llm + time embedding + position."""
    T = self.T
    rows, cols, c = x.shape[0] // 2, x.shape[1] // 2, x.shape[2]
    patches = x.reshape(rows, 2, cols, 2, c).transpose(0, 2, 1, 3, 4).reshape(rows * cols, 4 * c)
    freqs = np.exp(-np.log(10_000.0) * np.arange(128) / 128)
    temb = np.concatenate([np.cos(t * freqs), np.sin(t * freqs)])
    temb = temb @ T["time_embedder.mlp.0.weight"].T + T["time_embedder.mlp.0.bias"]
    temb = temb / (1 + np.exp(-temb))
    temb = temb @ T["time_embedder.mlp.2.weight"].T + T["time_embedder.mlp.2.bias"]
    pos_ids = (np.arange(rows)[:, None] * MAX_LATENT + np.arange(cols)[None]).reshape(-1)
    return (patches @ T["vae2llm.weight"].T + T["vae2llm.bias"] + temb
            + T["latent_pos_embed.pos_embed"][pos_ids])

  def marked(self, tokens):
    emb = self.T["language_model.model.embed_tokens.weight"]
    return np.concatenate([emb[[TOKEN_IDS["start_of_image"]]], tokens,
                           emb[[TOKEN_IDS["end_of_image"]]]])

  def prefill(self, splits):
    """splits: ("text", ids (n,)) — causal, RoPE ids advancing by n, und — or ("vae", clean
    latents (2h, 2w, C)) — markers und, latent tokens at t = 0 gen — or ("vit", tokens
    (N, width)) — all und; an image block is full, one RoPE id, then +1. Returns the
    per-layer (K, V) caches and the next RoPE id."""
    caches, rope = [None] * LLM["num_hidden_layers"], 0
    for kind, x in splits:
      if kind == "text":
        h = self.T["language_model.model.embed_tokens.weight"][x]
        pos, gen = rope + np.arange(len(x), dtype=np.float64), np.zeros(len(x), bool)
      else:
        h = self.marked(self.latent_tokens(x, 0.0) if kind == "vae" else x)
        pos, gen = np.full(len(h), float(rope)), np.zeros(len(h), bool)
        gen[1:-1] = kind == "vae"
      for i in range(LLM["num_hidden_layers"]):
        h, kv = self.layer(i, h, pos, gen, caches[i], causal=kind == "text")
        caches[i] = kv if caches[i] is None else tuple(np.concatenate([a, b])
                                                       for a, b in zip(caches[i], kv))
      rope += len(x) if kind == "text" else 1
    return caches, rope

  def velocity(self, context, x_t, t):
    """context: (L,) ids (one text split) or `prefill`'s splits; x_t (2h, 2w, C) NHWC; t
    float → (2h, 2w, C) velocity."""
    T = self.T
    splits = [("text", context)] if isinstance(context, np.ndarray) else context
    caches, length = self.prefill(splits)
    rows, cols, c = x_t.shape[0] // 2, x_t.shape[1] // 2, x_t.shape[2]
    h = self.marked(self.latent_tokens(x_t, t))
    gen = np.zeros(len(h), bool)
    gen[1:-1] = True
    for i in range(LLM["num_hidden_layers"]):  # the query block: full, all at RoPE id L
      h, _ = self.layer(i, h, np.full(len(h), float(length)), gen, caches[i], causal=False)
    out = self.rms(h[1:-1], T["language_model.model.norm_moe_gen.weight"])
    out = out @ T["llm2vae.weight"].T + T["llm2vae.bias"]
    return out.reshape(rows, cols, 2, 2, c).transpose(0, 2, 1, 3, 4).reshape(2 * rows,
                                                                          2 * cols, c)


# ------------------------------------------------------------------------------------ tests


def test_twin_names_follow_bagels_modules():
  assert convert.gen_name("model.layers.3.self_attn.q_proj.weight") == \
      "model.layers.3.self_attn.q_proj_moe_gen.weight"
  assert convert.gen_name("model.layers.0.self_attn.k_norm.weight") == \
      "model.layers.0.self_attn.k_norm_moe_gen.weight"
  assert convert.gen_name("model.layers.0.mlp.down_proj.weight") == \
      "model.layers.0.mlp_moe_gen.down_proj.weight"
  assert convert.gen_name("model.layers.1.post_attention_layernorm.weight") == \
      "model.layers.1.post_attention_layernorm_moe_gen.weight"
  assert convert.gen_name("model.norm.weight") == "model.norm_moe_gen.weight"


def test_sizes_are_read_from_the_files(loaded):
  spec = loaded.spec
  assert spec.qk_norm and spec.mot and not spec.tie_embeddings  # Bagel's overrides
  assert (spec.max_latent_size, spec.patch_size, spec.image_channels) == (MAX_LATENT, 2, 4)
  assert spec.time_scale == 1.0 and spec.prediction == "velocity"
  assert loaded.ae_spec == AE_SPEC and loaded.token_ids == TOKEN_IDS


def test_understanding_logits_equal_qwen3(folder, loaded):
  _, model, _ = folder
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 11), 0, LLM["vocab_size"]))
  with torch.no_grad():
    want = model(torch.from_numpy(tokens.copy())).logits.numpy()
  got = np.asarray(bagel.text_logits(loaded, tokens))
  assert np.abs(want).max() > 0.5
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_generation_velocity_and_sampler_equal_bagels_equations(folder, loaded):
  _, _, tensors = folder
  ref = Reference(tensors)
  context = np.asarray(jax.random.randint(jax.random.key(2), (2, 7), 5, LLM["vocab_size"]))
  x_t = np.asarray(jax.random.normal(jax.random.key(3), (2, 6, 4, 4)))  # 3×2 latent tokens
  t = np.array([0.3, 0.85], np.float32)
  got = np.asarray(bagel.velocity(loaded, context, x_t, t))
  want = np.stack([ref.velocity(context[b], x_t[b].astype(np.float64), float(t[b]))
                   for b in range(2)])
  assert np.abs(want).max() > 0.3
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)

  # Euler from the same noise over Bagel's shifted grid (linspace(1, 0, N), N − 1 steps).
  steps, shift = 3, 3.0
  got = np.asarray(bagel.generate(loaded, context, x_t, steps, shift))
  grid = np.linspace(1.0, 0.0, steps + 1)
  grid = shift * grid / (1 + (shift - 1) * grid)
  want = x_t.astype(np.float64)
  for i in range(steps):
    want = want - np.stack([ref.velocity(context[b], want[b], grid[i]) for b in range(2)]) * (
        grid[i] - grid[i + 1])
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


def test_velocity_after_text_and_a_clean_image_equals_bagels_equations(folder, loaded):
  """`context_velocity` over text, a clean image (its VAE block, then its ViT block: each
  bidirectional at one RoPE id that then advances by one), and more text, as Bagel's
  inferencer builds an interleaved context. The image's latents and vision tokens come from
  the autoencoder and the vision encoder (each checked against its reference elsewhere); the
  transformer's part follows the equations."""
  _, _, tensors = folder
  ref = Reference(tensors)
  before = np.asarray(jax.random.randint(jax.random.key(6), (2, 5), 5, LLM["vocab_size"]))
  after = np.asarray(jax.random.randint(jax.random.key(7), (2, 3), 5, LLM["vocab_size"]))
  images = np.asarray(jax.random.uniform(jax.random.key(8), (2, 16, 24, 3), minval=-1, maxval=1))
  vit_images = np.asarray(jax.random.uniform(jax.random.key(9), (2, 28, 21, 3), minval=-1,
                                             maxval=1))
  x_t = np.asarray(jax.random.normal(jax.random.key(10), (2, 4, 6, 4)))
  t = np.array([0.6, 0.2], np.float32)
  splits = [("text", before), ("image", images, vit_images), ("text", after)]
  got = np.asarray(bagel.context_velocity(loaded, splits, x_t, t))
  latents = np.asarray(bagel.encode(loaded, images), np.float64)
  vit = np.asarray(bagel.vision_tokens(loaded, vit_images), np.float64)
  assert latents.shape == (2, 4, 6, 4) and vit.shape == (2, 12, LLM["hidden_size"])
  want = np.stack([ref.velocity([("text", before[b]), ("vae", latents[b]), ("vit", vit[b]),
                                 ("text", after[b])], x_t[b].astype(np.float64), float(t[b]))
                   for b in range(2)])
  assert np.abs(want).max() > 0.3
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)
  # The image is context: the velocity differs from the text-only one.
  text_only = np.asarray(bagel.context_velocity(loaded, [("text", before), ("text", after)],
                                                x_t, t))
  assert np.abs(text_only - got).max() > 1e-2
  with pytest.raises(ValueError, match="a split is"):
    bagel.context_velocity(loaded, [("video", images)], x_t, t)


def test_vision_encoder_equals_siglip_and_feeds_the_connector(folder, loaded):
  from unigrpo_jax.model import vision
  _, _, tensors = folder
  spec = loaded.vit_spec
  assert (spec.width, spec.depth, spec.num_heads, spec.patch_size,
          spec.max_patches_per_side) == (24, 2, 4, 7, VIT_SIDE)
  images = np.asarray(jax.random.uniform(jax.random.key(5), (2, 28, 28, 3), minval=-1,
                                         maxval=1))
  with torch.no_grad():
    want = siglip()(torch.from_numpy(images.copy()).permute(0, 3, 1, 2)).last_hidden_state
  got = np.asarray(vision.features(spec, loaded.vit_params, images))
  np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
  # The connector and Bagel's position table, written out: fc2(gelu_tanh(fc1(x))) + table.
  x = want.numpy().astype(np.float64)
  y = x @ tensors["connector.fc1.weight"].T + tensors["connector.fc1.bias"]
  y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
  y = y @ tensors["connector.fc2.weight"].T + tensors["connector.fc2.bias"]
  y = y + tensors["vit_pos_embed.pos_embed"][np.arange(VIT_SIDE ** 2)]
  np.testing.assert_allclose(np.asarray(bagel.vision_tokens(loaded, images)), y, atol=1e-4,
                             rtol=1e-4)
  # A non-square image reads its rows of the position tables (row·side + col).
  assert bagel.vision_tokens(loaded, images[:, :14, :21]).shape == (2, 6, LLM["hidden_size"])


def test_latents_round_trip_through_the_autoencoder(loaded):
  images = np.asarray(jax.random.uniform(jax.random.key(4), (1, 16, 8, 3), minval=-1,
                                         maxval=1))
  latents = bagel.encode(loaded, images)
  assert latents.shape == (1, 4, 2, 4)
  assert bagel.decode(loaded, latents).shape == images.shape


def test_a_folder_that_does_not_fit_is_named(folder, tmp_path):
  path, _, tensors = folder
  with pytest.raises(FileNotFoundError, match=r"has no llm_config\.json: not a Bagel"):
    bagel.load(str(tmp_path), token_ids=TOKEN_IDS)
  (tmp_path / convert.LLM_CONFIG).write_text(json.dumps(LLM))
  with pytest.raises(FileNotFoundError, match=r"has no ema\.safetensors"):
    bagel.load(str(tmp_path), token_ids=TOKEN_IDS)
  broken = dict(tensors)
  del broken["language_model.model.layers.1.mlp_moe_gen.up_proj.weight"]
  broken["language_model.model.layers.0.self_attn.q_norm.weight"] = np.ones(9, np.float32)
  broken["language_model.model.extra.weight"] = np.ones(2, np.float32)
  save_file(broken, str(tmp_path / convert.EMA))
  with pytest.raises(FileNotFoundError, match=r"has no ae\.safetensors"):
    bagel.load(str(tmp_path), token_ids=TOKEN_IDS)
  (tmp_path / convert.AE).write_bytes((path / convert.AE).read_bytes())
  with pytest.raises(ValueError, match=r"has no tokenizer files: pass token_ids"):
    bagel.load(str(tmp_path))
  with pytest.raises(ValueError) as e:
    bagel.load(str(tmp_path), token_ids=TOKEN_IDS)
  message = str(e.value)
  assert "missing: language_model.model.layers.1.mlp_moe_gen.up_proj.weight" in message
  assert "unexpected: language_model.model.extra.weight" in message
  assert "self_attn.q_norm.weight (9,) (expected (8,))" in message
  vision_broken = {k: v for k, v in tensors.items() if k != "connector.fc2.bias"}
  vision_broken["vit_model.vision_model.encoder.layers.1.mlp.fc1.weight"] = np.ones(
      (41, VIT["hidden_size"]), np.float32)
  save_file(vision_broken, str(tmp_path / convert.EMA))
  (tmp_path / convert.VIT_CONFIG).write_text(json.dumps(VIT))
  with pytest.raises(ValueError, match=r"the vision encoder does not fit — missing: "
                                       r"connector/fc2/bias; differently shaped: "
                                       r"siglip/layers_1/fc1/kernel \(24, 41\) "
                                       r"\(expected \(24, 40\)\)"):
    bagel.load(str(tmp_path), token_ids=TOKEN_IDS)
  spec, _ = convert.folder_spec(str(path))
  with pytest.raises(ValueError, match=r"model\.depth is 3 but the checkpoint has 2"):
    convert.load_into(None, str(path), spec.__class__(**{**spec.__dict__, "depth": 3}))
  with pytest.raises(ValueError, match=r"latents must be \(B, H, W, 4\) with H and W even "
                                       r"and at most 8, got shape \(1, 10, 4, 4\)"):
    bagel.velocity(bagel.load(str(path), token_ids=TOKEN_IDS), np.ones((1, 3), np.int32),
                   np.zeros((1, 10, 4, 4), np.float32), np.ones(1))


def test_the_command_line_writes_what_load_reads(folder, loaded, tmp_path):
  from flax import traverse_util
  from unigrpo_jax import checkpoint
  from unigrpo_jax.model import init_params
  path, _, _ = folder
  convert.convert_folder(str(path), str(tmp_path), given_token_ids=TOKEN_IDS)
  meta = json.loads((tmp_path / "bagel.json").read_text())
  assert meta["token_ids"] == TOKEN_IDS and meta["model"]["max_latent_size"] == MAX_LATENT
  target = jax.eval_shape(lambda: init_params(loaded.spec, jax.random.key(0)))
  params = checkpoint.load_params(str(tmp_path / "model"), target)
  want, got = (traverse_util.flatten_dict(p) for p in (loaded.params, params))
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)


def test_think_mode_rollout_draws_with_bagels_generation_step_and_is_on_policy(loaded):
  """A rollout in Bagel's block layout (plan text until `<|im_end|>`, then the latent block):
  recomputed text and SDE log-probs equal the rollout's, and every velocity it scores is
  `bagel.velocity` of that row's visible prompt and text."""
  from unigrpo_jax.model import UnifiedTransformer
  from unigrpo_jax.sampling import RolloutSpec, make_rollout, score_trajectory
  def rollout_spec(stop):
    return RolloutSpec(prompt_len=6, max_text_tokens=5, pad_id=0,
                       eos_id=LLM["vocab_size"] - 1, image_start_id=stop,
                       image_end_id=TOKEN_IDS["end_of_image"], num_steps=4, noise_level=0.8,
                       sde_window=(0, 2), image_block="bagel",
                       block_start_id=TOKEN_IDS["start_of_image"],
                       block_end_id=TOKEN_IDS["end_of_image"])

  model = UnifiedTransformer(loaded.spec)
  prompts = np.asarray(jax.random.randint(jax.random.key(6), (4, 5), 5, 60))
  mask = np.ones(prompts.shape, bool)
  mask[1, :2] = False  # a shorter, left-padded prompt
  key = jax.random.key(7)
  # The stop token (Bagel's <|im_end|>): one that row 0 samples second with this key, so its
  # plan ends early and the rows' plans differ in length.
  first = make_rollout(model, rollout_spec(TOKEN_IDS["eos"]))(loaded.params, prompts, mask, key)
  spec = rollout_spec(int(first.tokens[0, 0, 1]))
  traj = make_rollout(model, spec)(loaded.params, prompts, mask, key)
  scores = jax.jit(lambda p, t: score_trajectory(p, t, model=model, spec=spec))(
      loaded.params, traj)
  np.testing.assert_allclose(np.asarray(scores["token_logp"]), np.asarray(traj.token_logp),
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(scores["step_logp"]), np.asarray(traj.step_logp),
                             atol=1e-5, rtol=1e-5)
  lengths = np.asarray(traj.token_mask[:, 0]).sum(axis=1)
  drawn = np.asarray(traj.image_mask[:, 0])
  assert drawn.sum() >= 2 and len(set(lengths[drawn])) > 1  # plans of different lengths
  steps = np.flatnonzero(spec.stochastic_steps())
  for b in np.flatnonzero(drawn):
    context = np.concatenate([np.asarray(traj.prompt_tokens[b])[np.asarray(traj.prompt_mask[b])],
                              np.asarray(traj.tokens[b, 0])[np.asarray(traj.token_mask[b, 0])]])
    for k, j in enumerate(steps):
      want = bagel.velocity(loaded, context[None], traj.latents[b:b + 1, 0, j],
                            traj.timesteps[j][None])
      np.testing.assert_allclose(np.asarray(scores["velocity"][b, 0, k]), np.asarray(want[0]),
                                 atol=1e-4 * float(np.abs(want).max()), rtol=1e-4)
