"""The public loaders return models ready for inference: eval mode, so dropout cannot make a sample depend on its
batch. Training builds through `titok.registry.create` and switches to train mode itself."""

from __future__ import annotations

import pytest

import baselines
import titok


@pytest.mark.parametrize("loader, preset", [
    (titok.load_tokenizer, "titok_tiny_vq"),
    (titok.load_generator, "titok_tiny_bert"),
    (baselines.load_tokenizer, "maskgit_vqgan_tiny"),
    (baselines.load_generator, "maskgit_tiny"),
])
def test_loaded_models_are_in_eval_mode(loader, preset):
    model = loader(preset)
    assert not any(m.training for m in model.modules())
