"""InstructBlipTrainer and the collator's image transforms: random crops for training batches only, the plain resize
for evaluation batches, a new epoch's crops at every epoch, and persistent workers refused with random crops."""

from __future__ import annotations

import pytest
from transformers import TrainerControl, TrainerState

from conftest import make_processor, model_for
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments


@pytest.fixture(scope="module")
def setup(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    dataset = concatenate_mixture(synthetic_mixture(SYNTHETIC_HELD_IN[:2], 4, seed=0, image_size=32))
    return processor, dataset, model_for(processor, "llama")


def _trainer(setup, tmp_path, **overrides) -> InstructBlipTrainer:
    processor, dataset, model = setup
    args = InstructBlipTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=2, **overrides
    )
    collator = InstructBlipDataCollator.for_model(model, processor)
    return InstructBlipTrainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=collator
    )


def test_random_crops_for_training_batches_only(setup, tmp_path):
    trainer = _trainer(setup, tmp_path)
    collator = trainer.data_collator
    assert collator.train_transform is not None
    assert trainer.get_train_dataloader().collate_fn.train_transform is not None
    assert trainer.get_eval_dataloader().collate_fn.train_transform is None  # LAVIS evaluates on the plain resize
    assert trainer.get_test_dataloader(setup[1]).collate_fn.train_transform is None
    assert trainer.data_collator is collator  # restored


def test_every_epoch_tells_the_collator(setup, tmp_path):
    trainer = _trainer(setup, tmp_path)
    control = TrainerControl()
    for epoch, expected in ((0.0, 0), (1.0, 1), (2.5, 2)):  # a run resumed mid-epoch starts at a fractional epoch
        trainer.callback_handler.on_epoch_begin(trainer.args, TrainerState(epoch=epoch), control)
        assert trainer.data_collator.epoch == expected


def test_persistent_workers_are_refused_with_random_crops(setup, tmp_path):
    trainer = _trainer(setup, tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True)
    with pytest.raises(ValueError, match="dataloader_persistent_workers keeps copies of the data collator"):
        trainer.callback_handler.on_train_begin(trainer.args, TrainerState(), TrainerControl())
