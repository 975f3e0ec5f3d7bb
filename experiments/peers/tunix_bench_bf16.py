r"""The Tunix peer benchmark (`tunix_bench.py` beside this file) with its model computing in
bfloat16 (`ModelConfig.dtype`; parameters stay float32), for a like-for-like comparison with
`model.matmul_dtype="bfloat16"`. Runs in the peer's own venv:

  .venv-tunix/bin/python experiments/peers/tunix_bench_bf16.py --out experiments/results/tunix_peer_bf16.json

The peer's JSON still reports its config's "dtype": "float32" (a literal in its report); the
model it times computes in bfloat16.
"""
import importlib.util
import os
import sys

import jax.numpy as jnp

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tunix_bench.py")


def main():
  spec = importlib.util.spec_from_file_location("tunix_bench", PEER)
  peer = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(peer)
  peer.make_config = lambda: peer.qwen3_lib.ModelConfig(**peer.MODEL_CFG, dtype=jnp.bfloat16)
  peer.main()


if __name__ == "__main__":
  sys.exit(main())
