"""Evaluation beyond the reward: distribution, prompt-agreement and diversity metrics (torchmetrics).

    features.py   sample -> feature vector extractors (toy classifiers, a local CLIP, Inception, pixels)
    metrics.py    FID / KID / CLIPScore (torchmetrics) and within-prompt diversity on those features
    hacking.py    the in-run probe: diversity and distance to the base model before/after, the hacking warning
    compare.py    drl-eval: several models on the same prompts and noise, side by side
    cli.py        the drl-eval entry point (Hydra)
"""
