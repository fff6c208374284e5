//! Process-wide measurements, in their own test binary so no other test's
//! work or threads are counted, and serialised on one lock (Linux):
//!
//! * an idle runtime burns no CPU (issue 2, "Tests"; design guarantee 3, no
//!   busy waiting): 64 idle workers and a background thread, left alone for
//!   2 s, use under 50 ms of process CPU time, read from `/proc/self/stat`;
//! * many runtimes one after another bring the process's thread count
//!   (`/proc/self/task`) back to its baseline: no thread left behind.

#![cfg(target_os = "linux")]

mod common_api;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common_api::{rt, thread_count, threads_named, HANG};
use parking_lot::Mutex;
use winddown::{DrainPolicy, StopReason};

/// Held by each test for its whole run: the measurements must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

const IDLE: Duration = Duration::from_secs(2);
const BUDGET: Duration = Duration::from_millis(50);

/// The process's user + system CPU time so far.
fn process_cpu(ticks_per_second: u64) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after the last ')'. utime and stime are fields 14 and 15,
    // i.e. the 12th and 13th after it.
    let rest = &stat[stat.rfind(')').expect("comm field") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    Duration::from_secs_f64((utime + stime) as f64 / ticks_per_second as f64)
}

/// The kernel's clock ticks per second for `/proc` times (`sysconf` needs
/// `unsafe`, which the tests do without).
fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[test]
fn sixty_four_idle_workers_use_under_50_ms_of_cpu_in_2_s() {
    const WORKERS: usize = 64;
    let _serial = SERIAL.lock();
    let ticks = clock_ticks();
    let mut runtime = rt().build().unwrap();
    // Half the workers under each drain policy: both idle loops are measured.
    // Every worker runs one job that meets the test at a barrier, so all of
    // them are up and back in their idle wait before the measurement.
    let barrier = Arc::new(Barrier::new(WORKERS + 1));
    let mut submitters = Vec::new();
    for (name, policy) in [
        ("idle-f", DrainPolicy::Finish),
        ("idle-h", DrainPolicy::HandBack),
    ] {
        let b = barrier.clone();
        let s = runtime
            .pool::<()>(name)
            .workers(WORKERS / 2)
            .drain(policy)
            .start(move |(), _| {
                b.wait();
                Ok(())
            })
            .unwrap();
        for _ in 0..WORKERS / 2 {
            s.submit(()).unwrap();
        }
        submitters.push(s);
    }
    runtime
        .spawn("idle-bg", |token| {
            // A periodic task with a long period: idle between ticks.
            while !token.wait_timeout(Duration::from_secs(3600)) {}
            Ok(())
        })
        .unwrap();
    barrier.wait();
    let before = process_cpu(ticks);
    let start = Instant::now();
    std::thread::sleep(IDLE); // the idle period being measured
    let used = process_cpu(ticks).saturating_sub(before);
    let wall = start.elapsed();
    runtime.handle().request("measured");
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Requested("measured".into()));
    assert!(report.timings.total < HANG);
    assert_eq!(
        report.pools.iter().map(|p| p.succeeded).sum::<u64>(),
        WORKERS as u64
    );
    println!("idle CPU: {used:?} over {wall:?} ({WORKERS} workers, {ticks} ticks/s)");
    assert!(
        used < BUDGET,
        "{WORKERS} idle workers used {used:?} of CPU in {wall:?}"
    );
}

#[test]
fn runtimes_one_after_another_bring_the_thread_count_back_to_baseline() {
    let _serial = SERIAL.lock();
    // Only this binary's two tests run here. The other test's thread is not
    // counted: the harness may start it at any moment (it then blocks on
    // `SERIAL`) or it may still be exiting, and neither is a thread left
    // behind by a runtime.
    let baseline = thread_count_but_the_other_test();
    for i in 0..20 {
        let mut runtime = rt().build().unwrap();
        let submitter = runtime
            .pool::<u32>("base")
            .workers(4)
            .start(|_, _| Ok(()))
            .unwrap();
        runtime
            .spawn("base-bg", |token| {
                token.wait();
                Ok(())
            })
            .unwrap();
        runtime.on_release("base", Duration::from_secs(5), || Ok(()));
        submitter.feed(0..10).unwrap();
        assert!(
            thread_count_but_the_other_test() >= baseline + 5 - 1,
            "run {i}: threads started"
        );
        if i % 2 == 0 {
            drop(submitter);
            assert_eq!(runtime.run().pools[0].succeeded, 10);
        } else {
            drop(runtime);
        }
        let after = count_settled(baseline);
        assert!(
            after <= baseline,
            "run {i}: {after} threads, baseline {baseline}"
        );
    }
}

/// This process's threads, less the harness's thread for the other test
/// (named after it, cut to the kernel's 15 bytes).
fn thread_count_but_the_other_test() -> usize {
    let other = &"sixty_four_idle_workers_use_under_50_ms_of_cpu_in_2_s"[..15];
    thread_count() - threads_named(other)
}

/// The thread count once it is at most `baseline`, or after `HANG`: a joined
/// thread can stay in `/proc` for a moment after `pthread_join` returned, and
/// nothing notifies its removal, so this re-reads with a short pause.
fn count_settled(baseline: usize) -> usize {
    let deadline = Instant::now() + HANG;
    loop {
        let n = thread_count_but_the_other_test();
        if n <= baseline || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
