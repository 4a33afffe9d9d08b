"""peftplug hook implementations for P-tuning: the shared virtual-token hooks, bound to it."""

from peftplug_ptuning.method import P_TUNING

peftplug_register_methods = P_TUNING.peftplug_register_methods
peftplug_prepare_model = P_TUNING.peftplug_prepare_model
peftplug_modules_to_save = P_TUNING.peftplug_modules_to_save
peftplug_state_dict = P_TUNING.peftplug_state_dict
peftplug_param_groups = P_TUNING.peftplug_param_groups
