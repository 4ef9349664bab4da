"""Batches that flow between the collector, the rewards and the algorithms.

Shape legend:
    B  samples in the batch            S  denoising steps per sample
    C  latent channels                 h, w  latent height, width
    L  prompt tokens                   D  text hidden size
    H, W  decoded image height, width  P  pooled text embedding size (SDXL, SD3)
    F  frames of a clip (video models, drl/models/t2v.py): a latent is [C, F, h, w] where an image's
       is [C, h, w], and samples are [B, F, 3, H, W] (frame-major) where images are [B, 3, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Conditioning:
    """What the denoiser is conditioned on, per sample: named tensors whose first dim is the batch.

    The model that builds it (``T2IModel.encode_prompts``) is the one that consumes it
    (``T2IModel.denoiser_kwargs``); the collector and the algorithms only index, concatenate
    and move it. Entries by model family:

        SD 1.x/2.x   encoder_hidden_states [B, L, D]
        SDXL         encoder_hidden_states [B, L, D], text_embeds [B, P], time_ids [B, 6]
        SD3 (flow)   encoder_hidden_states [B, L, D], pooled_projections [B, P]
        FLUX.1       encoder_hidden_states [B, L, D], pooled_projections [B, P] (+ Kontext: source_latents [B, C, h, w])
        Qwen-Image   encoder_hidden_states [B, L, D], encoder_hidden_states_mask [B, L] (L: the batch's longest prompt)
        Z-Image      the same as Qwen-Image
        FLUX.2       encoder_hidden_states [B, L, 3D] (L: max_sequence_length, padding included)
    """

    tensors: dict[str, torch.Tensor]

    def __getitem__(self, key):
        """cond["name"] -> that tensor; cond[index] -> the Conditioning of those samples."""
        if isinstance(key, str):
            return self.tensors[key]
        return Conditioning({k: v[key] for k, v in self.tensors.items()})

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Batches joined. Text of another length (Qwen-Image's and Z-Image's prompts are as long as the longest in
        their batch) is zero-padded on the token axis; those models carry a token mask that is padded with it."""
        return Conditioning({k: torch.cat(_pad_tokens([p.tensors[k] for p in parts])) for k in parts[0].tensors})

    def expand(self, n: int) -> Conditioning:
        """A batch of one -> n views of it (no copy)."""
        return Conditioning({k: v.expand(n, *v.shape[1:]) for k, v in self.tensors.items()})

    def to(self, *args, **kwargs) -> Conditioning:
        return Conditioning({k: v.to(*args, **kwargs) for k, v in self.tensors.items()})


def _pad_tokens(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """[B_k, L_k, ...] with different L_k -> each zero-padded to the longest L (dim 1); others unchanged."""
    if len({t.shape[1:] for t in tensors}) == 1 or any(t.ndim < 2 for t in tensors):
        return tensors
    longest = max(t.shape[1] for t in tensors)
    return [torch.cat([t, t.new_zeros(t.shape[0], longest - t.shape[1], *t.shape[2:])], dim=1) for t in tensors]


@dataclass
class Rollout:
    """Trajectories of the denoising MDP for one epoch, as the collector returns them.

    Step i maps ``latents[:, i]`` (x_t at ``timesteps[:, i]``) to ``latents[:, i + 1]``. With an SDE window
    (drl.sde_window) the stored steps are the window's alone: S is its size, latents[:, 0] is x at its
    first step, and x_0 is ``clean_latents``.
    """

    prompts: list[str]  # [B]
    metadata: list[dict]  # [B] whatever the prompt source knows (e.g. the toy scene)
    cond: Conditioning  # [B, ...] the prompts' conditioning (e.g. encoder_hidden_states [B, L, D])
    uncond: Conditioning | None  # [B, ...] empty-prompt conditioning when guidance is on
    latents: torch.Tensor  # [B, S + 1, C, h, w]  x_T ... x_0
    timesteps: torch.Tensor  # [B, S] the denoiser's timestep: long (DDPM/DDIM) or float σ·1000 (flow)
    log_probs: torch.Tensor  # [B, S] float32, exact (summed) log p(x_{t-1} | x_t) at sampling time
    stochastic: torch.Tensor  # [S] bool: steps with a density (trainable by likelihood methods)
    samples: torch.Tensor | None  # [B, 3, H, W] float in [0, 1], the decoded x_0; None when every reward reads latents
    rewards: torch.Tensor | None = None  # [B] float32, filled in by the train loop (on a control task, by the collector)
    reward_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B] unweighted
    means: torch.Tensor | None = None  # [B, S, C, h, w] float32 μ_θ(x_t) of each step at sampling (GRPO-Guard's ratio)
    clean_latents: torch.Tensor | None = None  # [B, C, h, w] x_0 when the steps stored end before it (an SDE window)

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    def __len__(self) -> int:
        return self.batch_size

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[1]

    @property
    def prompt_embeds(self) -> torch.Tensor:
        """The text encoder's hidden states [B, L, D] (every model family has them)."""
        return self.cond["encoder_hidden_states"]

    @property
    def final_latents(self) -> torch.Tensor:
        """x_0 in latent space: [B, C, h, w]."""
        return self.latents[:, -1] if self.clean_latents is None else self.clean_latents


@dataclass
class DataBatch:
    """Clean training data for algorithms that read a dataset instead of sampling (pretraining).

    images: [B, C, h, w] in the model's latent space ([-1, 1] pixels for the toy model)
    """

    images: torch.Tensor
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class PromptBatch:
    """Prompts only, for algorithms that sample inside their update (AlignProp)."""

    prompts: list[str]  # [B]
    metadata: list[dict]  # [B]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class TransitionBatch:
    """Transitions (s, a, r, s') for control algorithms, from a dataset or a replay buffer.

    observations, next_observations: [N, O]; actions: [N, A] in [-1, 1]; rewards,
    terminations: [N] float32. ``episode_returns`` lists the returns of episodes that
    finished while collecting (online algorithms report their mean as reward_mean).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminations: torch.Tensor
    episode_returns: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return self.rewards.shape[0]

    def minibatch(self, index: torch.Tensor) -> "TransitionBatch":
        pick = lambda x: x[index]  # noqa: E731
        return TransitionBatch(*(pick(x) for x in (self.observations, self.actions, self.rewards, self.next_observations, self.terminations)))


@dataclass
class PreferenceBatch:
    """Pairs of images for the same prompt, the chosen one preferred (offline DPO).

    chosen, rejected: [P, C, h, w] in the model's latent space; prompts: [P].
    """

    prompts: list[str]
    chosen: torch.Tensor
    rejected: torch.Tensor

    def __len__(self) -> int:
        return 2 * len(self.prompts)
