"""Where a run's denoiser spends its time: torch.profiler's operator table for one guided call.

Builds the model of a drl-train run from the same overrides, then times one denoiser call on a
batch of --batch latents at the schedule's middle timestep (guidance as the run sets it, so two
passes when it is on), without and with the backward pass, and prints the operators that took the
most time in the call with its backward. Use it to tell whether a run is bound by arithmetic that
no batching removes (one kernel, such as attention, holding most of the time) or by many small calls.

    python scripts/profile_denoiser.py --batch 24 --threads 1 model=sd15 model.path=/tmp/tiny-sd15 \
        model.resolution=64 scheduler.guidance_scale=5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls after one warm-up (lazy inits, allocator pools); on a GPU each
    call is timed to the end of its kernels, not of their launch."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def attention_backend(name: str):
    """A context that lets SDPA use only the named kernel (auto: no restriction)."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    return contextlib.nullcontext if name == "auto" else lambda: sdpa_kernel(kernels[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="latents per call (each is two passes under guidance)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the run's hardware.num_threads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15, help="operators to list")
    parser.add_argument("--sdpa-backend", choices=["auto", "flash", "efficient", "math"], default="auto",
                        help="the kernel scaled_dot_product_attention may use (auto: torch picks, as in a run)")
    parser.add_argument("overrides", nargs="*", help="drl-train overrides")
    args = parser.parse_args()

    from drl.compose import compose_config
    from drl.errors import ConfigError
    from drl.runtime import seed_everything
    from drl.train import build_context

    try:
        cfg = compose_config(["logger=none", *args.overrides])
    except ConfigError as e:
        parser.error(str(e))
    if cfg.env is not None:
        parser.error("profile_denoiser.py profiles text-to-image and video denoisers; a control run (env=...) has none.")
    threads = args.threads or cfg.hardware.num_threads
    if threads > 0:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    ctx, _, _ = build_context(cfg)
    model, collector = ctx.model, ctx.collector
    prompts, _ = ctx.prompts.sample(args.batch, torch.Generator().manual_seed(0))
    cond, uncond = model.encode_prompts(prompts), collector.uncond(args.batch)
    x = torch.randn(args.batch, *collector.latent_shape, device=ctx.device)  # [B, C, h, w] (video: [B, C, F, h, w])
    t = ctx.schedule.timesteps[len(ctx.schedule.timesteps) // 2].expand(args.batch).to(ctx.device)  # [B]

    backend = attention_backend(args.sdpa_backend)

    def forward(grad: bool):
        with torch.set_grad_enabled(grad), ctx.autocast(), backend():
            out = model.denoise(x, t, cond, uncond, collector.guidance_scale)
        if grad:
            out.float().square().mean().backward()

    passes = 1 if uncond is None else 2
    print(f"denoiser {type(model.denoiser).__name__}, latents {tuple(x.shape)}, {passes} pass(es) a call, "
          f"{torch.get_num_threads()} thread(s), attention kernel {args.sdpa_backend}, mixed precision {cfg.hardware.mixed_precision}")
    seconds = {grad: median_seconds(lambda: forward(grad), args.repeats, ctx.device) for grad in (False, True)}
    print(f"call: {seconds[False]:.3f} s forward, {seconds[True]:.3f} s forward + backward (median of {args.repeats})")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])) as prof:
        forward(True)
    # On a GPU the kernels' own time, not the CPU's time launching them, says where the call goes.
    clock, label = ("self_device_time_total", "GPU") if ctx.device.type == "cuda" else ("self_cpu_time_total", "CPU")
    events = prof.key_averages()
    own = {e.key: getattr(e, clock) for e in events}  # microseconds
    total = sum(own.values())
    print(f"\nforward + backward, operators by own {label} time (total {total / 1e6:.3f} s):")
    for e in sorted(events, key=lambda e: own[e.key], reverse=True)[: args.rows]:
        print(f"{100 * own[e.key] / total:6.2f}%  {own[e.key] / 1e6:8.3f} s  {e.count:5d} calls  {e.key}")


if __name__ == "__main__":
    main()
