"""The paper's 26 datasets (arXiv 2305.06500 §2.1, Figure 2) as [`DatasetSpec`] entries.

13 held-in (trained on) and 13 held-out (zero-shot evaluation only), held-out in the paper's results order (arXiv
2305.06500 Table 1). `registry.py` turns the two tuples into `REGISTRY`, `HELD_IN` and `HELD_OUT`. This table is
checked row by row against `REGISTRY` (tests/data/test_registry.py); edit both together.

| name               | held     | paper category        | hub id                           | metric        | method   |
|--------------------|----------|-----------------------|----------------------------------|---------------|----------|
| coco_caption       | held-in  | image captioning      | yerevann/coco-karpathy           | cider         | generate |
| web_capfilt        | held-in  | image captioning      | -                                | -             | generate |
| textcaps           | held-in  | captioning + reading  | lmms-lab-encoder/TextCaps        | cider         | generate |
| vqav2              | held-in  | image QA              | Multimodal-Fatima/VQAv2_train    | vqa_accuracy  | generate |
| okvqa              | held-in  | knowledge-grounded QA | Multimodal-Fatima/OK-VQA_train   | vqa_accuracy  | generate |
| a_okvqa            | held-in  | knowledge-grounded QA | HuggingFaceM4/A-OKVQA            | accuracy      | rank     |
| ocr_vqa            | held-in  | QA + reading (OCR)    | howard-hou/OCR-VQA               | accuracy      | generate |
| vqav2_qg           | held-in  | question generation   | Multimodal-Fatima/VQAv2_train    | -             | generate |
| okvqa_qg           | held-in  | question generation   | Multimodal-Fatima/OK-VQA_train   | -             | generate |
| a_okvqa_qg         | held-in  | question generation   | HuggingFaceM4/A-OKVQA            | -             | generate |
| llava_detail       | held-in  | LLaVA-Instruct-150K   | liuhaotian/LLaVA-Instruct-150K   | -             | generate |
| llava_reasoning    | held-in  | LLaVA-Instruct-150K   | liuhaotian/LLaVA-Instruct-150K   | -             | generate |
| llava_conversation | held-in  | LLaVA-Instruct-150K   | liuhaotian/LLaVA-Instruct-150K   | -             | generate |
| nocaps             | held-out | image captioning      | lmms-lab-encoder/NoCaps          | cider         | generate |
| flickr30k          | held-out | image captioning      | umaru97/flickr30k_train_val_test | cider         | generate |
| gqa                | held-out | visual reasoning      | lmms-lab-encoder/GQA             | accuracy      | generate |
| vsr                | held-out | visual reasoning      | cambridgeltl/vsr_zeroshot        | accuracy      | rank     |
| iconqa             | held-out | visual reasoning      | lmms-lab-encoder/ICON-QA         | accuracy      | rank     |
| textvqa            | held-out | QA + reading (OCR)    | lmms-lab-encoder/textvqa         | vqa_accuracy  | generate |
| visdial            | held-out | visual conversation   | -                                | mrr           | rank     |
| hateful_memes      | held-out | image classification  | neuralcatcher/hateful_memes      | auc           | rank     |
| vizwiz             | held-out | image QA              | lmms-lab-encoder/VizWiz-VQA      | vqa_accuracy  | generate |
| scienceqa          | held-out | knowledge-grounded QA | lmms-lab-encoder/ScienceQA       | accuracy      | rank     |
| msvd_qa            | held-out | video QA              | -                                | accuracy      | rank     |
| msrvtt_qa          | held-out | video QA              | -                                | accuracy      | rank     |
| ivqa               | held-out | video QA              | -                                | ivqa_accuracy | generate |

Hub configurations (``hub_config``), splits, column maps and provenance are in each entry. No public Hub copy
(hub id "-"; each has a converter for its published raw format, used through ``load_instruction_dataset(name,
split, data_files=...)`` or `registry.convert_dataset` on your own ``datasets.Dataset``):

* web_capfilt: BLIP's CapFilt captions are published as json lists ``{"url", "caption"}`` outside the Hub
  (storage.googleapis.com); the images are web URLs of CC3M/CC12M/SBU images.
* visdial: the official VisDial v1.0 json keeps questions and answers in shared index tables;
  `converters.resolve_visdial` turns it into one row per dialog. ``HuggingFaceM4/VisDial`` exists (parquet) but its
  columns could not be verified offline, and ``jxu124/visdial`` lacks the 100 answer options that MRR needs.
* msvd_qa, msrvtt_qa, ivqa: only the annotations are public (json / csv); the videos are YouTube clips or archives
  you download yourself. Extract frames (the paper samples 4 uniformly, arXiv 2305.06500 §3.1) and add them to every
  row as a ``frames`` column (a list of image paths or images) before converting.

To add or change a dataset, edit its entry below (and its table row); the converter is picked by task shape from
`converters.py`, and `DatasetSpec` validates the entry when this module is imported.
"""

from __future__ import annotations

from .converters import (
    convert_captioning,
    convert_classification,
    convert_conversation,
    convert_multiple_choice,
    convert_question_generation,
    convert_visual_dialog,
    convert_vqa,
    convert_vqa_per_question,
)
from .spec import PRINTED_LIST, DatasetSpec

__all__ = ["HELD_IN_SPECS", "HELD_OUT_SPECS"]

_CAPTION_PROMPT = "A short image description:"  # paper
_SHORT_ANSWER_PROMPT = "Question: {question} Short answer:"  # paper (video QA); ours for image QA
_SCIENCEQA_PROMPT = "Context: {context} Question: {question} Options: {options}. Answer:"  # paper
_MC_PROMPT = "Question: {question} Options: {options}. Short answer:"  # ours
_QG_PROMPT = "Given the image, generate a question whose answer is: {answer}. Question:"  # paper's QG template 1

_VQA_COLUMNS = {"image": "image", "question": "question", "answers": "answers"}
# VQAv2 copies carry the ten annotators' answers and/or the consensus `multiple_choice_answer` (the fallback).
_VQAV2_COLUMNS = {**_VQA_COLUMNS, "answer": "multiple_choice_answer"}
_AOKVQA_MC_COLUMNS = {
    "image": "image",
    "question": "question",
    "options": "choices",
    "answer_index": "correct_choice_idx",
    "answers": "direct_answers",
}
# HuggingFaceM4/A-OKVQA keeps `choices` and `rationales` as lists but `direct_answers` as one string, the printed
# list ("['cigarette', 'cigarette', ...]", as in evalscope's a_okvqa benchmark page showing a validation row).
_AOKVQA_STRING_LISTS = {"direct_answers": PRINTED_LIST}
_AOKVQA_NOTE = (
    "HuggingFaceM4/A-OKVQA stores direct_answers as the printed form of a Python list (\"['ski', 'ski', ...]\"), "
    "parsed here (ast.literal_eval; a row that does not parse is a bad row); choices is a list, "
    "correct_choice_idx an int, image an Image struct."
)
_VIDEO_COLUMNS = {"frames": "frames", "question": "question", "answer": "answer"}
_LLAVA_COLUMNS = {"image": "image", "conversations": "conversations"}
_COCO_TRAIN2017 = "http://images.cocodataset.org/train2017"
# The lmms-lab evaluation copies moved to the lmms-lab-encoder organisation with their history: e.g. public code pins
# lmms-lab-encoder/ICON-QA at revision 94f9ba8, the last commit of lmms-lab/ICON-QA, with the same parquet names.
_MOVED_NOTE = " Formerly lmms-lab/{old} (moved to lmms-lab-encoder/)."
_FATIMA_NOTE = (
    "Columns image/question/answers (answers: list of 10 strings) are taken from the same uploader's "
    "VQAv2_sample_test / OK-VQA_train cards (same pipeline); this repo's own card was not readable offline."
)
_LLAVA_NOTE = (
    "Hub repo of json files, one per part; images are COCO train2017 file names, resolved against the COCO "
    "server (pass image_root=<your train2017 dir> to read a local copy). Zero-shot prompt '{question}' is ours."
)
_VIDEO_NOTE = (
    "No public Hub copy with videos: the annotations are the authors' json ({question, answer, id, video_id}); "
    "the videos must be downloaded and 4 frames per video extracted into a `frames` list column. Ranking needs the "
    "answer vocabulary: pass answer_candidates=... (LAVIS ranks over its answer list)."
)


def _llava_spec(name: str, data_file: str, note: str) -> DatasetSpec:
    """One of LLaVA-Instruct-150K's three parts: they differ only in their file."""
    return DatasetSpec(
        name=name,
        task_family="free_form",
        paper_category="LLaVA-Instruct-150K",
        held_out=False,
        hub_id="liuhaotian/LLaVA-Instruct-150K",
        hub_config=None,
        splits={"train": "train"},
        columns=_LLAVA_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt="{question}",
        convert=convert_conversation,
        hub_data_files={"train": data_file},
        image_root=_COCO_TRAIN2017,
        notes=note + _LLAVA_NOTE,
    )


#: The 13 held-in datasets (instruction tuning, arXiv 2305.06500 §2.1).
HELD_IN_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="coco_caption",
        task_family="captioning",
        paper_category="image captioning",
        held_out=False,
        hub_id="yerevann/coco-karpathy",
        hub_config=None,
        splits={"train": "train", "eval": "test"},
        columns={"image": "url", "captions": "sentences"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes="Karpathy split; images are COCO server URLs. LAVIS also trains on the 'restval' split.",
    ),
    DatasetSpec(
        name="web_capfilt",
        task_family="captioning",
        paper_category="image captioning",
        held_out=False,
        hub_id=None,
        hub_config=None,
        splits={"train": "train"},
        columns={"image": "url", "captions": "caption"},
        metric=None,
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes=(
            "No Hub copy: BLIP publishes CapFilt (14M synthetic captions by ViT-L) as json lists {'url', 'caption'} "
            "on storage.googleapis.com (ccs_synthetic_filtered_large.json); images are CC3M/CC12M/SBU web URLs. "
            "Trained on only; the paper reports no score."
        ),
    ),
    DatasetSpec(
        name="textcaps",
        task_family="captioning",
        paper_category="captioning + reading",
        held_out=False,
        hub_id="lmms-lab-encoder/TextCaps",
        hub_config=None,
        splits={"train": "train", "eval": "val"},
        columns={"image": "image", "captions": "caption_str"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes=(
            "Card: image, caption_str (list of the reference captions, as lmms-eval's textcaps/utils.py scores "
            "them), splits train/val/test. This Hub copy carries no OCR tokens, so none are added to the "
            "instruction." + _MOVED_NOTE.format(old="TextCaps")
        ),
    ),
    DatasetSpec(
        name="vqav2",
        task_family="short_vqa",
        paper_category="image QA",
        held_out=False,
        hub_id="Multimodal-Fatima/VQAv2_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQAV2_COLUMNS,
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "HuggingFaceM4/VQAv2 is a loading script (unsupported by datasets>=4) and lmms-lab-encoder/VQAv2 has no "
            "train split (its answers are {answer, answer_confidence, answer_id} dicts). A row without `answers` (or "
            "with an empty list) falls back to `multiple_choice_answer`, the consensus answer every VQAv2 copy "
            "carries. Zero-shot prompt is ours. " + _FATIMA_NOTE
        ),
    ),
    DatasetSpec(
        name="okvqa",
        task_family="knowledge_vqa",
        paper_category="knowledge-grounded QA",
        held_out=False,
        hub_id="Multimodal-Fatima/OK-VQA_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQA_COLUMNS,
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "Card lists image, question, answers (10 strings). Evaluation copies: Multimodal-Fatima/OK-VQA_test, "
            "lmms-lab-encoder/OK-VQA (split val2014). OK-VQA is scored with VQA accuracy; the paper's category "
            "column says accuracy. Zero-shot prompt is ours."
        ),
    ),
    DatasetSpec(
        name="a_okvqa",
        task_family="multiple_choice",
        paper_category="knowledge-grounded QA",
        held_out=False,
        hub_id="HuggingFaceM4/A-OKVQA",
        hub_config=None,
        splits={"train": "train", "eval": "validation"},
        columns=_AOKVQA_MC_COLUMNS,
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_MC_PROMPT,
        convert=convert_multiple_choice,
        string_lists=_AOKVQA_STRING_LISTS,
        notes=(
            "Multiple-choice form (arXiv 2305.06500 §2.4 down-weights 'A-OKVQA (multiple choice)'); answers keep "
            "the ten direct answers for direct-answer scoring. " + _AOKVQA_NOTE + " Test answers are hidden. "
            "Zero-shot prompt is ours."
        ),
    ),
    DatasetSpec(
        name="ocr_vqa",
        task_family="ocr_vqa",
        paper_category="QA + reading (OCR)",
        held_out=False,
        hub_id="howard-hou/OCR-VQA",
        hub_config=None,
        splits={"train": "train", "eval": "test"},
        columns={
            "image": "image",
            "questions": "questions",
            "question_answers": "answers",
            "ocr_tokens": "ocr_tokens",
        },
        metric="accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa_per_question,
        notes="One row per book cover with parallel questions/answers lists: one sample per question. Prompt ours.",
    ),
    DatasetSpec(
        name="vqav2_qg",
        task_family="question_generation",
        paper_category="question generation",
        held_out=False,
        hub_id="Multimodal-Fatima/VQAv2_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQAV2_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt=_QG_PROMPT,
        convert=convert_question_generation,
        notes=(
            "Question generation from VQAv2: the answer is the most frequent reference answer "
            "(`multiple_choice_answer` when a row has no `answers`). " + _FATIMA_NOTE
        ),
    ),
    DatasetSpec(
        name="okvqa_qg",
        task_family="question_generation",
        paper_category="question generation",
        held_out=False,
        hub_id="Multimodal-Fatima/OK-VQA_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQA_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt=_QG_PROMPT,
        convert=convert_question_generation,
        notes="Question generation from OKVQA: the answer is the most frequent reference answer.",
    ),
    DatasetSpec(
        name="a_okvqa_qg",
        task_family="question_generation",
        paper_category="question generation",
        held_out=False,
        hub_id="HuggingFaceM4/A-OKVQA",
        hub_config=None,
        splits={"train": "train"},
        columns=_AOKVQA_MC_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt=_QG_PROMPT,
        convert=convert_question_generation,
        string_lists=_AOKVQA_STRING_LISTS,
        notes="Question generation from A-OKVQA: the answer is the correct choice's text. " + _AOKVQA_NOTE,
    ),
    _llava_spec("llava_detail", "detail_23k.json", "Detailed description part. "),
    _llava_spec("llava_reasoning", "complex_reasoning_77k.json", "Complex reasoning part. "),
    _llava_spec(
        "llava_conversation",
        "conversation_58k.json",
        "Multi-turn conversation part: one sample per assistant turn, earlier rounds as text. ",
    ),
)

#: The 13 held-out datasets (zero-shot evaluation), in the results order of arXiv 2305.06500 Table 1.
HELD_OUT_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="nocaps",
        task_family="captioning",
        paper_category="image captioning",
        held_out=True,
        hub_id="lmms-lab-encoder/NoCaps",
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "image", "captions": "annotations_captions"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes=(
            "Validation split (4,500 images), as in the paper; annotations_captions holds the references (as "
            "lmms-eval's nocaps/utils.py scores them)." + _MOVED_NOTE.format(old="NoCaps")
        ),
    ),
    DatasetSpec(
        name="flickr30k",
        task_family="captioning",
        paper_category="image captioning",
        held_out=True,
        hub_id="umaru97/flickr30k_train_val_test",
        hub_config=None,
        splits={"eval": "test"},
        columns={"image": "image", "captions": "caption"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        row_filter={"split": ("test",)},
        notes=(
            "The paper scores Karpathy's 1K test images (arXiv 2305.06500 Table 1; LAVIS' flickr30k_test.json). "
            "This copy has nlphuji/flickr30k's columns (image, caption: 5 strings, sentids, split, img_id, filename; "
            "`split` is Karpathy's assignment) in parquet splits train 29,000 / val 1,014 / test 1,000, Karpathy's "
            "sizes. The filter keeps rows whose `split` column says 'test', so the same spec also reads "
            "the full 31,014-image nlphuji table (data_files=...) correctly. Not used: "
            "lmms-lab-encoder/flickr30k (formerly lmms-lab/flickr30k, lmms-eval's copy): its single 'test' split "
            "holds all 31,783 images with no split column, so the Karpathy test cannot be selected without a list; "
            "nlphuji/flickr_1k_test_image_text_retrieval (1,000 images) and nlphuji/flickr30k are loading scripts, "
            "which datasets>=4 no longer runs."
        ),
    ),
    DatasetSpec(
        name="gqa",
        task_family="short_vqa",
        paper_category="visual reasoning",
        held_out=True,
        hub_id="lmms-lab-encoder/GQA",
        hub_config="testdev_balanced_instructions",
        splits={"eval": "testdev"},
        columns={"image": "imageId", "question": "question", "answer": "answer"},
        metric="accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        image_table=("testdev_balanced_images", "id", "image"),
        notes=(
            "Images live in a second configuration (testdev_balanced_images: id, image), looked up by imageId "
            "(as lmms-eval does); with local files pass image_lookup. Zero-shot prompt is ours."
            + _MOVED_NOTE.format(old="GQA")
        ),
    ),
    DatasetSpec(
        name="vsr",
        task_family="binary",
        paper_category="visual reasoning",
        held_out=True,
        hub_id="cambridgeltl/vsr_zeroshot",
        hub_config=None,
        splits={"eval": "test"},
        columns={"image": "image_link", "question": "caption", "label": "label"},
        metric="accuracy",
        inference="rank",
        zero_shot_prompt='Based on the image, is this statement true or false? "{question}" Answer:',
        convert=convert_classification,
        candidates=("false", "true"),
        notes=(
            "Zero-shot split, test file (jsonl: image, image_link, caption, label 0/1, relation, ...). Images are "
            "COCO server URLs (image_link). Verbaliser false/true ranked; zero-shot prompt is ours."
        ),
    ),
    DatasetSpec(
        name="iconqa",
        task_family="multiple_choice",
        paper_category="visual reasoning",
        held_out=True,
        hub_id="lmms-lab-encoder/ICON-QA",
        hub_config=None,
        splits={"eval": "test"},
        columns={"image": "query_image", "question": "question", "options": "choices", "answer": "answer"},
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_MC_PROMPT,
        convert=convert_multiple_choice,
        row_filter={"ques_type": ("choose_txt",)},
        string_lists={"choices": ","},
        notes=(
            "Multi-text-choice sub-task only (ques_type choose_txt; the paper's 'multi-choice' test). Card: "
            "question_id, question, choices (string), answer (string: the right choice's text), query_image, "
            "choice_image_0/1, ques_type, label, grade, skills; splits val (21,488) and test (21,489). The test "
            "split carries answers (public pipelines score lmms-lab-encoder/ICON-QA's test split from its `answer` "
            "column), so the paper's test split is used. choices is stored as one string "
            "with the options joined by ',' (lmms-eval's iconqa/utils.py splits it there); a printed list "
            "(\"['a', 'b']\") is parsed as one instead, and a right answer that itself contains a comma is glued "
            "back together. Zero-shot prompt is ours." + _MOVED_NOTE.format(old="ICON-QA")
        ),
    ),
    DatasetSpec(
        name="textvqa",
        task_family="ocr_vqa",
        paper_category="QA + reading (OCR)",
        held_out=True,
        hub_id="lmms-lab-encoder/textvqa",
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "image", "question": "question", "answers": "answers", "ocr_tokens": "ocr_tokens"},
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "Validation split (5,000 questions; test answers are hidden). OCR tokens precede the prompt "
            "('OCR tokens: ...'); prompt is ours." + _MOVED_NOTE.format(old="textvqa")
        ),
    ),
    DatasetSpec(
        name="visdial",
        task_family="visual_dialog",
        paper_category="visual conversation",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "image", "context": "caption", "dialog": "dialog"},
        metric="mrr",
        inference="rank",
        zero_shot_prompt="Dialog history: {context}\nQuestion: {question} Short answer:",
        convert=convert_visual_dialog,
        notes=(
            "No verifiable Hub copy: the official VisDial v1.0 val json keeps questions/answers in index tables; "
            "resolve_visdial gives one row per dialog (image, caption, dialog rounds with answer_options). "
            "HuggingFaceM4/VisDial exists but its columns were not verifiable offline; jxu124/visdial has no answer "
            "options. One sample per round, ranked over its 100 options. Zero-shot prompt is ours."
        ),
    ),
    DatasetSpec(
        name="hateful_memes",
        task_family="classification",
        paper_category="image classification",
        held_out=True,
        hub_id="neuralcatcher/hateful_memes",
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "img", "label": "label", "ocr_tokens": "text"},
        metric="auc",
        inference="rank",
        zero_shot_prompt='This is an image with: "{ocr}" written on it. Is it hateful? Answer:',
        convert=convert_classification,
        candidates=("no", "yes"),
        hub_data_files={"validation": "dev_seen.jsonl"},
        image_root="hf://datasets/neuralcatcher/hateful_memes",
        notes=(
            "Official Facebook release mirrored as jsonl (id, img, label, text) + img/ folder; val = dev_seen "
            "(500 memes). The meme text is the row's OCR token. AUC over P('yes'); zero-shot prompt is ours."
        ),
    ),
    DatasetSpec(
        name="vizwiz",
        task_family="short_vqa",
        paper_category="image QA",
        held_out=True,
        hub_id="lmms-lab-encoder/VizWiz-VQA",
        hub_config=None,
        splits={"eval": "val"},
        columns=_VQA_COLUMNS,
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        results_caveat=(
            "scored on val (4,319 questions), not the paper's test-dev (EvalAI server): not comparable to the paper"
        ),
        notes=(
            "The paper scores test-dev on the EvalAI server (answers hidden; this copy's 'test' split, 8,000 "
            "questions, has no answers); this registry's eval split is the public val split (4,319 questions, "
            "answers: 10 strings), so its scores are not comparable to the paper's (results_caveat). Zero-shot "
            "prompt is ours." + _MOVED_NOTE.format(old="VizWiz-VQA")
        ),
    ),
    DatasetSpec(
        name="scienceqa",
        task_family="multiple_choice",
        paper_category="knowledge-grounded QA",
        held_out=True,
        hub_id="lmms-lab-encoder/ScienceQA",
        hub_config="ScienceQA-IMG",
        splits={"eval": "test"},
        columns={
            "image": "image",
            "question": "question",
            "options": "choices",
            "answer_index": "answer",
            "context": "hint",
        },
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_SCIENCEQA_PROMPT,
        convert=convert_multiple_choice,
        notes=(
            "Image subset (config ScienceQA-IMG), test split (2,017); choices is a list, answer an int index. "
            "Paper's prompt; an empty hint becomes 'N/A' (Qwen-VL's convention)." + _MOVED_NOTE.format(old="ScienceQA")
        ),
    ),
    DatasetSpec(
        name="msvd_qa",
        task_family="video_qa",
        paper_category="video QA",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "test"},
        columns=_VIDEO_COLUMNS,
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes="MSVD-QA test_qa.json; video_id maps to a YouTube clip via youtube_mapping.txt. " + _VIDEO_NOTE,
    ),
    DatasetSpec(
        name="msrvtt_qa",
        task_family="video_qa",
        paper_category="video QA",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "test"},
        columns=_VIDEO_COLUMNS,
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes="MSRVTT-QA test_qa.json (also category_id); video_id N is MSR-VTT's videoN. " + _VIDEO_NOTE,
    ),
    DatasetSpec(
        name="ivqa",
        task_family="video_qa",
        paper_category="video QA",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "test"},
        columns={
            "frames": "frames",
            "question": "question",
            "answers": ("answer1", "answer2", "answer3", "answer4", "answer5"),
        },
        metric="ivqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "No Hub copy: iVQA (Just Ask) is a csv (video_id, question, answer1..answer5, ...) with YouTube videos; "
            "add a `frames` column (4 frames per clip). Target = most frequent of the five answers; iVQA accuracy "
            "is min(#matching answers / 2, 1)."
        ),
    ),
)
