"""drl-eval's work: every model samples the same prompts from the same noise; rewards and metrics side by side.

    prompts  the prompt source's first num_prompts (a smaller pool repeats), each samples_per_prompt times (own noise per copy)
    noise    one generator seeded with ``seed`` per model: sample k gets the same x_T and step noise in every model
    scores   every reward term and monitor, mean ± s.e.; paired differences against the first model (same inputs)
    metrics  FID and KID against the reference set (toy: renders of the same prompts; else a folder of images)
             and against the first model's samples; the paired feature distance to them; within-prompt and
             overall diversity; CLIPScore when quality.clip_path is set

Shapes: N = num_prompts * samples_per_prompt samples; images [N, 3, H, W] or clips [N, F, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from drl.config import EvalConfig
from drl.errors import ConfigError
from drl.evaluation.features import FeatureExtractor, build_features, extract, is_toy_model
from drl.evaluation.metrics import clip_score, diversity, frechet_distance, kernel_distance, paired_distance
from drl.evaluation.models import LoadedModel, load_spec
from drl.logging import image_grid
from drl.prompts import build_prompt_source
from drl.rewards import WeightedReward, build_reward, refuse_latent_terms
from drl.rollout import RolloutCollector
from drl.sampling import make_schedule

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TABLE_MD, TABLE_JSON, GRID_PNG = "comparison.md", "comparison.json", "comparison.png"


@dataclass
class ModelResult:
    label: str
    spec: str
    samples: torch.Tensor  # [N, ...] in [0, 1]
    scores: dict[str, torch.Tensor]  # reward name -> [N]
    features: torch.Tensor  # [N, D]
    metrics: dict[str, float] = field(default_factory=dict)


def mean_se(values: torch.Tensor) -> dict[str, float]:
    values = values.double()
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "se": se}


def evaluation_prompts(cfg: EvalConfig) -> list[str]:
    """num_prompts distinct prompts (the source's first), each repeated samples_per_prompt times, grouped."""
    source = build_prompt_source(cfg.prompts, video=cfg.model.kind == "t2v")
    prompts = source.first(cfg.num_prompts)
    return [p for p in prompts for _ in range(cfg.samples_per_prompt)]


def sample(loaded: LoadedModel, prompts: list[str], cfg: EvalConfig, device: torch.device) -> torch.Tensor:
    """The model's samples of ``prompts``: the noise comes from one generator seeded with cfg.seed (identical for every model)."""
    model = loaded.model.to(device)
    model.denoiser.eval()
    steps = cfg.scheduler.num_steps
    schedule = make_schedule(model.make_scheduler(cfg.scheduler.kind), steps, cfg.scheduler.sde_type, model.shift_mu(steps))
    collector = RolloutCollector(
        model, schedule, eta=cfg.scheduler.eta, guidance_scale=cfg.scheduler.guidance_scale,
        batch_size=cfg.batch_size, resolution=cfg.model.resolution, device=device,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(cfg.seed)
    chunks = []
    for start in tqdm(range(0, len(prompts), cfg.batch_size), desc=f"sampling {loaded.label}", leave=False):
        batch = collector.collect(prompts[start : start + cfg.batch_size], [{} for _ in prompts[start : start + cfg.batch_size]], generator)
        chunks.append(batch.samples.float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def score(reward: WeightedReward, samples: torch.Tensor, prompts: list[str], batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Every term and monitor, and their weighted sum ("reward") when there are several: name -> [N]."""
    totals, terms = [], {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        total, parts = reward(samples[start : start + batch_size].to(device), chunk, [{} for _ in chunk])
        totals.append(total.float().cpu())
        for name, value in parts.items():
            terms.setdefault(name, []).append(value.float().cpu())
    scores = {name: torch.cat(values) for name, values in terms.items()}
    if len(scores) > 1:
        scores = {"reward": torch.cat(totals), **scores}
    return scores


def reference_samples(cfg: EvalConfig, prompts: list[str], toy: bool) -> torch.Tensor | None:
    """The reference set: renders of the same prompts on the toy world, a folder of images, or None."""
    if cfg.reference is None:
        return None
    if cfg.reference == "auto":
        if not (toy and cfg.prompts.source == "toy"):
            return None
        rng = np.random.default_rng(cfg.seed)
        if cfg.model.kind == "t2v":
            from drl.toyworld.video import VideoScene, sample_clips

            clips, _ = sample_clips(len(prompts), rng, cfg.model.resolution, cfg.model.num_frames, [VideoScene.from_prompt(p) for p in prompts])
            return (clips + 1) / 2
        from drl.toyworld import Scene
        from drl.toyworld.world import sample_images

        images, _ = sample_images(len(prompts), rng, cfg.model.resolution, [Scene.from_prompt(p) for p in prompts])
        return (images + 1) / 2
    return load_image_folder(cfg.reference, cfg.model.resolution, video=cfg.model.kind == "t2v")


def load_image_folder(folder: str, resolution: int, video: bool = False) -> torch.Tensor:
    """Every image in ``folder`` (sorted), RGB, resized to resolution x resolution: [N, 3, R, R] in [0, 1]."""
    path = Path(folder).expanduser()
    if video:
        raise ConfigError(f"reference={folder!r}: a folder of images cannot be the reference of clips; use reference=auto (toy) or null.")
    if not path.is_dir():
        raise FileNotFoundError(f"reference={folder!r} is not a directory of images.")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ConfigError(f"reference={folder!r} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); FID and KID need at least 2.")
    pictures = [np.asarray(Image.open(f).convert("RGB").resize((resolution, resolution), Image.BICUBIC)) for f in files]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255


def distribution_metrics(features: torch.Tensor, reference: torch.Tensor | None, base: torch.Tensor | None, seed: int) -> dict[str, float]:
    """FID/KID against the reference features and the base model's, and the paired distance to the base's samples."""
    out = {}
    if reference is not None:
        out["fid_reference"] = frechet_distance(reference, features)
        out["kid_reference"] = kernel_distance(reference, features, seed)[0]
    if base is not None:
        out["fid_base"] = frechet_distance(base, features)
        out["kid_base"] = kernel_distance(base, features, seed)[0]
        distances = paired_distance(features, base)
        out.update({"distance_to_base": float(distances.mean()), "distance_to_base_se": mean_se(distances)["se"]})
    return out


def compare(cfg: EvalConfig, out_dir: Path, device: torch.device) -> dict:
    """Sample, score and measure every model; write comparison.{md,json,png} to ``out_dir``; return the JSON record."""
    video = cfg.model.kind == "t2v"
    reward = build_reward(cfg.reward, device, video=video)
    refuse_latent_terms(reward, "drl-eval scores decoded samples and reference images: compare the models on pixel terms.")
    specs = list(cfg.models) or [cfg.model.path]
    loaded = [load_spec(spec, cfg.model) for spec in specs]  # every spec is checked before any sampling
    for k, entry in enumerate(loaded):  # the same label twice (e.g. a model against itself): number the later ones
        if any(other.label == entry.label for other in loaded[:k]):
            entry.label = f"{entry.label} #{k + 1}"
    prompts = evaluation_prompts(cfg)
    extractor = build_features(
        cfg.quality.features if cfg.quality.features != "none" else "auto",
        video=video, toy=is_toy_model(loaded[0].model), num_frames=cfg.model.num_frames,
        clip_path=cfg.quality.clip_path, inception_weights=cfg.quality.inception_weights,
        classifier_path=cfg.reward.classifier_path, video_classifier_path=cfg.reward.video_classifier_path, device=device,
    )  # fmt: skip
    reference = reference_samples(cfg, prompts, is_toy_model(loaded[0].model))
    reference_features = None if reference is None else extract(extractor, reference)
    groups = prompts  # within-prompt diversity: every sample of the same prompt text (copies and repeats of the source)
    results: list[ModelResult] = []
    for entry in loaded:
        samples = sample(entry, prompts, cfg, device)
        entry.model.to("cpu")  # one model on the device at a time
        result = ModelResult(entry.label, entry.spec, samples, score(reward, samples, prompts, cfg.batch_size, device), extract(extractor, samples))
        base = results[0].features if results else None
        result.metrics = {
            **distribution_metrics(result.features, reference_features, base, cfg.seed),
            "diversity_within_prompt": diversity(result.features, groups),
            "diversity": diversity(result.features),
        }
        if cfg.quality.clip_path:
            result.metrics["clip_score"] = clip_score(samples, prompts, cfg.quality.clip_path)
        results.append(result)
    record = table_record(cfg, results, extractor, reference is not None, len(prompts))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TABLE_JSON).write_text(json.dumps(record, indent=1) + "\n")
    (out_dir / TABLE_MD).write_text(markdown_table(record) + "\n")
    grid = comparison_grid(results, cfg.grid_rows)
    grid.save(out_dir / GRID_PNG)
    if cfg.logger.backend == "wandb" and cfg.logger.mode != "disabled":
        log_wandb(cfg, out_dir, results, prompts, record)
    return record


def table_record(cfg: EvalConfig, results: list[ModelResult], extractor: FeatureExtractor, has_reference: bool, n: int) -> dict:
    first = results[0]
    models = []
    for r in results:
        entry = {"label": r.label, "spec": r.spec, "rewards": {k: mean_se(v) for k, v in r.scores.items()}, "metrics": r.metrics}
        if r is not first:
            entry["paired_vs_first"] = {k: mean_se(v - first.scores[k]) for k, v in r.scores.items() if k in first.scores}
        models.append(entry)
    return {
        "n_samples": n, "num_prompts": cfg.num_prompts, "samples_per_prompt": cfg.samples_per_prompt, "seed": cfg.seed,
        "features": extractor.name, "reference": cfg.reference if has_reference else None, "models": models,
    }  # fmt: skip


METRIC_COLUMNS = {
    "fid_reference": "FID ref", "kid_reference": "KID ref", "fid_base": "FID base", "kid_base": "KID base",
    "distance_to_base": "dist. to base", "diversity_within_prompt": "div. within prompt", "diversity": "div. all",
    "clip_score": "CLIPScore",
}  # fmt: skip


def markdown_table(record: dict) -> str:
    """Two tables: rewards (mean ± s.e., and the paired difference to the first model), then the metrics."""
    models = record["models"]
    names = list(models[0]["rewards"])
    lines = [
        f"{record['n_samples']} samples per model ({record['num_prompts']} prompts x {record['samples_per_prompt']}, seed {record['seed']}); "
        f"features: {record['features']}; reference: {record['reference']}",
        "",
        "| model | " + " | ".join(f"{n} | Δ {n} vs first" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for m in models:
        cells = []
        for n in names:
            r = m["rewards"].get(n)
            cells.append(f"{r['mean']:.4g} ± {r['se']:.2g}" if r else "—")
            d = m.get("paired_vs_first", {}).get(n)
            cells.append(f"{d['mean']:+.4g} ± {d['se']:.2g}" if d else "—")
        lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    columns = [k for k in METRIC_COLUMNS if any(k in m["metrics"] for m in models)]
    lines += ["", "| model | " + " | ".join(METRIC_COLUMNS[k] for k in columns) + " |", "|---|" + "---|" * len(columns)]
    for m in models:
        cells = [f"{m['metrics'][k]:.4g}" if k in m["metrics"] else "—" for k in columns]
        if "distance_to_base" in m["metrics"]:
            cells[columns.index("distance_to_base")] += f" ± {m['metrics']['distance_to_base_se']:.2g}"
        lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_grid(results: list[ModelResult], rows: int):
    """A row per (prompt, noise), a column per model (clips: the model's frames side by side)."""
    rows = min(rows, len(results[0].samples))
    tiles = []
    for k in range(rows):
        for r in results:
            s = r.samples[k]
            tiles.extend(list(s) if s.ndim == 4 else [s])  # clips: F frames
    per_model = results[0].samples.shape[1] if results[0].samples.ndim == 5 else 1
    return image_grid(torch.stack(tiles), columns=per_model * len(results))


def log_wandb(cfg: EvalConfig, out_dir: Path, results: list[ModelResult], prompts: list[str], record: dict) -> None:
    """A W&B run (offline by default) with the evaluation table: a row per (prompt, noise) of the grid, an image
    column per model with its rewards; the per-model numbers go to the summary."""
    import wandb

    from drl.logging import frame_strip

    run = wandb.init(
        project=cfg.logger.project, entity=cfg.logger.entity, name=cfg.run_name, tags=list(cfg.logger.tags),
        dir=str(out_dir), mode=cfg.logger.mode, job_type="eval", reinit="finish_previous",
    )  # fmt: skip
    try:
        names = list(results[0].scores)
        columns = ["prompt"] + [f"{r.label} {c}" for r in results for c in ("sample", *names)]
        table = wandb.Table(columns=columns)
        for k in range(min(cfg.grid_rows, len(prompts))):
            row = [prompts[k]]
            for r in results:
                s = r.samples[k]
                picture = frame_strip(s[None]) if s.ndim == 4 else image_grid(s[None], columns=1)
                row += [wandb.Image(picture)] + [float(r.scores[n][k]) for n in names]
            table.add_data(*row)
        run.log({"evaluation": table, "comparison_grid": wandb.Image(str(out_dir / GRID_PNG))})
        for m in record["models"]:
            run.summary.update({f"{m['label']}/{k}": v["mean"] for k, v in m["rewards"].items()})
            run.summary.update({f"{m['label']}/{k}": v for k, v in m["metrics"].items()})
    finally:
        run.finish()
