"""TiTok generator presets (release: configs/infer/TiTok/*.yaml and sample_imagenet_titok.py) and tiny test ones."""

from __future__ import annotations

from titok.generators.bert import BertGenerator
from titok.generators.config import GeneratorConfig, SamplingConfig
from titok.generators.uvit import UViTGenerator
from titok.registry import ModelSpec, register


def build_generator(config: GeneratorConfig):
    return BertGenerator(config) if config.arch == "bert" else UViTGenerator(config)


HUB = "yucornetto/generator_titok_{}_imagenet"
_BERT = dict(arch="bert", hidden_size=768, num_layers=24, num_heads=16, intermediate_size=3072)
_UVIT = dict(arch="uvit", hidden_size=1024, num_layers=20, num_heads=16, intermediate_size=4096)

_RELEASED = {
    "titok_l32": ("TiTok-L-32", GeneratorConfig(**_BERT, num_tokens=32, sampling=SamplingConfig(
        num_steps=8, randomize_temperature=9.5, guidance_scale=4.5, guidance_decay="linear"))),
    "titok_b64": ("TiTok-B-64", GeneratorConfig(**_BERT, num_tokens=64, sampling=SamplingConfig(
        num_steps=8, randomize_temperature=11.0, guidance_scale=3.0, guidance_decay="linear"))),
    "titok_s128": ("TiTok-S-128", GeneratorConfig(**_UVIT, num_tokens=128, sampling=SamplingConfig(
        num_steps=64, randomize_temperature=2.8, guidance_scale=6.9, guidance_decay="power-cosine"))),
}
for _name, (_display, _cfg) in _RELEASED.items():
    register(ModelSpec(_name, "generator", "titok", _cfg, build_generator, _display,
                       released_weights=HUB.format(_name.removeprefix("titok_")), tokenizer=_name))

# The paper's 512x512 generators (TiTok-L-64 / B-128 at 512). No checkpoint or config was released; we use the
# 256 models' BERT size and TiTok-L-32's sampling defaults and say so wherever they are reported.
_PAPER_512 = (("titok_l64_512", "TiTok-L-64 (512)", 64), ("titok_b128_512", "TiTok-B-128 (512)", 128))
for _name, _display, _tokens in _PAPER_512:
    register(ModelSpec(_name, "generator", "titok", GeneratorConfig(**_BERT, num_tokens=_tokens), build_generator,
                       _display, tokenizer=_name,
                       notes="paper configuration at 512x512; no public checkpoint; size and sampling assumed"))

_TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_tokens=8, codebook_size=64)
register(ModelSpec("titok_tiny_bert", "generator", "titok", GeneratorConfig(arch="bert", **_TINY), build_generator,
                   "titok_tiny_bert", tokenizer="titok_tiny_2stage", test_only=True))
register(ModelSpec("titok_tiny_uvit", "generator", "titok",
                   GeneratorConfig(arch="uvit", **_TINY, sampling=SamplingConfig(
                       num_steps=6, randomize_temperature=2.8, guidance_scale=6.9, guidance_decay="power-cosine")),
                   build_generator, "titok_tiny_uvit", tokenizer="titok_tiny_2stage", test_only=True))
