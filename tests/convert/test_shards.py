"""Safetensors files read from their headers, memory-mapped, bfloat16 included."""
import numpy as np
import pytest


def test_files_read_back_every_dtype_exactly(tmp_path):
  torch = pytest.importorskip("torch")
  from safetensors.torch import save_file
  from unigrpo_jax.convert import shards
  tensors = {"w.bf16": torch.randn(3, 5).to(torch.bfloat16), "b.f32": torch.randn(7),
             "h.f16": torch.randn(2, 2).to(torch.float16), "i.i64": torch.arange(4)}
  path = str(tmp_path / "model.safetensors")
  save_file(tensors, path, metadata={"format": "pt"})
  assert shards.file_shapes(path) == {k: tuple(v.shape) for k, v in tensors.items()}
  got = dict(shards.iter_file(path))
  assert set(got) == set(tensors)
  for name, x in tensors.items():
    np.testing.assert_array_equal(np.asarray(got[name], np.float64),
                                  x.to(torch.float64).numpy(), err_msg=name)
  assert str(got["w.bf16"].dtype) == "bfloat16"
  (tmp_path / "bad.safetensors").write_bytes(b"\x05")
  with pytest.raises(ValueError, match=r"bad\.safetensors' is not a safetensors file"):
    shards.file_shapes(str(tmp_path / "bad.safetensors"))
