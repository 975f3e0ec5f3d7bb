"""What the model is trained and evaluated to do (`config.rl.task`), as data: the trajectory
layout, which prompts and how they are worded, and the rewards evaluation reports.

  * `t2i` (UniGRPO): prompt → `<plan> … </plan> <img>` → one image, GenEval's six families;
    the layout is `config.rollout`.
  * `interleaved` (Interleaved GRPO): "stepwise" + prompt → K rounds of `<plan> object </plan>
    <img>` + the scene so far, then EOS; the families whose prompts ask for 2–4 objects and the
    how-to figures; the layout is the interleaved warm-up's (`sft_data.interleaved_rounds`
    rounds of `sft_data.interleaved_tokens`), so RL continues exactly the format SFT taught.
"""
import dataclasses

from unigrpo_jax import evaluation
from unigrpo_jax.data.pipeline import PROMPT
from unigrpo_jax.data.prompts import FAMILIES, INTERLEAVED_MARKER
from unigrpo_jax.rewards.interleaved import STORY_FAMILIES
from unigrpo_jax.sampling import RolloutSpec


# The kinds of warm-up example (`config.sft_data.mix`), each in its own layout.
SFT_KINDS = ("t2i", "understanding", "interleaved")


def sft_layouts(config) -> dict[str, RolloutSpec]:
  """One layout per kind of SFT example, from `config.rollout`, `config.tokens` and
  `config.sft_data`: text-to-image in the rollout's one-round layout; understanding in two
  rounds whose text segments hold `sft_data.caption_tokens` (captions run longer than plans);
  interleaved in `sft_data.interleaved_rounds` rounds of `sft_data.interleaved_tokens`."""
  data = config.sft_data
  return dict(
      t2i=RolloutSpec.from_config(config.rollout, config.tokens, rounds=1),
      understanding=RolloutSpec.from_config(config.rollout, config.tokens, rounds=2,
                                            max_text_tokens=data.caption_tokens),
      interleaved=RolloutSpec.from_config(config.rollout, config.tokens,
                                          rounds=data.interleaved_rounds,
                                          max_text_tokens=data.interleaved_tokens))


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  families: tuple[str, ...]
  prefix: str  # written before every prompt
  eval_rewards: tuple[str, ...]
  eval_step_rewards: tuple[str, ...]  # per-round rewards evaluation reports per step
  headline: str  # the evaluation's one number (`geneval_gain` is its change under GRPO)

  def rollout(self, config, **overrides) -> RolloutSpec:
    """The task's trajectory layout (sampling settings from `config.rollout`)."""
    if self.name == "interleaved":
      spec = sft_layouts(config)["interleaved"]
      return dataclasses.replace(spec, **overrides)
    return RolloutSpec.from_config(config.rollout, config.tokens, **overrides)

  def train_families(self, config) -> tuple[str, ...]:
    """The families GRPO draws its prompts from: `config.rl.families`, a subset of the task's
    (all of them when empty). Evaluation scores every family of the task either way."""
    chosen = tuple(config.rl.get("families", ()))
    unknown = [f for f in chosen if f not in self.families]
    if unknown:
      raise ValueError(f"config.rl.families names {unknown}, not families of task "
                       f"{self.name!r}: {self.families}")
    return chosen or self.families

  def template(self, config) -> str:
    """How a prompt is written for the model (`data.pipeline.as_prompt`):
    `config.prompt_template` ("{prompt}" when absent; Bagel's think mode wraps the prompt in its
    chat splits) with the task's prefix before the prompt."""
    template = config.get("prompt_template", PROMPT)
    return template.replace(PROMPT, f"{self.prefix} {PROMPT}") if self.prefix else template


TASKS = {
    "t2i": Task("t2i", FAMILIES, "", evaluation.REWARDS, (), "geneval_strict"),
    "interleaved": Task("interleaved", STORY_FAMILIES, INTERLEAVED_MARKER,
                        ("interleaved_score", "interleaved_structure", "interleaved_relevance",
                         "interleaved_alignment", "interleaved_geneval"),
                        ("interleaved_structure_steps", "interleaved_relevance_steps",
                         "interleaved_alignment_steps"), "interleaved_score"),
}


def get(config) -> Task:
  name = config.rl.task
  if name not in TASKS:
    raise ValueError(f"config.rl.task {name!r} is not one of {sorted(TASKS)}")
  return TASKS[name]
