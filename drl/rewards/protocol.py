"""The reward server's wire format (docs/guide/your-own-reward.md, "The protocol").

POST /score, Content-Type application/octet-stream; the body is one safetensors file
(8-byte little-endian header length, a JSON header, raw little-endian tensor bytes):
    tensor "samples"   float32 [B, 3, H, W] images or [B, F, 3, H, W] clips, in [0, 1] (lossless)
    __metadata__       {"prompts": JSON list of B strings, "metadata": JSON list of B objects,
                        "group_size": decimal string, for groupwise rewards: groups of that many
                        consecutive samples; 0 = the samples that share a prompt}
The answer is JSON: {"scores": [B numbers], "info": {key: [B numbers], ...}}; an error is
HTTP 4xx/5xx with {"detail": "<one sentence>"}. GET /health answers {"status": "ok", ...}.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load, save

SAMPLES = "samples"


def encode_request(samples: torch.Tensor, prompts: list, metadata: list, group_size: int = 0) -> bytes:
    """samples [B, ...] -> the request body (float32 on the CPU: exact for float32, bf16 and fp16 samples)."""
    header = {"prompts": json.dumps(list(prompts)), "metadata": json.dumps(list(metadata), default=str), "group_size": str(group_size)}
    return save({SAMPLES: samples.detach().to("cpu", torch.float32).contiguous()}, metadata=header)


def decode_request(body: bytes) -> tuple[torch.Tensor, list, list, int]:
    """The request body -> (samples [B, ...] float32, prompts [B], metadata [B], group_size); ValueError if malformed."""
    try:
        header_size = int.from_bytes(body[:8], "little")
        header = json.loads(body[8 : 8 + header_size]).get("__metadata__") or {}
        samples = load(body)[SAMPLES]
        prompts, metadata = json.loads(header["prompts"]), json.loads(header.get("metadata", "[]")) or [{}] * len(samples)
        group_size = int(header.get("group_size", "0"))
    except Exception as e:
        raise ValueError(f"the body is not a safetensors file with a 'samples' tensor and prompts metadata ({type(e).__name__}: {e})") from None
    if samples.dtype != torch.float32 or samples.dim() not in (4, 5) or samples.shape[-3] != 3:
        raise ValueError(f"'samples' must be float32 [B, 3, H, W] or [B, F, 3, H, W], not {samples.dtype} {list(samples.shape)}")
    if not len(prompts) == len(metadata) == len(samples):
        raise ValueError(f"{len(samples)} samples but {len(prompts)} prompts and {len(metadata)} metadata entries")
    return samples, prompts, metadata, group_size
