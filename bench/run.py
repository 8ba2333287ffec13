"""kbai benchmark suite: ``python bench/run.py [--commit HEAD] [--quick] [--only SECTIONS] [--out DIR]``.

Measures, in one run on this machine, and writes the figures:
  1. inproc       one verification in process: warm cache, cold SQLite, cold PostgreSQL, bare SHA-256,
                  a PostgreSQL SELECT 1, and djangorestframework-api-key's check on the same number of
                  keys (its own venv);
  2. http         over HTTP with wrk (server core 0, wrk core 1): bare Starlette and bare FastAPI,
                  /auth/check and GET /api/v1/me on SQLite, PostgreSQL + Redis and PostgreSQL alone, the
                  full access log on, a kbai.sdk-protected app against the same app unprotected, DRF +
                  djangorestframework-api-key under gunicorn; then --workers 2 against one worker, and
                  the PostgreSQL transactions and Redis commands the warm load caused;
  3. warm_io      SQL statements and Redis commands per 10,000 warm requests (and per cold one), counted
                  in process in all three configurations;
  3b. restrictions what an IP allowlist, a rate limit and a quota add to a warm check, and the shares
                  (database writes) the limits cost per 10,000 requests;
  4. scale        1,000,000 tokens / 10,000 tenants in PostgreSQL: cold verify, list, create;
  5. last_used    database writes for "Last used" per 10,000 authenticated requests;
  6. propagation  revocation between two kbai serve processes (Redis, PostgreSQL NOTIFY, SQLite poll);
  7. profile      where a served request spends its time (py-spy under wrk load; not in --quick).
A full run writes docs/benchmarks.md and bench/results.json; it refuses to while src/ has uncommitted
changes unless given ``--commit REV`` (then it measures that revision's src/). ``--quick`` (under
2 minutes on a quiet machine) and ``--only`` write to bench/work/quick/ and bench/work/partial/
instead, so a smoke run never replaces the published figures. ``--render`` rewrites the Markdown from
results.json without measuring. Not part of the test suite (pytest only collects tests/).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _reexec_in_project_venv() -> None:
    """Run under the project's venv when started with another interpreter (``python bench/run.py``)."""
    try:
        import kbai  # noqa: F401
    except ImportError:
        venv_python = HERE.parent / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), *sys.argv])
        raise SystemExit(
            "kbai is not importable: install the project (pip install -e .) or create .venv first"
        ) from None


def _snapshot(rev: str) -> None:
    """Re-run against ``rev``'s src/ (``git archive`` into bench/work/), not the working tree.

    The working tree may be mid-edit by others; a committed revision gives figures that can be
    traced to code. The snapshot's src/ goes first on PYTHONPATH, which every server the suite
    starts inherits, so they run the same code.
    """
    import subprocess

    sha = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = HERE / "work" / f"snapshot-{sha[:12]}"
    if not (target / "src" / "kbai").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "-C", str(HERE.parent), "archive", sha, "src"], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
        archive.wait()
    os.environ["PYTHONPATH"] = str(target / "src") + (
        os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
    )
    os.environ["BENCH_SNAPSHOT"] = sha
    argv, skip = [], False
    for a in sys.argv:
        if skip or a.startswith("--commit="):
            skip = False
            continue
        if a == "--commit":
            skip = True
            continue
        argv.append(a)
    venv_python = HERE.parent / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    os.execv(python, [python, *argv])


SECTIONS = ("inproc", "http", "warm_io", "restrictions", "scale", "last_used", "propagation", "profile")


def main() -> int:
    _reexec_in_project_venv()
    sys.path.insert(0, str(HERE))
    import common
    import peer_env
    import report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced sizes and durations (under 2 minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, help="directory for results.json and benchmarks.md")
    parser.add_argument(
        "--commit", metavar="REV", help="benchmark the committed src/ of REV (e.g. HEAD) instead of the working tree"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="MINUTES",
        help="first wait up to MINUTES for the 1-min load average to drop below the core count",
    )
    parser.add_argument(
        "--render", action="store_true", help="measure nothing: rewrite benchmarks.md from the existing results.json"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peers (no bench/.venv-peers)")
    args = parser.parse_args()

    if args.commit and not os.environ.get("BENCH_SNAPSHOT"):
        _snapshot(args.commit)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    sections = only or [s for s in SECTIONS if not (args.quick and s == "profile")]
    if args.out:
        json_path, md_path = args.out / "results.json", args.out / "benchmarks.md"
    elif args.quick or only:
        sub = common.WORK / ("quick" if args.quick else "partial")
        json_path, md_path = sub / "results.json", sub / "benchmarks.md"
    else:
        json_path, md_path = HERE / "results.json", HERE.parent / "docs" / "benchmarks.md"

    if args.render:
        import json

        md_path.write_text(report.render(json.loads(json_path.read_text())))
        common.log(f"rewrote {md_path} from {json_path}")
        return 0
    publishing = json_path == HERE / "results.json"
    if publishing and not os.environ.get("BENCH_SNAPSHOT") and _src_dirty():
        parser.error(
            "src/ has uncommitted changes, so the published figures could not be traced to code: "
            "use --commit HEAD (benchmarks the committed src/), or --out DIR for the working tree"
        )
    if args.wait_quiet:
        deadline = time.monotonic() + args.wait_quiet * 60
        while time.monotonic() < deadline and common.loadavg() and common.loadavg()[0] >= (os.cpu_count() or 1):
            common.log(f"waiting for a quieter machine: load average {common.loadavg()}")
            time.sleep(15)
    started = time.monotonic()
    meta = common.machine_facts()
    meta["mode"] = "quick" if args.quick else "full"
    meta["sections"] = sections
    common.log(
        f"{meta['mode']} run: {', '.join(sections)}; load average {meta['loadavg_at_start']} on {meta['nproc']} cores"
    )
    peer_python = None if args.no_peers or not ({"inproc", "http"} & set(sections)) else peer_env.ensure_peers_venv()
    meta["peers_python"] = peer_python and _python_version(peer_python)
    wrk_bin = peer_env.ensure_wrk() if {"http", "profile"} & set(sections) else None

    results: dict[str, object] = {"meta": meta}
    failed = []
    for name in sections:
        section_start = time.monotonic()
        load_before = common.loadavg()
        common.log(f"== {name}")
        try:
            if name == "inproc":
                import inproc

                data = inproc.run(args.quick, peer_python)
            elif name == "http":
                import http_load

                data = http_load.run(args.quick, wrk_bin, peer_python)
            elif name == "warm_io":
                import warm_io

                data = warm_io.run(args.quick)
            elif name == "restrictions":
                import restrictions

                data = restrictions.run(args.quick)
            elif name == "scale":
                import scale

                data = scale.run(args.quick)
            elif name == "last_used":
                import last_used

                data = last_used.run(args.quick)
            elif name == "propagation":
                import propagation

                data = propagation.run(args.quick)
            else:
                import profile_http

                data = profile_http.run(args.quick, wrk_bin)
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
            traceback.print_exc()
            data = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            failed.append(name)
        data["seconds"] = round(time.monotonic() - section_start, 1)
        data["loadavg_before_after"] = [load_before, common.loadavg()]
        results[name] = data
        common.log(f"== {name} done in {data['seconds']} s")
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_at_end"] = common.loadavg()
    common.write_json(json_path, results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(report.render(results))
    common.log(f"wrote {json_path} and {md_path} in {meta['total_seconds']} s")
    if failed:
        common.log(f"sections that failed: {', '.join(failed)}")
    return 1 if failed else 0


def _src_dirty() -> bool:
    import subprocess

    out = subprocess.run(
        ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "src"], capture_output=True, text=True
    )
    return bool(out.stdout.strip())


def _python_version(python: str) -> str:
    import subprocess

    out = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    )
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
