"""`make demo` / `hf-instructblip demo`: build an InstructBLIP from the real shipped parts and generate for a photo.

Until instruction tuning lands, the vision tower, the Q-Former's cross-attention and the projection are untrained,
so the generated text is fluent (SmolLM2 is real) but not yet about the photo. The demo shows the whole path
working offline: parts -> model -> save -> reload -> generate.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
from .conversion import build_model
from .modeling_instructblip import InstructBlipForConditionalGeneration

__all__ = ["DEMO_VISION_CONFIG", "pixel_values_from_image", "run_demo"]

#: A small random ViT (no pretrained ViT/CLIP/SigLIP installs from PyPI; DESIGN.md).
DEMO_VISION_CONFIG = {
    "model_type": "vit",
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "image_size": 224,
    "patch_size": 16,
}
# PAPER.md §1: 224 px, CLIP mean/std, bicubic.
_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def pixel_values_from_image(image: Image.Image, size: int = 224) -> torch.Tensor:
    """RGB image -> (1, 3, size, size) normalised tensor (bicubic resize, CLIP mean/std)."""
    array = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    array = (array - _CLIP_MEAN) / _CLIP_STD
    return torch.from_numpy(array).permute(2, 0, 1)[None]  # (1, 3, H, W)


def run_demo(output_dir: str | Path = "outputs/demo-model", instruction: str = "Describe the image briefly.") -> str:
    """Build, save, reload and generate; returns the generated text."""
    from skimage import data  # the bundled photographs load offline

    start = time.perf_counter()
    print("Building InstructBLIP from parts: random ViT + MiniLM (Q-Former init) + SmolLM2-135M-Instruct (LLM)...")
    built = build_model(
        DEMO_VISION_CONFIG, minilm_path(), smollm2_dir(), llm_gguf_file=SMOLLM2_GGUF_FILE, num_query_tokens=32
    )
    path = built.save_pretrained(output_dir)
    print(f"Saved to {path} ({time.perf_counter() - start:.0f} s)")

    model = InstructBlipForConditionalGeneration.from_pretrained(path).eval()
    tokenizer, qformer_tokenizer = built.tokenizer, built.qformer_tokenizer
    image = Image.fromarray(data.astronaut())
    image_tokens = [model.config.image_token_index] * model.config.num_query_tokens
    input_ids = torch.tensor([image_tokens + tokenizer(instruction, add_special_tokens=False).input_ids])
    qformer = qformer_tokenizer(instruction, return_tensors="pt", truncation=True, max_length=128)
    output = model.generate(
        pixel_values=pixel_values_from_image(image),
        qformer_input_ids=qformer.input_ids,
        qformer_attention_mask=qformer.attention_mask,
        input_ids=input_ids,
        max_new_tokens=30,
        do_sample=False,
        repetition_penalty=1.5,
    )
    text = str(tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)).strip()
    print(f"Photo: scikit-image astronaut ({image.width}x{image.height})")
    print(f"Instruction: {instruction}")
    print(f"Generated: {text}")
    print(
        "(Vision tower, Q-Former cross-attention and projection are untrained: the text is not yet about the photo.)"
    )
    return text
