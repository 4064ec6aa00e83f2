r"""The autograder's command line: ``python -m autograder COMMAND``.

::

    labs                          list the course's labs
    release [LAB ...]             regenerate notebooks/LAB/LAB.ipynb from the source (default: all labs)
    check-release [LAB ...]       fail, naming the lab, when a committed release is stale
    autograde LAB [--root DIR] [--restart] [--jobs N | --scheduler tcp://HOST:8786] [--db-url URL]
                  [--chunk N]     autograde every submission of LAB in a course (default: the
                                  course itself); an interrupted run is finished by running it
                                  again. With --jobs or --scheduler, in parallel on Dask
                                  (autograder.parallel: a chunk of submissions per task, one
                                  nbgrader process each; the gradebook in PostgreSQL)
    demo [--root DIR] [--submissions DIR] [--labs LAB ...]
                                  end-to-end demo in a fresh scratch course (default _grading/demo):
                                  generate every lab, autograde the example submissions
                                  (c.Autograder.submissions_dir), export a CSV, print a score table

    student-dist [--out DIR]      the labs and the library for students, without solutions, hidden
                                  tests or reference versions (autograder.student_dist; default
                                  _build/student)

``--course DIR`` (before the command) names the course directory, the one holding
``nbgrader_config.py``; by default it is found from the working directory
(:func:`autograder.config.course_root`). The other stages have their own entry points:
``python -m autograder.sandbox`` (probe the sandbox) and ``python -m autograder.integrity``
(mutation testing and hostile submissions).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from autograder.config import CourseNotFound, course_root
from autograder.grading import (
    Course,
    GradingError,
    autograde_course,
    check_release,
    demo,
    discover_labs,
    format_table,
    release,
)

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", default=None,
                        help="course directory holding nbgrader_config.py (default: found from the working directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("labs", help="list the discovered labs")
    p = sub.add_parser("release", help="regenerate notebooks/LAB/LAB.ipynb from solutions/LAB/LAB.ipynb")
    p.add_argument("labs", nargs="*", help="labs to release (default: all)")
    p = sub.add_parser("check-release", help="fail when a committed release is stale")
    p.add_argument("labs", nargs="*", help="labs to check (default: all)")
    p = sub.add_parser("autograde", help="autograde every submission of LAB in a course; resumable, idempotent")
    p.add_argument("lab")
    p.add_argument("--root", default=None, help="course directory to grade in (default: the course)")
    p.add_argument("--restart", action="store_true", help="regrade submissions already graded")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=None,
                       help="grade in parallel on N local Dask workers (one sandboxed kernel each)")
    where.add_argument("--scheduler", default=None, help="grade on the Dask cluster at tcp://HOST:8786")
    p.add_argument("--db-url", default=None, help="gradebook URL (PostgreSQL for parallel grading)")
    p.add_argument("--allow-sqlite", action="store_true", help="let several workers write a SQLite gradebook")
    p.add_argument("--chunk", type=int, default=None,
                   help="with --jobs or --scheduler: submissions per Dask task, one nbgrader process each "
                        "(default: the batch shared evenly between the workers, at most 10)")
    p = sub.add_parser("demo", help="generate, autograde the example submissions, export a CSV")
    p.add_argument("--root", default=None, help="scratch course directory (default: _grading/demo)")
    p.add_argument("--submissions", default=None,
                   help="SUBMISSIONS/<lab>/<student>/<lab>.ipynb (default: c.Autograder.submissions_dir)")
    p.add_argument("--labs", nargs="*", default=None, help="labs to include (default: all)")
    p = sub.add_parser("student-dist", help="the labs and the library for students, without the instructor's material")
    p.add_argument("--out", default=None, help="folder to write (replaced; default: _build/student)")
    args = parser.parse_args(argv)
    try:
        repo = course_root(args.course)
        if args.command == "labs":
            print("\n".join(discover_labs(repo)))
        elif args.command == "release":
            for lab in args.labs or discover_labs(repo):
                path = release(lab, repo)
                print(f"{lab}: wrote {path}")
        elif args.command == "check-release":
            labs = args.labs or discover_labs(repo)
            problems = check_release(labs, repo)
            for lab, found in problems.items():
                print(f"{lab}: the committed release is stale; run `python -m autograder release {lab}`", file=sys.stderr)
                for problem in found:
                    print(f"  {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"releases up to date: {', '.join(labs)}")
        elif args.command == "autograde" and args.chunk is not None and not (args.jobs or args.scheduler):
            raise GradingError("--chunk sets the submissions per Dask task: give it with --jobs N or --scheduler ADDRESS")
        elif args.command == "autograde" and (args.jobs or args.scheduler):
            from autograder.parallel import ALREADY_GRADED, GRADED, grade_parallel

            statuses = grade_parallel(args.root or repo, args.lab, jobs=args.jobs, scheduler=args.scheduler,
                                      db_url=args.db_url, restart=args.restart, allow_sqlite=args.allow_sqlite,
                                      chunk=args.chunk, out=lambda line: print(line, flush=True))
            if any(s not in (GRADED, ALREADY_GRADED) for s in statuses.values()):
                return 1
        elif args.command == "autograde":
            root = Path(args.root) if args.root else repo
            url = args.db_url or (os.environ.get("AUTOGRADER_GRADEBOOK_URL") if root.resolve() == repo.resolve() else None)
            results = autograde_course(Course(root, db_url=url), args.lab, resume=not args.restart)
            print(format_table(results))
            if any(r.error for r in results):
                return 1
        elif args.command == "demo":
            demo(args.root, args.submissions, args.labs, repo)
        elif args.command == "student-dist":
            from autograder.student_dist import build_student_dist

            print(f"student distribution: {build_student_dist(args.out, repo)}")
    except (GradingError, CourseNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
