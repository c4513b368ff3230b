"""The study store: SQLite in WAL mode, one row per finished trial, written the moment it ends.

Standard-library sqlite3 keeps the dependency list short; the schema is plain SQL with JSON
columns, so moving to PostgreSQL later is a change of driver, not of design. WAL lets a reader
(``petra show``, a dashboard) read while the search writes, and a ``kill -9`` loses at most the
trial in flight.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from petra.errors import ConfigError
from petra.optimizer.genome import CandidateConfig
from petra.optimizer.records import Trial, TrialState
from petra.profilers.measure import Measurement
from petra.profilers.timing import Timing

TRIALS = """
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    genome TEXT,
    state TEXT NOT NULL CHECK (state IN ('COMPLETE', 'INFEASIBLE', 'FAIL', 'STOPPED')),
    reason TEXT,
    config TEXT NOT NULL,
    val REAL, test REAL, drop_val REAL,
    p50_ms REAL, size_bytes INTEGER,
    measurement TEXT,
    artifact TEXT,
    stage_s TEXT,
    elapsed_s REAL,
    finished REAL NOT NULL
);
"""
SCHEMA = TRIALS + """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created REAL NOT NULL,
    petra_version TEXT NOT NULL,
    task TEXT NOT NULL,
    runtime TEXT NOT NULL,
    run_config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS populations (
    generation INTEGER PRIMARY KEY,
    genomes TEXT NOT NULL,
    written REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def measurement_to_state(m: Measurement) -> dict[str, Any]:
    return dataclasses.asdict(m)


def _timing(d: dict[str, Any]) -> Timing:
    names = {f.name for f in dataclasses.fields(Timing)}
    return Timing(**{k: (tuple(v) if k == "samples_ms" else v) for k, v in d.items() if k in names})


def measurement_from_state(d: dict[str, Any]) -> Measurement:
    """Inverse of ``dataclasses.asdict``: Timings (also inside dicts keyed by batch size, whose
    keys JSON turned into strings) and tuples come back as they were."""
    kwargs = {}
    for f in dataclasses.fields(Measurement):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(v, dict) and "samples_ms" in v:
            v = _timing(v)
        elif f.name == "batch_timings" and v:
            v = {int(k): _timing(t) for k, t in v.items()}
        elif f.name in ("load_before", "load_after", "session_p50s") and v is not None:
            v = tuple(v)
        kwargs[f.name] = v
    return Measurement(**kwargs)


class StudyStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._rename_pruned()

    def _rename_pruned(self) -> None:
        """A store from before STOPPED was named PRUNED: its table's CHECK refuses the new
        name, so the table is copied into the current schema with the state renamed."""
        ddl = self.db.execute("SELECT sql FROM sqlite_master WHERE name = 'trials'").fetchone()[0]
        if "'PRUNED'" not in ddl:
            return
        cols = [row[1] for row in self.db.execute("PRAGMA table_info(trials)")]
        select = ", ".join("CASE state WHEN 'PRUNED' THEN 'STOPPED' ELSE state END" if c == "state"
                           else c for c in cols)
        self.db.executescript(f"BEGIN; ALTER TABLE trials RENAME TO trials_pruned; {TRIALS} "
                              f"INSERT INTO trials ({', '.join(cols)}) SELECT {select} FROM trials_pruned; "
                              "DROP TABLE trials_pruned; COMMIT;")

    def close(self) -> None:
        self.db.close()

    # -- study ----------------------------------------------------------------------------
    def init_study(self, petra_version: str, task: str, runtime: str, run_config: dict) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO study (id, created, petra_version, task, runtime, run_config) "
            "VALUES (1, ?, ?, ?, ?, ?)",
            (time.time(), petra_version, task, runtime, json.dumps(run_config, default=str)),
        )

    def run_config(self) -> dict | None:
        row = self.db.execute("SELECT run_config FROM study WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (key, json.dumps(value, default=str)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- trials ---------------------------------------------------------------------------
    @staticmethod
    def _columns(t: Trial) -> dict[str, Any]:
        """What a trial's record sets beside its key, config and genome."""
        m = t.measurement
        return {"generation": t.generation, "state": t.state.value, "reason": t.reason, "val": t.val,
                "test": t.test, "drop_val": t.drop, "p50_ms": m.p50_ms if m else None,
                "size_bytes": m.size_bytes if m else None,
                "measurement": json.dumps(measurement_to_state(m), default=str) if m else None,
                "artifact": t.artifact, "stage_s": json.dumps(t.stage_s), "elapsed_s": t.elapsed_s}

    def save_trial(self, t: Trial, genome: tuple[int, ...] | None = None) -> None:
        cols = {"number": t.number, "key": t.config.key, "genome": json.dumps(genome) if genome else None,
                "config": json.dumps(t.config.to_json()), **self._columns(t), "finished": time.time()}
        self.db.execute(f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        tuple(cols.values()))

    def update_trial(self, t: Trial) -> None:
        """A trial's newer record (re-measured figures, a drop against the chosen baseline)
        replaces the stored one; its key, config and genome stay."""
        cols = self._columns(t)
        self.db.execute(f"UPDATE trials SET {', '.join(f'{c} = ?' for c in cols)} WHERE number = ?",
                        (*cols.values(), t.number))

    def trials(self) -> list[Trial]:
        rows = self.db.execute(
            "SELECT number, generation, config, state, reason, val, test, drop_val, measurement, "
            "artifact, stage_s, elapsed_s FROM trials ORDER BY number").fetchall()
        out = []
        for (number, gen, config, state, reason, val, test, drop, meas, art, stage_s, el) in rows:
            out.append(Trial(
                number=number, generation=gen, config=CandidateConfig.from_json(json.loads(config)),
                state=TrialState(state), reason=reason, val=val, test=test, drop=drop,
                measurement=measurement_from_state(json.loads(meas)) if meas else None,
                artifact=art, stage_s=json.loads(stage_s or "{}"), elapsed_s=el or 0.0,
            ))
        return out

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    # -- populations ----------------------------------------------------------------------
    def save_population(self, generation: int, genomes: list[tuple[int, ...]]) -> None:
        self.db.execute("INSERT OR REPLACE INTO populations (generation, genomes, written) VALUES (?, ?, ?)",
                        (generation, json.dumps([list(map(int, g)) for g in genomes]), time.time()))

    def last_population(self) -> tuple[int, list[tuple[int, ...]]] | None:
        row = self.db.execute(
            "SELECT generation, genomes FROM populations ORDER BY generation DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return row[0], [tuple(g) for g in json.loads(row[1])]


def open_existing(run_dir: Path) -> StudyStore:
    path = Path(run_dir) / "study.db"
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no study.db; pass the folder of a "
                          "`petra optimize` run (its --output)")
    return StudyStore(path)
