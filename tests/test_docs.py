"""The README stays a front door, its links and the docs' links resolve, and the config reference is current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)


def _prose(text: str) -> str:
    """The markdown without code blocks and inline code, where links and headings are not links and headings."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation dropped (an underscore inside a word is kept,
    emphasis markers are not), spaces to hyphens."""
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)|\[|\]\([^)]*\)", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, title in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = github_anchor(title)
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("The default run (`drl-train`)") == "the-default-run-drl-train"
    assert github_anchor("Scaling out: multi-GPU, multi-node, SLURM") == "scaling-out-multi-gpu-multi-node-slurm"
    assert github_anchor("DSRL on Pendulum-v1") == "dsrl-on-pendulum-v1"
    assert github_anchor("AlignProp on toy_alignment") == "alignprop-on-toy_alignment"
    assert github_anchor("_Emphasis_ and `code`") == "emphasis-and-code"


def test_relative_links_finds_links_outside_code_only(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](x.md) `[b](y.md)` ![c](img.png) [d](https://e.org)\n```\n[f](z.md)\n```\n")
    assert relative_links(page) == ["x.md", "img.png"]


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it at most 250 and move the rest to docs/"


def test_readme_links_every_docs_page():
    linked = {(ROOT / t.split("#")[0]).resolve() for t in relative_links(README) if t.split("#")[0]}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md")}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages - linked)
    assert not missing, f"README.md does not link these docs pages: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_configuration_reference_is_generated_from_the_code():
    module = load_script("config_reference")
    page = (ROOT / "docs" / "guide" / "configuration.md").read_text()
    assert page.count(module.MARKER) == 1
    assert page.split(module.MARKER)[1] == module.render().split(module.MARKER)[1] + "\n", (
        "docs/guide/configuration.md is out of date: run python scripts/config_reference.py --write"
    )


def test_configuration_reference_lists_every_key_and_option():
    from dataclasses import MISSING, fields

    from drl.algorithms import ALGORITHMS
    from drl.config import Config, EnvConfig, EvalConfig, PolicyModelConfig

    page = (ROOT / "docs" / "guide" / "configuration.md").read_text()
    nested = {f.name: f.default_factory() for f in fields(Config) if f.default_factory is not MISSING}
    for section, obj in nested.items():
        for f in fields(obj):
            assert f"`{section}.{f.name}`" in page
    for name, entry in ALGORITHMS.items():
        section = page.split(f"### algorithm={name}\n")[1].split("###")[0]
        for f in fields(entry.schema):
            assert f"`algorithm.{f.name}`" in section or f"`algorithm.{f.name}`" in page.split("### algorithm (every algorithm)")[1].split("###")[0]
    for f in fields(EnvConfig):
        assert f"`env.{f.name}`" in page
    for f in fields(PolicyModelConfig):
        assert f"`model.{f.name}`" in page
    drl_eval = page.split("### drl-eval")[1]  # drl-eval's own keys (the rest are drl-train's sections)
    for f in fields(EvalConfig):
        assert f.name in nested or f"| `{f.name}` |" in drl_eval
    for yaml in (ROOT / "conf").glob("*/*.yaml"):
        assert f"| `{yaml.parent.name}` | `{yaml.stem}` |" in page

