"""peftplug hook implementations for prompt tuning: the shared virtual-token hooks, bound to it."""

from peftplug_prompt.method import PROMPT_TUNING

peftplug_register_methods = PROMPT_TUNING.peftplug_register_methods
peftplug_prepare_model = PROMPT_TUNING.peftplug_prepare_model
peftplug_modules_to_save = PROMPT_TUNING.peftplug_modules_to_save
peftplug_state_dict = PROMPT_TUNING.peftplug_state_dict
peftplug_param_groups = PROMPT_TUNING.peftplug_param_groups
