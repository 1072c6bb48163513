"""Report cleaning throughput on the real Indiana University reports (issue 6).

1. the rule stage alone (reports per CPU second and per wall second, best of --repeat passes);
2. the batch pipeline, rules only (rule stage + two labeler calls + one fsynced line per report);
3. the LLM stage's concurrency: a loopback chat-completions server that answers after a fixed
   latency, cleaned with 1 worker and with --workers workers (the speed-up should approach the
   worker count, since the stage waits on the network).
Also prints the share of reports whose 14 labels the rule stage leaves unchanged.

The IU reports are read in place from the installed torchxrayvision package (CC BY-NC-ND 4.0);
the pipeline runs write them only to a temporary folder that is deleted afterwards.

    python -m benchmarks.bench_cleaning [--quick] [--repeat 3] [--latency-ms 50] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from unixcxr.data.cleaning.batch import PipelineConfig, run
from unixcxr.data.cleaning.llm import ChatClient, LLMConfig
from unixcxr.data.cleaning.prompts import CLEANED_HEADING, DRAFT_HEADING
from unixcxr.data.cleaning.rewrite import LLMStage
from unixcxr.data.cleaning.rules import clean_report
from unixcxr.data.iu import iter_iu_reports
from unixcxr.labeler import label_report

LLM_REPORTS = 64  # reports sent through the simulated endpoint per worker setting
QUICK_PIPELINE_REPORTS, QUICK_LLM_REPORTS = 1000, 32  # --quick sizes
PASS = '{"added": [], "dropped": [], "changed": [], "verdict": "pass"}'


def best_rate(texts: list[str], repeat: int) -> tuple[float, float]:
    """(reports per CPU second, reports per wall second) of the rule stage, best pass."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for text in texts:
            clean_report(text)
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return len(texts) / cpu, len(texts) / wall


def labels_unchanged(texts: list[str]) -> tuple[int, int]:
    same = total = 0
    for text in texts:
        result = clean_report(text)
        if not result.original.is_empty():
            total += 1
            same += label_report(result.original.as_text()) == label_report(result.text)
    return same, total


def write_input(folder: Path, texts: list[str]) -> Path:
    path = folder / "reports.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "report": t}) + "\n" for i, t in enumerate(texts)))
    return path


def pipeline_rate(source: Path, folder: Path, name: str, workers: int, llm: LLMStage | None = None) -> float:
    start = time.perf_counter()
    summary = run(source, folder / f"{name}.jsonl", PipelineConfig(workers=workers, progress=False), llm=llm)
    return summary.cleaned / (time.perf_counter() - start)


class LatencyServer:
    """Answers every chat request after `latency_s`: rewrites echo the rule draft, judges pass."""

    def __init__(self, latency_s: float):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = request["messages"][-1]["content"]
                is_judge = CLEANED_HEADING in user
                content = PASS if is_judge else user.split(DRAFT_HEADING + "\n", 1)[1]
                time.sleep(latency_s)
                message = {"role": "assistant", "content": content}
                body = json.dumps({"choices": [{"message": message}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rule-stage passes (best is kept)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulated LLM latency per request")
    parser.add_argument("--workers", type=int, default=8, help="pipeline workers for the LLM comparison")
    parser.add_argument("--quick", action="store_true",
                        help=f"one rule-stage pass, pipeline on {QUICK_PIPELINE_REPORTS} reports, "
                             f"LLM stage on {QUICK_LLM_REPORTS}")  # fmt: skip
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    llm_reports = QUICK_LLM_REPORTS if args.quick else LLM_REPORTS

    texts = [report.text for report in iter_iu_reports()]
    per_cpu, per_wall = best_rate(texts, repeat)
    same, total = labels_unchanged(texts)
    print(f"IU reports: {len(texts)}; rule stage, best of {repeat} passes (one thread):")
    print(f"  {per_cpu:,.0f} reports per CPU second   "
          f"({per_wall:,.0f} per wall second on this shared machine)")
    print(f"  labels unchanged by the rule stage: {same}/{total} = {same / total:.1%}")

    server = LatencyServer(args.latency_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipeline_texts = texts[:QUICK_PIPELINE_REPORTS] if args.quick else texts
        source = write_input(folder, pipeline_texts)
        rules_rate = pipeline_rate(source, folder, "rules", workers=2)
        print(f"batch pipeline, rules only, {len(pipeline_texts)} reports (2 workers, labeler checks, "
              f"fsync per line): {rules_rate:,.0f} reports/s")
        (folder / "llm").mkdir()
        llm_source = write_input(folder / "llm", texts[:llm_reports])
        rates = {}
        for workers in (1, args.workers):
            client = ChatClient(LLMConfig(url=server.url, model="bench", timeout_s=10))
            stage = LLMStage(client)
            rates[workers] = pipeline_rate(llm_source, folder / "llm", f"llm{workers}", workers, stage)
        print(f"LLM stage, {args.latency_ms:g} ms per request (2 requests per report), "
              f"{llm_reports} reports:")
        speedup = rates[args.workers] / rates[1]
        print(f"  1 worker {rates[1]:.1f} reports/s, {args.workers} workers "
              f"{rates[args.workers]:.1f} reports/s ({speedup:.1f}x)")
    server.httpd.shutdown()


if __name__ == "__main__":
    main()
