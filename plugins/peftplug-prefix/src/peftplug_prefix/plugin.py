"""peftplug hook implementations for prefix tuning: the shared virtual-token hooks, bound to it."""

from peftplug_prefix.method import PREFIX_TUNING

peftplug_register_methods = PREFIX_TUNING.peftplug_register_methods
peftplug_prepare_model = PREFIX_TUNING.peftplug_prepare_model
peftplug_modules_to_save = PREFIX_TUNING.peftplug_modules_to_save
peftplug_state_dict = PREFIX_TUNING.peftplug_state_dict
peftplug_param_groups = PREFIX_TUNING.peftplug_param_groups
