"""The corpus: plausible bugs planted one at a time into a plugin's source.

Each mutant replaces one exact snippet (which must occur once) in one file of one plugin's
package. Equivalent mutants (a reparametrisation no test could tell apart, such as flipping the
sign of an adapter that starts at zero and is never merged) are left out on purpose.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: in ``plugin``'s ``path`` (relative to its package), ``old`` -> ``new``."""

    plugin: str
    path: str
    bug: str
    old: str
    new: str


LORA = [
    Mutant("lora", "layer.py", "sign: forward subtracts the update merge adds",
           "alpha=self.scaling[name])", "alpha=-self.scaling[name])"),
    Mutant("lora", "layer.py", "scaling: merge forgets alpha / r",
           "(self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling[name]",
           "(self.lora_B[name].weight @ self.lora_A[name].weight)"),
    Mutant("lora", "layer.py", "wrong init: B random, so the model no longer starts at the base",
           "nn.init.zeros_(self.lora_B[name].weight)",
           "nn.init.kaiming_uniform_(self.lora_B[name].weight, a=math.sqrt(5))"),
    Mutant("lora", "layer.py", "ignored disable: forward checks only for an active adapter",
           "        if not self.adapter_active():\n            return result\n        name = self.active_adapter",
           "        if self.active_adapter is None:\n            return result\n        name = self.active_adapter"),
    Mutant("lora", "layer.py", "bias handling: the base output loses its bias",
           "        result = self.base_layer(x, *args, **kwargs)",
           "        result = nn.functional.linear(x, get_base_weight(self.base_layer))"),
    Mutant("lora", "layer.py", "adapter bookkeeping: B is not one of the adapter's parameters",
           "        yield self.lora_A[name].weight\n        yield self.lora_B[name].weight\n",
           "        yield self.lora_A[name].weight\n"),
    Mutant("lora", "layer.py", "delete: B stays behind",
           "for container in (self.lora_A, self.lora_B, self.lora_dropout, self.lora_variant):",
           "for container in (self.lora_A, self.lora_dropout, self.lora_variant):"),
    Mutant("lora", "layer.py", "dropout stays on in eval mode",
           "            hidden = self.lora_dropout[name](hidden)\n",
           "            hidden = nn.functional.dropout(hidden, self.lora_dropout[name].p, training=True)\n"),
    Mutant("lora", "layer.py", "adapter switch ignored: forward always runs the first adapter",
           "        name = self.active_adapter\n        if name in self.lora_variant:",
           "        name = next(iter(self.lora_A))\n        if name in self.lora_variant:"),
    Mutant("lora", "layer.py", "missing freeze: the wrapped base weight trains too",
           "        self.scaling[name] = config.scaling\n",
           "        self.scaling[name] = config.scaling\n        self.base_layer.requires_grad_(True)\n"),
    Mutant("lora", "plugin.py", "state_dict key missed: B is not saved",
           '            tensors[f"{path}.lora_B.{adapter_name}.weight"] = module.lora_B[adapter_name].weight\n',
           ""),
    Mutant("lora", "layer.py", "missing detach: the update is cut from the graph",
           "            nn.functional.linear(hidden, lora_a), self.lora_B[name].weight\n        )\n",
           "            nn.functional.linear(hidden, lora_a), self.lora_B[name].weight\n        ).detach()\n"),
]

ADAPTER = [
    Mutant("adapter", "layer.py", "wrong init: the up-projection is random",
           "nn.init.zeros_(up.weight)", "nn.init.kaiming_uniform_(up.weight, a=math.sqrt(5))"),
    Mutant("adapter", "layer.py", "ignored disable: forward checks only for an active adapter",
           "        if not self.adapter_active():\n            return output\n",
           "        if self.active_adapter is None:\n            return output\n"),
    Mutant("adapter", "plugin.py", "state_dict key missed: the up-projection is not saved",
           'for part in ("adapter_down", "adapter_up"):', 'for part in ("adapter_down",):'),
    Mutant("adapter", "layer.py", "registration: projections kept in a plain dict",
           "        self.adapter_up = nn.ModuleDict()", "        self.adapter_up = {}"),
    Mutant("adapter", "layer.py", "adapter bookkeeping: the up-projection is not the adapter's",
           "        yield from self.adapter_up[name].parameters()\n", ""),
    Mutant("adapter", "layer.py", "delete: the up-projection stays behind",
           "for projections in (self.adapter_down, self.adapter_up):",
           "for projections in (self.adapter_down,):"),
    Mutant("adapter", "layer.py", "delete: the parallel input hook stays registered",
           "            handle.remove()\n", "            pass\n"),
    Mutant("adapter", "layer.py", "missing detach: the update is cut from the graph",
           "        update = self.adapter_up[name](hidden)\n",
           "        update = self.adapter_up[name](hidden).detach()\n"),
    Mutant("adapter", "layer.py", "dtype: the fp32 update is added to a bf16 output unconverted",
           "return output + settings.scaling * update.to(output.dtype)",
           "return output + settings.scaling * update"),
    Mutant("adapter", "layer.py", "declares mergeable without a merge",
           "    mergeable = False\n", "    mergeable = True\n"),
]

PROMPT = [
    Mutant("prompt", "virtual_tokens/init.py", "storage: the prompt starts as a view of embedding rows",
           "    return weight[rows].float().clone()\n", "    return weight.float()[: len(rows)]\n"),
    Mutant("prompt", "virtual_tokens/store.py", "ignored disable: the store checks only for an active adapter",
           "return self.adapter_modules[self.active_adapter] if self.adapter_active() else None",
           "return self.adapter_modules[self.active_adapter] if self.active_adapter else None"),
    Mutant("prompt", "virtual_tokens/store.py", "state_dict key built without the adapter name",
           'f"{path}.{self.modules_attribute}.{name}.{key}": parameter',
           'f"{path}.{self.modules_attribute}.{key}": parameter'),
    Mutant("prompt", "virtual_tokens/store.py", "delete: the adapter's module stays behind",
           "        del self.adapter_modules[name]\n", "        pass\n"),
    Mutant("prompt", "inputs.py", "attention mask not extended over the virtual tokens",
           '    inputs["inputs_embeds"] = torch.cat([virtual, embeds], dim=1)\n'
           '    inputs["attention_mask"] = _prepend(mask, count, 1)\n',
           '    inputs["inputs_embeds"] = torch.cat([virtual, embeds], dim=1)\n'),
    Mutant("prompt", "inputs.py", "labels not shifted past the virtual tokens",
           '        inputs["labels"] = _prepend(labels[:, 1:], count + 1, IGNORE_INDEX)\n',
           '        inputs["labels"] = labels\n'),
    Mutant("prompt", "mechanism.py", "logits keep the virtual positions",
           "            output.logits = logits[:, count:]\n", "            pass\n"),
    Mutant("prompt", "mechanism.py", "unload leaves the model's hooks registered",
           "        handle.remove()\n", "        pass\n"),
    Mutant("prompt", "virtual_tokens/store.py", "adapter bookkeeping: the tokens are not the adapter's",
           "        yield from self.adapter_modules[name].parameters()\n", "        yield from ()\n"),
    Mutant("prompt", "layer.py", "missing gradient: the prompt is detached",
           "prompt().to(self.base_layer.weight.dtype)", "prompt().detach().to(self.base_layer.weight.dtype)"),
]

CORPUS: dict[str, list[Mutant]] = {"lora": LORA, "adapter": ADAPTER, "prompt": PROMPT}
