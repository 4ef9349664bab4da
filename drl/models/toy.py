"""The toy text-to-image architectures: real diffusers/transformers components, small.

toy_t2i: a 32x32 pixel-space UNet2DConditionModel (cross-attention at 8x8), a 2-layer
CLIPTextModel and a word-level tokenizer over the toy world's vocabulary. It is what
``drl-train algorithm=pretrain model.from_scratch=true`` trains; the trained result ships
in drl/assets/toy_t2i.

toy_flow, its flow-matching sibling: a pixel-space SD3Transformer2DModel (2x2 patches)
conditioned through toy_t2i's trained text encoder, frozen (as SD3 conditions on frozen
pretrained CLIPs), with a FlowMatchEulerDiscreteScheduler. ``model=toy_flow
model.from_scratch=true algorithm=pretrain`` trains it; the result ships in drl/assets/toy_flow.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, PreTrainedTokenizerFast

from drl.models.layout import resolve_path
from drl.models.sd3 import SD3Model
from drl.models.t2i import T2IModel, missing_model_message
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


# toy_flow's transformer. 32 px images in 2x2 patches: 256 image tokens (+ 12 text tokens) in every joint attention;
# width 64 (4 heads of 16) and 4 layers: 0.6M weights, the compute of toy_t2i's UNet per call (the toy video
# transformer's size too). The pooled prompt enters every block through adaLN, the tokens through joint attention.
TOY_FLOW_TRANSFORMER = dict(
    patch_size=2,
    in_channels=3,
    out_channels=3,
    num_layers=4,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=TEXT_DIM,  # the CLIP encoder's penultimate states, unpadded
    caption_projection_dim=64,  # = num_attention_heads * attention_head_dim (SD3 joins text and image at one width)
    pooled_projection_dim=TEXT_DIM,  # the CLIP encoder's projected pooled output
)
# SD3's rectified flow. shift=1 (no shift): SD3 shifts its sampling levels by 3.0 at 1024 px because more pixels carry
# more signal at a given noise level (Esser et al. 2024, eq. 23); at 32 x 32 x 3 the plain levels fit, as SD3's own
# shift 1 did at 256 px.
TOY_FLOW_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=1.0)


def toy_flow_text_encoder(source: str = "drl:toy_t2i") -> tuple[PreTrainedTokenizerFast, CLIPTextModelWithProjection]:
    """toy_t2i's tokenizer and trained text encoder, as the CLIPTextModelWithProjection SD3 conditions on; its
    projection is the identity, so the pooled prompt is the encoder's final-normed <eos> state."""
    location = Path(resolve_path(source))
    if not (location / "text_encoder").is_dir():
        raise FileNotFoundError(missing_model_message(str(location), "toy text encoder") + " Build drl:toy_t2i first (scripts/build_toy_assets.sh).")
    tokenizer = AutoTokenizer.from_pretrained(location, subfolder="tokenizer")
    config = CLIPTextConfig.from_pretrained(location, subfolder="text_encoder")
    config.projection_dim = config.hidden_size
    encoder = CLIPTextModelWithProjection(config)
    trained = CLIPTextModel.from_pretrained(location, subfolder="text_encoder")
    encoder.text_model.load_state_dict(trained.state_dict())  # CLIPTextModel holds the text model's weights itself
    with torch.no_grad():
        encoder.text_projection.weight.copy_(torch.eye(config.hidden_size))
    return tokenizer, encoder


def build_toy_flow(resolution: int = 32, seed: int = 0, text_encoder_source: str = "drl:toy_t2i") -> SD3Model:
    """A randomly initialised toy flow transformer (seeded) on toy_t2i's trained text encoder (one CLIP, no T5, no VAE)."""
    if resolution % TOY_FLOW_TRANSFORMER["patch_size"]:
        raise ValueError(f"model.resolution={resolution} must be a multiple of toy_flow's patch size {TOY_FLOW_TRANSFORMER['patch_size']}.")
    tokenizer, text_encoder = toy_flow_text_encoder(text_encoder_source)
    torch.manual_seed(seed + 1)
    size = resolution // TOY_FLOW_TRANSFORMER["patch_size"]
    denoiser = SD3Transformer2DModel(sample_size=resolution, pos_embed_max_size=size, **TOY_FLOW_TRANSFORMER)
    scheduler_config = dict(FlowMatchEulerDiscreteScheduler(**TOY_FLOW_SCHEDULER_CONFIG).config)
    return SD3Model(tokenizer, text_encoder, denoiser, scheduler_config, vae=None)
