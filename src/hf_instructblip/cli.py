"""`hf-instructblip`: one console script with sub-commands; each parses arguments and calls a library function.

hf-instructblip build --vision vit.json --qformer <bert folder> --llm <llm folder> --output my-model
hf-instructblip convert <official folder> <our folder>          # or back: --to transformers
hf-instructblip generate my-model --image photo.jpg --prompt "What is in the photo?"
hf-instructblip evaluate my-model --datasets synthetic_yes_no gqa --output-dir results
hf-instructblip demo
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
    from .conversion import build_model

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

    run_demo(args.output)


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

    demo = commands.add_parser("demo", help="build a model from the shipped real parts and generate for a photo")
    demo.add_argument("--output", default="outputs/demo-model")
    demo.set_defaults(func=_cmd_demo)
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
