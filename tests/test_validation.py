"""Every start-up rule fails before anything compiles, with a message naming the config field."""
import json
import subprocess
import sys

import ml_collections
import pytest

from configs import interleaved, shapeworld
from helpers import ROOT
from unigrpo_jax import validation
from unigrpo_jax.data import tokenizer as tokenizer_lib
from unigrpo_jax.train import experiment



def config(**overrides):
  """The tiny config with `section__field=value` overrides."""
  c = shapeworld.get_config("tiny")
  for key, value in overrides.items():
    section, _, field = key.partition("__")
    if field:
      c[section][field] = value
    else:
      c[section] = value
  return c


def fails(c, match, num_devices=1):
  with pytest.raises(ValueError, match=match):
    validation.validate(c, num_devices)


def test_the_shipped_configs_pass():
  validation.validate(shapeworld.get_config(), 1)
  validation.validate(shapeworld.get_config("tiny"), 8)
  validation.validate(shapeworld.get_config("world2"), 1)
  for variant in ("", "tiny", "outcome", "tiny,process", "dense"):
    validation.validate(interleaved.get_config(variant), 1)


def test_mesh_that_does_not_fit_the_devices():
  fails(config(mesh=dict(data=3, fsdp=1, tensor=1)), r"config\.mesh .* needs 3 devices but 8 "
        r"are available", num_devices=8)
  fails(config(mesh=dict(data=1, fsdp=-1, tensor=3)), r"config\.mesh .*fixed axes \(3 devices\)",
        num_devices=8)
  fails(config(mesh=dict(pipeline=2)), r"config\.mesh has unknown axes \['pipeline'\]")
  # (A config file's own value: the shipped configs' bool already refuses a string override.)
  fails(ml_collections.ConfigDict(dict(config().to_dict(), gather_rollout_params="yes")),
        r"config\.gather_rollout_params must be True or False, got 'yes'")


def test_rl_batch_that_does_not_split_over_the_data_axes():
  fails(config(rl__prompts_per_batch=3, rl__group_size=2),
        r"the RL batch \(rl\.prompts_per_batch × rl\.group_size\) 6 does not divide over the "
        r"mesh's data axes \(config\.mesh: data × fsdp = 4", num_devices=4)


def test_rl_batch_that_does_not_split_into_minibatches():
  fails(config(rl__num_minibatches=3), r"rl\.num_minibatches = 3")


def test_group_size_below_one():
  fails(config(rl__group_size=0), r"rl\.group_size 0")


def test_sft_batch_that_does_not_split_over_the_data_axes():
  fails(config(sft_data__batch_size=6), r"sft_data\.batch_size 6 does not divide", num_devices=4)


def test_image_size_not_a_multiple_of_the_patch():
  fails(config(model__image_size=30), r"model\.image_size \(30\) is not divisible by "
        r"model\.patch_size")


def test_data_world_and_canvas():
  fails(config(data__world=3), r"config\.data\.world: unknown ShapeWorld version 3")
  fails(config(data__plan_order="shuffled"), r"config\.data\.plan_order must be one of "
        r"\('raster', 'prompt'\), got 'shuffled'")
  fails(config(data__plan_words="shape"), r"config\.data\.plan_words must be one of "
        r"\('color_shape', 'shape_color'\), got 'shape'")
  fails(config(data__grid=5), r"config\.data\.size \(32\) is not divisible by config\.data\.grid")
  fails(config(data__size=64), r"model\.image_size \(32\) is not data\.size \(64\)")
  fails(config(data__read_ahead=0), r"config\.data\.read_ahead must be >= 1, got 0")
  fails(config(data__read_threads=-1), r"config\.data\.read_threads must be >= 0, got -1")
  # World 2's words are not in world 1's tokenizer, nor do they fit a 64-word vocabulary.
  fails(config(data__world=2), r"config\.model\.vocab_size \(64\) is smaller than the "
        r"vocabulary of tokenizer .*tokenizer_v2\.json")


def test_unknown_field_of_a_section_is_named():
  c = config()
  with c.unlocked():
    c.loss.clip_hi = 0.3
  fails(c, r"config\.loss has unknown fields \['clip_hi'\]; known: .*'clip_high'")


def test_unknown_loss_and_kl_names_list_the_known_ones():
  fails(config(loss__loss_type="ppo"), r"loss\.loss_type 'ppo' is not one of .*'dapo'")
  fails(config(loss__kl="k4"), r"loss\.kl 'k4' is not one of .*'k3'")


def test_unknown_reward_names_list_the_known_ones():
  fails(config(rewards={"geneval_strict": 1.0, "clip_score": 1.0}),
        r"unknown rewards \['clip_score'\] in config\.rewards; known: .*'geneval_strict'")


def test_reward_weights_must_be_numbers_not_all_zero():
  fails(config(rewards={"geneval_strict": "high"}), r"config\.rewards\.geneval_strict must be a "
        r"finite number")
  fails(config(rewards={"geneval_strict": float("nan")}), r"config\.rewards\.geneval_strict")
  fails(config(rewards={"geneval_strict": 0.0, "structure": 0.0}),
        r"config\.rewards has no non-zero weight")


def test_task_and_advantage_kinds_are_known_and_process_rewards_present():
  fails(config(rl__task="video"), r"config\.rl\.task 'video' is not one of \['interleaved', "
        r"'t2i'\]")
  fails(config(rl__families=("counting", "howto")),
        r"config\.rl\.families names \['howto'\], not families of task 't2i'")
  fails(config(advantages__kind="dense"), r"config\.advantages\.kind 'dense' is not one of")
  fails(config(advantages__kind="process"), r"config\.process_rewards has no non-zero weight")
  fails(config(advantages__kind="process", process_rewards={"interleaved_steps": 1.0}),
        r"unknown rewards \['interleaved_steps'\] in config\.process_rewards; known: "
        r".*'interleaved_relevance_steps'")


def test_reward_module_that_does_not_import():
  fails(config(reward_modules=("no_such_rewards",)),
        r"config\.reward_modules: cannot import 'no_such_rewards'")


def test_unknown_stage_sft_kind_and_family():
  fails(config(stages=("sft", "dpo")), r"config\.stages names unknown stages \['dpo'\]")
  fails(config(data__families=("howto", "recipes")),
        r"config\.data\.families names unknown families \['recipes'\]; known: .*'howto'")
  fails(config(sft_data__mix={"t2i": 1.0, "video": 1.0}),
        r"config\.sft_data\.mix names unknown kinds \['video'\]")


def test_evaluation_settings_are_named():
  fails(config(eval__every=0), r"config\.eval\.every must be a positive integer, got 0")
  fails(config(eval__grid_prompts=-1), r"config\.eval\.grid_prompts must be a positive integer")
  # The warm-up's held-out metrics read whole batches: fewer examples than one is refused.
  fails(config(eval__num_prompts=4), r"config\.eval\.batch_size = 8 is above the 4 held-out")
  fails(config(data__num_heldout=4), r"config\.eval\.batch_size = 8 is above the 4 held-out")
  validation.validate(config(eval__num_prompts=4, stages=("grpo",),
                             rl__init_params="unused"), 1)


def test_optimizer_settings_are_named():
  fails(config(rl_optim__schedule="linear"), r"config\.rl_optim: .*schedule 'linear'")
  fails(config(sft_optim__warmup_steps=12),
        r"config\.sft_optim: .*warmup_steps 12 .*total_steps = 12")


def test_training_options_are_named():
  fails(config(ema=dict(decay=1.0, every=1, start=0)),
        r"config\.ema\.decay must be in \(0, 1\) \(0 turns the EMA off\), got 1\.0")
  fails(config(ema=dict(decay=0.9, every=1, start=0, warmup=3)),
        r"config\.ema has unknown fields \['warmup'\]")
  fails(config(rl__reference_refresh=-2), r"config\.rl\.reference_refresh must be a "
        r"non-negative integer")
  fails(config(rl__reference_refresh=5,
               loss=dict(shapeworld.get_config().loss, velocity_weight=0.0)),
        r"config\.rl\.reference_refresh refreshes a reference the loss does not use")
  rl = config().to_dict()["rl"]
  fails(ml_collections.ConfigDict(dict(config().to_dict(), rl=dict(rl, update_per_part="yes"))),
        r"config\.rl\.update_per_part must be True or False, got 'yes'")
  fails(config(rl__update_per_part=True, rl__num_minibatches=2),
        r"config\.rl\.update_per_part .* needs rl\.num_updates = rl\.num_minibatches = 1, got 1 "
        r"and 2")
  fails(config(rl__update_per_part=True,
               advantages=dict(shapeworld.get_config().advantages, scale="batch")),
        r"config\.rl\.update_per_part .* advantages\.scale 'batch' needs the whole batch")
  validation.validate(config(rl__update_per_part=True, rl__rollout_chunks=2), 1)
  lora = dict(shapeworld.get_config().lora, enabled=True)
  fails(config(lora=dict(lora, rank=0)), r"config\.lora\.rank must be a positive integer")
  fails(config(lora=dict(lora, modules=("image/qkv",))),
        r"config\.lora\.modules entry 'image/qkv' matches no kernel")
  fails(config(lora=dict(lora, unfrozen=("image_output/*",))),
        r"config\.lora\.unfrozen entry 'image_output/\*' matches no parameter")
  fails(config(lora=lora, rl__reference_refresh=5),
        r"config\.rl\.reference_refresh: with config\.lora the reference is the base")
  validation.validate(config(lora=lora), 1)
  validation.validate(config(lora=dict(lora, unfrozen=("image_in/*", "image_out/*"))), 1)
  fails(config(rollout__sde_type="ddim"), r"rollout\.sde_type 'ddim' is not one of")
  fails(config(rollout__sde_type="cps", rollout__noise_level=1.2),
        r"rollout\.noise_level must be in \[0, 1\] for rollout\.sde_type 'cps'")


def test_tokenizer_path_that_does_not_exist(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"tokenizer file .*/nope\.json' does not exist"):
    validation.validate(config(tokenizer_path=str(tmp_path / "nope.json")), 1)


def test_tokenizer_file_that_is_not_a_tokenizer(tmp_path):
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps({"weights": [1, 2, 3]}))
  fails(config(tokenizer_path=str(path)), r"is not a tokenizers JSON \(expected a saved "
        r"`tokenizers\.Tokenizer`")


def test_tokenizer_that_does_not_fit_the_model_or_the_token_ids():
  fails(config(model__vocab_size=32), r"config\.model\.vocab_size \(32\) is smaller than the "
        r"vocabulary of tokenizer")
  fails(config(tokens__eos_id=5), r"config\.tokens\.eos_id is 5 but tokenizer .* has it at 2")


def test_token_id_outside_the_vocabulary():
  fails(config(model__vocab_size=64, tokens__image_end_id=70),
        r"tokens\.image_end_id \(70\) is outside the vocabulary")


def test_prompts_longer_than_the_prompt_slots_fail_when_the_data_is_built(tmp_path):
  c = config(rollout__prompt_len=6)
  c.data.data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match=r"rollout\.prompt_len = 6 is too short for the train "
                                       r"prompts of task t2i: the prompt '.*' is \d+ tokens "
                                       r"with BOS"):
    experiment.build(c)


def test_workdir_with_a_run_of_another_config(tmp_path):
  validation.check_workdir(config(), str(tmp_path))
  (tmp_path / "grpo" / "checkpoints").mkdir(parents=True)
  # Lengths, cadences, evaluation and placement may change on resume.
  validation.check_workdir(config(rl__steps=10, eval__every=5, mesh=dict(data=2)), str(tmp_path))
  # How the data is read may change too, and a run saved before those fields existed resumes.
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["data"]["read_threads"], saved["data"]["read_ahead"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  validation.check_workdir(config(data__read_ahead=8), str(tmp_path))
  with pytest.raises(ValueError, match=r"workdir .* holds a run whose config differs .*"
                                       r"config\.model\.width: the run has 32, this command "
                                       r"asks 64.*config\.rl\.group_size: the run has 4, this "
                                       r"command asks 8"):
    validation.check_workdir(config(model__width=64, rl__group_size=8), str(tmp_path))


def test_workdir_without_checkpoints_takes_any_config(tmp_path):
  validation.check_workdir(config(), str(tmp_path))
  validation.check_workdir(config(model__width=64), str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 64


@pytest.mark.slow
def test_main_stops_at_a_config_error_before_building_anything(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "unigrpo_jax.main", "--config=configs/shapeworld.py:tiny",
       f"--workdir={tmp_path}", "--config.model.image_size=30"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("config error: model.image_size (30)")
  assert not (tmp_path / "config.json").exists()


def test_shipped_tokenizer_matches_the_shipped_tokens():
  config = shapeworld.get_config()
  assert len(tokenizer_lib.for_config(config)) <= config.model.vocab_size


def test_bagel_configs_autoencoder_and_prompt_template():
  from configs import bagel
  validation.validate(bagel.get_config("tiny"), 1)
  c = bagel.get_config("tiny")
  c.autoencoder.z_channels = 8
  fails(c, r"autoencoder\.z_channels \(8\) must equal model\.image_channels \(4\)")
  c = bagel.get_config("tiny")
  c.autoencoder.bad = 1
  fails(c, r"config\.autoencoder has unknown fields \['bad'\]")
  c = bagel.get_config("tiny")
  c.data.size = 64
  fails(c, r"decodes model\.image_size 8 latents to 32 pixels \(×4\), but data\.size is 64")
  c = bagel.get_config("tiny")
  c.prompt_template = "no slot"
  fails(c, r"config\.prompt_template must hold \{prompt\} exactly once")
  c = bagel.get_config("tiny")
  c.stages = ("sft", "grpo")
  fails(c, r"the warm-up SFT writes prompts bare")
  c.stages = ("rollout",)
  fails(c, r"config\.stages: the rollout demo stage shows a pixel model's images")
  c = bagel.get_config("tiny")
  c.tokens.block_start_id = 3
  fails(c, r"config\.tokens\.block_start_id is 3 but tokenizer .* has it at 59")
  c = bagel.get_config("tiny")
  c.bagel.checkpoint = "/nonexistent/bagel"
  fails(c, r"config\.bagel\.checkpoint: .*has no llm_config\.json")
  # The 7B recipe's tokens are Qwen2.5's: without the Bagel folder's tokenizer they are named.
  c = bagel.get_config("7b")
  fails(c, r"config\.model\.vocab_size|config\.tokens\.pad_id is 151643", num_devices=32)
