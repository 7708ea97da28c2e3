"""Shared tiny configs (hidden 32, 2 layers, image 30, patch 2) and reference models for the tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers

from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration

IMAGE_TOKEN = 99
NUM_QUERY = 4
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 30,
    "patch_size": 2,
}
QFORMER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "vocab_size": 50,
}
LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
T5 = {
    "model_type": "t5",
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "vocab_size": 100,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
TEXT_CONFIGS = {"llama": LLAMA, "t5": T5}
# Tiny vision towers of every family the config promises (all random).
VISION_TOWERS = {
    "instructblip_vision_model": VISION,
    "clip_vision_model": VISION,
    "siglip_vision_model": VISION,
    "vit": VISION,
    "dinov2": VISION,
}


def tiny_config(llm: str = "llama", vision_type: str = "instructblip_vision_model", **overrides) -> InstructBlipConfig:
    return InstructBlipConfig(
        vision_config={"model_type": vision_type, **VISION_TOWERS[vision_type]},
        qformer_config=dict(QFORMER),
        text_config=dict(TEXT_CONFIGS[llm]),
        **{"num_query_tokens": NUM_QUERY, "image_token_index": IMAGE_TOKEN, **overrides},
    )


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random init zeroes biases/query tokens; add noise so every weight matters in a comparison."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def tiny_model(llm: str = "llama", seed: int = 0, **overrides) -> InstructBlipForConditionalGeneration:
    torch.manual_seed(seed)
    return perturb_(InstructBlipForConditionalGeneration(tiny_config(llm, **overrides)), seed).eval()


def make_inputs(llm: str = "llama", batch: int = 2, frames: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs in the layout the processor produces: image tokens first, text after; ragged Q-Former text."""
    generator = torch.Generator().manual_seed(seed)
    n_image = NUM_QUERY * max(frames, 1)
    text = torch.randint(3, IMAGE_TOKEN, (batch, 5), generator=generator)
    input_ids = torch.cat([torch.full((batch, n_image), IMAGE_TOKEN), text], dim=1)
    qformer_input_ids = torch.randint(1, QFORMER["vocab_size"], (batch, 6), generator=generator)
    qformer_attention_mask = torch.ones_like(qformer_input_ids)
    qformer_attention_mask[0, 4:] = 0  # first sample is padded
    qformer_input_ids[0, 4:] = 0
    shape = (batch, frames, 3, 30, 30) if frames else (batch, 3, 30, 30)
    inputs = {
        "pixel_values": torch.randn(shape, generator=generator),
        "qformer_input_ids": qformer_input_ids,
        "qformer_attention_mask": qformer_attention_mask,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
    }
    if llm == "t5":
        inputs["decoder_input_ids"] = torch.randint(3, IMAGE_TOKEN, (batch, 4), generator=generator)
    return inputs


@pytest.fixture(params=["llama", "t5"])
def llm(request) -> str:
    return request.param


@pytest.fixture
def reference_folder(tmp_path, llm):
    """A folder written by transformers' own InstructBlipForConditionalGeneration (the official layout)."""
    torch.manual_seed(0)
    hf_config = transformers.InstructBlipConfig(
        vision_config=VISION,
        qformer_config=QFORMER,
        text_config=TEXT_CONFIGS[llm],
        num_query_tokens=NUM_QUERY,
        image_token_index=IMAGE_TOKEN,
    )
    reference = perturb_(transformers.InstructBlipForConditionalGeneration(hf_config)).eval()
    path = tmp_path / "official"
    reference.save_pretrained(path)
    return path, reference


# ----- real tokenizers (SmolLM2's from the GGUF, MiniLM's + [DEC]) for processor tests ---------------------------------
@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-tensor training tests (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): tiny matrices run fastest on one thread, and two threads on a CPU
    shared with other jobs wait on each other at every small op (test_replicate_claims: 86 s instead of 8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    from transformers import AutoTokenizer

    from hf_instructblip.assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir

    root = tmp_path_factory.mktemp("tokenizers")
    AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF_FILE).save_pretrained(root / "llm")
    qformer = AutoTokenizer.from_pretrained(minilm_path())
    qformer.add_special_tokens({"bos_token": "[DEC]"})
    qformer.save_pretrained(root / "qformer")
    return root / "llm", root / "qformer"


def make_processor(tokenizer_dirs, num_query_tokens: int = NUM_QUERY, image_size: int = 30, **kwargs):
    from transformers import AutoTokenizer

    from hf_instructblip import InstructBlipImageProcessor, InstructBlipProcessor

    return InstructBlipProcessor(
        InstructBlipImageProcessor(size={"height": image_size, "width": image_size}),
        AutoTokenizer.from_pretrained(tokenizer_dirs[0]),
        AutoTokenizer.from_pretrained(tokenizer_dirs[1]),
        num_query_tokens=num_query_tokens,
        **kwargs,
    )


def model_for(processor, llm: str = "llama", seed: int = 0) -> InstructBlipForConditionalGeneration:
    """A tiny random model whose vocabularies match the processor's real tokenizers."""
    vocab, pad = len(processor.tokenizer), processor.tokenizer.pad_token_id
    text = dict(TEXT_CONFIGS[llm], vocab_size=vocab, pad_token_id=pad, eos_token_id=pad)
    if llm == "t5":
        text["decoder_start_token_id"] = pad
    config = InstructBlipConfig(
        vision_config={"model_type": "instructblip_vision_model", **VISION},
        qformer_config=dict(QFORMER, vocab_size=len(processor.qformer_tokenizer)),
        text_config=text,
        num_query_tokens=processor.num_query_tokens,
        image_token_index=processor.image_token_id,
    )
    torch.manual_seed(seed)
    return perturb_(InstructBlipForConditionalGeneration(config), seed).eval()


#: The largest difference `assert_close_fp32` allows, as a fraction of the values' magnitude. Float32 rounds every
#: result to 24 bits (2**-24 ~ 6e-8 relative); two code paths computing the same function with different kernels
#: (another SDPA shape, another matmul blocking, AVX-512/AMX vs AVX2 accumulation order, 1 vs 2 threads) round
#: differently at every op, and a few layers later their outputs differ by up to about 1e-6 of the largest magnitude:
#: at most 7e-7 over every comparison of this suite with MKL's code path for any x86 CPU (MKL_CBWR=COMPATIBLE), 8e-7
#: on SmolLM2-135M's logits on an AVX-512 + AMX CPU (2.2e-5 where they reach 27). 1e-4 leaves a margin of 100, while a
#: real mistake (a weight in the wrong place, a mask off by one, a missing scale) moves outputs by 1e-2 or more.
FP32_TOLERANCE = 1e-4


def assert_close_fp32(actual: torch.Tensor, expected: torch.Tensor, *, scale: float | None = None, msg=None) -> None:
    """Assert two float32 results of DIFFERENT code paths agree up to float32 rounding (any CPU, any thread count).

    Elements may differ by ``FP32_TOLERANCE * scale`` plus ``FP32_TOLERANCE`` of their own size. The allowance is
    scaled to the tensor's magnitude, not to each element's: rounding error comes from sums over many terms as large
    as the largest values, so an element near zero carries an error of the size of the big ones (an element-wise
    ``rtol`` would fail there on another CPU).

    Use this only where the computation differs: ours vs stock transformers, our Q-Former vs BERT, eager vs SDPA,
    a padded batch vs one sample alone, a merged LoRA weight vs the adapter. Where it is literally the same
    computation (the feature-cache path vs the pixel path on identical batches, save/load round trips, a resumed run
    vs an uninterrupted one) compare bit for bit with ``torch.equal``.

    Args:
        actual: What the path under test computed.
        expected: What the reference path computed.
        scale: The magnitude rounding errors are relative to; default ``expected.abs().max()``. Pass a larger one
            where the errors come from larger terms than the tensor holds: a gradient that is zero in exact
            arithmetic (a key bias's, which softmax ignores) is rounding noise of the other gradients' size.
        msg: Passed to `torch.testing.assert_close` (a string, or a callable taking its message).
    """
    if scale is None:
        scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=FP32_TOLERANCE, atol=FP32_TOLERANCE * scale, msg=msg)


def assert_moved_exactly(named_parameters, before: dict[str, torch.Tensor], moving: set[str]) -> None:
    """Every parameter named in ``moving`` changed from ``before``; every other one is bit-identical."""
    for name, param in named_parameters:
        if name in moving:
            assert not torch.equal(param.detach(), before[name]), f"{name} did not change"
        else:
            assert torch.equal(param.detach(), before[name]), f"frozen {name} changed"


#: Prepended to fresh-process scripts: hides hf_instructblip, so everything must come from the saved or pushed
#: remote code (trust_remote_code=True).
HIDE_PACKAGE = """
import importlib.abc, sys

class HidePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "hf_instructblip":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")

sys.meta_path.insert(0, HidePackage())
try:
    import hf_instructblip
    raise SystemExit("hf_instructblip is importable: the test would prove nothing")
except ModuleNotFoundError:
    pass
"""
