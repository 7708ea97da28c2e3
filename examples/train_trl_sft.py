"""Instruction-tune InstructBLIP with TRL's `SFTTrainer` on prompt/completion image data (offline, CPU or GPU).

Build a model first (real SmolLM2 + MiniLM, random ViT), then train it on the built-in synthetic tasks:

    hf-instructblip demo --output outputs/demo-model
    python examples/train_trl_sft.py --model outputs/demo-model --max-steps 20 --output-dir outputs/trl-sft

Every `SFTConfig` option is a flag too (`--learning-rate`, `--per-device-train-batch-size`, `--max-length`, ...);
`--conversational` gives the same data as chat messages (``[{"role": "user", ...}]``), which collates identically;
`--lora-target llm` trains LoRA adapters (`hf_instructblip.training.apply_lora`) and saves only them.

TRL's own vision collator does the batching: the processor puts the image placeholders at the start of each prompt and
tokenises the prompt for the Q-Former as well (``qformer_input_ids``); prompt/completion data gives completion-only
labels (-100 on the placeholders, the prompt and the padding), padded on the right. TRL does not add an end-of-sequence
token to vision completions, so the completions here end with the tokenizer's. Causal LLMs only: TRL computes the
loss from the LLM's last hidden states, which an encoder-decoder (FlanT5) LLM does not have; train those with
`hf_instructblip.training.InstructBlipTrainer` and `InstructBlipDataCollator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, HfArgumentParser
from transformers.trainer_utils import TrainOutput
from trl import SFTConfig, SFTTrainer

import hf_instructblip  # noqa: F401  (registers InstructBLIP with the Auto classes)
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.training import apply_lora


@dataclass
class ExampleArguments:
    """What to train and on what; the training options are `SFTConfig`'s."""

    model: str = field(metadata={"help": "Folder of a saved InstructBLIP with its processor (causal LLM)."})
    num_samples_per_task: int = field(default=64, metadata={"help": "Synthetic samples per held-in task."})
    image_size: int = field(default=64, metadata={"help": "Side of the synthetic images in pixels (>= 32)."})
    conversational: bool = field(default=False, metadata={"help": "Give the data as chat messages."})
    lora_target: str | None = field(
        default=None,
        metadata={"help": "LoRA preset instead of full Q-Former training: 'llm', 'qformer' or 'both'."},
    )


def to_prompt_completion(sample: dict[str, Any], eos_token: str, conversational: bool = False) -> dict[str, Any]:
    """A unified instruction sample (`hf_instructblip.data.schema`) -> TRL's vision prompt/completion format.

    The completion ends with ``eos_token`` so that the model learns to stop. Plain and conversational rows collate to
    the same batch: the processor's default chat template joins the messages with a space.
    """
    if conversational:
        return {
            "prompt": [{"role": "user", "content": sample["instruction"]}],
            "completion": [{"role": "assistant", "content": sample["target"] + eos_token}],
        }
    return {"prompt": sample["instruction"], "completion": " " + sample["target"] + eos_token}


def synthetic_sft_dataset(
    eos_token: str, num_samples_per_task: int, image_size: int, conversational: bool = False
) -> datasets.Dataset:
    """The held-in synthetic tasks as ``images`` + ``prompt`` + ``completion`` rows."""
    unified = concatenate_mixture(synthetic_mixture(SYNTHETIC_HELD_IN, num_samples_per_task, image_size=image_size))
    return unified.map(
        to_prompt_completion,
        fn_kwargs={"eos_token": eos_token, "conversational": conversational},
        remove_columns=[name for name in unified.column_names if name != "images"],
    )


def parse_arguments(argv: list[str] | None = None) -> tuple[ExampleArguments, SFTConfig]:
    """The example's options and every `SFTConfig` field from the command line (``argv``, default `sys.argv`)."""
    parser = HfArgumentParser((ExampleArguments, SFTConfig))
    parser.set_defaults(
        output_dir="outputs/trl-sft",
        report_to="none",  # offline: no experiment trackers
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # TRL's default (True) is for GPUs
    )
    example_args, sft_config = parser.parse_args_into_dataclasses(args=argv)
    return example_args, sft_config


def main(argv: list[str] | None = None) -> TrainOutput:
    """Train ``--model`` with `SFTTrainer`; the result (model + processor) goes to ``--output-dir``."""
    example_args, sft_config = parse_arguments(argv)
    model = AutoModelForImageTextToText.from_pretrained(example_args.model)
    if not model.config.use_decoder_only_language_model:
        raise ValueError(
            f"--model {example_args.model}: its LLM ({model.config.text_config.model_type}) is encoder-decoder; "
            "TRL's SFTTrainer trains causal LLMs only. Use hf_instructblip.training.InstructBlipTrainer."
        )
    if sft_config.completion_only_loss is False:
        # TRL would then label the whole sequence, image placeholders included, and our model never sees those
        # labels (TRL applies the head itself), so it cannot refuse them: the LLM would learn to predict "<image>".
        raise ValueError(
            "--completion_only_loss False would put labels on the image placeholder tokens; InstructBLIP trains on "
            "the completion only (arXiv 2305.06500 §2.6)."
        )
    processor = AutoProcessor.from_pretrained(example_args.model)
    if example_args.lora_target is None:
        # arXiv 2305.06500 §2.6: vision tower and LLM frozen; Q-Former, queries, projection trained
        model.apply_trainable_policy()
    else:  # the query tokens are saved with the adapter (PEFT's own adapter files leave them out)
        model = apply_lora(model, target=example_args.lora_target)
    dataset = synthetic_sft_dataset(
        processor.tokenizer.eos_token,
        example_args.num_samples_per_task,
        example_args.image_size,
        example_args.conversational,
    )
    trainer = SFTTrainer(model=model, args=sft_config, train_dataset=dataset, processing_class=processor)
    result = trainer.train()
    trainer.save_model()
    print(f"Trained {result.global_step} steps (loss {result.training_loss:.4f}); saved to {sft_config.output_dir}")
    return result


if __name__ == "__main__":
    main()
