//! The `queue` example on a real SQLite database, as real processes with
//! real signals: each test seeds a database, starts the example, waits for
//! the lines it prints (never a sleep), signals it with `kill(2)`, and then
//! checks the table itself and the per-run ledgers — every job done exactly
//! once in the table, none lost, and a job run twice only where a SIGKILL
//! caught it in flight.

#![cfg(unix)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rusqlite::Connection;
use serde_json::Value;
use support::process::{example, Child, Exit};

/// Generous: a debug build on two busy cores. Only "does not hang".
const HANG: Duration = Duration::from_secs(30);

/// A seeded database in a temporary directory, and the runs made on it.
struct Queue {
    dir: tempfile::TempDir,
    runs: usize,
}

impl Queue {
    /// Creates the database with `jobs` pending jobs (ids `1..=jobs`).
    fn seeded(jobs: i64) -> Queue {
        let queue = Queue {
            dir: tempfile::tempdir().expect("temporary directory"),
            runs: 0,
        };
        let args = vec![
            "--db".to_owned(),
            queue.db().display().to_string(),
            "--seed".to_owned(),
            jobs.to_string(),
        ];
        let mut child = Child::spawn(&example("queue"), &args, &queue.path("seed.stderr"));
        child.expect_line(&format!("seeded 1..={jobs}"), HANG);
        assert_eq!(
            child.wait_exit(HANG).code,
            Some(0),
            "{}",
            child.stderr_text()
        );
        queue
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("queue.db")
    }

    /// Starts run number `self.runs` (its own ledger, report and stderr
    /// files) with `args`, and waits for `ready`.
    fn start(&mut self, args: &[&str]) -> (usize, Child) {
        let run = self.runs;
        self.runs += 1;
        let mut argv = vec![
            "--quiet".to_owned(),
            "--db".to_owned(),
            self.db().display().to_string(),
            "--ledger".to_owned(),
            self.path(&format!("run-{run}.ledger"))
                .display()
                .to_string(),
            "--report".to_owned(),
            self.path(&format!("run-{run}.json")).display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let child = Child::spawn(
            &example("queue"),
            &argv,
            &self.path(&format!("run-{run}.stderr")),
        );
        child.expect_line("ready", HANG);
        (run, child)
    }

    /// The ledger of run `run`.
    fn ledger(&self, run: usize) -> RunLedger {
        RunLedger::read(&self.path(&format!("run-{run}.ledger")))
    }

    /// The JSON report of run `run`; panics if it wrote none.
    fn report(&self, run: usize) -> Value {
        let path = self.path(&format!("run-{run}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("run {run} wrote no report ({e})"));
        serde_json::from_str(&text).expect("the report is JSON")
    }

    /// Every row of the table: id → (state, attempts, owner).
    fn rows(&self) -> BTreeMap<i64, Row> {
        let conn = Connection::open(self.db()).expect("open the database");
        let mut stmt = conn
            .prepare("SELECT id, state, attempts, owner FROM jobs")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Row {
                        state: r.get(1)?,
                        attempts: r.get(2)?,
                        owner: r.get(3)?,
                    },
                ))
            })
            .expect("query");
        rows.collect::<Result<_, _>>().expect("read the rows")
    }

    /// How many rows are in `state`.
    fn count(&self, state: &str) -> usize {
        self.rows().values().filter(|r| r.state == state).count()
    }

    /// Claims job `id` in the table as if process `owner` had, `age_ms`
    /// ago (what a crashed consumer leaves behind).
    fn fake_claim(&self, id: i64, owner: i64, age_ms: i64) {
        let conn = Connection::open(self.db()).expect("open the database");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let at = i64::try_from(now).expect("fits") - age_ms;
        let n = conn
            .execute(
                "UPDATE jobs SET state = 'claimed', owner = ?2, claimed_at = ?3 WHERE id = ?1",
                rusqlite::params![id, owner, at],
            )
            .expect("update");
        assert_eq!(n, 1);
    }
}

/// One row of the jobs table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    state: String,
    attempts: i64,
    owner: Option<i64>,
}

/// One run's ledger: for each event word, the ids in file order.
#[derive(Debug, Default)]
struct RunLedger {
    events: BTreeMap<String, Vec<i64>>,
    /// The third word of `fail`/`panic` lines (the state the job went to).
    fail_states: Vec<(i64, String)>,
}

impl RunLedger {
    fn read(path: &Path) -> RunLedger {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut ledger = RunLedger::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (word, id) = match words.as_slice() {
                [word, id, ..] => (*word, id.parse::<i64>()),
                _ => panic!("bad ledger line {line:?}"),
            };
            let id = id.unwrap_or_else(|_| panic!("bad ledger line {line:?}"));
            if let ("fail" | "panic", Some(state)) = (word, words.get(2)) {
                ledger.fail_states.push((id, (*state).to_owned()));
            }
            ledger.events.entry(word.to_owned()).or_default().push(id);
        }
        ledger
    }

    /// The ids of `word`, in file order (empty if none).
    fn ids(&self, word: &str) -> &[i64] {
        self.events.get(word).map_or(&[], Vec::as_slice)
    }

    fn set(&self, word: &str) -> BTreeSet<i64> {
        self.ids(word).iter().copied().collect()
    }

    /// Asserts that every job this run claimed has exactly one outcome
    /// among `outcomes`, that no other word than those, `claim`, `run` and
    /// `reclaim` (at start, of another process's claims) appears, and that
    /// no id has an outcome without a claim.
    fn assert_each_claim_settled(&self, outcomes: &[&str], what: &str) {
        let claims = self.ids("claim");
        let claimed: BTreeSet<i64> = claims.iter().copied().collect();
        assert_eq!(claims.len(), claimed.len(), "{what}: a job claimed twice");
        for word in self.events.keys() {
            assert!(
                ["claim", "run", "reclaim"].contains(&word.as_str())
                    || outcomes.contains(&word.as_str()),
                "{what}: unexpected `{word}` lines: {:?}",
                self.ids(word)
            );
        }
        let mut settled: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        for word in outcomes {
            for id in self.ids(word) {
                settled.entry(*id).or_default().push(word);
            }
        }
        let wrong: Vec<_> = claimed
            .iter()
            .filter(|id| settled.get(id).map_or(0, Vec::len) != 1)
            .map(|id| (*id, settled.get(id).cloned().unwrap_or_default()))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: claims not settled once: {wrong:?}"
        );
        let unclaimed: Vec<_> = settled.keys().filter(|id| !claimed.contains(id)).collect();
        assert!(
            unclaimed.is_empty(),
            "{what}: settled, never claimed: {unclaimed:?}"
        );
    }
}

/// The base seed: `WINDDOWN_TEST_SEED` or the clock, printed so that a
/// failing run can be replayed.
fn base_seed() -> u64 {
    let seed = std::env::var("WINDDOWN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (replay with WINDDOWN_TEST_SEED={seed})");
    seed
}

/// How a run of the random-stop test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Ran until the queue was empty (the signal, if any, came too late to
    /// start a stop).
    Completed,
    /// SIGTERM: drained, reported.
    Terminated,
    /// SIGKILL: nothing ran.
    Killed,
}

#[test]
fn random_sigterms_and_sigkills_until_empty_run_every_job_and_lose_none() {
    /// Rounds, each on a fresh database with its own seed.
    const ROUNDS: u64 = 3;
    let base = base_seed();
    for round in 0..ROUNDS {
        random_stops_round(base.wrapping_add(round));
    }
}

/// One round: a queue of 300 to 600 jobs consumed by 2 to 4 workers,
/// stopped at random moments by SIGTERM or SIGKILL and restarted until it
/// is empty; then the table and the ledgers are checked. Replay a round
/// with `WINDDOWN_TEST_SEED=<its seed>` (it is then the first round).
fn random_stops_round(seed: u64) {
    /// "Does not hang": each run makes progress, so this is far more runs
    /// than the queue needs.
    const MAX_RUNS: usize = 40;
    /// From this run on no signal is sent, so the loop ends even on a
    /// machine slow enough that every signal lands before any progress.
    const SIGNALLED_RUNS: usize = 30;

    let mut rng = fastrand::Rng::with_seed(seed);
    let jobs: i64 = rng.i64(300..=600);
    let workers: usize = rng.usize(2..=4);
    let mut queue = Queue::seeded(jobs);
    let workers_arg = workers.to_string();
    let mut ends: Vec<End> = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            queue.runs < MAX_RUNS,
            "seed {seed}: the queue was not empty after {MAX_RUNS} runs: {ends:?}"
        );
        let (run, mut child) = queue.start(&[
            "--until-empty",
            "--workers",
            &workers_arg,
            "--work",
            "2-6ms",
        ]);
        // One of each first, in random order, then at random.
        let kill = match run {
            0 => rng.bool(),
            1 => ends[0] != End::Killed,
            _ => rng.bool(),
        };
        if run < SIGNALLED_RUNS {
            // The randomised moment of the signal (not synchronisation).
            std::thread::sleep(Duration::from_millis(rng.u64(0..=250)));
            // The child may have finished already (ESRCH): fine.
            let signal = if kill {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            let _ = child.try_signal(signal);
        }
        let exit = child.wait_exit(HANG);
        let status = child.exit_status().expect("exited");
        let end = match (exit.code, status.signal()) {
            (Some(0), _) => End::Completed,
            (Some(130), _) => End::Terminated,
            (None, Some(9)) => End::Killed,
            other => panic!(
                "seed {seed}, run {run}: unexpected end {other:?}\n{}",
                child.stderr_text()
            ),
        };
        ends.push(end);
        let ledger = queue.ledger(run);
        if end != End::Killed {
            // Graceful: a report, nothing left claimed, every claim
            // settled exactly once (done, or put back at the stop).
            let report = queue.report(run);
            assert_eq!(report["put_back"]["stray"], 0, "seed {seed}, run {run}");
            assert_eq!(report["queue"]["claimed"], 0, "seed {seed}, run {run}");
            let pool = &report["pools"][0];
            assert_eq!(pool["failed"], 0, "seed {seed}, run {run}");
            assert_eq!(
                pool["submitted"],
                pool["succeeded"].as_u64().unwrap() + pool["handed_back"].as_u64().unwrap(),
                "seed {seed}, run {run}: {pool}"
            );
            assert_eq!(queue.count("claimed"), 0, "seed {seed}, run {run}");
            ledger.assert_each_claim_settled(
                &["done", "unsubmitted", "handback"],
                &format!("seed {seed}, run {run} ({end:?})"),
            );
            // In flight at a SIGTERM means finished: every run is done.
            assert_eq!(
                ledger.set("run"),
                ledger.set("done"),
                "seed {seed}, run {run}"
            );
        } else {
            // At most one job per worker was between its `run` line and
            // its commit.
            let cut = ledger.set("run").difference(&ledger.set("done")).count();
            assert!(cut <= workers, "seed {seed}, run {run}: {cut} cut jobs");
        }
        if queue.count("pending") == 0 && queue.count("claimed") == 0 {
            break;
        }
    }
    let elapsed = started.elapsed();

    // The table: every job done, none failed.
    let rows = queue.rows();
    assert_eq!(rows.len(), jobs as usize);
    let not_done: Vec<_> = rows.iter().filter(|(_, r)| r.state != "done").collect();
    assert!(not_done.is_empty(), "seed {seed}: {not_done:?}");
    assert!(rows.values().all(|r| r.attempts == 0), "seed {seed}");

    // The ledgers: every job ran; a second run only after a SIGKILL caught
    // the first in flight.
    let ledgers: Vec<RunLedger> = (0..queue.runs).map(|r| queue.ledger(r)).collect();
    let kills = ends.iter().filter(|e| **e == End::Killed).count();
    let mut runs_of: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut done_lines: BTreeMap<i64, usize> = BTreeMap::new();
    for (run, ledger) in ledgers.iter().enumerate() {
        for id in ledger.ids("run") {
            runs_of.entry(*id).or_default().push(run);
        }
        for id in ledger.ids("done") {
            *done_lines.entry(*id).or_default() += 1;
        }
        for word in ["lost", "fail", "panic", "interrupted", "abandoned", "stray"] {
            assert!(
                ledger.ids(word).is_empty(),
                "seed {seed}, run {run}: {word}"
            );
        }
        if !ledger.ids("reclaim").is_empty() {
            assert!(
                run > 0 && ends[run - 1] == End::Killed,
                "seed {seed}: run {run} reclaimed jobs after a graceful run: {:?}",
                ledger.ids("reclaim")
            );
        }
    }
    let never_ran: Vec<i64> = (1..=jobs).filter(|id| !runs_of.contains_key(id)).collect();
    assert!(
        never_ran.is_empty(),
        "seed {seed}: never ran: {never_ran:?}"
    );
    let twice_done: Vec<_> = done_lines.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice_done.is_empty(),
        "seed {seed}: done twice: {twice_done:?}"
    );
    let mut extra = 0;
    for (id, runs) in &runs_of {
        extra += runs.len() - 1;
        for &run in &runs[..runs.len() - 1] {
            assert!(
                ends[run] == End::Killed && !ledgers[run].set("done").contains(id),
                "seed {seed}: job {id} ran in runs {runs:?} ({ends:?})"
            );
        }
    }
    assert!(
        extra <= workers * kills,
        "seed {seed}: {extra} extra runs for {kills} SIGKILLs"
    );
    println!(
        "seed {seed}: {jobs} jobs, {workers} workers: {} runs ({kills} SIGKILL, {} SIGTERM, {} completed), {extra} jobs run again, {elapsed:?}",
        queue.runs,
        ends.iter().filter(|e| **e == End::Terminated).count(),
        ends.iter().filter(|e| **e == End::Completed).count(),
    );
}

/// Starts a run whose two workers are each in a long job (their `run`
/// lines seen) and whose feeder waits with a claimed batch on a full queue
/// (`queue full`), sends SIGTERM, and returns the run, its exit, the time
/// from just before the signal to the exit, and the child.
fn sigterm_mid_job(queue: &mut Queue, args: &[&str]) -> (usize, Exit, Duration, Child) {
    let mut argv = vec!["--workers", "2", "--work", "60s", "--print-runs"];
    argv.extend_from_slice(args);
    let (run, mut child) = queue.start(&argv);
    child.expect_line("run 1", HANG);
    child.expect_line("run 2", HANG);
    child.expect_line("queue full", HANG);
    let sent = Instant::now();
    child.signal(Signal::SIGTERM);
    let exit = child.wait_exit(HANG);
    (run, exit, sent.elapsed(), child)
}

#[test]
fn sigterm_during_long_jobs_with_a_short_grace_puts_every_claimed_job_back() {
    let mut queue = Queue::seeded(20);
    let (run, exit, took, child) = sigterm_mid_job(
        &mut queue,
        &["--grace-ms", "300", "--kill-grace-ms", "5000"],
    );
    // The hard stop cut the two jobs: exit code 1, not before the grace.
    assert_eq!(exit.code, Some(1), "{}", child.stderr_text());
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let report = queue.report(run);
    assert_eq!(report["hard_stopped"], true);
    assert_eq!(report["pools"][0]["failed"], 2, "{report}");
    assert_eq!(report["put_back"]["stray"], 0);

    // Every job is pending again, unharmed: none claimed, none done, no
    // attempt counted against a job the stop cut.
    let rows = queue.rows();
    assert_eq!(rows.len(), 20);
    for (id, row) in &rows {
        let want = Row {
            state: "pending".into(),
            attempts: 0,
            owner: None,
        };
        assert_eq!(row, &want, "job {id}");
    }
    let ledger = queue.ledger(run);
    assert_eq!(ledger.set("run"), BTreeSet::from([1, 2]));
    assert_eq!(ledger.set("interrupted"), BTreeSet::from([1, 2]));
    ledger.assert_each_claim_settled(&["interrupted", "unsubmitted", "handback"], "the cut run");
    assert!(
        !ledger.ids("handback").is_empty() && !ledger.ids("unsubmitted").is_empty(),
        "the queue and the feeder both held jobs: {ledger:?}"
    );

    // Not lost: the next run does them all, with nothing to reclaim.
    let (run, mut child) = queue.start(&["--until-empty", "--work", "1ms"]);
    child.expect_line("empty", HANG);
    child.expect_line("queue pending=0 claimed=0 done=20 failed=0", HANG);
    assert_eq!(child.wait_exit(HANG).code, Some(0));
    let ledger = queue.ledger(run);
    assert!(ledger.ids("reclaim").is_empty());
    assert_eq!(ledger.set("done"), (1..=20).collect());
}

#[test]
fn jobs_whose_threads_are_stuck_at_the_deadline_are_put_back_from_the_report() {
    let mut queue = Queue::seeded(10);
    let (run, exit, _, child) = sigterm_mid_job(
        &mut queue,
        &["--deaf", "--grace-ms", "200", "--kill-grace-ms", "200"],
    );
    assert_eq!(exit.code, Some(1), "{}", child.stderr_text());
    let report = queue.report(run);
    let mut stuck: Vec<&str> = report["pools"][0]["abandoned_keys"]
        .as_array()
        .expect("abandoned keys")
        .iter()
        .map(|k| k.as_str().expect("a key"))
        .collect();
    stuck.sort_unstable();
    assert_eq!(stuck, ["1", "2"], "{report}");
    assert_eq!(report["put_back"]["abandoned"], 2);
    assert_eq!(report["put_back"]["stray"], 0);
    let ledger = queue.ledger(run);
    assert_eq!(ledger.set("abandoned"), BTreeSet::from([1, 2]));
    ledger.assert_each_claim_settled(&["abandoned", "unsubmitted", "handback"], "the stuck run");
    assert_eq!(queue.count("pending"), 10);
}

#[test]
fn failing_jobs_go_back_to_pending_until_they_fail_max_attempts_times() {
    let mut queue = Queue::seeded(20);
    let (run, mut child) = queue.start(&[
        "--until-empty",
        "--work",
        "1ms",
        "--fail-every",
        "5",
        "--max-attempts",
        "3",
    ]);
    child.expect_line("queue pending=0 claimed=0 done=16 failed=4", HANG);
    assert_eq!(child.wait_exit(HANG).code, Some(1), "failures give 1");
    for (id, row) in queue.rows() {
        let (state, attempts) = if id % 5 == 0 {
            ("failed", 3)
        } else {
            ("done", 0)
        };
        assert_eq!(
            (row.state.as_str(), row.attempts),
            (state, attempts),
            "job {id}"
        );
    }
    let ledger = queue.ledger(run);
    for id in [5, 10, 15, 20] {
        let states: Vec<&str> = ledger
            .fail_states
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(states, ["pending", "pending", "failed"], "job {id}");
        assert_eq!(ledger.ids("run").iter().filter(|i| **i == id).count(), 3);
    }
    assert_eq!(queue.report(run)["pools"][0]["failed"], 12);
}

#[test]
fn on_start_only_the_claims_of_processes_that_are_gone_are_reclaimed() {
    let mut queue = Queue::seeded(6);
    // A process that has exited and been reaped: its pid runs no more
    // (unless reused within this test, which would keep job 1 claimed
    // and fail the test loudly, not silently).
    let gone = {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap true");
        i64::from(pid)
    };
    let alive = i64::from(std::process::id());
    queue.fake_claim(1, gone, 0);
    queue.fake_claim(2, alive, 0);
    queue.fake_claim(3, alive, 3_600_000);
    let (run, mut child) = queue.start(&["--until-empty", "--work", "1ms", "--lease-ms", "600000"]);
    child.expect_line("queue pending=0 claimed=1 done=5 failed=0", HANG);
    assert_eq!(child.wait_exit(HANG).code, Some(0));
    let ledger = queue.ledger(run);
    // Job 1: its owner is gone. Job 3: its lease (10 min) expired an hour
    // ago. Job 2: held by a live process within its lease, left alone.
    assert_eq!(ledger.set("reclaim"), BTreeSet::from([1, 3]));
    let rows = queue.rows();
    assert_eq!(rows[&2].state, "claimed");
    assert_eq!(rows[&2].owner, Some(alive));
    assert!(rows.iter().all(|(id, r)| *id == 2 || r.state == "done"));
}

#[test]
fn two_consumers_on_one_database_never_run_the_same_job() {
    const JOBS: i64 = 400;
    let mut queue = Queue::seeded(JOBS);
    let args = [
        "--until-empty",
        "--workers",
        "3",
        "--batch",
        "2",
        "--work",
        "0-2ms",
    ];
    let (a, mut first) = queue.start(&args);
    let (b, mut second) = queue.start(&args);
    assert_eq!(
        first.wait_exit(HANG).code,
        Some(0),
        "{}",
        first.stderr_text()
    );
    assert_eq!(
        second.wait_exit(HANG).code,
        Some(0),
        "{}",
        second.stderr_text()
    );
    let (a, b) = (queue.ledger(a), queue.ledger(b));
    // Each claim is one `BEGIN IMMEDIATE` transaction: the two ledgers
    // split the jobs, with no job in both.
    let both: Vec<_> = a.set("run").intersection(&b.set("run")).copied().collect();
    assert!(both.is_empty(), "run by both consumers: {both:?}");
    let mut runs = a.ids("run").to_vec();
    runs.extend_from_slice(b.ids("run"));
    runs.sort_unstable();
    assert_eq!(runs, (1..=JOBS).collect::<Vec<_>>());
    assert_eq!(queue.count("done"), JOBS as usize);
    println!("split {} / {}", a.ids("run").len(), b.ids("run").len());
}
