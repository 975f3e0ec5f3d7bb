"""Model-based rewards on tiny random models of each architecture, built here from their configs
and saved to local folders (nothing downloaded): CLIP score and PickScore equal the cosine of
the model's own projected features (and PickScore its `logits_per_image`), the judge equals a
direct one-sample call of the model, batched and left-padded as they are; a bad entry of
`config.reward_models` is a start-up error naming it."""
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models as token_models, pre_tokenizers, processors
import torch
import transformers

from unigrpo_jax import rewards
from unigrpo_jax.rewards import configured, models
from unigrpo_jax.rewards.registry import RewardError

pytestmark = pytest.mark.xdist_group("model_rewards")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def byte_tokenizer(specials, template=None):
  """A byte-level tokenizer: the 256 bytes, no merges, `specials` added after them."""
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  tok = tokenizers.Tokenizer(token_models.BPE(vocab={c: i for i, c in enumerate(alphabet)},
                                              merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(specials)
  if template:
    bos, eos = template
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(s, tok.token_to_id(s)) for s in template])
  return tok


def save_clip(folder):
  tok = byte_tokenizer(["<|startoftext|>", "<|endoftext|>"],
                       ("<|startoftext|>", "<|endoftext|>"))
  bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
  config = transformers.CLIPConfig(
      text_config=dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                       bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
      vision_config=dict(image_size=24, patch_size=6, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2),
      projection_dim=16, logit_scale_init_value=3.0)
  torch.manual_seed(0)
  transformers.CLIPModel(config).save_pretrained(folder)
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
      pad_token="<|endoftext|>").save_pretrained(folder)


def save_judge(folder):
  from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl
  tok = byte_tokenizer(QWEN_SPECIALS)
  ids = {s: tok.token_to_id(s) for s in QWEN_SPECIALS}
  config = transformers.Qwen2VLConfig(
      text_config=dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, bos_token_id=ids["<|endoftext|>"],
                       eos_token_id=ids["<|im_end|>"],
                       rope_parameters=dict(rope_type="default", mrope_section=[1, 1, 2],
                                            rope_theta=10000.0)),
      vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
                         patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
      image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
      vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
  torch.manual_seed(0)
  transformers.Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                       pad_token="<|endoftext|>").save_pretrained(folder)
  image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil(
      min_pixels=28 * 28, max_pixels=56 * 56).save_pretrained(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("reward_models")
  save_clip(root / "clip")
  save_judge(root / "judge")
  return root


def batch(rows=5, size=32):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (rows, 2, size, size, 3)).astype(np.float32)
  words = ["red circle", "two blue squares on the left", "a green triangle", "circle", "four"]
  metadata = [{"prompt": {"text": f"a photo of {words[i % 5]}"}, "grid": 4} for i in range(rows)]
  return images, [f"plan: {words[(i + 1) % 5]}" for i in range(rows)], metadata


def test_clip_score_and_pickscore_are_the_models_own_cosine(folders):
  images, texts, metadata = batch()
  model = transformers.CLIPModel.from_pretrained(folders / "clip").eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(folders / "clip")
  for kind in ("clip_score", "pickscore"):
    for text in ("prompt", "generated"):
      scorer = models.build(models.RewardModelSpec(kind=kind, path=str(folders / "clip"),
                                                   batch_size=2, text=text, device="cpu"))
      assert scorer.input_size == 24 and scorer.mean == models.CLIP_MEAN
      got = scorer(images, texts, metadata)
      assert got.shape == (5,) and got.dtype == np.float32
      captions = texts if text == "generated" else [m["prompt"]["text"] for m in metadata]
      for i in range(5):  # one sample at a time, through the model's feature functions
        pixels = scorer.pixel_values(models.last_images01(images[i:i + 1]))
        words = tokenizer([captions[i]], return_tensors="pt")
        with torch.no_grad():
          image = model.get_image_features(pixel_values=pixels).pooler_output
          caption = model.get_text_features(**words).pooler_output
          logits = model(**words, pixel_values=pixels).logits_per_image[0, 0]
        cosine = torch.nn.functional.cosine_similarity(image, caption)[0]
        want = cosine * model.logit_scale.exp() if kind == "pickscore" else cosine
        np.testing.assert_allclose(got[i], want.item(), rtol=1e-5, atol=1e-6)
        if kind == "pickscore":
          np.testing.assert_allclose(got[i], logits.item(), rtol=1e-5, atol=1e-6)
  # The last round's image is the one scored; its preprocessing resizes to the tower's side.
  first = scorer(images[:, :1], texts, metadata)
  assert not np.allclose(first, got)
  x = scorer.pixel_values(models.last_images01(images[:1]))
  assert tuple(x.shape) == (1, 3, 24, 24)


def test_the_judge_is_the_models_probability_of_yes(folders):
  images, texts, metadata = batch()
  spec = models.RewardModelSpec(kind="vlm_judge", path=str(folders / "judge"), batch_size=3,
                                question="Is this {prompt}? The plan was: {text}", device="cpu")
  judge = models.build(spec)
  got = judge(images, texts, metadata)
  assert got.shape == (5,) and np.all((got > 0) & (got < 1))
  model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(folders / "judge").eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(folders / "judge")
  yes = tokenizer.encode("Yes", add_special_tokens=False)[0]
  for i in range(5):  # one sample, unpadded, the prompt written out here
    vision = judge.images(images=[models.last_images01(images)[i]], do_rescale=False,
                          return_tensors="pt")
    pads = int(vision["image_grid_thw"][0].prod()) // 4
    question = f"Is this {metadata[i]['prompt']['text']}? The plan was: {texts[i]}"
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
              f"<|vision_start|>{'<|image_pad|>' * pads}<|vision_end|>{question}<|im_end|>\n"
              "<|im_start|>assistant\n")
    words = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
      logits = model(**words, pixel_values=vision["pixel_values"],
                     image_grid_thw=vision["image_grid_thw"],
                     mm_token_type_ids=(words["input_ids"] == model.config.image_token_id).long()
                     ).logits[0, -1]
    np.testing.assert_allclose(got[i], torch.softmax(logits, -1)[yes].item(), rtol=1e-4,
                               atol=1e-7)
  # Another answer token scores another probability.
  other = models.build(models.RewardModelSpec(kind="vlm_judge", path=str(folders / "judge"),
                                              answer="No", question=spec.question))
  assert not np.allclose(other(images, texts, metadata), got)


def test_reward_models_are_built_by_name_and_bad_entries_are_named(folders, tmp_path):
  images, texts, metadata = batch(3)
  config = dict(reward_models={"pick": dict(kind="pickscore", path=str(folders / "clip"))},
                reward_servers={}, process_rewards={})
  functions = configured.functions(config, {"pick", "geneval_strict"})
  total, scores = rewards.score_batch({"pick": 1.0}, images, texts, metadata,
                                      functions=functions)
  assert scores["pick"].shape == (3,)
  assert "pick" in configured.known_names(config)
  cases = [
      (dict(kind="pickscore", path=str(tmp_path / "absent")), "config.reward_models.m: path "),
      (dict(kind="clip", path=str(folders / "clip")), "config.reward_models.m: kind 'clip'"),
      (dict(kind="pickscore"), "config.reward_models.m: .*path"),
      (dict(kind="vlm_judge", path=str(folders / "judge"), question="{image}"),
       "config.reward_models.m: question"),
      (dict(kind="pickscore", path=str(folders / "clip"), batch_size=0),
       "config.reward_models.m: batch_size"),
      (dict(kind="pickscore", path=str(tmp_path)), "holds no config.json"),
  ]
  for fields, message in cases:
    with pytest.raises(ValueError, match=message):
      configured.model_specs({"m": fields})
  with pytest.raises(ValueError, match="'geneval_strict' is already a registered reward"):
    configured.model_specs({"geneval_strict": dict(kind="pickscore", path=str(folders))})
  # A model that fails on its input is named, as any reward is.
  with pytest.raises(RewardError, match="reward 'pick' raised"):
    rewards.score_batch({"pick": 1.0}, images[:, 0], texts, metadata, functions=functions)
