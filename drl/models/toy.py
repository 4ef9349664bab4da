"""The toy text-to-image architecture: real diffusers/transformers components, small.

A 32x32 pixel-space UNet2DConditionModel (cross-attention at 8x8), a 2-layer
CLIPTextModel and a word-level tokenizer over the toy world's vocabulary. It is
what ``drl-train algorithm=pretrain model.from_scratch=true`` trains; the trained
result ships in drl/assets/toy_t2i.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from drl.models.t2i import T2IModel
from drl.toyworld import vocabulary

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]
MAX_TOKENS = 12  # "a small purple triangle at the bottom right" + <bos> + <eos> = 10
TEXT_DIM = 64

# Same noise schedule family as Stable Diffusion, with SD's DDIM conventions
# (steps_offset=1, set_alpha_to_one=False) so every DDIM step with eta > 0 is stochastic.
TOY_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    prediction_type="epsilon",
    clip_sample=True,
    clip_sample_range=1.0,
    steps_offset=1,
    set_alpha_to_one=False,
    timestep_spacing="leading",
)
# The toy video model's: v-prediction with zero terminal SNR and trailing steps (Lin et al. 2024, "Common Diffusion
# Noise Schedules and Sample Steps are Flawed"; CogVideoX's too), so the first sampling step starts from pure noise
# and the high-noise steps, where a clip's layout and direction of motion are decided, carry training signal.
TOY_VIDEO_SCHEDULER_CONFIG = dict(
    TOY_SCHEDULER_CONFIG, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
)


def build_toy_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one id per toy-world word (default: the image world's), padded to MAX_TOKENS like CLIP's."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + (vocabulary() if words is None else list(words)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=MAX_TOKENS,
    )


def build_toy_text_encoder(
    tokenizer: PreTrainedTokenizerFast, seed: int, token_embedding_std: float | None = None
) -> CLIPTextModel:
    """A 2-layer CLIPTextModel over the tokenizer's vocabulary (seeded); ``token_embedding_std`` redraws its word
    embeddings with that std (default: CLIP's init)."""
    torch.manual_seed(seed)
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=2 * TEXT_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    if token_embedding_std is not None:
        with torch.no_grad():
            encoder.get_input_embeddings().weight.normal_(0.0, token_embedding_std)
    return encoder


def build_toy_t2i(resolution: int = 32, seed: int = 0) -> T2IModel:
    """Randomly initialised toy components (seeded)."""
    tokenizer = build_toy_tokenizer()
    text_encoder = build_toy_text_encoder(tokenizer, seed)
    torch.manual_seed(seed + 1)
    denoiser = UNet2DConditionModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler_config = dict(DDIMScheduler(**TOY_SCHEDULER_CONFIG).config)
    return T2IModel(tokenizer, text_encoder, denoiser, scheduler_config, vae=None)
