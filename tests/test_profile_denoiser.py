"""scripts/profile_denoiser.py: the operator table of one guided denoiser call, and its refusal of control runs."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("profile_denoiser")


def test_toy_unet_profile_lists_attention_and_shares_that_add_up(script, monkeypatch, capsys):
    argv = ["profile_denoiser.py", "--batch", "3", "--repeats", "1", "--threads", "1", "--rows", "500", "scheduler.guidance_scale=4"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    out = capsys.readouterr().out
    assert re.search(r"latents \(3, \d+, \d+, \d+\), 2 pass\(es\) a call, 1 thread", out)
    forward, both = map(float, re.search(r"call: ([\d.]+) s forward, ([\d.]+) s forward \+ backward", out).groups())
    assert 0 < forward < both
    rows = re.findall(r"^\s*([\d.]+)%\s+[\d.]+ s\s+\d+ calls\s+(.+)$", out, flags=re.M)
    names = [name for _, name in rows]
    assert any("scaled_dot_product" in name for name in names)  # the toy UNet's attention runs through SDPA
    assert any("backward" in name for name in names)  # the table covers the backward pass too
    # every operator listed: the shares (printed to 0.01%) add up to the whole
    assert sum(float(share) for share, _ in rows) == pytest.approx(100.0, abs=0.005 * len(rows) + 1e-6)


def test_control_run_is_refused_in_one_sentence(script, monkeypatch, capsys):
    argv = ["profile_denoiser.py", "experiment=bandit_bc"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        script.main()
    assert stop.value.code == 2
    assert "a control run (env=...) has none." in capsys.readouterr().err


@pytest.mark.parametrize("override, words", [("scheduler.num_steps=0", "scheduler.num_steps=0 must be > 0."),
                                             ("schedular.num_steps=4", "Could not override 'schedular.num_steps'.")])
def test_bad_override_is_refused_in_one_sentence(script, monkeypatch, capsys, override, words):
    monkeypatch.setattr(sys, "argv", ["profile_denoiser.py", override])
    with pytest.raises(SystemExit) as stop:
        script.main()
    assert stop.value.code == 2
    assert words in capsys.readouterr().err


def test_math_kernel_replaces_flash_attention_when_asked(script, monkeypatch, capsys):
    argv = ["profile_denoiser.py", "--batch", "2", "--repeats", "1", "--threads", "1", "--rows", "500", "--sdpa-backend", "math"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    out = capsys.readouterr().out
    assert "attention kernel math" in out
    assert "flash_attention" not in out and "aten::_softmax" in out  # SDPA's math path: matmuls and a softmax
