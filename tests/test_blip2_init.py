"""Starting from BLIP-2 as the paper does (arXiv 2305.06500 §3), from folders transformers' own classes wrote.

A tiny `Blip2ForConditionalGeneration` (stage 2, OPT and T5 LLMs) and a tiny `Blip2ForImageTextRetrieval` (stage 1,
the Q-Former with its text parts) are saved with `save_pretrained`. The InstructBLIP built from them must hold, for
every tensor, exactly the tensor its provenance names (file and name there), each source being the one the paper's
recipe prescribes; with ``qformer_text_input=False`` it must compute the BLIP-2 model's logits.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    LlamaConfig,
    LlamaForCausalLM,
)

from conftest import NUM_QUERY, VISION, assert_close_fp32, perturb_
from hf_instructblip import InstructBlipForConditionalGeneration
from hf_instructblip.building import build_model
from hf_instructblip.cli import main as cli_main
from hf_instructblip.provenance import TensorSource, format_provenance
from hf_instructblip.training.config import parse_config

QFORMER = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
OPT = {"model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
T5 = {"model_type": "t5", "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def _llm_config(llm: str, tokenizer) -> dict:
    """The tiny LLM config, its vocabulary the tokenizer's (``<image>`` included)."""
    special = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "eos_token_id": 2}
    if llm == "t5":
        return {**T5, **special, "decoder_start_token_id": tokenizer.pad_token_id}
    return {**OPT, **special, "bos_token_id": 1}


@pytest.fixture(scope="module")
def blip2(tmp_path_factory, tokenizer_dirs):
    """Folders: stage 2 with OPT and with T5 (LLM tokenizer inside), stage 1 (Q-Former tokenizer inside), a BERT."""
    llm_tokenizer_dir, qformer_tokenizer_dir = tokenizer_dirs
    root = tmp_path_factory.mktemp("blip2")
    qformer_tokenizer = AutoTokenizer.from_pretrained(qformer_tokenizer_dir)  # MiniLM's vocabulary + [DEC]
    stage1_config = Blip2Config(
        vision_config=VISION,
        qformer_config={**QFORMER, "use_qformer_text_input": True, "vocab_size": len(qformer_tokenizer)},
        num_query_tokens=NUM_QUERY,
    )
    torch.manual_seed(1)
    perturb_(Blip2ForImageTextRetrieval(stage1_config), seed=1).save_pretrained(root / "stage1")
    qformer_tokenizer.save_pretrained(root / "stage1")

    llm_tokenizer = AutoTokenizer.from_pretrained(llm_tokenizer_dir)
    llm_tokenizer.add_tokens(["<image>"], special_tokens=True)  # as transformers' BLIP-2 processors do
    image_token = llm_tokenizer.convert_tokens_to_ids("<image>")
    for seed, llm in enumerate(("opt", "t5"), start=2):
        config = Blip2Config(
            vision_config=VISION,
            qformer_config=QFORMER,  # use_qformer_text_input=False: no text parts, as the released checkpoints
            text_config=_llm_config(llm, llm_tokenizer),
            num_query_tokens=NUM_QUERY,
            image_token_index=image_token,
        )
        torch.manual_seed(seed)
        perturb_(Blip2ForConditionalGeneration(config), seed=seed).eval().save_pretrained(root / f"stage2-{llm}")
        llm_tokenizer.save_pretrained(root / f"stage2-{llm}")

    torch.manual_seed(4)  # a BERT of the Q-Former's shape: the fallback for the text parts
    bert = BertModel(BertConfig(**QFORMER, hidden_act="gelu"))
    perturb_(bert, seed=4).save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(qformer_tokenizer_dir).save_pretrained(root / "bert")
    return root


def _is_text_ffn(name: str) -> bool:
    """A Q-Former layer's text FFN (not ``intermediate_query`` / ``output_query``, not ``attention.output``)."""
    return re.match(r"qformer\.encoder\.layer\.\d+\.(intermediate|output)\.", name) is not None


def _read(source: TensorSource) -> torch.Tensor:
    with safe_open(str(source.file), framework="pt") as weights:
        return weights.get_tensor(str(source.key))


def _expected_source(name: str, stage2: Path, text: Path) -> tuple[Path, str]:
    """The paper's recipe: which folder, and which name there, each InstructBLIP tensor comes from."""
    if name.startswith("qformer.embeddings.layernorm."):  # BLIP-2 keeps the embeddings LayerNorm in the Q-Former
        return stage2, name.replace("qformer.embeddings.layernorm.", "qformer.layernorm.")
    if name.startswith(("qformer.embeddings.word_", "qformer.embeddings.position_")):  # stage 1: outside the Q-Former
        return text, name.removeprefix("qformer.")
    if _is_text_ffn(name):
        return text, name
    return stage2, name  # vision tower, Q-Former query path, query tokens, projection, LLM


@pytest.mark.parametrize("llm", ["opt", "t5"])
def test_every_tensor_equals_the_source_the_recipe_names(blip2, llm):
    stage2, stage1 = blip2 / f"stage2-{llm}", blip2 / "stage1"
    built = build_model(stage2, stage2, stage2, qformer_text=stage1)
    state = built.model.state_dict()
    assert list(built.provenance) == list(state)  # every tensor, in model order
    used = set()
    for name, tensor in state.items():
        source = built.provenance[name]
        assert source.kind == "copied", (name, source)  # nothing new: BLIP-2 stage 1 + 2 hold it all
        assert torch.equal(tensor, _read(source)), name
        folder, key = _expected_source(name, stage2, stage1)
        assert Path(source.file).parent == folder, (name, source)
        if "tied to" in source.note:  # the LLM's output head, saved once as its input embedding
            assert name.startswith("language_model.") and key != source.key
        else:
            assert source.key == key, (name, source)
        used.add((Path(source.file).parent, source.key))
    with safe_open(str(stage2 / "model.safetensors"), framework="pt") as weights:
        assert {key for folder, key in used if folder == stage2} == set(weights.keys())  # nothing of stage 2 dropped
    assert built.model.config.num_query_tokens == NUM_QUERY
    assert len(built.qformer_tokenizer) == built.model.config.qformer_config.vocab_size  # stage 1's, [DEC] included
    assert built.tokenizer.convert_ids_to_tokens(built.model.config.image_token_index) == "<image>"
    summary = "\n".join(format_provenance(built.provenance))
    assert f"qformer.encoder.layer.*.intermediate (6 tensors): copied from {stage1}/model.safetensors" in summary


def _inputs(llm: str, config) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, 200, (2, 5), generator=generator)
    input_ids = torch.cat([torch.full((2, NUM_QUERY), config.image_token_index), text], dim=1)
    inputs = {
        "pixel_values": torch.randn(2, 3, 30, 30, generator=generator),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
    }
    if llm == "t5":
        inputs["decoder_input_ids"] = torch.randint(3, 200, (2, 4), generator=generator)
    return inputs


@pytest.mark.parametrize("llm", ["opt", "t5"])
def test_without_instruction_in_the_qformer_it_computes_blip2(blip2, llm):
    """``qformer_text_input=False`` is BLIP-2 itself (the paper's ablation): the same logits as transformers'."""
    stage2 = blip2 / f"stage2-{llm}"
    built = build_model(stage2, stage2, stage2, qformer_text=blip2 / "stage1", qformer_text_input=False)
    reference = Blip2ForConditionalGeneration.from_pretrained(stage2).eval()
    inputs = _inputs(llm, built.model.config)
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = built.model(**inputs).logits
    assert_close_fp32(actual, expected)  # our model vs transformers' BLIP-2: other code, other kernels


def test_bert_fills_the_text_parts_when_there_is_no_stage_1(blip2):
    """The BLIP-2 recipe's start for the text parts: BERT's word/position embeddings and text FFN."""
    stage2, bert = blip2 / "stage2-opt", blip2 / "bert"
    built = build_model(stage2, stage2, stage2, qformer_text=bert)
    state = built.model.state_dict()
    for name, tensor in state.items():
        source = built.provenance[name]
        folder, _ = _expected_source(name, stage2, bert)
        assert Path(source.file).parent == folder, (name, source)
        if folder == stage2:
            assert source.kind == "copied" and torch.equal(tensor, _read(source)), name
    word, position = (f"qformer.embeddings.{part}_embeddings.weight" for part in ("word", "position"))
    bert_word = _read(built.provenance[word])
    assert bert_word.shape[0] == 30522 and len(built.qformer_tokenizer) == 30523  # [DEC] added: a mean row
    assert built.provenance[word].kind == "derived" and "mean row" in built.provenance[word].note
    assert torch.equal(state[word][:30522], bert_word)
    assert torch.equal(state[word][30522], bert_word.mean(0))
    with safe_open(str(bert / "model.safetensors"), framework="pt") as weights:  # BERT adds token type 0 to all
        folded = weights.get_tensor("embeddings.position_embeddings.weight")
        folded = folded + weights.get_tensor("embeddings.token_type_embeddings.weight")[0]
    assert torch.equal(state[position], folded)
    for i in range(QFORMER["num_hidden_layers"]):
        for block in ("intermediate.dense.weight", "output.dense.bias", "output.LayerNorm.weight"):
            name = f"qformer.encoder.layer.{i}.{block}"
            assert built.provenance[name].kind == "copied" and torch.equal(state[name], _read(built.provenance[name]))
        query = f"qformer.encoder.layer.{i}.intermediate_query.dense.weight"  # stage 2's, not BERT's copy
        assert built.provenance[query].file == str(stage2 / "model.safetensors")


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tokenizer_dirs):
    """A tiny Llama (width 40) with SmolLM2's tokenizer, which lacks ``<image>``."""
    path = tmp_path_factory.mktemp("llama")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dirs[0])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    torch.manual_seed(5)
    perturb_(LlamaForCausalLM(config), seed=5).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_another_llm_gets_a_new_projection(blip2, llama):
    """The Vicuna case: BLIP-2's vision tower, Q-Former and queries; an LLM BLIP-2 was not trained with."""
    stage2 = blip2 / "stage2-opt"
    built = build_model(stage2, stage2, llama, qformer_text=blip2 / "stage1")
    provenance = built.provenance
    assert provenance["language_projection.weight"].kind == "new"
    assert "LAVIS' llm_proj" in provenance["language_projection.weight"].note
    assert built.model.language_projection.weight.shape == (40, 32)
    assert provenance["query_tokens"].file == str(stage2 / "model.safetensors")
    assert provenance["vision_model.post_layernorm.weight"].key == "vision_model.post_layernorm.weight"
    llm = [source for name, source in provenance.items() if name.startswith("language_model.")]
    assert {Path(str(source.file)).parent for source in llm} == {llama}


def test_a_bert_build_names_its_sources_too(blip2, llama):
    """The BLIP-2 recipe from BERT: what is copied equals its file's tensor; the rest is derived or new, and says so."""
    built = build_model(dict(VISION, model_type="vit"), blip2 / "bert", llama, num_query_tokens=NUM_QUERY)
    state, provenance = built.model.state_dict(), built.provenance
    kinds = {}
    for name, tensor in state.items():
        source = provenance[name]
        kinds.setdefault(source.kind, set()).add(name.split(".")[0])
        if source.kind == "copied":
            assert torch.equal(tensor, _read(source)), name
    assert kinds["new"] == {
        "vision_model",
        "query_tokens",
        "qformer",
        "language_projection",
    }  # random: cross-attention
    assert all(".crossattention." in n for n, s in provenance.items() if s.kind == "new" and n.startswith("qformer."))
    query_ffn = provenance["qformer.encoder.layer.1.intermediate_query.dense.weight"]
    assert query_ffn.key == "encoder.layer.1.intermediate.dense.weight" and "copy of BERT's text FFN" in query_ffn.note
    assert provenance["qformer.embeddings.position_embeddings.weight"].kind == "derived"  # token type 0 folded in
    embedding = provenance["language_model.model.embed_tokens.weight"]  # SmolLM2's vocabulary + the <image> row
    assert embedding.kind == "derived" and "image token" in embedding.note
    assert torch.equal(state["language_model.model.embed_tokens.weight"][:-1], _read(embedding))


def test_stage_2_alone_is_refused_unless_the_qformer_reads_no_text(blip2):
    stage2 = blip2 / "stage2-opt"
    with pytest.raises(ValueError, match=r"lacks the text embeddings and text FFN.*Pass `qformer_text`"):
        build_model(stage2, stage2, stage2)
    with pytest.raises(ValueError, match=r"no Q-Former text embeddings \(a stage-2 checkpoint\?\)"):
        build_model(stage2, stage2, stage2, qformer_text=blip2 / "stage2-t5")
    with pytest.raises(ValueError, match=r"`qformer_text` completes a BLIP-2 Q-Former; .* is a 'bert' checkpoint"):
        build_model(stage2, blip2 / "bert", stage2, qformer_text=blip2 / "stage1")
    with pytest.raises(ValueError, match="holds the LLM's tokenizer only; pass `qformer_tokenizer`"):
        build_model(stage2, stage2, stage2, qformer_text_input=False)
    with pytest.raises(ValueError, match=r"holds no LLM .* stage-1 checkpoint"):
        build_model(stage2, stage2, blip2 / "stage1", qformer_text=blip2 / "stage1")

    ablation = build_model(stage2, stage2, stage2, qformer_text_input=False, qformer_tokenizer=blip2 / "bert")
    text = [name for name in ablation.provenance if _is_text_ffn(name)]
    assert len(text) == 6 * QFORMER["num_hidden_layers"]
    assert all(ablation.provenance[name].kind == "new" for name in text)  # unused by the BLIP-2-style Q-Former
    assert ablation.provenance["qformer.embeddings.word_embeddings.weight"].kind == "new"


def test_cli_builds_from_blip2_and_prints_the_sources(blip2, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["build", "--help"])
    assert "Blip2ForImageTextRetrieval" in capsys.readouterr().out
    stage2, stage1 = blip2 / "stage2-t5", blip2 / "stage1"
    argv = ["build", "--blip2", str(stage2), "--qformer-text", str(stage1), "--output", str(tmp_path / "built")]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert f"qformer.embeddings.word_embeddings (1 tensor): copied from {stage1}/model.safetensors" in out
    assert "language_model (" in out and f"copied from {stage2}/model.safetensors [language_model]" in out
    model = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "built")
    with safe_open(str(stage2 / "model.safetensors"), framework="pt") as weights:
        assert torch.equal(model.query_tokens.detach(), weights.get_tensor("query_tokens"))
    assert cli_main(["build", "--qformer", str(stage2), "--output", str(tmp_path / "x")]) == 2  # --vision, --llm?
    assert "give --vision, --llm" in capsys.readouterr().err


def test_paper_config_starts_from_blip2_and_reweights_okvqa():
    model_args, data_args, training_args = parse_config(
        CONFIGS / "instructblip_vicuna7b.yaml", ["--training.use_cpu", "true", "--training.report_to", "none"]
    )
    assert model_args.model_name_or_path is None
    assert model_args.vision == model_args.qformer != model_args.llm  # ViT-g + Q-Former of BLIP-2, Vicuna's LLM
    assert "blip2" in model_args.qformer and "itm" in model_args.qformer_text and "vicuna" in model_args.llm
    multipliers = training_args.mixture_multipliers
    assert multipliers["okvqa"] > 1 > multipliers["a_okvqa"]  # arXiv 2305.06500 §2.4
    assert set(multipliers) <= set(data_args.datasets)


def test_train_config_takes_the_stage_1_folder_only_when_building():
    from hf_instructblip.training.arguments import ModelArguments

    assert ModelArguments(vision="b", qformer="b", llm="b", qformer_text="s1").qformer_text == "s1"
    with pytest.raises(ValueError, match="`qformer_text` completes a BLIP-2 `qformer`"):
        ModelArguments(model_name_or_path="Salesforce/instructblip-vicuna-7b", qformer_text="s1")
