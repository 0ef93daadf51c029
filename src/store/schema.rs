//! The schema: migrations applied in order, counted by `PRAGMA user_version`.

use rusqlite::Connection;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    workflow_file TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    params_json   TEXT NOT NULL,
    state         TEXT NOT NULL,
    worktree      TEXT,
    requested_by  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    ended_at      INTEGER,
    error         TEXT
);
CREATE TABLE step_attempts (
    run_id     TEXT NOT NULL REFERENCES runs(id),
    idx        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    unit       TEXT NOT NULL,
    pid        INTEGER,
    exit_code  INTEGER,
    signal     INTEGER,
    result     TEXT,
    log_path   TEXT NOT NULL,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    output_lines INTEGER NOT NULL DEFAULT 0,
    last_output_at INTEGER,
    started_at INTEGER,
    ended_at   INTEGER,
    PRIMARY KEY (run_id, idx, attempt)
);
CREATE TABLE transitions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id),
    step       TEXT,
    attempt    INTEGER,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    who        TEXT NOT NULL,
    reason     TEXT
);
CREATE INDEX transitions_by_run ON transitions(run_id, seq);
-- The kill audit trail; refusals may name runs that do not exist, hence no foreign key.
CREATE TABLE kills (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    result       TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    record_json  TEXT NOT NULL
);
CREATE INDEX kills_by_run ON kills(run_id, id);
CREATE TABLE critical_spans (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id),
    label      TEXT NOT NULL,
    who        TEXT NOT NULL,
    entered_at INTEGER NOT NULL,
    left_at    INTEGER
);
"#,
    r#"
ALTER TABLE runs ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE runs ADD COLUMN restart_json TEXT;
ALTER TABLE runs ADD COLUMN failure_class TEXT;
ALTER TABLE step_attempts ADD COLUMN failure_class TEXT;
ALTER TABLE step_attempts ADD COLUMN failure_evidence TEXT;
ALTER TABLE step_attempts ADD COLUMN session_id TEXT;
ALTER TABLE step_attempts ADD COLUMN agent_json TEXT;
ALTER TABLE step_attempts ADD COLUMN note TEXT;
CREATE TABLE checkpoints (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    n             INTEGER NOT NULL,
    label         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    step          TEXT,
    next_step     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    reference     TEXT NOT NULL,
    commit_id     TEXT NOT NULL,
    files_changed INTEGER NOT NULL,
    took_ms       INTEGER NOT NULL,
    PRIMARY KEY (run_id, n)
);
-- Restarts, rollbacks and checkpoints asked for by operators; refusals included.
CREATE TABLE actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    action      TEXT NOT NULL,
    result      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX actions_by_run ON actions(run_id, id);
"#,
    // Alerts, silences and the outbox of alert changes waiting for their sinks.
    r#"
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL,
    rule        TEXT NOT NULL,
    run_id      TEXT,
    workflow    TEXT,
    severity    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    state       TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    resolved_at INTEGER,
    count       INTEGER NOT NULL,
    -- The last state queued for the sinks (NULL: none yet, e.g. silenced from the start).
    notified    TEXT
);
-- At most one firing alert per key: a repeat updates it, a firing after a resolve opens
-- a new one.
CREATE UNIQUE INDEX alerts_firing_key ON alerts(key) WHERE state = 'firing';
CREATE INDEX alerts_unnotified ON alerts(id)
    WHERE (state = 'firing' AND notified IS NOT 'firing') OR (state = 'resolved' AND notified = 'firing');
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    until      INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX silences_by_target ON silences(target, until);
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sink         TEXT NOT NULL,
    key          TEXT NOT NULL,
    change       TEXT NOT NULL,
    alert_json   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  INTEGER NOT NULL,
    last_error   TEXT
);
CREATE INDEX outbox_by_sink_key ON outbox(sink, key, id);
"#,
    r#"
-- The monitor's downsampled history: one row per run, step and period (a minute).
CREATE TABLE metrics_history (
    run_id         TEXT NOT NULL,
    workflow       TEXT NOT NULL,
    step           TEXT NOT NULL,
    minute         INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    cpu_avg        REAL,
    cpu_max        REAL,
    memory_max     INTEGER,
    tasks_max      INTEGER,
    io_read_bytes  INTEGER,
    io_write_bytes INTEGER,
    output_bytes   INTEGER NOT NULL,
    output_lines   INTEGER NOT NULL,
    idle_max       REAL NOT NULL,
    tokens_in      INTEGER,
    tokens_out     INTEGER,
    cost_usd       REAL,
    PRIMARY KEY (run_id, step, minute)
);
CREATE INDEX metrics_history_by_minute ON metrics_history(minute);
CREATE INDEX metrics_history_by_workflow ON metrics_history(workflow, minute);
"#,
    // The account a run's steps run as (runs recorded before ran as the agent: NULL).
    r#"
ALTER TABLE runs ADD COLUMN run_uid INTEGER;
ALTER TABLE runs ADD COLUMN run_user TEXT;
"#,
    // Where an attempt's log was cut by a failed write (a full disk).
    r#"
ALTER TABLE step_attempts ADD COLUMN log_cut TEXT;
"#,
    // Bearer tokens of the HTTP door: the SHA-256 of each secret, never the secret.
    r#"
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    uid         INTEGER NOT NULL,
    user        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    revoked_by  TEXT
);
-- A name belongs to one token until it is revoked.
CREATE UNIQUE INDEX tokens_live_name ON tokens(name) WHERE revoked_at IS NULL;
"#,
    // The HTTP API's pages of runs, newest first, with a keyset cursor on (created_at, id).
    r#"
CREATE INDEX runs_newest ON runs(created_at, id);
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let applied: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (version, sql) in (1u32..).zip(MIGRATIONS).skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}
