"""TiTok's class-conditional generators (MaskGIT framework) over 1D tokens, one concept in one package:

- `config`:  the frozen generator and sampling configs,
- `base`:    the shared contract (`logits`, `generate`) and the token-id layout,
- `bert`:    the BERT-style transformer (TiTok-L-32, TiTok-B-64; MaskGIT's is in baselines/),
- `uvit`:    the U-ViT-style transformer with long skips (TiTok-S-128),
- `sampler`: the MaskGIT sampling loop (TiTok's recipe or MaskGIT's) with per-sample seeds and batched guidance,
- `presets`: the registered generator presets.
"""
