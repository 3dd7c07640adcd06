"""report.md of benchmarks/gpu_report.py: its report.json's sections as tables and sentences.

Apart from the measuring script so that either reads alone: this file knows the report's
keys, not how they were measured.
"""

from __future__ import annotations

from typing import Any


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "none"
    lines = [f"# GPU report ({'quick, ' if report['quick'] else ''}{report['device']})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, GPUs: {gpus}, "
             f"driver {env.get('driver')}, {env.get('cpu_count')} CPUs; report took {report['wall_s']} s.", "",
             "## Training throughput (seed 001 augmentation, CutMix, SGD step)", "",
             "| arch | width | precision | channels_last | compile | feeding | batch | images/s | step ms | data wait |",
             "|---|---:|---|---|---|---|---:|---:|---:|---:|"]
    for row in report["throughput"]:
        head = (f"| {row['arch']} | {row['width']} | {row['precision']} | {row['channels_last']} | {row['compile']} "
                f"| {row['feeding']} | {row['batch']} |")
        if "images_per_s" in row:
            lines.append(f"{head} {row['images_per_s']:,.1f} | {row['step_ms']} | {row['data_wait_share']:.1%} |")
        else:
            lines.append(f"{head} {row.get('skipped') or row.get('error')} | | |")
    lines += ["", "## Inference latency", ""]
    lat = report["latency"]
    if "rows" in lat:
        lines += [f"{lat['model']}; CPU rows are the export stage's formats.", "",
                  "| device | model | batch | mean ms | p95 ms | images/s |", "|---|---|---:|---:|---:|---:|"]
        for row in lat["rows"]:
            if "skipped" in row:
                lines.append(f"| {row['device']} | {row['model']} | {row['batch']} | skipped: {row['skipped']} | | |")
            else:
                lines.append(f"| {row['device']} | {row['model']} | {row['batch']} | {row['mean_ms']:.3f} "
                             f"| {row['p95_ms']:.3f} | {row['images_per_s']:,.1f} |")
    else:
        lines.append(f"{lat}")
    lines += ["", "## Data-parallel training (train.nproc)", "", _summary(report["ddp"], "images_per_s_after_first_epoch"),
              "", "## The CPU recipe against airbench94 (CIFAR-10)", "", _parity_summary(report["recipe_vs_airbench94"]), ""]
    return "\n".join(lines)


def _summary(section: dict[str, Any], key: str) -> str:
    if "skipped" in section or "error" in section:
        return str(section.get("skipped") or section.get("error"))
    return (f"{section['processes']} processes: {section[key]} images/s after the first epoch, "
            f"wall {section['wall_s']} s ({section['stop_reason']}).")


def _parity_summary(section: dict[str, Any]) -> str:
    if "skipped" in section or "error" in section:
        return str(section.get("skipped") or section.get("error"))
    ours, theirs = section["summary"]["recipe"], section["summary"]["reference"]
    return (f"{section['train_images']} train images, scored on {section['scored_on']}, seeds 0 and 1 "
            f"(decoded in {section['decode_s']} s; recipe overrides: {section['recipe_overrides'] or 'none'}).\n\n"
            "| | training s | plain | flip | 6-view TTA | 10-view TTA |\n|---|---:|---:|---:|---:|---:|\n"
            f"| airbench94 reference | {theirs['train_seconds']} | {theirs['plain']:.2%} | {theirs['flip']:.2%} "
            f"| {theirs['tta6']:.2%} | |\n"
            f"| recipes/cpu.yaml through fit | {ours['train_seconds']} | {ours['plain']:.2%} | {ours['flip']:.2%} "
            f"| {ours['tta6']:.2%} | {ours['tta']:.2%} |\n\n"
            f"Training time ratio (recipe / reference): {section['summary']['time_ratio']}.")
