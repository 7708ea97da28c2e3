"""Frozen parts in half precision, trained parts in fp32: InstructBLIP's fast path, as the paper's code runs it.

LAVIS (``blip2_vicuna_instruct.py``, ``blip2_t5_instruct.py``; ``vit_precision: fp16``) keeps the frozen vision tower
in fp16 and the frozen LLM in half precision, and trains the Q-Former side in fp32. `hold_frozen_in` does the same
to an `InstructBlipForConditionalGeneration`:

* the vision tower and the LLM are stored in ``dtype`` (parameters and persistent buffers; non-persistent buffers
  such as rotary ``inv_freq`` keep their fp32 values, as ``from_pretrained(dtype=...)`` leaves them);
* the trained parts stay (or become) fp32: query tokens, Q-Former, projection and the vision LayerNorm
  (``model.vision_norm_name``: the tower's own ``post_layernorm``/``layernorm``, or the model's ``vision_layernorm``);
* the boundaries cast: pixels enter the tower in its dtype (`modeling_vision.vision_tokens`), its features are cast
  to fp32 before the LayerNorm, the projected queries to the LLM's dtype where they replace the image tokens
  (`merge_image_features`), and the loss is computed in fp32. Gradients reach the Q-Former through the
  half-precision LLM (its weights get none: they are frozen). Through an fp16 LLM they underflow unless the loss is
  scaled: `training.InstructBlipTrainer` does it (a ``GradScaler``); a loop of one's own uses
  ``torch.amp.GradScaler`` as with AMP.

A LayerNorm held in fp32 inside a half-precision tower still runs in the tower's own forward (its output there feeds
nothing InstructBLIP reads, but the tower computes it); its input is cast to fp32 and its output back to the tower's
dtype there, so no device needs LayerNorm kernels of mixed dtypes.

Two things make the fast path fast on a CPU as well as correct:

* **The LLM attends in fp32 on CPU.** A half-precision LLM that attends through SDPA switches to the attention
  implementation `UPCAST_SDPA`: transformers' SDPA attention, except that half-precision queries, keys and values on
  a CPU are attended in fp32 (the output cast back). torch's fused CPU kernels are slow in bf16 at InstructBLIP's
  short sequences with a backward (8 x 9 heads x 55 tokens: forward + backward 7.7 ms in bf16, 2.5 ms in fp32 on a
  CPU with AVX-512 BF16; benchmarks/README.md), attention is a few percent of the FLOPs, and fp32 is the more precise
  of the two. Where the backward will run, the half-precision inputs are what is kept for it, not their fp32 copies
  (`_LeanFp32Attention`: the same kernels, half the memory). On other devices it is plain SDPA. The frozen vision
  tower keeps plain SDPA: it runs forward only, where the bf16 kernel is the faster at its 257 tokens (a 12 x 384
  ViT's forward at batch 8: 381 vs 402 ms). Holding the parts back in fp32 restores ``"sdpa"``.
* **The checkpoint's fp32 copy is let go.** ``from_pretrained`` maps the safetensors file into memory; the trained
  parts' fp32 tensors still view it after the frozen ones were cast away from it, which keeps every page the cast
  read resident (600 MiB for a 135M LLM). The model's fp32 tensors are copied into memory of their own, so the
  mapping closes.

``"auto"`` picks the dtype from the hardware, checked at run time, never by the device's name: bfloat16 where it
runs natively (CUDA: ``torch.cuda.is_bf16_supported()``; x86 CPUs: AVX-512 BF16 or AMX, read from the CPU's feature
flags; ARM CPUs: the BF16 extension), else float16 on CUDA (except T5 LLMs, whose activations overflow fp16: float32
for them), else float32. On a CPU without native bf16, bf16 matmuls are emulated and slower than fp32.

Pushed next to the weights for ``trust_remote_code``: it imports nothing from the ``hf_instructblip`` package.
"""

from __future__ import annotations

import platform
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

__all__ = ["FROZEN_DTYPES", "UPCAST_SDPA", "cpu_has_native_bf16", "hold_frozen_in", "resolve_frozen_dtype"]

#: Accepted names of the frozen parts' dtype ("auto": from the hardware, see the module docstring).
FROZEN_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: LLM families that overflow in fp16 (LAVIS runs FlanT5 in bf16; transformers' T5 docs warn of fp16 NaNs).
_NO_FP16 = frozenset({"t5", "mt5", "umt5"})


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (checked at run time from its feature flags)."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        # oneDNN's own check (mkldnn._is_mkldnn_bf16_supported) is also true for AVX-512 without BF16, where bf16 is
        # emulated and slower than fp32: ask for the instructions themselves.
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    try:  # ARM: oneDNN checks the BF16 extension
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _auto_dtype(device: torch.device, llm_model_type: str) -> str:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16"
        return "float32" if llm_model_type in _NO_FP16 else "float16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def resolve_frozen_dtype(
    frozen_dtype: str | torch.dtype, device: torch.device | str = "cpu", llm_model_type: str = ""
) -> torch.dtype:
    """The dtype ``frozen_dtype`` (one of `FROZEN_DTYPES` or a torch dtype) means on ``device`` for this LLM.

    Raises:
        ValueError: an unknown name or dtype, or float16 for a T5 LLM.
    """
    name = str(frozen_dtype).removeprefix("torch.")
    if name not in FROZEN_DTYPES:
        raise ValueError(f"frozen_dtype must be one of {FROZEN_DTYPES}, got {frozen_dtype!r}.")
    if name == "auto":
        name = _auto_dtype(torch.device(device), llm_model_type)
    if name == "float16" and llm_model_type in _NO_FP16:
        raise ValueError(
            f"frozen_dtype float16 with a {llm_model_type} LLM overflows (NaN losses; LAVIS `blip2_t5_instruct.py` "
            "runs T5 in bf16). Use bfloat16, or float32 where bf16 is not supported."
        )
    return getattr(torch, name)


#: The attention implementation of half-precision frozen parts (see the module docstring).
UPCAST_SDPA = "sdpa_fp32_on_cpu"


def upcast_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' SDPA attention; half-precision inputs on a CPU are attended in fp32, the output cast back.

    Where a backward will run, `_LeanFp32Attention` keeps the half-precision inputs for it instead of their fp32
    copies (same kernels, same results, less memory).
    """
    if query.device.type != "cpu" or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lean = _lean_call(module, query, key, value, attention_mask, kwargs)
    if lean is not None:
        return lean, None
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    if kwargs.get("position_bias") is not None:  # T5's relative position bias, added to the scores
        kwargs["position_bias"] = kwargs["position_bias"].float()
    with torch.autocast("cpu", enabled=False):  # under bf16 autocast SDPA would be cast back down
        output, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return output.to(query.dtype), weights


_FLASH_CPU: Any = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_CPU_BACKWARD: Any = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _lean_call(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    kwargs: dict[str, Any],
) -> torch.Tensor | None:
    """`_LeanFp32Attention`'s output in transformers' layout (batch, tokens, heads, dim), or None where the plain
    path must run: no backward will, or a case it does not cover (T5's position bias, dropout, a cache longer than
    the queries, different key and value widths)."""
    needs_backward = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if not needs_backward or _FLASH_CPU is None or _FLASH_CPU_BACKWARD is None:
        return None
    if kwargs.get("position_bias") is not None or kwargs.get("dropout") or kwargs.get("softcap") is not None:
        return None
    if key.shape[2] != query.shape[2] or value.shape[-1] != query.shape[-1]:
        return None
    # transformers' sdpa_attention_forward: causal only over a full square without a mask
    is_causal = kwargs.get("is_causal")
    is_causal = bool(
        query.shape[2] > 1
        and mask is None
        and (getattr(module, "is_causal", True) if is_causal is None else is_causal)
    )
    if mask is not None and mask.dtype == torch.bool:  # as SDPA itself converts it
        mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        mask = mask.float()
    # grouped-query attention: the key/value heads are repeated for the kernel only where it cannot take them as they are
    repeats = 1 if _GROUPED_HEADS else int(getattr(module, "num_key_value_groups", 1))
    output = _LeanFp32Attention.apply(query, key, value, mask, is_causal, kwargs.get("scaling"), repeats)
    return output.transpose(1, 2).contiguous()


def _kernel_takes_grouped_heads() -> bool:
    """Whether torch's fused CPU kernel attends queries to fewer key/value heads itself (grouped-query attention),
    giving what it gives with the heads repeated (checked on a tiny input: torch versions differ)."""
    if _FLASH_CPU is None:
        return False
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, heads, 3, 8, generator=generator) for heads in (4, 2, 2))
    try:
        grouped = _FLASH_CPU(query, key, value, 0.0, True)[0]
        repeated = _FLASH_CPU(query, repeat_kv(key, 2), repeat_kv(value, 2), 0.0, True)[0]
    except (RuntimeError, IndexError, ValueError):
        return False
    return bool(torch.allclose(grouped, repeated, atol=1e-5))


#: Whether the kernel takes un-repeated key/value heads (at a SmolLM2-135M layer's shape, 9 query and 3 key/value
#: heads, 8 x 60 tokens, padding mask: forward + backward 5.8 ms, against 7.6 ms with the heads repeated into copies;
#: medians of 200 interleaved calls).
_GROUPED_HEADS = _kernel_takes_grouped_heads()


def _widen(tensor: torch.Tensor, repeats: int) -> torch.Tensor:
    """fp32 copy of ``tensor`` with each key/value head repeated ``repeats`` times, as SDPA attention repeats them."""
    return repeat_kv(tensor.float(), repeats)


class _LeanFp32Attention(torch.autograd.Function):
    """Half-precision queries, keys and values attended in fp32 by torch's fused CPU kernel, as SDPA on fp32 copies
    runs it, but saving the half-precision inputs (and the kernel's fp32 output and log-sum-exp) for the backward
    instead of the fp32 copies: 4.2 -> 1.9 MB per layer of a SmolLM2-135M-shaped LLM at 8 x 60 tokens. Keys and
    values are saved with their own (grouped-query) heads; where the kernel cannot take them so, they are repeated
    inside."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        scale: float | None,
        repeats: int,
    ) -> torch.Tensor:
        output, logsumexp = _FLASH_CPU(
            query.float(), _widen(key, repeats), _widen(value, repeats), 0.0, is_causal, attn_mask=mask, scale=scale
        )
        ctx.save_for_backward(query, key, value, output, logsumexp, mask)
        ctx.is_causal, ctx.scale, ctx.repeats = is_causal, scale, repeats
        return output.to(query.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        query, key, value, output, logsumexp, mask = ctx.saved_tensors
        grads = _FLASH_CPU_BACKWARD(
            grad.float(),
            query.float(),
            _widen(key, ctx.repeats),
            _widen(value, ctx.repeats),
            output,
            logsumexp,
            0.0,
            ctx.is_causal,
            attn_mask=mask,
            scale=ctx.scale,
        )
        grad_query, grad_key, grad_value = grads
        if ctx.repeats > 1:  # the repeated heads' gradients go back to their key/value head
            grad_key, grad_value = (g.unflatten(1, (-1, ctx.repeats)).sum(2) for g in (grad_key, grad_value))
        return grad_query.to(query.dtype), grad_key.to(key.dtype), grad_value.to(value.dtype), None, None, None, None


AttentionInterface.register(UPCAST_SDPA, upcast_sdpa_attention)
AttentionMaskInterface.register(UPCAST_SDPA, sdpa_mask)  # the masks SDPA takes (else none at all would be built)


def _attend_for(module: Any, dtype: torch.dtype) -> None:
    """Switch a part (a transformers model) that attends through SDPA to `UPCAST_SDPA` in half precision, and back."""
    current = getattr(getattr(module, "config", None), "_attn_implementation", None)
    wanted = "sdpa" if dtype == torch.float32 else UPCAST_SDPA
    if current in ("sdpa", UPCAST_SDPA) and current != wanted:
        module.set_attn_implementation(wanted)


def _own_memory_(module: nn.Module) -> None:
    """Copy ``module``'s fp32 parameters and persistent buffers into memory of their own (off a mapped checkpoint;
    the half-precision ones are already copies)."""
    for sub in module.modules():
        for param in sub.parameters(recurse=False):
            if param.dtype == torch.float32:
                param.data = param.data.clone()
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer.dtype == torch.float32 and name not in sub._non_persistent_buffers_set:
                setattr(sub, name, buffer.clone())


def _cast_(module: nn.Module, dtype: torch.dtype) -> None:
    """Floating parameters and persistent buffers of ``module`` (recursively) to ``dtype``, in place."""
    for sub in module.modules():
        for param in sub.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer.is_floating_point() and name not in sub._non_persistent_buffers_set and buffer.dtype != dtype:
                setattr(sub, name, buffer.to(dtype))


def _to_norm_dtype(module: nn.Module, args: tuple) -> tuple:
    module._input_dtype = args[0].dtype  # type: ignore[assignment]  # read by _back_to_input_dtype
    return (args[0].to(module.weight.dtype), *args[1:])


def _back_to_input_dtype(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(module._input_dtype)  # type: ignore[arg-type]


def _bridge_norm(norm: nn.Module, held_apart: bool) -> None:
    """(Un)install the casts around a fp32 LayerNorm that sits inside a half-precision tower."""
    for handle in getattr(norm, "_dtype_bridge", ()):
        handle.remove()
    norm._dtype_bridge = ()  # type: ignore[assignment]
    if held_apart and isinstance(getattr(norm, "weight", None), torch.Tensor):  # without weights: any dtype runs
        hooks = (norm.register_forward_pre_hook(_to_norm_dtype), norm.register_forward_hook(_back_to_input_dtype))
        norm._dtype_bridge = hooks  # type: ignore[assignment]


def hold_frozen_in(model: Any, frozen_dtype: str | torch.dtype) -> torch.dtype:
    """Store ``model``'s vision tower and LLM in ``frozen_dtype`` and its trained parts in fp32; return the dtype.

    ``frozen_dtype``: one of `FROZEN_DTYPES` or a torch dtype; ``"auto"`` resolves on the model's device
    (`resolve_frozen_dtype`). ``float32`` turns the whole model back to fp32 (from half-precision values: what was
    rounded stays rounded). Idempotent.
    """
    device = next(model.parameters()).device
    dtype = resolve_frozen_dtype(frozen_dtype, device, model.config.text_config.model_type)
    for frozen in (model.vision_model, model.language_model):
        _cast_(frozen, dtype)
    _attend_for(model.language_model, dtype)  # the tower runs forward only: its bf16 SDPA is the faster there
    for name in model.trainable_module_names():  # the paper's trained parts (arXiv 2305.06500 §2.6)
        try:
            _cast_(model.get_submodule(name), torch.float32)
        except AttributeError:  # a parameter of the model itself (query_tokens), not a module
            parameter = model.get_parameter(name)
            parameter.data = parameter.data.float()
    if dtype != torch.float32:  # the frozen parts left the mapped checkpoint: the fp32 rest leaves it too
        _own_memory_(model)
    if model.vision_norm_name.startswith("vision_model."):
        _bridge_norm(model.get_submodule(model.vision_norm_name), held_apart=dtype != torch.float32)
    return dtype
