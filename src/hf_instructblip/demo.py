"""`make demo` / `hf-instructblip demo`: build an InstructBLIP from the real shipped parts and generate for a photo.

Until instruction tuning lands, the vision tower, the Q-Former's cross-attention and the projection are untrained,
so the generated text is fluent (SmolLM2 is real) but not yet about the photo. The demo shows the whole path
working offline: parts -> model -> save -> reload -> generate.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from .assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
from .conversion import build_model

__all__ = ["DEMO_VISION_CONFIG", "run_demo"]

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

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    image = Image.fromarray(data.astronaut())
    inputs = processor(images=image, text=instruction)
    output = model.generate(**inputs, max_new_tokens=30, do_sample=False, repetition_penalty=1.5)
    text = processor.decode_generated(output, inputs["input_ids"])[0]
    print(f"Photo: scikit-image astronaut ({image.width}x{image.height})")
    print(f"Instruction: {instruction}")
    print(f"Generated: {text}")
    print(
        "(Vision tower, Q-Former cross-attention and projection are untrained: the text is not yet about the photo.)"
    )
    return text
