"""The reward functions a config names, from three sources, each under its own name:

  * registered functions (this package's, and those `config.reward_modules` register);
  * `config.reward_models`: name → a model-based reward's fields (`rewards/models.py`), loaded
    from a local folder at start-up;
  * `config.reward_servers`: name → the URL of a server of that reward (`rewards/serve.py`),
    called through `rewards/client.py` with `config.reward_client`'s timeouts and retries. A
    served name replaces the in-process function of that name, so weights, validation and
    logging stay the same.
"""
from absl import logging

from unigrpo_jax.rewards import client, models
from unigrpo_jax.rewards.registry import REWARDS


def model_specs(section) -> dict[str, models.RewardModelSpec]:
  """`config.reward_models` as specs; a ValueError names the entry and its field."""
  specs = {}
  for name, fields in dict(section or {}).items():
    if name in REWARDS:
      raise ValueError(f"config.reward_models.{name}: {name!r} is already a registered reward; "
                       "give the model its own name")
    try:
      specs[name] = models.RewardModelSpec(**dict(fields))
    except TypeError as e:  # an unknown or missing field
      raise ValueError(f"config.reward_models.{name}: {e}") from e
    except ValueError as e:
      raise ValueError(f"config.reward_models.{name}: {e}") from e
  return specs


def server_urls(section) -> dict[str, str]:
  """`config.reward_servers` (name → URL), checked: each an http(s) URL without a path."""
  urls = {}
  for name, url in dict(section or {}).items():
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
      raise ValueError(f"config.reward_servers.{name} must be an http:// or https:// URL, got "
                       f"{url!r}")
    urls[name] = url.rstrip("/")
  return urls


def client_spec(config) -> client.ClientSpec:
  try:
    return client.ClientSpec(**dict(config.get("reward_client", {})))
  except TypeError as e:
    raise ValueError(f"config.reward_client: {e}") from e


def known_names(config) -> set[str]:
  """Every reward name the config may weight (no model is loaded, no server called)."""
  return (set(REWARDS) | set(model_specs(config.get("reward_models")))
          | set(server_urls(config.get("reward_servers"))))


def model_rewards(section) -> dict:
  """The model-based rewards of `config.reward_models`, loaded: name → fn."""
  return {name: models.build(spec) for name, spec in model_specs(section).items()}


def functions(config, names) -> dict:
  """name → reward function for every name in `names` (the weighted rewards): served ones
  through the client, model-based ones loaded, the rest from the registry. A server that answers
  /health under another reward's name is an error; one that does not answer yet is a warning
  (its batches score NaN until it does)."""
  urls, spec = server_urls(config.get("reward_servers")), client_spec(config)
  process = set(config.get("process_rewards", {}))
  models_wanted = {n: f for n, f in dict(config.get("reward_models") or {}).items()
                   if n in names and n not in urls}
  out = {**{n: REWARDS[n] for n in names if n in REWARDS}, **model_rewards(models_wanted)}
  for name in names:
    if name not in urls:
      continue
    try:
      served = client.health(urls[name], spec.timeout_s).get("reward")
    except client.Unreachable as e:
      logging.warning("reward %r: the server at %s does not answer yet (%s)", name, urls[name],
                      e)
    else:
      if served != name:
        raise ValueError(f"config.reward_servers.{name}: the server at {urls[name]} serves "
                         f"reward {served!r}")
    out[name] = client.ServedReward(name, urls[name], spec, per_step=name in process)
  return out
