#!/usr/bin/env python3
"""Read a database's TensorBoard event files with TensorBoard's own reader and compare every
per-step scalar with the database's `steps` and `step_terms`.

    python3 tools/check_tensorboard_events.py reports/results.sqlite

Needs the `tensorboard` package (never needed by the build or the tests, which parse the records
themselves). Exits 1 on the first value that differs beyond float32 rounding.
"""
import glob
import os
import sqlite3
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(db_path):
    root = os.path.splitext(db_path)[0] + ".tensorboard"
    db = sqlite3.connect(db_path)
    total = 0
    for run_dir in sorted({os.path.dirname(p) for p in glob.glob(f"{root}/**/events.out.tfevents.*", recursive=True)}):
        hash_prefix = run_dir.rsplit("-", 1)[-1]
        (run_id,) = db.execute(
            "SELECT max(id) FROM runs WHERE config_hash LIKE ? || '%'", (hash_prefix,)
        ).fetchone()
        acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        acc.Reload()
        checked = 0
        events = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
        rows = db.execute("SELECT step, 'loss', loss FROM steps WHERE run_id = ? UNION ALL "
                          "SELECT step, 'lr', lr FROM steps WHERE run_id = ? UNION ALL "
                          "SELECT step, name, value FROM step_terms WHERE run_id = ?", (run_id, run_id, run_id))
        for step, name, value in rows:
            got = events.get((f"step/{name}", step))
            if got is None or abs(got - value) > 1e-6 * max(1.0, abs(value)):
                sys.exit(f"{run_dir}: step/{name} at step {step}: events {got}, database {value}")
            checked += 1
        print(f"{run_dir}: run {run_id}, {checked} values agree")
        total += checked
    if total == 0:
        sys.exit(f"no event files with recorded steps under {root}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
