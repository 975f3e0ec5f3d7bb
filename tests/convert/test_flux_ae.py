"""The FLUX autoencoder against `diffusers.AutoencoderKL`, both reading one tiny random
`ae.safetensors` in Black Forest Labs' format; its import's checks."""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from unigrpo_jax.convert import flux_ae
from unigrpo_jax.model import autoencoder
from unigrpo_jax.model.autoencoder import AutoencoderSpec

# FLUX's structure (two blocks a level, three levels, mid attention) at a test size.
SPEC = AutoencoderSpec(channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=2,
                       z_channels=4)


def random_bfl_tensors(spec, seed=0):
  """Random tensors in BFL's names and PyTorch shapes, scaled so activations stay O(1)."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in flux_ae.expected_tensors(spec).items():
    if len(shape) == 4:
      x = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    elif "norm" in name and name.endswith("weight"):
      x = 1.0 + 0.2 * rng.standard_normal(shape)
    else:
      x = 0.1 * rng.standard_normal(shape)
    out[name] = x.astype(np.float32)
  return out


def diffusers_config(spec):
  levels = len(spec.channel_multipliers)
  return {"_class_name": "AutoencoderKL", "act_fn": "silu", "in_channels": spec.in_channels,
          "out_channels": spec.out_channels, "latent_channels": spec.z_channels,
          "block_out_channels": list(spec.widths), "layers_per_block": spec.num_res_blocks,
          "down_block_types": ["DownEncoderBlock2D"] * levels,
          "up_block_types": ["UpDecoderBlock2D"] * levels, "norm_num_groups": spec.num_groups,
          "sample_size": 32, "scaling_factor": spec.scale_factor,
          "shift_factor": spec.shift_factor, "use_quant_conv": False,
          "use_post_quant_conv": False, "mid_block_add_attention": True}


@pytest.fixture(scope="module")
def ae_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("flux_ae") / "ae.safetensors"
  save_file(random_bfl_tensors(SPEC), str(path))
  return path


@pytest.fixture(scope="module")
def images():
  return np.asarray(jax.random.uniform(jax.random.key(0), (2, 24, 16, 3), minval=-1.0,
                                       maxval=1.0))


@pytest.mark.slow  # a golden check against PyTorch
def test_latents_and_pixels_equal_diffusers_reading_the_same_file(ae_file, images, tmp_path):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  (tmp_path / "config.json").write_text(json.dumps(diffusers_config(SPEC)))
  ref = diffusers.AutoencoderKL.from_single_file(str(ae_file), config=str(tmp_path),
                                                 local_files_only=True,
                                                 torch_dtype=torch.float32).eval()
  # diffusers read every tensor (it leaves ones it does not find at their random init).
  tensors = random_bfl_tensors(SPEC)
  for ours, theirs in (("decoder.mid.block_1.conv1.weight",
                        ref.decoder.mid_block.resnets[0].conv1.weight),
                       ("encoder.mid.attn_1.q.weight",
                        ref.encoder.mid_block.attentions[0].to_q.weight),
                       ("decoder.up.0.block.2.norm2.weight",
                        ref.decoder.up_blocks[-1].resnets[2].norm2.weight)):
    np.testing.assert_array_equal(theirs.detach().numpy(), tensors[ours].reshape(theirs.shape))
  spec, params = flux_ae.load(str(ae_file))
  assert spec == SPEC  # every size read from the tensors' shapes

  x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2)
  with torch.no_grad():
    posterior = ref.encode(x).latent_dist
    want_z = ((posterior.mean - SPEC.shift_factor) * SPEC.scale_factor).permute(0, 2, 3, 1)
    z = autoencoder.encode(spec, params, images)
    assert z.shape == (2, 6, 4, 4)  # three levels: 4× down; 4 channels
    np.testing.assert_allclose(np.asarray(z), want_z.numpy(), atol=1e-4, rtol=1e-4)
    # Decoding the same latents (ours, to test the decoder alone).
    raw = torch.from_numpy(np.asarray(z)).permute(0, 3, 1, 2) / SPEC.scale_factor \
        + SPEC.shift_factor
    want_x = ref.decode(raw).sample.permute(0, 2, 3, 1).numpy()
  got_x = np.asarray(autoencoder.decode(spec, params, z))
  assert got_x.shape == images.shape
  assert np.abs(want_x).max() > 0.1  # a real signal, not zeros
  np.testing.assert_allclose(got_x, want_x, atol=1e-4, rtol=1e-4)

  # A sample of the posterior: mean + std · ε, ε the key's standard normal.
  key = jax.random.key(5)
  sample = np.asarray(autoencoder.encode(spec, params, images, key))
  eps = np.asarray(jax.random.normal(key, z.shape))
  std = posterior.std.permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose((sample / SPEC.scale_factor + SPEC.shift_factor
                              - posterior.mean.permute(0, 2, 3, 1).numpy()) / std, eps,
                             atol=1e-3)
  assert np.abs(sample - np.asarray(z)).max() > 1e-3


def test_full_size_is_fluxs_84m_parameters():
  shapes = jax.eval_shape(lambda: autoencoder.init_autoencoder(AutoencoderSpec(),
                                                               jax.random.key(0)))
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 83_819_683
  names = flux_ae.expected_tensors(AutoencoderSpec())
  assert names["encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
  assert names["decoder.up.3.block.2.conv2.weight"] == (512, 512, 3, 3)
  assert names["decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
  assert "encoder.down.3.downsample.conv.weight" not in names  # none after the last level
  assert "decoder.up.0.upsample.conv.weight" not in names


def test_a_checkpoint_that_does_not_fit_is_named_tensor_by_tensor(tmp_path):
  tensors = random_bfl_tensors(SPEC)
  del tensors["decoder.mid.attn_1.k.bias"]
  tensors["encoder.extra.weight"] = np.zeros(3, np.float32)
  tensors["encoder.norm_out.weight"] = np.ones(65, np.float32)
  path = tmp_path / "ae.safetensors"
  save_file(tensors, str(path))
  with pytest.raises(ValueError) as e:
    flux_ae.load(str(path), SPEC)
  message = str(e.value)
  assert "missing: decoder.mid.attn_1.k.bias" in message
  assert "unexpected: encoder.extra.weight" in message
  assert "encoder.norm_out.weight (65,) (expected (64,))" in message
  save_file({"model.embed_tokens.weight": np.zeros((2, 2), np.float32)}, str(path))
  with pytest.raises(ValueError, match=r"not a FLUX autoencoder checkpoint: tensor "
                                       r"'encoder\.conv_in\.weight' is missing"):
    flux_ae.load(str(path))


def test_bad_sizes_and_inputs_fail_clearly():
  with pytest.raises(ValueError, match=r"autoencoder\.num_groups \(32\) must divide"):
    AutoencoderSpec(channels=48)
  with pytest.raises(ValueError, match=r"autoencoder\.channel_multipliers"):
    AutoencoderSpec(channel_multipliers=(1, 0))
  # Checked before anything is traced: no parameters needed.
  with pytest.raises(ValueError, match=r"multiples of 4, got shape \(1, 6, 8, 3\)"):
    autoencoder.encode(SPEC, None, np.zeros((1, 6, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"latents must be \(B, h, w, 4\)"):
    autoencoder.decode(SPEC, None, np.zeros((1, 2, 2, 16), np.float32))
