"""unigrpo_jax: UniGRPO and Interleaved GRPO for unified text + flow-image models, in JAX."""
import setuptools

setuptools.setup(
    name="unigrpo_jax",
    version="0.1.0",
    description="RL post-training (UniGRPO, Interleaved GRPO) of unified multimodal models in JAX",
    packages=setuptools.find_packages(include=["unigrpo_jax", "unigrpo_jax.*"]),
    package_data={"unigrpo_jax": ["data/tokenizer/tokenizer.json",
                                  "data/tokenizer/tokenizer_v2.json"]},
    python_requires=">=3.11",
    install_requires=[
        "jax[cpu]>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "transformers>=5.0,<6",
        "tokenizers>=0.22,<1",
        "safetensors>=0.4",
        "tensorflow-datasets>=4.9.10,<5",
        "importlib_resources>=6",  # tfds imports it on the array_record path, undeclared
        "array_record>=0.5",
        "scipy>=1.12",  # the ShapeWorld detector (ndimage); jax needs it too
        "ml-collections>=1.1,<2",
        "absl-py>=2.0",
        "numpy>=2.0,<3",
        # bfloat16 arrays of safetensors files (a JAX dependency); 0.7 adds about 0.8 s to
        # every process's start (importing it), which the suite's many processes all pay
        "ml_dtypes>=0.5,<0.7",
        "pillow>=10",
        "jinja2>=3",
        "tqdm>=4.66",
    ],
    extras_require={
        # torch and diffusers only for the golden tests of the conversions (Qwen2 logits, the
        # FLUX autoencoder), tensorboardX for that of the event files; exactly this torch
        # version is a CPU build on PyPI (any other pulls several GB of CUDA). pytest 9 stores
        # node ids where pytest-xdist 3.8 cannot tag them, so xdist_group would be ignored and
        # every shared fixture built once per worker.
        "test": ["pytest>=8,<9", "pytest-xdist>=3.5", "nbmake>=1.5", "ipykernel>=6",
                 "matplotlib>=3.8", "torch==2.13.0", "diffusers>=0.35", "fastapi>=0.110",
                 "uvicorn>=0.29", "tensorboardX>=2.6"],
        # Model-based rewards (PyTorch scorers) and reward servers (docs/rewards.md). The
        # training process itself needs neither to call a served reward.
        "rewards": ["torch>=2.3", "fastapi>=0.110", "uvicorn>=0.29"],
    },
)
