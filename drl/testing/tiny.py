"""Tiny, randomly initialised models with the real architectures, for tests and smoke runs.

Nothing is downloaded: the CLIP tokenizer is a byte-level BPE with no merges (one token per
character) whose vocabulary is written here, and every network is built from a small config.

    python -m drl.testing.tiny sd15 /tmp/tiny-sd15     # also: sdxl, sd3, flux, flux2, qwen_image(_edit), z_image, wan, clip
    drl-train model=sd15 model.path=/tmp/tiny-sd15 model.resolution=16 debug=fast
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
    WanTransformer3DModel,
)
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from drl.models.flux import FluxKontextModel, FluxModel
from drl.models.flux2 import Flux2Model
from drl.models.qwen_image import QwenImageModel
from drl.models.qwen_image_edit import QwenImageEditModel
from drl.models.sd3 import SD3Model
from drl.models.sdxl import SDXLModel
from drl.models.t2i import T2IModel
from drl.models.toy import TOY_SCHEDULER_CONFIG
from drl.models.wan import WanExperts, WanModel
from drl.models.wan_i2v import WanI2VModel
from drl.models.z_image import ZImageModel
from drl.rewards.clip import CLIP_MEAN, CLIP_STD, AestheticHead

MAX_TOKENS = 16  # the tiny tokenizers' model_max_length (real CLIP: 77)
TEXT_DIM = 16
PROJECTION_DIM = 8
# Stable Diffusion's own noise schedule and DDIM conventions (the toy model shares them); SD does not clip x̂_0.
SD_SCHEDULER = {**TOY_SCHEDULER_CONFIG, "clip_sample": False}


def _byte_characters() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character map (256 characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def build_clip_tokenizer(max_length: int = MAX_TOKENS) -> CLIPTokenizer:
    """A real CLIPTokenizer (byte-level BPE, lower-cased) with a character vocabulary and no merges."""
    chars = _byte_characters()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _text_config(tokenizer, **kw) -> CLIPTextConfig:
    base = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=PROJECTION_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextConfig(**{**base, **kw})


def _vae(latent_channels: int = 4, block_out_channels: tuple[int, ...] = (8, 16), **kw) -> AutoencoderKL:
    """A VAE that downsamples 2x per block after the first: (8, 16) maps 16 px images <-> 8 px latents."""
    base = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
        norm_num_groups=4,
        sample_size=16,
    )
    return AutoencoderKL(**{**base, **kw})


def _unet(cross_attention_dim: int, **kw) -> UNet2DConditionModel:
    base = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    return UNet2DConditionModel(**{**base, **kw})


def build_tiny_sd(seed: int = 0) -> T2IModel:
    """SD 1.x layout: UNet2DConditionModel + AutoencoderKL + CLIPTextModel + CLIPTokenizer + DDIM."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    torch.manual_seed(seed + 1)
    denoiser = _unet(TEXT_DIM)
    torch.manual_seed(seed + 2)
    vae = _vae()
    return T2IModel(tokenizer, text_encoder, denoiser, dict(DDIMScheduler(**SD_SCHEDULER).config), vae)


SMALL_TEXT_DIM = 64


def build_small_sd(seed: int = 0) -> T2IModel:
    """The small SD 1.x pipeline of the time-to-reward issue: 64 px images from 16 x 16 latents, large enough
    that convolutions and attention, not Python, take a call's time. CLIP text encoder hidden 64, 2 layers;
    UNet blocks (64, 128), 2 layers each, head dim 8, 32 norm groups; VAE blocks (32, 64, 64) (x4)."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        _text_config(tokenizer, hidden_size=SMALL_TEXT_DIM, intermediate_size=2 * SMALL_TEXT_DIM, num_attention_heads=4)
    )
    torch.manual_seed(seed + 1)
    denoiser = _unet(
        SMALL_TEXT_DIM, sample_size=16, block_out_channels=(64, 128), layers_per_block=2, attention_head_dim=8, norm_num_groups=32
    )
    torch.manual_seed(seed + 2)
    vae = _vae(block_out_channels=(32, 64, 64), norm_num_groups=32, sample_size=64)
    return T2IModel(tokenizer, text_encoder, denoiser, dict(DDIMScheduler(**SD_SCHEDULER).config), vae)


def build_tiny_sdxl(seed: int = 0) -> SDXLModel:
    """SDXL layout: two text encoders (the second with a projection), text_time added conditioning."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer))
    torch.manual_seed(seed + 2)
    time_dim = 4
    denoiser = _unet(
        2 * TEXT_DIM,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=PROJECTION_DIM + 6 * time_dim,
    )
    torch.manual_seed(seed + 3)
    vae = _vae()
    return SDXLModel(
        tokenizer,
        text_encoder,
        denoiser,
        dict(DDIMScheduler(**SD_SCHEDULER).config),
        vae,
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_clip_tokenizer(),
    )


def build_tiny_sd3(seed: int = 0, with_t5: bool = True) -> SD3Model:
    """SD3 layout: SD3Transformer2DModel, two projected CLIP encoders, an optional T5, a shifted VAE, flow scheduler."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_text_config(tokenizer))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer))
    joint_dim = 2 * TEXT_DIM
    text_encoder_3 = None
    if with_t5:
        torch.manual_seed(seed + 2)
        text_encoder_3 = T5EncoderModel(
            T5Config(vocab_size=len(tokenizer), d_model=joint_dim, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
        )
    torch.manual_seed(seed + 3)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=joint_dim,
        caption_projection_dim=16,
        pooled_projection_dim=2 * PROJECTION_DIM,
        pos_embed_max_size=8,
    )
    torch.manual_seed(seed + 4)
    vae = _vae(scaling_factor=1.5305, shift_factor=0.0609)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return SD3Model(
        tokenizer,
        text_encoder,
        transformer,
        dict(scheduler.config),
        vae,
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_clip_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=build_clip_tokenizer(32) if with_t5 else None,
        t5_max_length=32,
    )


# FLUX.1's scheduler: shifted by resolution, μ from 0.5 (256 tokens) to 1.15 (4096 tokens).
FLUX_SCHEDULER = dict(
    shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
)


def build_tiny_flux(seed: int = 0, guidance_embeds: bool = True) -> FluxModel:
    """FLUX.1 layout: FluxTransformer2DModel (guidance-embedded, as -dev; False: as -schnell) over 2x2-packed latents,
    CLIP (pooled) + T5 (tokens), a 16-channel-style shifted VAE (here 4 channels), a resolution-shifted flow scheduler.

    16 px images -> 8 x 8 latents -> 16 tokens of 4 * 4 channels.
    """
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    t5_dim = 2 * TEXT_DIM
    torch.manual_seed(seed + 1)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=t5_dim, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    torch.manual_seed(seed + 2)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=TEXT_DIM,  # CLIP's pooled output (not projected)
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    torch.manual_seed(seed + 3)
    vae = _vae(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    return FluxModel(
        tokenizer, text_encoder, transformer, dict(scheduler.config), vae,
        text_encoder_2=text_encoder_2, tokenizer_2=build_clip_tokenizer(32), max_sequence_length=32,
    )  # fmt: skip


def build_tiny_flux_kontext(seed: int = 0) -> FluxKontextModel:
    """FLUX.1-Kontext layout: FLUX.1-dev's components saved as a FluxKontextPipeline (same classes; the source
    image's tokens join the generated ones)."""
    flux = build_tiny_flux(seed)
    return FluxKontextModel(**{f.name: getattr(flux, f.name) for f in fields(flux) if f.init})


MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
                    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]  # fmt: skip
# Mistral-Small-3.x's instruct format for text turns (content as a string or a list of {"type": "text"} parts)
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['content'] is string %}{% set text = m['content'] %}"
    "{% else %}{% set text = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}{% endif %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif m['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}"
)


def build_mistral_tokenizer(max_length: int = 256):
    """A real tokenizers-backed tokenizer (TokenizersBackend, the class of Mistral-Small-3.1's tekken tokenizer):
    byte-level BPE with a character vocabulary and no merges, Mistral's special tokens and instruct chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*MISTRAL_SPECIALS, *_byte_characters()])}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, model_max_length=max_length, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": MISTRAL_SPECIALS[3:5] + MISTRAL_SPECIALS[6:]})
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


QWEN_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def build_qwen_tokenizer(max_length: int = 64, vision: bool = False):
    """A real Qwen2Tokenizer (byte-level BPE) with a character vocabulary, no merges, Qwen's chat special tokens
    and a chat template of Qwen's shape (Z-Image applies it); ``vision``: Qwen2-VL's image placeholder tokens too."""
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(_byte_characters())}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *(QWEN_VISION_TOKENS if vision else [])]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=max_length, unk_token=None, pad_token="<|endoftext|>",
                               eos_token="<|im_end|>", errors="replace")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def build_tiny_qwen_image(seed: int = 0) -> QwenImageModel:
    """Qwen-Image layout: QwenImageTransformer2DModel over 2x2-packed latents, AutoencoderKLQwenImage (here 2x, 4
    channels, non-trivial per-channel statistics), a Qwen2.5-VL text encoder, Qwen2Tokenizer, a resolution-shifted
    flow scheduler. 16 px images -> 8 x 8 latents -> 16 tokens."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    tokenizer = build_qwen_tokenizer(512)  # characters: the chat template's system turn alone takes ~150
    torch.manual_seed(seed)
    text_encoder = _tiny_qwen_vl(tokenizer)
    torch.manual_seed(seed + 1)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=TEXT_DIM, axes_dims_rope=(2, 2, 4),
    )  # fmt: skip
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLQwenImage(
        base_dim=4, z_dim=4, dim_mult=[1, 1], num_res_blocks=1, temperal_downsample=[False],
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0],
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256, max_image_seq_len=8192,
        time_shift_type="exponential", shift_terminal=0.02,
    )  # fmt: skip
    return QwenImageModel(tokenizer, text_encoder, transformer, dict(scheduler.config), vae, max_sequence_length=256)


def _tiny_qwen_vl(tokenizer, **vision):
    """A Qwen2_5_VLForConditionalGeneration of one text layer and a one-block vision tower (``vision``: its patch
    overrides), hidden size TEXT_DIM; the vision placeholder ids are the tokenizer's where it has them."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
    )  # fmt: skip
    vision_config = {**dict(depth=1, hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_heads=2, out_hidden_size=TEXT_DIM,
                            fullatt_block_indexes=[0], window_size=28), **vision}  # fmt: skip
    ids = {}
    if "<|image_pad|>" in tokenizer.get_vocab():
        names = ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id")
        ids = dict(zip(names, tokenizer.convert_tokens_to_ids(QWEN_VISION_TOKENS)))
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **text_config, **ids))


def build_tiny_qwen_image_edit(seed: int = 0) -> QwenImageEditModel:
    """Qwen-Image-Edit layout: Qwen-Image's tiny transformer, VAE and scheduler, a Qwen2.5-VL text encoder whose vision
    tower reads 2 px patches (merged 2x2: a 16 px source is 16 vision tokens), and processor/: Qwen2-VL's image
    processor (PIL backend) with the tokenizer, which holds the vision placeholder tokens."""
    from transformers import Qwen2VLImageProcessorPil

    from drl.models.qwen_image_edit import image_text_processor

    qwen = build_tiny_qwen_image(seed)
    tokenizer = build_qwen_tokenizer(1024, vision=True)  # characters: the edit template's system turn takes ~330
    torch.manual_seed(seed)
    text_encoder = _tiny_qwen_vl(tokenizer, patch_size=2, spatial_merge_size=2, temporal_patch_size=2, window_size=8)
    image_processor = Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2, min_pixels=4 * 4, max_pixels=64 * 64)
    return QwenImageEditModel(
        **{**_init_fields(qwen), "tokenizer": tokenizer, "text_encoder": text_encoder},
        processor=image_text_processor(image_processor, tokenizer),
    )


def build_tiny_z_image(seed: int = 0) -> ZImageModel:
    """Z-Image layout: ZImageTransformer2DModel (2x2 patches inside, a refiner layer per stream, one main layer),
    a shifted AutoencoderKL (here 4 channels), a Qwen3Model text encoder, Qwen2Tokenizer with a chat template, and
    Z-Image-Turbo's static-shift flow scheduler. 16 px images -> 8 x 8 latents -> 16 tokens."""
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_qwen_tokenizer(64)  # characters: the template around a prompt takes ~40
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
    ))  # fmt: skip
    torch.manual_seed(seed + 1)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=16, n_layers=1, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, cap_feat_dim=TEXT_DIM, axes_dims=[2, 2, 4], axes_lens=[128, 32, 32],  # caption positions: padded length + 1
    )  # fmt: skip
    torch.manual_seed(seed + 2)
    vae = _vae(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    return ZImageModel(tokenizer, text_encoder, transformer, dict(scheduler.config), vae, max_sequence_length=64)


def build_tiny_flux2(seed: int = 0) -> Flux2Model:
    """FLUX.2-dev layout: Flux2Transformer2DModel (guidance-embedded) over 2x2-patchified latents, AutoencoderKLFlux2
    (here 4 channels, 2x, non-trivial batch-norm statistics), a Mistral3ForConditionalGeneration text encoder with 30
    layers (Flux2Pipeline stacks layers 10, 20, 30: 3 x 16 = 48 = joint_attention_dim), Mistral's tokenizer under a
    PixtralProcessor, FLUX.1-dev's flow scheduler. 16 px images -> 8 x 8 latents -> 16 channels x 4 x 4 = 16 tokens."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = build_mistral_tokenizer(256)  # characters: the system turn alone takes ~180
    torch.manual_seed(seed)
    text_config = dict(model_type="mistral", vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
                       num_hidden_layers=30, num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    vision_config = dict(model_type="pixtral", hidden_size=TEXT_DIM, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * TEXT_DIM, image_size=28, patch_size=14, head_dim=8)  # fmt: skip
    config = Mistral3Config(text_config=text_config, vision_config=vision_config, image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"))
    text_encoder = Mistral3ForConditionalGeneration(config)
    torch.manual_seed(seed + 1)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=3 * TEXT_DIM, timestep_guidance_channels=16, axes_dims_rope=(2, 2, 2, 2),
    )  # fmt: skip
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
    )  # fmt: skip
    vae.bn.running_mean.copy_(torch.linspace(-0.3, 0.3, 16))  # the pipeline (de)normalises with these
    vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, 16))
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)  # FLUX.2-dev ships FLUX.1-dev's scheduler
    return Flux2Model(tokenizer, text_encoder, transformer, dict(scheduler.config), vae, max_sequence_length=256)


def build_tiny_wan(seed: int = 0, num_frames: int = 5) -> WanModel:
    """Wan2.1 layout: WanTransformer3DModel + AutoencoderKLWan (4x in time, 8x in space) + UMT5 + flow scheduler.

    32 px frames -> 4 x 4 latents; num_frames = 4k + 1 -> k + 1 latent frames.
    """
    tokenizer = build_clip_tokenizer(MAX_TOKENS)
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    text_encoder = UMT5EncoderModel(config)
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=32,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(  # non-trivial latent statistics, so the decoder's de-normalisation is exercised
        base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0],
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    config = dict(scheduler.config)
    return WanModel(tokenizer, text_encoder, transformer, config, vae, num_frames=num_frames, max_sequence_length=MAX_TOKENS)


def _wan_transformer(seed: int, channels: int = 4, in_channels: int | None = None) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=in_channels or channels, out_channels=channels,
        text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32,
    )  # fmt: skip


def build_tiny_wan22(seed: int = 0, num_frames: int = 5) -> WanModel:
    """Wan2.2-T2V-A14B layout: Wan2.1's components with two experts, transformer/ (high noise) and transformer_2/
    (low noise, its own weights), switched at boundary_ratio 0.875 as the release's model_index.json says."""
    wan = build_tiny_wan(seed, num_frames)
    experts = WanExperts(wan.denoiser, _wan_transformer(seed + 3), boundary=875.0)
    return WanModel(**{**_init_fields(wan), "denoiser": experts, "boundary_ratio": 0.875})


def build_tiny_wan22_ti2v(seed: int = 0, num_frames: int = 5) -> WanModel:
    """Wan2.2-TI2V-5B layout: one transformer taking a timestep per latent token (expand_timesteps), Wan2.2's VAE
    (residual, 2x2 patchified: 16x smaller frames, 4x fewer latent frames). 64 px frames -> 4 x 4 latents."""
    wan = build_tiny_wan(seed, num_frames)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(
        base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        is_residual=True, patch_size=2, scale_factor_spatial=16, in_channels=12, out_channels=12,  # RGB x a 2x2 patch
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0],
    )  # fmt: skip
    return WanModel(**{**_init_fields(wan), "vae": vae, "expand_timesteps": True})


def build_tiny_wan22_i2v(seed: int = 0, num_frames: int = 5) -> WanI2VModel:
    """Wan2.2-I2V-A14B layout (WanImageToVideoPipeline): two experts switched at boundary_ratio 0.9, each taking
    4 + 4 + 4 input channels (latents, frame mask, image latents), Wan2.1's VAE, no CLIP image encoder."""
    wan = build_tiny_wan(seed, num_frames)
    high, low = _wan_transformer(seed + 1, in_channels=12), _wan_transformer(seed + 3, in_channels=12)
    return WanI2VModel(**{**_init_fields(wan), "denoiser": WanExperts(high, low, boundary=900.0), "boundary_ratio": 0.9})


def _init_fields(model) -> dict:
    return {f.name: getattr(model, f.name) for f in fields(model) if f.init}


def save_tiny_clip(directory: str | Path, seed: int = 0, image_size: int = 16) -> Path:
    """A tiny CLIPModel + tokenizer + preprocessor_config.json in the layout of openai/clip-vit-large-patch14."""
    directory = Path(directory)
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=_text_config(tokenizer).to_dict(),
        vision_config=CLIPVisionConfig(
            hidden_size=TEXT_DIM,
            intermediate_size=2 * TEXT_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=4,
            projection_dim=PROJECTION_DIM,
        ).to_dict(),
        projection_dim=PROJECTION_DIM,
    )
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return directory


def save_tiny_aesthetic_head(path: str | Path, input_dim: int = PROJECTION_DIM, seed: int = 0) -> Path:
    """A random MLP head in the LAION aesthetic predictor's state-dict format (layers.{0,2,4,6,7})."""
    torch.manual_seed(seed)
    path = Path(path)
    torch.save(AestheticHead(input_dim).state_dict(), path)
    return path


BUILDERS = {
    "sd15": build_tiny_sd, "sd21": build_tiny_sd, "sdxl": build_tiny_sdxl, "sd3": build_tiny_sd3, "wan": build_tiny_wan,
    "flux": build_tiny_flux, "flux_kontext": build_tiny_flux_kontext, "flux2": build_tiny_flux2, "qwen_image": build_tiny_qwen_image,
    "qwen_image_edit": build_tiny_qwen_image_edit, "z_image": build_tiny_z_image, "wan22": build_tiny_wan22,
    "wan22_ti2v": build_tiny_wan22_ti2v, "wan22_i2v": build_tiny_wan22_i2v,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=[*BUILDERS, "clip"])
    parser.add_argument("directory")
    args = parser.parse_args()
    if args.kind == "clip":
        save_tiny_clip(args.directory)
        save_tiny_aesthetic_head(Path(args.directory) / "aesthetic_head.pth")
    else:
        BUILDERS[args.kind]().save_pretrained(args.directory)
    print(f"wrote a tiny random {args.kind} to {args.directory}")


if __name__ == "__main__":
    main()
