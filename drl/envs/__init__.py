"""Control tasks for diffusion policies: gymnasium environments and offline datasets.

Kept light to import (config validation reads drl.envs.validate); gymnasium loads on first use.
"""
