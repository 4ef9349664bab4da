"""How much time drl adds around the denoiser.

(a) rollout: RolloutCollector.collect  /  the bare UNet forward passes it makes
(b) DDPO update: DDPO.update  /  the bare UNet forward+backward passes it makes

Both sides run the same number of denoiser calls with the same batch shapes, in one
process, after a warm-up. The repeats of the two sides are interleaved (A, B, A, B, ...) so
that machine drift hits both alike; each figure is the median of --repeats runs. Torch uses
hardware.num_threads threads when it is set. Run it on an idle machine (torch on 2 threads
slows several-fold when anything else runs):

    python scripts/bench_overhead.py                    # the default toy model and config
    python scripts/bench_overhead.py train.samples_per_epoch=32 scheduler.num_steps=10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def interleaved_medians(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median wall time of fn_a and of fn_b, timed alternately (A, B, A, B, ...)."""
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="drl-train overrides (default config otherwise)")
    args = parser.parse_args()

    from drl.compose import compose_config
    from drl.train import build_context

    cfg = compose_config(["logger=none", *args.overrides])
    if cfg.hardware.num_threads > 0:
        torch.set_num_threads(cfg.hardware.num_threads)
    ctx, reward, algorithm = build_context(cfg)
    denoiser, model = ctx.model.denoiser, ctx.model
    n, bs, steps = cfg.train.samples_per_epoch, cfg.train.batch_size, cfg.scheduler.num_steps
    sample_bs = cfg.train.sample_batch_size or bs  # the collector's chunk
    prompts, metadata = ctx.prompts.sample(n, torch.Generator().manual_seed(0))
    embeds = model.encode_prompts(prompts)["encoder_hidden_states"]  # [n, L, D]: the bare UNet call below takes it directly
    shape = ctx.collector.latent_shape
    timesteps = ctx.schedule.timesteps

    # ---------------------------------------------------------------- (a) rollout
    def rollout():
        return ctx.collector.collect(prompts, metadata, torch.Generator().manual_seed(1))

    x = torch.randn(sample_bs, *shape)

    @torch.no_grad()
    def bare_forward():
        for start in range(0, n, sample_bs):
            c = embeds[start : start + sample_bs]
            for t in timesteps:
                denoiser(x[: len(c)], t.expand(len(c)), encoder_hidden_states=c).sample

    rollout(), bare_forward()  # warm-up
    t_rollout, t_forward = interleaved_medians(rollout, bare_forward, args.repeats)

    # ------------------------------------------------------------------ (b) update
    batch = rollout()
    batch.rewards, _ = reward(batch.samples, batch.prompts, batch.metadata)
    state = {k: v.clone() for k, v in denoiser.state_dict().items()}
    optimizer_state = algorithm.optimizer.state_dict()

    def update():
        algorithm.update(batch, epoch=0)
        denoiser.load_state_dict(state)  # every repeat starts from the same weights
        algorithm.optimizer.load_state_dict(optimizer_state)

    pairs = max(1, round(cfg.algorithm.timestep_fraction * int(batch.stochastic.sum()))) * n
    xs, ts, cs = torch.randn(pairs, *shape), timesteps[torch.arange(pairs) % len(timesteps)], embeds.repeat_interleave(
        pairs // n, dim=0
    )

    def bare_forward_backward():
        for minibatch in torch.arange(pairs).chunk(cfg.algorithm.minibatches):
            for chunk in minibatch.split(bs):
                denoiser(xs[chunk], ts[chunk], encoder_hidden_states=cs[chunk]).sample.float().square().mean().backward()
            denoiser.zero_grad(set_to_none=True)

    denoiser.train()
    update(), bare_forward_backward()  # warm-up
    t_update, t_fwd_bwd = interleaved_medians(update, bare_forward_backward, args.repeats)

    print(f"config: {n} samples x {steps} steps, sampling batch {sample_bs}, training batch {bs}, {pairs} training pairs, {torch.get_num_threads()} threads")
    print(f"(a) rollout {t_rollout:.3f} s / bare forward {t_forward:.3f} s = {t_rollout / t_forward:.3f}")
    print(f"(b) DDPO update {t_update:.3f} s / bare forward+backward {t_fwd_bwd:.3f} s = {t_update / t_fwd_bwd:.3f}")


if __name__ == "__main__":
    main()
