"""Model-based rewards: PyTorch scorers loaded from local folders (the optional `.[rewards]`
extra; `torch` and `transformers` are imported only when one is built).

  clip_score  cos(image embedding, text embedding) of a CLIP model, in [−1, 1];
  pickscore   exp(logit_scale) · that cosine — PickScore's score, on a PickScore (CLIP
              architecture) checkpoint;
  vlm_judge   a Qwen2-VL / Qwen2.5-VL model's probability of the answer token ("Yes") after a
              templated question about the image, under the full softmax at the answer
              position.

Each scores the last image of a row (images (B, R, H, W, C) in [−1, 1], as mini-GenEval) in
batches of `batch_size`, under `torch.no_grad()`, on `device` ("auto": CUDA when there is one).
The text is the prompt (`metadata[i]["prompt"]["text"]`, or `metadata[i]["prompt"]` when it is
a string) or, with `text="generated"`, the row's decoded text; `question` may hold `{prompt}`
and `{text}`. Inputs are declared by `input_size` and `mean`/`std`: CLIP rewards resize to the
vision tower's side (bicubic, antialiased) and normalise with the folder's
`preprocessor_config.json` (CLIP's constants when absent); the judge uses the folder's Qwen2-VL
image processor (its resizing to whole 28-pixel patches, its normalisation).
"""
import dataclasses
import json
import os

import numpy as np

KINDS = ("clip_score", "pickscore", "vlm_judge")
TEXT_SOURCES = ("prompt", "generated")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen2-VL's chat framing of one user turn (image, then the question) and the assistant's turn.
JUDGE_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\n"
                "<|im_start|>assistant\n")


@dataclasses.dataclass(frozen=True)
class RewardModelSpec:
  """One entry of `config.reward_models`: a model-based reward.

  kind: one of KINDS; path: a local folder holding the model (`save_pretrained`), its tokenizer
  and (for the judge) its image processor; device: "auto", "cpu", "cuda", "cuda:1", …;
  batch_size: images per forward; text: "prompt" or "generated" (what CLIP rewards compare the
  image with); question: the judge's question, with `{prompt}` and/or `{text}`; answer: the
  answer whose probability is the judge's score; dtype: the model's torch dtype.
  """
  kind: str
  path: str
  device: str = "auto"
  batch_size: int = 16
  text: str = "prompt"
  question: str = "Does this image show {prompt}? Answer Yes or No."
  answer: str = "Yes"
  dtype: str = "float32"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind {self.kind!r} is not one of {list(KINDS)}")
    if not self.path or not os.path.isdir(self.path):
      raise ValueError(f"path {self.path!r} is not a folder (a model saved with "
                       "save_pretrained; nothing is downloaded)")
    if not os.path.exists(os.path.join(self.path, "config.json")):
      raise ValueError(f"path {self.path!r} holds no config.json")
    if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or (
        self.batch_size < 1):
      raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
    if self.text not in TEXT_SOURCES:
      raise ValueError(f"text {self.text!r} is not one of {list(TEXT_SOURCES)}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"dtype {self.dtype!r} is not float32, bfloat16 or float16")
    try:
      self.question.format(prompt="", text="")
    except (KeyError, IndexError, ValueError) as e:
      raise ValueError(f"question {self.question!r} may hold only {{prompt}} and {{text}} "
                       f"({e})") from e


def prompt_text(meta) -> str:
  """The prompt a row was generated from, as text."""
  prompt = meta["prompt"] if isinstance(meta, dict) else meta
  return prompt if isinstance(prompt, str) else prompt["text"]


def last_images01(images) -> np.ndarray:
  """(B, R, H, W, C) in [−1, 1] → the last round's images, (B, H, W, C) float32 in [0, 1]."""
  return np.clip((np.asarray(images, np.float32)[:, -1] + 1.0) / 2.0, 0.0, 1.0)


def _device(name: str):
  import torch
  if name == "auto":
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
  return torch.device(name)


class ClipReward:
  """`clip_score` / `pickscore`: fn(images, texts, metadata) → (B,) float32."""

  def __init__(self, spec: RewardModelSpec):
    import torch
    import transformers
    self.spec, self.device = spec, _device(spec.device)
    self.model = transformers.CLIPModel.from_pretrained(
        spec.path, dtype=getattr(torch, spec.dtype)).to(self.device).eval()
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(spec.path)
    self.input_size = self.model.config.vision_config.image_size
    self.mean, self.std = CLIP_MEAN, CLIP_STD
    processor = os.path.join(spec.path, "preprocessor_config.json")
    if os.path.exists(processor):
      with open(processor) as f:
        found = json.load(f)
      self.mean = tuple(found.get("image_mean", self.mean))
      self.std = tuple(found.get("image_std", self.std))
    self.max_length = self.model.config.text_config.max_position_embeddings

  def pixel_values(self, images01: np.ndarray):
    """(N, H, W, 3) in [0, 1] → (N, 3, input_size, input_size), normalised."""
    import torch
    x = torch.from_numpy(images01).permute(0, 3, 1, 2)
    if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
      x = torch.nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="bicubic",
                                          align_corners=False, antialias=True)
    mean = torch.tensor(self.mean).view(1, 3, 1, 1)
    std = torch.tensor(self.std).view(1, 3, 1, 1)
    return ((x - mean) / std).to(self.device, self.model.dtype)

  def texts_of(self, texts, metadata) -> list[str]:
    return [str(t) for t in texts] if self.spec.text == "generated" else [
        prompt_text(m) for m in metadata]

  def __call__(self, images, texts, metadata) -> np.ndarray:
    import torch
    images01, captions = last_images01(images), self.texts_of(texts, metadata)
    out = []
    with torch.no_grad():
      for s in range(0, len(captions), self.spec.batch_size):
        words = self.tokenizer(captions[s:s + self.spec.batch_size], padding=True,
                               truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        result = self.model(input_ids=words["input_ids"],
                            attention_mask=words["attention_mask"],
                            pixel_values=self.pixel_values(images01[s:s + self.spec.batch_size]))
        cosine = (result.image_embeds * result.text_embeds).sum(-1).float()
        if self.spec.kind == "pickscore":
          cosine = self.model.logit_scale.exp().float() * cosine
        out.append(cosine.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


class JudgeReward:
  """`vlm_judge`: fn(images, texts, metadata) → (B,) float32, P(answer | image, question)."""

  def __init__(self, spec: RewardModelSpec):
    import torch
    import transformers
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl
    self.spec, self.device = spec, _device(spec.device)
    with open(os.path.join(spec.path, "config.json")) as f:
      kind = json.load(f).get("model_type", "")
    model_class = {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
                   "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration}.get(kind)
    if model_class is None:
      raise ValueError(f"{spec.path}: model_type {kind!r} is not qwen2_vl or qwen2_5_vl")
    self.model = model_class.from_pretrained(
        spec.path, dtype=getattr(torch, spec.dtype)).to(self.device).eval()
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(spec.path, padding_side="left")
    self.images = image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil.from_pretrained(
        spec.path)
    self.mean, self.std = tuple(self.images.image_mean), tuple(self.images.image_std)
    # The fewest and most pixels an image is resized to (in whole 28-pixel tiles, aspect kept).
    self.input_size = (self.images.size["shortest_edge"], self.images.size["longest_edge"])
    answer = self.tokenizer.encode(spec.answer, add_special_tokens=False)
    if not answer:
      raise ValueError(f"answer {spec.answer!r} encodes to no token")
    self.answer_id = answer[0]

  def questions(self, texts, metadata) -> list[str]:
    return [self.spec.question.format(prompt=prompt_text(m), text=str(t))
            for t, m in zip(texts, metadata)]

  def inputs(self, images01: np.ndarray, questions: list[str]) -> dict:
    """The model's inputs for one batch (left-padded: every row's last position answers)."""
    vision = self.images(images=list(images01), do_rescale=False, return_tensors="pt")
    merge = self.images.merge_size ** 2
    prompts = [JUDGE_PROMPT.format(image="<|image_pad|>" * int(grid.prod() // merge),
                                   question=q)
               for grid, q in zip(vision["image_grid_thw"], questions)]
    words = self.tokenizer(prompts, padding=True, return_tensors="pt")
    image_token = self.model.config.image_token_id
    return dict(input_ids=words["input_ids"], attention_mask=words["attention_mask"],
                # 1 marks image tokens: the model's 3-D (M-RoPE) positions need it
                mm_token_type_ids=(words["input_ids"] == image_token).long(),
                pixel_values=vision["pixel_values"].to(self.model.dtype),
                image_grid_thw=vision["image_grid_thw"])

  def __call__(self, images, texts, metadata) -> np.ndarray:
    import torch
    images01, questions = last_images01(images), self.questions(texts, metadata)
    out = []
    with torch.no_grad():
      for s in range(0, len(questions), self.spec.batch_size):
        batch = self.inputs(images01[s:s + self.spec.batch_size],
                            questions[s:s + self.spec.batch_size])
        logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
        probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, self.answer_id]
        out.append(probs.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def build(spec: RewardModelSpec):
  """The reward function of `spec` (loads the model)."""
  return JudgeReward(spec) if spec.kind == "vlm_judge" else ClipReward(spec)
