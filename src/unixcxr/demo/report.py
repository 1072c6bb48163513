"""The demo's report: one self-contained HTML page (and a Markdown twin) that shows what the
trained model does against the baselines and its untrained twin, with the images it read and drew."""

from __future__ import annotations

import html
import json
import os
import platform
from pathlib import Path

from unixcxr.data.sources import DataSource
from unixcxr.demo.curve import CURVE_HEADER, curve_figure, curve_note, curve_rows, run_point
from unixcxr.evaluate.labeler import label_reports
from unixcxr.evaluate.suite import first_per_study, generation_prompt, headline, reference_report
from unixcxr.files import write_text
from unixcxr.labels import OBSERVATIONS
from unixcxr.train.recipe import STAGE_ORDER

EXAMPLES = 8
ROWS = (("trained UniX (this run)", "trained", "model"), ("baseline: most common training report", "trained",
        "most_common_report"), ("baseline: nearest neighbour in raw pixels", "trained", "nearest_neighbour_pixels"),
        ("untrained UniX (same network, random decoder)", "untrained", "model"))
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{width:180px;height:180px;image-rendering:pixelated}
.ok{background:#d9f2d9}.bad{background:#f7d4d4}.chip{display:inline-block;margin:1px;padding:0 4px;
border-radius:3px;font-size:12px}.rep{font-size:13px;text-align:left;max-width:330px}"""


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th class='l'>{h}</th>" if i == 0 else f"<th>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{c}</td>" if i == 0 else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metric_rows(trained: dict, untrained: dict) -> list[list[str]]:
    source = {"trained": trained, "untrained": untrained}
    rows = []
    for label, which, key in ROWS:
        h = headline(source[which]["reports"][key])
        rows.append([label] + [f"{h[k]:.3f}" for k in ("micro14_pos", "micro5_pos", "macro14_pos", "micro14_neg",
                                                        "bleu4", "rougeL")])
    return rows


def image_rows(trained: dict, untrained: dict) -> list[list[str]]:
    rows = []
    for label, m in (("trained UniX", trained), ("untrained UniX", untrained)):
        i, p = m["images"], m["images"]["prdc"]
        rt = m["round_trip"]["label_f1_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"]
        rows.append([label, f"{i['fd']:.2f}", f"{i['kd']['mean']:.4f}", f"{p['precision']:.3f}",
                     f"{p['recall']:.3f}", f"{p['density']:.3f}", f"{p['coverage']:.3f}", f"{rt:.3f}"])
    return rows


def ceiling_note(metrics: dict) -> str:
    """' (VAE ceiling 0.xxx)' when the evaluation read back the VAE's reconstructions of the real images."""
    ceiling = metrics["round_trip"].get("vae_ceiling_vs_prompt")
    if ceiling is None:
        return ""
    return f" (VAE ceiling {ceiling['uncertain_as_positive']['micro_f1_14']:.3f})"


def target_rows(trained: dict, untrained: dict) -> list[list[str]]:
    """The acceptance targets of the CPU recipe (README, training issue), each measured and judged."""
    reports = trained["reports"]
    model = headline(reports["model"])["micro14_pos"]
    best_baseline = max(headline(reports[k])["micro14_pos"] for k in ("most_common_report", "nearest_neighbour_pixels"))
    fd, fd_untrained = trained["images"]["fd"], untrained["images"]["fd"]
    rt = trained["round_trip"]["label_f1_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"]
    checks = (("Micro-F1-14 unc.+ of generated reports", f"{model:.3f}", ">= 0.70", model >= 0.70),
              ("margin over the better baseline", f"{model - best_baseline:+.3f}", ">= +0.15",
               model - best_baseline >= 0.15),
              ("FD trained / FD untrained", f"{fd / fd_untrained:.2f}", "< 0.50", fd < 0.5 * fd_untrained),
              ("round-trip Micro-F1-14", f"{rt:.3f}{ceiling_note(trained)}", ">= 0.50", rt >= 0.5))
    return [[name, value, target, "met" if ok else "NOT met"] for name, value, target, ok in checks]


PRIVACY_HEADER = ["space", "generated: nearest-train median", "held-out real: nearest-train median",
                  "generated max", "memorisation rate", "nearest is the prompt's patient (chance)"]
UTILITY_HEADER = ["classifier trained on", "films", "macro AUROC", "macro F1"]


def privacy_rows(metrics: dict) -> list[list[str]]:
    """Nearest-training similarity of films drawn from training prompts against real held-out films."""
    p = metrics.get("privacy")
    if not p:
        return []
    rows = []
    for space, name in (("features", f"features ({p['settings']['features']['name']}, cosine)"),
                        ("pixels", "pixels (correlation)"), ("reid", "re-identification score")):
        if space not in p:
            continue
        b = p[space]
        gen, held = b.get("generated") or b["best_training_film"], b.get("heldout") or b["heldout_best_training_film"]
        rows.append([name, f"{gen['median']:.3f}", f"{held['median']:.3f}", f"{gen['max']:.3f}",
                     f"{b['memorisation_rate']:.3f}", f"{b['same_patient']['rate']:.3f} "
                     f"({b['same_patient']['chance']:.3f})"])
    return rows


def privacy_note(metrics: dict) -> str:
    p = metrics.get("privacy")
    if not p:
        return ""
    return (f"{p['n_generated']} films drawn from training prompts, each against its nearest of {p['n_train']} "
            f"training films; the calibration is the same statistic for {p['n_heldout']} real test films (patients "
            "the model never saw). Memorisation rate: the share of generated films closer to a training film than "
            "any real test film is. docs/privacy-and-utility.md defines every number.")


def utility_rows(metrics: dict) -> list[list[str]]:
    u = metrics.get("utility")
    if not u:
        return []
    return [[arm, str(a["n_train"]), "-" if a["macro_auroc"] is None else f"{a['macro_auroc']:.3f}",
             "-" if a["macro_f1"] is None else f"{a['macro_f1']:.3f}"] for arm, a in u["arms"].items()]


def utility_note(metrics: dict) -> str:
    u = metrics.get("utility")
    if not u:
        return ""
    st, skipped = u["settings"], next(iter(u["arms"].values()))["skipped"]
    return (f"EfficientNet-Lite0 fine-tuned for {st['steps']} steps at {st['image_size']} px (seed {st['seed']}, the "
            f"same schedule for every arm), tested on {u['n_test']} real test films; AUROC and F1 at 0.5 averaged "
            f"over the observations with both classes in the test films"
            + (f" (skipped: {', '.join(skipped)})." if skipped else "."))


def figure_paths(root: Path, metrics: dict) -> dict[str, str]:
    """The evaluation's figures (evaluate/figures.py) that exist, relative to the report's folder."""
    folder = root / "eval"
    return {key: _rel(folder / name, root) for key, name in metrics.get("figures", {}).items()
            if (folder / name).is_file()}


def _figure_html(paths: dict[str, str], key: str, caption: str) -> str:
    if key not in paths:
        return ""
    return (f"<figure><img style='width:auto;height:auto;max-width:100%' src='{paths[key]}' alt='{caption}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def _chips(ref: dict, pred: dict) -> str:
    out = []
    for name in OBSERVATIONS:
        r, p = ref.get(name), pred.get(name)
        if r is None and p is None:
            continue
        cls = "ok" if r == p else "bad"
        out.append(f"<span class='chip {cls}' title='reference {r}, generated {p}'>{html.escape(name)} "
                   f"{'' if r is None else r}/{'' if p is None else p}</span>")
    return " ".join(out)


def listen_rows(listening: dict) -> list[list[str]]:
    """Per probe report: the film each generator drew from the same seed and what the reader found."""
    if not listening:
        return []
    rows = []
    for i, row in enumerate(listening["trained"]["rows"]):
        cells = [f"<div class='rep'><b>{html.escape(row['probe'])}</b>: {html.escape(row['text'])}<br>asked: "
                 f"{html.escape(', '.join(row['asked']) or '-')}</div>"]
        for name in ("trained", "untrained"):
            probe = listening[name]["rows"][i]
            cells += [f"<img src='listen/{name}/{probe['image']}' alt='{name}: {html.escape(probe['probe'])}'>",
                      f"<div class='rep'>{html.escape(', '.join(probe['read']) or '-')}</div>"]
        rows.append(cells)
    return rows


def listen_note(listening: dict) -> str:
    if not listening:
        return ""
    t, u = listening["trained"], listening["untrained"]
    return (f"<p>One noise seed (the same for every film), six reports. Text sensitivity (mean absolute "
            f"difference of each film from the six films' mean, 0-255): trained {t['text_sensitivity']:.1f}, "
            f"untrained {u['text_sensitivity']:.1f}. Films in which the trained reader found an observation the "
            f"report asked for: trained {t['asked_found']} / {t['asked']}, untrained {u['asked_found']} / "
            f"{u['asked']}.</p>")


def write_report(plan, trained: dict, untrained: dict, listening: dict | None = None) -> Path:
    root = plan.out
    records = first_per_study(DataSource(plan.data).samples("test"), plan.eval_limit)[:EXAMPLES]
    generated = {}
    for line in (root / "eval" / "reports.jsonl").read_text().splitlines():
        row = json.loads(line)
        generated[str(row["id"])] = row["report"]
    refs = [reference_report(r) for r in records]
    preds = [generated.get(r.study_id, "") for r in records]
    ref_labels, pred_labels = label_reports(refs), label_reports(preds)

    read_rows = []
    for r, ref, pred, rl, pl in zip(records, refs, preds, ref_labels, pred_labels):
        read_rows.append([f"<img src='{_rel(r.image.path, root)}' alt='test image {r.study_id}'>",
                          f"<div class='rep'>{html.escape(ref)}</div>", f"<div class='rep'>{html.escape(pred)}</div>",
                          f"<div class='rep'>{_chips(rl, pl)}</div>"])
    draw_rows = []
    for r in records:
        draw_rows.append([f"<div class='rep'>{html.escape(generation_prompt(r))}</div>",
                          f"<img src='{_rel(r.image.path, root)}' alt='real'>",
                          f"<img src='eval/generated/{r.study_id}.png' alt='generated by the trained model'>",
                          f"<img src='eval-untrained/generated/{r.study_id}.png' alt='untrained model'>"])
    stage_rows, curves = [], []
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    done_files = sorted((plan.run / "stages").glob("*/done.json"), key=lambda p: order.get(p.parent.name, 99))
    for done in done_files:
        s = json.loads(done.read_text())
        stage = done.parent.name
        mfu = s.get("mfu")
        data = s.get("data_fraction")
        stage_rows.append([stage, str(s.get("steps", "")), f"{s.get('wall_seconds', 0):.0f}",
                           f"{mfu:.1%}" if isinstance(mfu, float) else "",
                           f"{data:.1%}" if isinstance(data, float) else "", f"{s.get('loss', float('nan')):.4f}"
                           if isinstance(s.get("loss"), float) else ""])
        if (done.parent / "loss.png").is_file():
            curves.append(f"<figure style='display:inline-block'><img style='width:360px;height:auto' "
                          f"src='{_rel(done.parent / 'loss.png', root)}' alt='{stage} loss'>"
                          f"<figcaption>{stage}</figcaption></figure>")
    timing_rows = [[k, f"{v:.0f}"] for k, v in plan.timings.items()]
    commands = (f"unixcxr synth {plan.data} --n {plan.studies} --size {plan.size} --seed {plan.seed}\n"
                f"unixcxr train {root / 'recipe.yaml'} --data {plan.data} --out {plan.run}\n"
                f"unixcxr evaluate --model {plan.run} --data {plan.data} --split test --limit {plan.eval_limit} "
                f"--steps {plan.eval_steps} --out {root / 'eval'}")
    feats = trained["images"]["features"]
    figs = figure_paths(root, trained)
    this = run_point(plan.run, trained)
    curve_png = curve_figure(this, root / "figures" / "generation_curve.png")
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>unixcxr demo</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>unixcxr demo: one model that reads and draws chest X-rays</h1>",
        f"<p>Trained from scratch on SynthCXR ({plan.studies} studies, {plan.size} px) on "
        f"{html.escape(platform.machine())} with {os.cpu_count()} CPU cores in {plan.timings.get('total', 0) / 60:.1f} "
        f"minutes (budget {plan.budget_minutes:g}). Test split: {trained['n_studies']} studies.</p>",
        "<h2>Targets</h2>", _table(["target", "measured", "wanted", "verdict"], target_rows(trained, untrained)),
        "<h2>Reading: report generation</h2><p>Labels by the built-in CheXpert-style labeler; unc.+ / unc.- = "
        "uncertain counted as positive / negative.</p>",
        _table(["system", "Micro-F1-14 unc.+", "Micro-F1-5 unc.+", "Macro-F1-14 unc.+", "Micro-F1-14 unc.-",
                "BLEU-4", "ROUGE-L"], metric_rows(trained, untrained)),
        _figure_html(figs, "per_class_f1", "per-class F1 of the trained model's reports and the baselines"),
        f"<h2>Drawing: image generation and the round trip</h2><p>Features: {html.escape(feats['name'])} "
        f"({html.escape(feats['source'])}); round trip = Micro-F1-14 of the labels the model reads back from its "
        "own image against the labels asked for; its VAE ceiling is the same score for the VAE's reconstructions of "
        "the real test images (a generated image is a VAE decoding, so it can show no more).</p>",
        _table(["system", "FD", "KD", "precision", "recall", "density", "coverage", "round trip"],
               image_rows(trained, untrained)),
        _figure_html(figs, "real_vs_generated", "real test films over the films the trained model drew from "
                     "their findings"),
        *([f"<h2>Privacy: does it copy its training patients?</h2><p>{html.escape(privacy_note(trained))}</p>",
           _table(PRIVACY_HEADER, privacy_rows(trained)),
           _figure_html(figs, "privacy_closest_pairs", "the closest pairs: films drawn from training prompts over "
                        "their nearest training films (feature cosine similarity above each pair)")]
          if trained.get("privacy") else []),
        *([f"<h2>Utility: do its films teach a classifier?</h2><p>{html.escape(utility_note(trained))}</p>",
           _table(UTILITY_HEADER, utility_rows(trained)),
           _figure_html(figs, "utility_auroc", "per-class AUROC on the real test films, by training arm")]
          if trained.get("utility") else []),
        "<h2>Test images read by the trained model</h2><p>Chips: observation reference/generated label, green "
        "when they agree.</p>",
        _table(["image", "reference report", "generated report", "labels"], read_rows),
        "<h2>Reports drawn by the trained and untrained model</h2>",
        _table(["findings asked for", "real image", "trained", "untrained"], draw_rows),
        "<h2>What more generation training buys</h2>", f"<p>{html.escape(curve_note())}</p>",
        _table(CURVE_HEADER, curve_rows(this)),
        f"<img style='width:720px;height:auto' src='{_rel(curve_png, root)}' alt='round trip and FD against "
        "generation steps'>",
        "<h2>Does it listen?</h2>", listen_note(listening or {}),
        _table(["report (labels asked)", "trained", "trained reader finds", "untrained", "trained reader finds"],
               listen_rows(listening or {})) if listening else "",
        "<h2>Training</h2>", _table(["stage", "steps", "seconds", "MFU", "loader share", "final loss"], stage_rows),
        "".join(curves), "<h2>Timings (seconds)</h2>", _table(["phase", "seconds"], timing_rows),
        f"<h2>Reproduce</h2><pre>{html.escape(commands)}</pre></body></html>",
    ]
    write_text(root / "report.html", "\n".join(page))
    write_text(root / "report.md", markdown(plan, trained, untrained, stage_rows, commands, listening, figs, this))
    return root / "report.html"


def markdown(plan, trained, untrained, stage_rows, commands, listening: dict | None = None,
             figs: dict[str, str] | None = None, this: dict | None = None) -> str:
    def table(header, rows):
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(r) + " |" for r in rows])

    return "\n\n".join([
        f"# unixcxr demo ({plan.studies} SynthCXR studies, {plan.timings.get('total', 0) / 60:.1f} min)",
        table(["target", "measured", "wanted", "verdict"], target_rows(trained, untrained)),
        table(["system", "Micro-F1-14 unc.+", "Micro-F1-5 unc.+", "Macro-F1-14 unc.+", "Micro-F1-14 unc.-",
               "BLEU-4", "ROUGE-L"], metric_rows(trained, untrained)),
        *(f"![{key.replace('_', ' ')}]({path})" for key, path in (figs or {}).items()),
        table(["system", "FD", "KD", "precision", "recall", "density", "coverage", "round trip"],
              image_rows(trained, untrained)),
        *([f"Privacy. {privacy_note(trained)}", table(PRIVACY_HEADER, privacy_rows(trained))]
          if trained.get("privacy") else []),
        *([f"Utility. {utility_note(trained)}", table(UTILITY_HEADER, utility_rows(trained))]
          if trained.get("utility") else []),
        table(["stage", "steps", "seconds", "MFU", "loader share", "final loss"], stage_rows),
        _listen_markdown(listening, table),
        f"What more generation training buys. {curve_note()}", table(CURVE_HEADER, curve_rows(this)),
        table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in plan.timings.items()]),
        f"```\n{commands}\n```\n"])


def _listen_markdown(listening: dict | None, table) -> str:
    if not listening:
        return ""
    t, u = listening["trained"], listening["untrained"]
    rows = [[row["probe"], ", ".join(row["asked"]) or "-", ", ".join(row["read"]) or "-",
             ", ".join(u["rows"][i]["read"]) or "-"] for i, row in enumerate(t["rows"])]
    return (f"Does it listen? Text sensitivity (0-255): trained {t['text_sensitivity']:.1f}, untrained "
            f"{u['text_sensitivity']:.1f}; asked observations found: {t['asked_found']} / {t['asked']} against "
            f"{u['asked_found']} / {u['asked']}.\n\n"
            + table(["report", "asked", "read in the trained film", "read in the untrained film"], rows))
