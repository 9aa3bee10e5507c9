r"""The distill table: the teacher and every student decoded side by side in one process.

    python -m distill.results --teacher TEACHER.pt --data DATA --output FILE NAME=OUT ...

Each ``OUT`` is a ``toolkit-distill`` output folder (``plugins/distill/recipes/multi30k.sh``:
``real``, ``sequence``, ``word``, ``both``) with its ``student.pt``. The teacher (beam 5) and
each student (beam 5 and greedy) translate the test split, batch 64, in alternating rounds
(``decode_alternately``), so every speed is measured beside the teacher's. Per student and
search: sacreBLEU, sentences/s and the ratio to the teacher's beam 5, parameters and file
bytes; per student, the wall-clock of each stage from its stamps. JSON goes to ``--output``
(the input of ``distill.plot``), Markdown to stdout.

Seeds: name students ``GROUP:SEED`` (``seq-ls0:1=runs/kds/s1/sequence ...``) and a last table gives,
per group, each seed's greedy - beam 5 difference with their mean and standard deviation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import add_test_set_arguments, decode_alternately, read_test_set, write_results
from toolkit.generation.translator import Translator
from toolkit.inference import checkpoint_paths
from toolkit.plugins import load_plugins
from toolkit.scoring.bleu import score

SEARCHES = {"beam5": 5, "greedy": 1}
STAGES = ("translate", "corpus", "student", "evaluate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", nargs="+", metavar="NAME=OUT", help="a toolkit-distill output folder")
    parser.add_argument("--teacher", type=Path, required=True)
    add_test_set_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timed rounds over the split")
    parser.add_argument("--output", type=Path, required=True)
    return parser.parse_args(argv)


def stage_seconds(folder: Path) -> dict[str, float | None]:
    """Each stage's wall-clock, from the stamps ``toolkit-distill`` wrote (None: not recorded)."""
    seconds = {}
    for stage in STAGES:
        stamp = folder / stage / "stamp.json"
        seconds[stage] = json.loads(stamp.read_text()).get("seconds") if stamp.is_file() else None
    student = folder / "student" / "stamp.json"
    seconds["updates"] = json.loads(student.read_text()).get("num_updates") if student.is_file() else None
    return seconds


def translators(args: argparse.Namespace, students: dict[str, Path]) -> dict[str, Translator]:
    """``teacher/beam5`` and ``NAME/beam5``, ``NAME/greedy`` for every student."""
    plugins = load_plugins()

    def load(path: Path, beam: int) -> Translator:
        return Translator.from_checkpoint(path, GenerationConfig(beam=beam), "cpu", plugins, max_sentences=args.batch)

    runs = {"teacher/beam5": load(args.teacher, 5)}
    for name, folder in students.items():
        path = folder / "student.pt"
        if not path.is_file():
            raise SystemExit(f"{folder} has no student.pt: run its toolkit-distill command to the end first")
        runs.update({f"{name}/{search}": load(path, beam) for search, beam in SEARCHES.items()})
    return runs


def table(args: argparse.Namespace, students: dict[str, Path]) -> list[dict]:
    sources, references = read_test_set(args)
    runs = translators(args, students)
    totals = decode_alternately(runs, sources, args.rounds)
    speed = {name: t["sentences"] / t["seconds"] for name, t in totals.items()}
    rows = []
    for name, translator in runs.items():
        model, search = name.split("/")
        path = args.teacher if model == "teacher" else students[model] / "student.pt"
        rows.append({"model": model, "search": search,
                     "bleu": round(score(totals[name]["outputs"], references).bleu, 2),
                     "sentences_per_s": round(speed[name], 1), "vs_teacher": round(speed[name] / speed["teacher/beam5"], 2),
                     "parameters": translator.model.num_parameters(),
                     "bytes": sum(member.stat().st_size for member in checkpoint_paths(path)),  # an ensemble: all
                     "stages": None if model == "teacher" else stage_seconds(students[model])})
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | search | BLEU | sentences/s | vs teacher beam 5 | parameters | bytes |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['search']} | {r['bleu']:.2f} | {r['sentences_per_s']:.1f} | {r['vs_teacher']:.2f}x | "
              f"{r['parameters']:,} | {r['bytes']:,} |" for r in rows]
    lines += ["", "| student | updates | " + " | ".join(f"{s} (s)" for s in STAGES) + " |",
              "|---" * (len(STAGES) + 2) + "|"]
    for r in rows:
        if r["search"] == "beam5" and r["stages"]:
            cells = ["-" if r["stages"][s] is None else f"{r['stages'][s]:,.1f}" for s in STAGES]
            lines.append(f"| {r['model']} | {r['stages']['updates']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_summary(rows: list[dict]) -> str:
    """Per ``GROUP`` of students named ``GROUP:SEED``: beam 5 and greedy BLEU, and greedy - beam 5
    for each seed, with mean and sample standard deviation (empty when no name has a seed)."""
    bleu = {(r["model"], r["search"]): r["bleu"] for r in rows}
    groups: dict[str, list[str]] = {}
    for model, search in bleu:
        if ":" in model and search == "beam5":
            groups.setdefault(model.split(":")[0], []).append(model)
    if not groups:
        return ""
    lines = ["| students | seeds | beam 5 (mean) | greedy (mean) | greedy - beam 5 per seed | mean | sd |",
             "|---|---|---|---|---|---|---|"]
    for group, models in groups.items():
        beams = [bleu[m, "beam5"] for m in models]
        greedies = [bleu[m, "greedy"] for m in models]
        gaps = [g - b for g, b in zip(greedies, beams)]
        sd = f"{statistics.stdev(gaps):.2f}" if len(gaps) > 1 else "-"
        lines.append(f"| {group} | {', '.join(m.split(':', 1)[1] for m in models)} | {statistics.mean(beams):.2f} | "
                     f"{statistics.mean(greedies):.2f} | {', '.join(f'{g:+.2f}' for g in gaps)} | "
                     f"{statistics.mean(gaps):+.2f} | {sd} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    students = {}
    for item in args.students:
        name, sep, folder = item.partition("=")
        if not sep or not name or name == "teacher":
            raise SystemExit(f"expected NAME=OUT (NAME not 'teacher'), got {item!r}")
        students[name] = Path(folder)
    rows = table(args, students)
    write_results(args.output, args, rounds=args.rounds, rows=rows)
    print(markdown(rows))
    summary = seed_summary(rows)
    if summary:
        print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
