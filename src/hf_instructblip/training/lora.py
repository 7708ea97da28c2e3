"""LoRA (through PEFT) on InstructBLIP's LLM and/or Q-Former, with the paper's other trained parts saved alongside.

Three presets (``target``):

- ``"llm"``: LoRA on the LLM's attention and feed-forward projections; the Q-Former, the query tokens, the projection
  and the vision LayerNorm are trained fully, as in the paper (arXiv 2305.06500 §2.6); vision tower and LLM base
  weights frozen.
- ``"qformer"``: LoRA on the Q-Former's query/key/value/dense layers; query tokens, projection and vision LayerNorm
  trained fully; the LLM frozen.
- ``"both"``: LoRA on both; query tokens, projection and vision LayerNorm trained fully.

The Q-Former modules that never reach the output (`unused_qformer_modules`) get neither LoRA nor training.

How the fully trained parts travel with the adapter: modules go through PEFT's own ``modules_to_save``. The query
tokens are a bare ``nn.Parameter`` on the top-level model, which ``modules_to_save`` cannot wrap and PEFT's adapter
state dict silently leaves out (PEFT 0.21 also refuses ``target_parameters`` on the top-level module).
[`InstructBlipPeftModel`] closes that gap: its ``save_pretrained`` (what `transformers.Trainer` calls for
checkpoints) writes them into ``adapter_model.safetensors`` under their model key, ``base_model.model.query_tokens``.
PEFT passes adapter-file keys it does not remap straight to ``load_state_dict``, so a plain
``PeftModel.from_pretrained(base_model, folder)`` restores them too; [`load_adapter`] does the same and returns an
[`InstructBlipPeftModel`], so a reloaded adapter keeps its query tokens when saved again.

Example:

```python
>>> from hf_instructblip.training import apply_lora
>>> peft_model = apply_lora(model, target="llm", r=16)  # doctest: +SKIP
>>> peft_model.save_pretrained("adapter")  # doctest: +SKIP
>>> merged = peft_model.merge_and_unload()  # an InstructBlipForConditionalGeneration again  # doctest: +SKIP
```
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import safetensors.torch
import torch
from huggingface_hub import snapshot_download
from peft import LoraConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = [
    "LORA_TARGETS",
    "InstructBlipPeftModel",
    "apply_lora",
    "llm_linear_layers",
    "load_adapter",
    "lora_config",
    "lora_target_modules",
]

LORA_TARGETS = ("llm", "qformer", "both")

QFORMER_LORA_MODULES = ("query", "key", "value", "dense")
_QUERY_TOKENS_KEY = "base_model.model.query_tokens"


def _check_target(target: str) -> None:
    if target not in LORA_TARGETS:
        raise ValueError(f"target={target!r} is not a LoRA preset; choose one of {LORA_TARGETS}.")


def _check_base_model(model: Any) -> None:
    if isinstance(model, PeftModel) or any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ValueError(
            "model already has PEFT adapters; pass the plain InstructBlipForConditionalGeneration (call "
            "`merge_and_unload()` or `unload()` on a PeftModel first)."
        )
    if not hasattr(model, "unused_qformer_modules"):
        raise TypeError(f"model must be an InstructBlipForConditionalGeneration, got {type(model).__name__}.")


def _names_pattern(names: tuple[str, ...] | list[str]) -> str:
    return "(?:" + "|".join(re.escape(n) for n in names) + ")"


def llm_linear_layers(model: Any) -> dict[str, nn.Module]:
    """The LLM's linear layers LoRA adapts: every ``nn.Linear`` / transformers ``Conv1D`` except the output head.

    PEFT's ``target_modules="all-linear"`` rule, scoped to the LLM (applied to the whole model it would also adapt
    the vision tower and the Q-Former): discovered from the model, so every family works without a hand-kept list
    (Llama/Vicuna ``q_proj``...``down_proj``, T5 ``q``...``wo``/``wi_0``/``wi_1``, OPT, GPT-2's ``Conv1D``, Bloom ...).

    Returns:
        Module name in ``model`` (``language_model.`` prefix) -> module.
    """
    head = model.language_model.get_output_embeddings()
    return {
        f"language_model.{name}": module
        for name, module in model.language_model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head
    }


def _llm_pattern(model: Any) -> str:
    layers = llm_linear_layers(model)
    if not layers:
        raise ValueError(
            f"The LLM ({model.config.text_config.model_type}) has no linear layers besides its output head; pass "
            "target_modules yourself (see model.language_model.named_modules())."
        )
    leaf_names = sorted({name.rsplit(".", 1)[-1] for name in layers})
    head = next((n for n, m in model.named_modules() if m is model.language_model.get_output_embeddings()), None)
    never_head = rf"(?!{re.escape(head)}$)" if head else ""  # in case the head shares a leaf name with a layer
    return rf"{never_head}language_model\.(?:.*\.)?{_names_pattern(leaf_names)}"


def _qformer_pattern(model: Any) -> str:
    # The unused modules are excluded up front: a LoRA layer there would get no gradient (DDP refuses that).
    unused = model.unused_qformer_modules()
    skip = rf"(?!{_names_pattern(unused)}\.)" if unused else ""
    return rf"{skip}qformer\.encoder\.(?:.*\.)?{_names_pattern(QFORMER_LORA_MODULES)}"


def lora_target_modules(model: Any, target: str) -> str:
    """The regular expression for ``LoraConfig.target_modules`` of a preset, scoped to the LLM and/or the Q-Former.

    PEFT matches it against the full module names (``re.fullmatch``), so "llm" never touches the Q-Former or the
    vision tower and "qformer" never touches the LLM.

    Args:
        model: An `InstructBlipForConditionalGeneration`.
        target: One of `LORA_TARGETS`.

    Raises:
        ValueError: Unknown preset, or (for "llm"/"both") an LLM without linear layers besides its head.
    """
    _check_target(target)
    patterns = []
    if target in ("llm", "both"):
        patterns.append(_llm_pattern(model))
    if target in ("qformer", "both"):
        patterns.append(_qformer_pattern(model))
    return "|".join(f"(?:{p})" for p in patterns)


def _module_cover(model: nn.Module, name: str, excluded: tuple[str, ...]) -> list[str]:
    """Fewest modules under ``name`` holding all its parameters except those of the ``excluded`` modules."""
    module = model.get_submodule(name)
    if name in excluded or next(module.parameters(), None) is None:
        return []
    if not any(e.startswith(name + ".") for e in excluded):
        return [name]
    if next(module.parameters(recurse=False), None) is not None:
        raise ValueError(f"Cannot train {name} without its unused submodules: it holds parameters of its own.")
    return [c for child, _ in module.named_children() for c in _module_cover(model, f"{name}.{child}", excluded)]


def _fully_trained_modules(model: Any, target: str) -> list[str]:
    """The ``modules_to_save`` of a preset: the paper's trained modules minus the LoRA-adapted Q-Former."""
    modules = dict(model.named_modules())
    names = [n for n in model.trainable_module_names() if n in modules and not (n == "qformer" and target != "llm")]
    unused = model.unused_qformer_modules()
    return [covered for n in names for covered in _module_cover(model, n, unused)]


def lora_config(
    model: Any, target: str = "llm", r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05, **kwargs: Any
) -> LoraConfig:
    """A `peft.LoraConfig` for a preset: scoped ``target_modules`` and the fully trained parts as ``modules_to_save``.

    Args:
        model: The `InstructBlipForConditionalGeneration` the adapter is for.
        target: "llm", "qformer" or "both" (see the module docstring).
        r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = ``lora_alpha / r``).
        lora_dropout: Dropout on the LoRA input.
        **kwargs: Any other `LoraConfig` field. ``target_modules`` replaces the preset's pattern (needed for an LLM
            family without a preset); ``modules_to_save`` is added to the preset's fully trained modules.
    """
    _check_target(target)
    target_modules = kwargs.pop("target_modules", None)
    if target_modules is None:
        target_modules = lora_target_modules(model, target)
    extra = list(kwargs.pop("modules_to_save", None) or [])
    modules_to_save = list(dict.fromkeys([*_fully_trained_modules(model, target), *extra]))
    if target != "qformer" and any(isinstance(m, Conv1D) for m in llm_linear_layers(model).values()):
        # Conv1D (GPT-2) stores its weight transposed; PEFT switches fan_in_fan_out back off (with a warning) for
        # the Q-Former's nn.Linear layers under "both".
        kwargs.setdefault("fan_in_fan_out", True)
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        **kwargs,
    )


class InstructBlipPeftModel(PeftModel):
    """A `peft.PeftModel` that also saves the base model's bare parameters (the query tokens) with the adapter.

    Everything else is PEFT's: `get_peft_model`, `merge_and_unload`, `load_adapter`, hub pushing, and
    `transformers.Trainer` (it checks ``isinstance(model, PeftModel)``) treat it as any PeftModel.
    """

    def save_pretrained(
        self,
        save_directory: str,
        safe_serialization: bool = True,
        selected_adapters: list[str] | None = None,
        save_embedding_layers: str | bool = "auto",
        is_main_process: bool = True,
        path_initial_model_for_weight_conversion: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`PeftModel.save_pretrained`, plus the query tokens in each ``adapter_model.safetensors`` (safetensors only).

        Args:
            save_directory: Folder to write (adapters other than "default" go to sub-folders, as with PEFT).
            safe_serialization: Must be True: hf_instructblip writes safetensors only.
            selected_adapters: Adapters to save (default: all).
            save_embedding_layers: As in `PeftModel.save_pretrained`.
            is_main_process: Only the main process writes (multi-process training).
            path_initial_model_for_weight_conversion: As in `PeftModel.save_pretrained` (PiSSA/OLoRA conversion).
            **kwargs: Passed on; a ``state_dict`` (as `transformers.Trainer` gives under FSDP/DeepSpeed) is also where
                the query tokens are read from.
        """
        if not safe_serialization:
            raise ValueError("safe_serialization=False is not supported: hf_instructblip saves safetensors only.")
        super().save_pretrained(
            save_directory,
            safe_serialization=True,
            selected_adapters=selected_adapters,
            save_embedding_layers=save_embedding_layers,
            is_main_process=is_main_process,
            path_initial_model_for_weight_conversion=path_initial_model_for_weight_conversion,
            **kwargs,
        )
        if not is_main_process:
            return
        bare = self._bare_parameters(kwargs.get("state_dict"))
        for adapter_name in selected_adapters or list(self.peft_config):
            folder = save_directory if adapter_name == "default" else os.path.join(save_directory, adapter_name)
            path = os.path.join(folder, SAFETENSORS_WEIGHTS_NAME)
            weights = {**safetensors.torch.load_file(path), **bare}
            safetensors.torch.save_file(weights, path, metadata={"format": "pt"})

    def _bare_parameters(self, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Parameters registered on the base model itself (not in a submodule), keyed as in the PeftModel."""
        names = [f"base_model.model.{name}" for name, _ in self.get_base_model().named_parameters(recurse=False)]
        source = state_dict if state_dict is not None else dict(self.named_parameters())
        return {name: source[name].detach().to("cpu").contiguous() for name in names}


def apply_lora(
    model: Any, target: str = "llm", r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05, **kwargs: Any
) -> PeftModel:
    """Wrap ``model`` with LoRA for a preset and set exactly the preset's trainable parameters.

    Trainable afterwards: the LoRA matrices, PEFT's copies of the fully trained modules (``modules_to_save``) and
    the query tokens (trained in place). Everything else is frozen. ``model`` is modified in place, as with
    `peft.get_peft_model`.

    Args:
        model: An `InstructBlipForConditionalGeneration` without adapters.
        target: "llm", "qformer" or "both".
        r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA input.
        **kwargs: Other `LoraConfig` fields (see [`lora_config`]).

    Returns:
        An [`InstructBlipPeftModel`].
    """
    _check_base_model(model)
    config = lora_config(model, target, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, **kwargs)
    peft_model = InstructBlipPeftModel(model, config)
    # PEFT froze everything outside the adapter; the query tokens are trained as in the paper (arXiv 2305.06500 §2.6).
    model.query_tokens.requires_grad_(True)
    return peft_model


def _local_adapter_folder(directory: str | os.PathLike, **download_kwargs: Any) -> str:
    """``directory`` itself, or a local snapshot of a Hub repo holding only the adapter's config and safetensors."""
    folder = os.fspath(directory)
    if not os.path.isdir(folder):
        folder = snapshot_download(
            folder, allow_patterns=["adapter_config.json", SAFETENSORS_WEIGHTS_NAME], **download_kwargs
        )
    if not os.path.isfile(os.path.join(folder, SAFETENSORS_WEIGHTS_NAME)):
        found = (
            " (it holds a pickled adapter_model.bin, which is never loaded)"
            if os.path.isfile(os.path.join(folder, WEIGHTS_NAME))
            else ""
        )
        raise FileNotFoundError(f"No {SAFETENSORS_WEIGHTS_NAME} in adapter folder {folder}{found}.")
    return folder


def load_adapter(
    base_model: Any, directory: str | os.PathLike, is_trainable: bool = False, **kwargs: Any
) -> InstructBlipPeftModel:
    """Load an adapter saved by [`InstructBlipPeftModel`] onto a fresh base model (safetensors only).

    Plain ``PeftModel.from_pretrained`` restores the same weights; this one also returns an
    [`InstructBlipPeftModel`] (so saving again keeps the query tokens), makes the query tokens trainable with
    ``is_trainable=True``, refuses pickled adapters and warns when the folder holds no query tokens.

    Args:
        base_model: The `InstructBlipForConditionalGeneration` the adapter was trained on (``base_model_name_or_path``
            in ``adapter_config.json``), freshly loaded.
        directory: Adapter folder, or a Hub repo id.
        is_trainable: Load for further training instead of inference.
        **kwargs: Passed to `PeftModel.from_pretrained` (``adapter_name``, ...), except ``revision``, ``token`` and
            ``cache_dir``, which go to the Hub download.
    """
    _check_base_model(base_model)
    download_kwargs = {k: kwargs.pop(k) for k in ("revision", "token", "cache_dir") if k in kwargs}
    folder = _local_adapter_folder(directory, **download_kwargs)
    with safetensors.safe_open(os.path.join(folder, SAFETENSORS_WEIGHTS_NAME), framework="pt") as weights:
        has_query_tokens = _QUERY_TOKENS_KEY in weights.keys()  # noqa: SIM118  # safe_open has no __contains__
    if not has_query_tokens:
        warnings.warn(
            f"The adapter in {folder} holds no query tokens ({_QUERY_TOKENS_KEY}): the base model's are kept. That is "
            "right only if they were frozen while training (e.g. an adapter made with plain peft.get_peft_model).",
            stacklevel=2,
        )
    peft_model = InstructBlipPeftModel.from_pretrained(base_model, folder, is_trainable=is_trainable, **kwargs)
    if is_trainable and has_query_tokens:
        base_model.query_tokens.requires_grad_(True)
    return peft_model  # type: ignore[return-value]  # from_pretrained builds `cls` when the config has no task_type
