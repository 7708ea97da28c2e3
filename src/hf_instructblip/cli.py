"""`hf-instructblip`: one console script with sub-commands; each parses arguments and calls a library function.

hf-instructblip build --vision vit.json --qformer <bert folder> --llm <llm folder> --output my-model
hf-instructblip convert <official folder> <our folder>          # or back: --to transformers
hf-instructblip convert-tower efficientnet-lite0 towers/efficientnet-lite0   # the shipped tower, as transformers'
hf-instructblip generate my-model --image photo.jpg --prompt "What is in the photo?"
hf-instructblip evaluate my-model --datasets synthetic_yes_no gqa --output-dir results
hf-instructblip demo
hf-instructblip train examples/configs/tiny.yaml --training.output_dir outputs/run   # --section.key value overrides
hf-instructblip push my-model me/my-instructblip --results results   # token: HF_TOKEN or `hf auth login`

Errors are one line naming the file, key or argument; `hf-instructblip --debug <command> ...` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _vision_argument(value: str) -> str | dict:
    """A vision model folder, or a JSON file / inline JSON object with a config (random weights)."""
    path = Path(value)
    if path.is_file():
        return json.loads(path.read_text())
    if value.lstrip().startswith("{"):
        return json.loads(value)
    return value


BUILD_DESCRIPTION = """\
Compose a new InstructBLIP from a vision tower, a Q-Former initialiser and an LLM, and save it with its processor.
Prints where every tensor came from (copied from which file, derived, or new).

From BLIP-2, as the paper does (arXiv 2305.06500 §3): give transformers' BLIP-2 folders (local copies, e.g.
`hf download Salesforce/blip2-flan-t5-xl --local-dir checkpoints/blip2-flan-t5-xl`):
  --blip2 <stage-2 folder>        Blip2ForConditionalGeneration (Salesforce/blip2-opt-2.7b, blip2-flan-t5-xl, ...):
                                  ViT-g and its LayerNorm, Q-Former, query tokens, projection and LLM.
  --qformer-text <stage-1 folder> Blip2ForImageTextRetrieval (Salesforce/blip2-itm-vit-g): the Q-Former's word and
                                  position embeddings and text FFN, which stage 2 never trains and does not hold;
                                  failing that, a BERT folder (bert-base-uncased, the BLIP-2 recipe). Also the
                                  default Q-Former tokenizer.
  --llm <other LLM folder>        another LLM (the paper's Vicuna): the projection then starts new (LAVIS' llm_proj).
Without --qformer-text the build stops, unless --no-qformer-text-input (BLIP-2's own Q-Former, text parts unused).

  hf-instructblip build --blip2 checkpoints/blip2-flan-t5-xl --qformer-text checkpoints/blip2-itm-vit-g \\
      --output instructblip-flan-t5-xl-init
  hf-instructblip build --blip2 checkpoints/blip2-opt-2.7b --qformer-text checkpoints/blip2-itm-vit-g \\
      --llm checkpoints/vicuna-7b-v1.1 --output instructblip-vicuna7b-init
"""


def _cmd_build(args: argparse.Namespace) -> None:
    from .building import build_model
    from .provenance import format_provenance

    parts = {name: getattr(args, name) or args.blip2 for name in ("vision", "qformer", "llm")}
    missing = [f"--{name}" for name, value in parts.items() if value is None]
    if missing:
        raise ValueError(f"build: give {', '.join(missing)} (or --blip2, the default for all three).")
    built = build_model(
        _vision_argument(parts["vision"]),
        parts["qformer"],
        parts["llm"],
        llm_gguf_file=args.gguf_file,
        qformer_tokenizer=args.qformer_tokenizer,
        qformer_text=args.qformer_text,
        num_query_tokens=args.num_query_tokens,
        cross_attention_frequency=args.cross_attention_frequency,
        vision_feature_layer=args.vision_feature_layer,
        qformer_text_input=not args.no_qformer_text_input,
        seed=args.seed,
    )
    print("Where the tensors come from:")
    for line in format_provenance(built.provenance):
        print(f"  {line}")
    path = built.save_pretrained(args.output)
    n_params = sum(p.numel() for p in built.model.parameters())
    print(f"Built InstructBLIP ({n_params / 1e6:.1f}M parameters) -> {path}")


def _cmd_convert(args: argparse.Namespace) -> None:
    from .conversion import convert_checkpoint

    written = convert_checkpoint(args.source, args.destination, to=args.to)
    print(f"Converted {args.source} -> {args.destination} ({written} format)")


def _cmd_convert_tower(args: argparse.Namespace) -> None:
    from .vision_towers import convert_efficientnet_lite0

    path = convert_efficientnet_lite0(args.output, classifier=not args.backbone_only)
    print(f"Converted {args.tower} -> {path} (transformers EfficientNet, safetensors)")


def _image_files(values: list[str]) -> list[str]:
    for value in values:
        path = Path(value)
        if path.is_dir():
            raise ValueError(f"--image {value} is a directory; give an image file (repeat --image for several).")
        if not path.exists():
            raise FileNotFoundError(f"--image {value}: no such file.")
    return values


def _cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from .loading import load_for_inference

    images = _image_files(args.image)
    model, processor = load_for_inference(args.model)
    inputs = processor(images=[images] if len(images) > 1 else images[0], text=args.prompt)
    # unset options come from the model's generation_config.json (this package's folders: the paper's settings)
    settings = {
        key: value
        for key, value in (
            ("max_new_tokens", args.max_new_tokens),
            ("min_new_tokens", args.min_new_tokens),
            ("num_beams", args.num_beams),
        )
        if value is not None
    }
    with torch.no_grad():  # LAVIS: the repetition penalty counts generated tokens only, not the prompt's
        output = model.generate(**inputs, **settings, penalize_prompt=False)
    answer = processor.decode_generated(output, inputs["input_ids"])[0]
    if not answer:
        raise EmptyAnswerError(
            "the model generated no text for this prompt (only end-of-sequence or special tokens). Try a prompt "
            "phrased like its training instructions, or --min-new-tokens 3."
        )
    print(answer)


class EmptyAnswerError(RuntimeError):
    """`generate` produced nothing to print (exit status 1, a message instead of an empty line)."""


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .data.synthetic import SYNTHETIC_HELD_OUT
    from .evaluation.harness import evaluate_zero_shot, results_table, write_results
    from .loading import load_for_inference

    model, processor = load_for_inference(args.model)
    generation = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if v}
    results = evaluate_zero_shot(
        model,
        processor,
        args.datasets or list(SYNTHETIC_HELD_OUT),
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        generation=generation,
    )
    json_path, table_path = write_results(results, args.output_dir, model_name=str(args.model))
    print(results_table(results))
    print(f"Wrote {json_path} and {table_path}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DemoConfig, run_demo
    from .hub import PushToHubError

    config = DemoConfig(**({"max_steps": args.max_steps} if args.max_steps is not None else {}))
    try:
        run_demo(args.output, config, push_to_hub=args.push_to_hub)
    except PushToHubError as error:  # the folder is saved; only the push failed (the message never has the token)
        print(f"hf-instructblip demo: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_train(args: argparse.Namespace) -> None:
    import logging

    from .training.run import run_from_config

    if args.config in ("-h", "--help") or any(value in ("-h", "--help") for value in args.overrides):
        args.parser.print_help()  # `train tiny.yaml --help`: the overrides swallow everything after the file name
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    run = run_from_config(args.config, [value for value in args.overrides if value != "--debug"])
    if run.already_finished:
        print(
            f"{run.output_dir} already finished its {run.global_step} steps; nothing to train (raise "
            "--training.max_steps to train further)."
        )
        return
    print(f"Trained {run.global_step} steps (loss {run.training_loss:.4f}); outputs in {run.output_dir}")


def _cmd_push(args: argparse.Namespace) -> None:
    from .hub import CardInfo, PushToHubError, push_to_hub

    try:
        commit = push_to_hub(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
            results=args.results,
            card=CardInfo(base_model=args.base_model, license=args.license),
        )
    except PushToHubError as error:  # network, auth or Hub failure: the message says which (never the token)
        print(f"hf-instructblip push: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    pull_request = f" (pull request {commit.pr_url})" if commit.pr_url else ""
    print(f"Pushed {args.folder} -> {commit.commit_url}{pull_request}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and descriptions / epilogs printed as written."""


class _Parser(argparse.ArgumentParser):
    """A parser whose epilog is made when help is shown (the train sections import transformers: slow to load)."""

    epilog_factory: Callable[[], str] | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        if self.epilog_factory is not None:
            self.epilog = self.epilog_factory()
        return super().format_help()


def _field_lines(cls: Any, fields: list[Any]) -> list[str]:
    lines = []
    for item in fields:
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        lines.append(f"    {item.name} (default: {default!r}): {item.metadata.get('help', '')}")
    return lines


def _config_sections_help() -> str:
    """The ``train`` epilog: every key of the model and data sections, and the training section's paper defaults."""
    from .training.arguments import InstructBlipTrainingArguments
    from .training.config import SECTIONS

    lines = ["config file sections (YAML or JSON; any key can be overridden with --section.key value):"]
    for name, cls in SECTIONS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name}: {cls.__name__}. {summary}")
        fields = [f for f in dataclasses.fields(cls) if f.init]
        if cls is InstructBlipTrainingArguments:  # its own defaults; the other TrainingArguments keys as usual
            fields = [f for f in fields if f.name in vars(InstructBlipTrainingArguments)["__annotations__"]]
            lines.append(
                "    every transformers TrainingArguments key (output_dir, max_steps, ...), with these defaults:"
            )
        lines.extend(_field_lines(cls, fields))
    lines.append("Paths of your data files (custom_datasets: source, image_root) are relative to the config file.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-instructblip", description=__doc__.split("\n")[0], formatter_class=_HelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    build = commands.add_parser(
        "build",
        help="compose a new InstructBLIP from a vision tower, a Q-Former init and an LLM",
        description=BUILD_DESCRIPTION,
    )
    build.add_argument("--blip2", default=None, help="BLIP-2 stage-2 folder: the default of --vision/--qformer/--llm")
    build.add_argument(
        "--vision", default=None, help="vision model or BLIP-2 folder, or a config as JSON file / inline JSON"
    )
    build.add_argument("--qformer", default=None, help="BERT, BLIP-2 (stage 1 or 2) or saved InstructBLIP folder")
    build.add_argument(
        "--qformer-text",
        default=None,
        help="BLIP-2 stage-1 (Blip2ForImageTextRetrieval) or BERT folder: the text parts a stage-2 Q-Former lacks",
    )
    build.add_argument(
        "--qformer-tokenizer", default=None, help="defaults to the --qformer folder (BLIP-2: the --qformer-text one)"
    )
    build.add_argument("--llm", default=None, help="causal or seq2seq LLM folder, or a BLIP-2 stage-2 folder")
    build.add_argument("--gguf-file", default=None, help="GGUF file name inside --llm")
    build.add_argument("--num-query-tokens", type=int, default=32)
    build.add_argument("--cross-attention-frequency", type=int, default=2)
    build.add_argument("--vision-feature-layer", type=int, default=-1)
    build.add_argument("--no-qformer-text-input", action="store_true", help="BLIP-2-style ablation")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--output", required=True)
    build.set_defaults(func=_cmd_build)

    convert = commands.add_parser("convert", help="transformers' InstructBLIP layout <-> hf_instructblip")
    convert.add_argument("source")
    convert.add_argument("destination")
    convert.add_argument("--to", choices=["hf_instructblip", "transformers"], default=None)
    convert.set_defaults(func=_cmd_convert)

    tower = commands.add_parser("convert-tower", help="write a shipped pretrained vision tower in transformers form")
    tower.add_argument("tower", choices=["efficientnet-lite0"], help="EfficientNet-Lite0 (ImageNet), from PyPI")
    tower.add_argument("output", help="folder to write (usable as build --vision)")
    tower.add_argument("--backbone-only", action="store_true", help="without the ImageNet classifier head")
    tower.set_defaults(func=_cmd_convert_tower)

    generate = commands.add_parser("generate", help="answer a prompt about an image (several --image: frames)")
    generate.add_argument("model", help="saved model folder (model + processor), a LoRA run's folder, or a Hub id")
    generate.add_argument("--image", action="append", required=True, help="image file; repeat for video frames")
    generate.add_argument(
        "--prompt", default="", help="the instruction, e.g. 'What is in the photo?' (empty: the image alone)"
    )
    generate.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: the model's generation_config.json (paper: 256)"
    )
    generate.add_argument("--min-new-tokens", type=int, default=None, help="default: the model's (paper: 1)")
    generate.add_argument("--num-beams", type=int, default=None, help="default: the model's (paper: 5)")
    generate.set_defaults(func=_cmd_generate)

    evaluate = commands.add_parser("evaluate", help="zero-shot evaluation with the paper's protocol and metrics")
    evaluate.add_argument("model", help="saved model folder (model + processor)")
    evaluate.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="registry or synthetic names (default: the synthetic held-out tasks)",
    )
    evaluate.add_argument("--num-samples", type=int, default=None, help="per dataset (synthetic default: 200)")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--num-beams", type=int, default=None, help="override the paper's beam count")
    evaluate.add_argument("--max-new-tokens", type=int, default=None)
    evaluate.add_argument("--output-dir", default="outputs/eval")
    evaluate.set_defaults(func=_cmd_evaluate)

    demo = commands.add_parser(
        "demo",
        help="build InstructBLIP from pretrained shipped parts (EfficientNet-Lite0, MiniLM, SmolLM2), instruction-tune "
        "it on CPU, evaluate before/after, save model, results, plot and model card",
    )
    demo.add_argument("--output", default="outputs/demo-model")
    demo.add_argument("--max-steps", type=int, default=None, help="training steps (default: the demo's, DemoConfig)")
    demo.add_argument("--push-to-hub", metavar="REPO", default=None, help="push the saved folder to this Hub repo")
    demo.set_defaults(func=_cmd_demo)

    train = commands.add_parser("train", help="instruction-tune from a YAML/JSON config (model, data, training)")
    train.add_argument("config", help="YAML or JSON file; see examples/configs/")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--section.key value, e.g. --training.max_steps 10")
    train.epilog_factory = _config_sections_help  # type: ignore[attr-defined]  # a _Parser
    train.set_defaults(func=_cmd_train, parser=train)

    push = commands.add_parser("push", help="push a model, LoRA adapter or results folder to the Hub with its card")
    push.add_argument("folder", help="model / adapter folder (save_pretrained) or results folder (evaluate)")
    push.add_argument("repo_id", help="namespace/name, created if missing; token from HF_TOKEN or `hf auth login`")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    push.add_argument("--commit-message", default=None)
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--results", default=None, help="results.json (or its folder) to put on the card")
    push.add_argument("--base-model", default=None, help="Hub id of the base model (an adapter's base)")
    push.add_argument("--license", default=None, help="license id for the card, e.g. apache-2.0")
    push.set_defaults(func=_cmd_push)
    for command in commands.choices.values():  # `--debug` after the command too (the top-level value otherwise)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback")
    return parser


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split())
    if isinstance(error, (ValueError, FileNotFoundError, EmptyAnswerError, FloatingPointError)):
        return message  # our own errors: they name the file, key or argument
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train" and "--debug" in args.overrides:
        args.debug = True
    try:
        args.func(args)
    except Exception as error:  # one line for the user; --debug re-raises with the traceback
        if args.debug:
            raise
        print(f"hf-instructblip {args.command}: error: {_one_line(error)}", file=sys.stderr)
        # 1: the run itself failed (NaN loss: checkpoints intact) or gave nothing; 2: bad input
        return 1 if isinstance(error, (FloatingPointError, EmptyAnswerError)) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
