"""Control tasks for diffusion policies: gymnasium environments and offline datasets.

Gymnasium loads on first use.
"""
