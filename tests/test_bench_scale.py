"""scripts/bench_scale.py: the real architectures it builds, and its CPU smoke mode end to end."""

from __future__ import annotations

import argparse

import pytest
import torch

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_scale")


def test_real_size_denoisers_have_the_published_parameter_counts(bench):
    # Built on the meta device: the shapes without the memory. SD1.5's UNet and SDXL-base's are the
    # well-known 859.5M and 2.567B; SD3.5-medium's transformer follows its diffusers config (24 MMDiT-X
    # blocks of width 1536, dual attention in the first 13).
    expected = {"sd15": 859_520_964, "sdxl": 2_567_463_684, "sd3": 2_243_171_520}
    for family, count in expected.items():
        with torch.device("meta"):
            model = bench.build_real_size(family)
        assert sum(p.numel() for p in model.denoiser.parameters()) == count, family
        assert sum(p.numel() for p in model.vae.parameters()) > 83_000_000  # SD's 83.7M VAE (16 latent channels for SD3)


def smoke_args(bench, **kw) -> argparse.Namespace:
    base = dict(device="cpu", precision="no", resolution=None, steps=2, guidance=5.0, samples=2, train_batch=2,
                alignprop_steps=[2], repeats=1, peak_tflops=None, smoke=True)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_smoke_run_reports_throughput_flops_and_alignprop_rows(bench, family):
    result = bench.bench_family(family, smoke_args(bench, peak_tflops=1.0))
    assert result["resolution"] == 16 and result["lora_params_m"] > 0
    for key in ("ddpo_sample", "ddpo_update"):
        figures = result[key]
        assert figures["seconds"] > 0 and figures["tflops_per_s"] > 0
        assert figures["mfu"] == pytest.approx(figures["tflops_per_s"] / 1.0)
    assert result["ddpo_sample"]["samples_per_s"] == pytest.approx(2 / result["ddpo_sample"]["seconds"])
    rows = result["alignprop"]
    assert [(r["steps"], r["checkpoint_denoiser"]) for r in rows] == [(2, True), (2, False)]
    assert all(r["seconds"] > 0 and "peak_mib" not in r for r in rows)  # no CUDA: no GPU memory figure
    assert result["peak_rss_mib"] > 100  # the process holds torch and the models at least
    table = bench.markdown([result])
    assert f"| {family} | 16 |" in table and "| 2 | True |" in table


def test_cpu_has_no_peak_so_no_mfu(bench):
    assert bench.peak_tflops(torch.device("cpu"), None) is None
    assert bench.throughput(2.0, 4e12, None) == {"seconds": 2.0, "tflops_per_s": 2.0, "mfu": None}
