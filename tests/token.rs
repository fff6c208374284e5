//! Token semantics (issue 2, item 1): prompt wake-ups on stop, the
//! `select!` receiver, the hard token, child tokens, and "the first reason
//! wins". Threads are sequenced with channels and barriers, never sleeps; the
//! only time bounds are "does not hang" (and "not early" for timeouts).

mod common_api;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common_api::{rt, HANG};
use crossbeam_channel::{never, select, RecvTimeoutError};
use winddown::{StopReason, StopSource, Token};

fn req(s: &str) -> StopReason {
    StopReason::Requested(s.into())
}

/// Runs `wait(token)` on a new thread, and returns the channel its result
/// arrives on once the thread is about to block (it says so first).
fn waiter<R: Send + 'static>(
    token: &Token,
    wait: impl FnOnce(&Token) -> R + Send + 'static,
) -> crossbeam_channel::Receiver<R> {
    let token = token.clone();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(0);
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        ready_tx.send(()).unwrap();
        tx.send(wait(&token)).unwrap();
    });
    ready_rx.recv().unwrap();
    rx
}

#[test]
fn tokens_sources_and_handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Token>();
    assert_send_sync::<StopSource>();
    assert_send_sync::<StopReason>();
    assert_send_sync::<winddown::Handle>();
}

#[test]
fn is_stopping_is_false_until_the_stop_and_true_for_every_clone_after() {
    let source = StopSource::new();
    let tokens: Vec<Token> = (0..4).map(|_| source.token()).collect();
    let clone = tokens[0].clone();
    assert!(!source.is_stopping());
    assert!(tokens
        .iter()
        .all(|t| !t.is_stopping() && t.reason().is_none()));
    assert!(source.stop(req("now")));
    assert!(source.is_stopping());
    assert!(clone.is_stopping());
    assert!(tokens.iter().all(Token::is_stopping));
    assert!(!clone.is_hard_stopping(), "a graceful stop is not hard");
    assert!(format!("{clone:?}").contains("is_stopping: true"));
}

#[test]
fn wait_returns_when_the_stop_begins_on_another_thread() {
    let source = StopSource::new();
    let woke = waiter(&source.token(), |t| {
        t.wait();
        t.is_stopping()
    });
    assert_eq!(
        woke.try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty),
        "wait returned before the stop"
    );
    source.stop(req("go"));
    assert_eq!(woke.recv_timeout(HANG), Ok(true));
}

#[test]
fn wait_timeout_returns_true_promptly_on_stop() {
    let source = StopSource::new();
    let woke = waiter(&source.token(), |t| {
        let start = Instant::now();
        (t.wait_timeout(Duration::from_secs(3600)), start.elapsed())
    });
    source.stop(req("go"));
    let (stopped, waited) = woke.recv_timeout(HANG).expect("wait_timeout hung");
    assert!(stopped);
    assert!(waited < HANG, "waited {waited:?}");
}

#[test]
fn wait_timeout_returns_false_after_the_timeout_and_not_before() {
    let source = StopSource::new();
    let token = source.token();
    let start = Instant::now();
    assert!(!token.wait_timeout(Duration::from_millis(30)));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(!token.wait_timeout(Duration::ZERO));
    let start = Instant::now();
    assert!(!token.wait_deadline(start + Duration::from_millis(30)));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(!token.wait_hard_timeout(Duration::from_millis(1)));
}

#[test]
fn wait_deadline_returns_true_promptly_on_stop() {
    let source = StopSource::new();
    let woke = waiter(&source.token(), |t| {
        t.wait_deadline(Instant::now() + Duration::from_secs(3600))
    });
    source.stop(req("go"));
    assert_eq!(woke.recv_timeout(HANG), Ok(true));
}

#[test]
fn wait_hard_deadline_returns_false_at_the_deadline_even_after_a_graceful_stop() {
    let source = StopSource::new();
    let token = source.token();
    let start = Instant::now();
    assert!(!token.wait_hard_deadline(start + Duration::from_millis(30)));
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "returned early"
    );
    source.stop(req("graceful"));
    let start = Instant::now();
    assert!(
        !token.wait_hard_deadline(start + Duration::from_millis(30)),
        "a graceful stop does not end a hard wait"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "returned early"
    );
    assert!(
        !token.wait_hard_deadline(Instant::now()),
        "a past deadline only checks"
    );
}

#[test]
fn wait_hard_deadline_returns_true_promptly_when_the_hard_stop_fires() {
    let source = StopSource::new();
    let child = source.token().child();
    let woke = waiter(&child.token(), |t| {
        let r = t.wait_hard_deadline(Instant::now() + Duration::from_secs(3600));
        (r, t.is_hard_stopping())
    });
    source.stop(req("graceful"));
    assert_eq!(
        woke.try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty),
        "wait_hard_deadline returned on a graceful stop"
    );
    assert!(source.stop_hard(req("deadline")));
    assert_eq!(woke.recv_timeout(HANG), Ok((true, true)));
    let token = child.token();
    let start = Instant::now();
    assert!(
        token.wait_hard_deadline(start),
        "already hard: true at once"
    );
    assert!(token.wait_hard_deadline(start + Duration::from_secs(3600)));
    assert!(start.elapsed() < HANG);
}

#[test]
fn a_timeout_of_duration_max_waits_without_overflowing() {
    let source = StopSource::new();
    let woke = waiter(&source.token(), |t| {
        let graceful = t.wait_timeout(Duration::MAX);
        (graceful, t.wait_hard_timeout(Duration::MAX))
    });
    source.stop_hard(req("go"));
    assert_eq!(woke.recv_timeout(HANG), Ok((true, true)));
}

#[test]
fn every_wait_returns_at_once_after_the_stop() {
    let source = StopSource::new();
    let token = source.token();
    source.stop_hard(req("done"));
    let start = Instant::now();
    token.wait();
    assert!(token.wait_timeout(Duration::from_secs(3600)));
    assert!(token.wait_timeout(Duration::MAX));
    assert!(token.wait_deadline(Instant::now() + Duration::from_secs(3600)));
    assert!(token.wait_deadline(Instant::now()), "already stopped");
    token.wait_hard();
    assert!(token.wait_hard_timeout(Duration::from_secs(3600)));
    assert!(token.receiver().recv().is_err());
    assert!(token.hard_receiver().recv().is_err());
    assert!(start.elapsed() < HANG);
}

#[test]
fn many_waiters_of_every_kind_are_all_woken_by_one_stop() {
    const N: usize = 24;
    let source = StopSource::new();
    let barrier = Arc::new(Barrier::new(N + 1));
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..N {
        let (token, barrier, tx) = (source.token(), barrier.clone(), tx.clone());
        thread::spawn(move || {
            barrier.wait();
            let woke = match i % 4 {
                0 => {
                    token.wait();
                    true
                }
                1 => token.wait_timeout(Duration::from_secs(3600)),
                2 => token.wait_deadline(Instant::now() + Duration::from_secs(3600)),
                _ => {
                    select! {
                        recv(never::<()>()) -> _ => false,
                        recv(token.receiver()) -> msg => msg.is_err(),
                    }
                }
            };
            tx.send(woke).unwrap();
        });
    }
    drop(tx);
    barrier.wait();
    source.stop(req("all"));
    for _ in 0..N {
        assert_eq!(rx.recv_timeout(HANG), Ok(true));
    }
    assert_eq!(
        rx.recv_timeout(HANG),
        Err(RecvTimeoutError::Disconnected),
        "every waiter reported once"
    );
}

#[test]
fn the_receiver_works_inside_crossbeam_select() {
    let source = StopSource::new();
    let token = source.token();
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<u32>();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let mut handled = Vec::new();
        loop {
            select! {
                recv(work_rx) -> n => handled.push(n.expect("the test holds the sender")),
                recv(token.receiver()) -> msg => {
                    assert!(msg.is_err(), "nothing is ever sent on the stop receiver");
                    break;
                }
            }
            done_tx.send(handled.clone()).unwrap();
        }
        done_tx.send(handled).unwrap();
    });
    work_tx.send(1).unwrap();
    assert_eq!(done_rx.recv_timeout(HANG), Ok(vec![1]));
    work_tx.send(2).unwrap();
    assert_eq!(done_rx.recv_timeout(HANG), Ok(vec![1, 2]));
    source.stop(req("select"));
    assert_eq!(done_rx.recv_timeout(HANG), Ok(vec![1, 2]));
    drop(work_tx);
}

#[test]
fn the_receiver_is_not_ready_before_the_stop() {
    let source = StopSource::new();
    let token = source.token();
    assert_eq!(
        token.receiver().try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty)
    );
    assert_eq!(
        token.hard_receiver().try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty)
    );
    source.stop(req("x"));
    assert_eq!(
        token.receiver().try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    );
    assert_eq!(
        token.hard_receiver().try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty),
        "the hard receiver waits for the hard stop"
    );
}

#[test]
fn the_hard_token_fires_only_on_the_hard_stop_and_wakes_its_waiters() {
    let source = StopSource::new();
    let token = source.token();
    let hard = waiter(&token, |t| {
        t.wait_hard();
        t.is_hard_stopping()
    });
    let selected = waiter(&token, |t| {
        select! {
            recv(never::<()>()) -> _ => false,
            recv(t.hard_receiver()) -> msg => msg.is_err(),
        }
    });
    assert!(source.stop(req("graceful first")));
    assert!(token.is_stopping());
    assert!(!token.is_hard_stopping());
    assert!(!token.wait_hard_timeout(Duration::from_millis(10)));
    assert!(
        hard.try_recv().is_err(),
        "wait_hard returned on a graceful stop"
    );
    assert!(source.stop_hard(req("deadline")));
    assert!(!source.stop_hard(req("again")), "the hard stop fires once");
    assert_eq!(hard.recv_timeout(HANG), Ok(true));
    assert_eq!(selected.recv_timeout(HANG), Ok(true));
    assert!(token.is_hard_stopping());
    assert_eq!(token.reason(), Some(req("graceful first")));
}

#[test]
fn a_hard_stop_on_a_running_source_also_begins_the_graceful_stop_with_its_reason() {
    let source = StopSource::new();
    let token = source.token();
    let graceful = waiter(&token, |t| t.wait_timeout(Duration::from_secs(3600)));
    assert!(source.stop_hard(req("deadline")));
    assert_eq!(graceful.recv_timeout(HANG), Ok(true));
    assert!(token.is_stopping() && token.is_hard_stopping());
    assert_eq!(token.reason(), Some(req("deadline")));
    assert!(!source.stop(req("later")), "already stopped");
}

#[test]
fn stopping_a_child_never_stops_its_parent() {
    let root = StopSource::new();
    let child = root.token().child();
    let grandchild = child.token().child();
    let sibling = root.token().child();
    assert!(child.stop(req("child only")));
    assert!(child.token().is_stopping());
    assert!(
        grandchild.token().is_stopping(),
        "the child's subtree stops"
    );
    assert!(!root.is_stopping());
    assert!(!root.token().is_stopping());
    assert!(!sibling.token().is_stopping());
    child.stop_hard(req("child hard"));
    assert!(!root.token().is_hard_stopping());
    assert!(!root.token().is_stopping());
    assert!(!sibling.token().is_hard_stopping());
}

#[test]
fn stopping_a_parent_stops_every_child_and_grandchild_with_its_reason() {
    let root = StopSource::new();
    let children: Vec<StopSource> = (0..8).map(|_| root.token().child()).collect();
    let grandchildren: Vec<StopSource> = children.iter().map(|c| c.token().child()).collect();
    let woke = waiter(&grandchildren[3].token(), |t| {
        t.wait();
        t.reason()
    });
    assert!(root.stop(req("parent")));
    assert_eq!(woke.recv_timeout(HANG), Ok(Some(req("parent"))));
    for s in children.iter().chain(&grandchildren) {
        assert!(s.token().is_stopping());
        assert!(!s.token().is_hard_stopping());
        assert_eq!(s.token().reason(), Some(req("parent")));
    }
    root.stop_hard(req("ignored"));
    for s in children.iter().chain(&grandchildren) {
        assert!(
            s.token().is_hard_stopping(),
            "the hard stop reaches descendants"
        );
        assert_eq!(s.token().reason(), Some(req("parent")));
    }
}

#[test]
fn a_grandchild_whose_middle_node_is_gone_still_sees_the_stop() {
    let root = StopSource::new();
    let gc = root.token().child().token().child().token();
    assert!(!gc.is_stopping());
    assert!(root.stop(req("x")));
    assert!(
        gc.is_stopping(),
        "the dropped middle node cut the grandchild off"
    );
    assert!(!gc.is_hard_stopping());
    assert_eq!(gc.reason(), Some(req("x")));
    root.stop_hard(req("ignored"));
    assert!(gc.is_hard_stopping());
    assert_eq!(gc.reason(), Some(req("x")));
}

#[test]
fn a_grandchild_whose_middle_node_is_gone_still_sees_the_hard_stop() {
    let root = StopSource::new();
    let gc = root.token().child().token().child().token();
    let woke = waiter(&gc, |t| t.wait_hard_timeout(Duration::from_secs(3600)));
    assert!(root.stop_hard(req("x")));
    assert!(gc.is_stopping() && gc.is_hard_stopping());
    assert_eq!(gc.reason(), Some(req("x")));
    assert_eq!(woke.recv_timeout(HANG), Ok(true));
}

#[test]
fn a_long_chain_of_dropped_middle_nodes_still_carries_the_stop() {
    let root = StopSource::new();
    let mut token = root.token();
    for _ in 0..100 {
        token = token.child().token();
    }
    let sibling = root.token().child().token().child().token();
    let sub = root.token().child();
    let under_sub = sub.token().child().token().child().token();
    assert!(sub.stop(req("sub")));
    assert!(
        under_sub.is_stopping(),
        "the child's stop reaches past dropped nodes"
    );
    assert!(!token.is_stopping() && !sibling.is_stopping());
    root.stop(req("root"));
    assert_eq!(token.reason(), Some(req("root")));
    assert_eq!(sibling.reason(), Some(req("root")));
    assert_eq!(under_sub.reason(), Some(req("sub")), "first reason kept");
}

#[test]
fn a_child_stopped_first_keeps_its_own_reason_when_the_parent_stops() {
    let root = StopSource::new();
    let child = root.token().child();
    child.stop(req("child"));
    root.stop(req("parent"));
    assert_eq!(child.token().reason(), Some(req("child")));
    assert_eq!(root.token().reason(), Some(req("parent")));
}

#[test]
fn a_child_of_a_stopped_parent_is_born_stopped() {
    let root = StopSource::new();
    root.stop(req("before"));
    let child = root.token().child();
    assert!(child.token().is_stopping());
    assert!(!child.token().is_hard_stopping());
    assert_eq!(child.token().reason(), Some(req("before")));
    assert!(!child.stop(req("too late")), "born stopped: nothing to do");
    assert!(child.token().child().token().is_stopping());
    // The hard stop still reaches a child born after the graceful one.
    root.stop_hard(req("deadline"));
    assert!(child.token().is_hard_stopping());
}

#[test]
fn a_child_of_a_hard_stopped_parent_is_born_hard() {
    let root = StopSource::new();
    root.stop_hard(req("deadline"));
    let child = root.token().child();
    assert!(child.token().is_stopping());
    assert!(child.token().is_hard_stopping());
    assert_eq!(child.token().reason(), Some(req("deadline")));
}

#[test]
fn children_made_while_the_parent_stops_all_end_up_stopped() {
    for round in 0..20 {
        let root = StopSource::new();
        let barrier = Arc::new(Barrier::new(5));
        let makers: Vec<_> = (0..4)
            .map(|_| {
                let (token, barrier) = (root.token(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    (0..200).map(|_| token.child()).collect::<Vec<_>>()
                })
            })
            .collect();
        barrier.wait();
        root.stop_hard(req("race"));
        for m in makers {
            for (i, child) in m.join().unwrap().iter().enumerate() {
                let t = child.token();
                assert!(t.is_stopping(), "round {round}: child {i} missed the stop");
                assert!(t.is_hard_stopping(), "round {round}: child {i} missed hard");
                assert_eq!(t.reason(), Some(req("race")));
            }
        }
    }
}

#[test]
fn the_first_reason_wins_and_every_observer_sees_it() {
    let root = StopSource::new();
    let child = root.token().child();
    let observers: Vec<Token> = (0..4).map(|_| root.token()).collect();
    assert!(root.stop(req("first")));
    assert!(!root.stop(req("second")));
    assert!(!root.stop(StopReason::Signal(winddown::Signal::Interrupt)));
    assert!(!root.stop_hard(StopReason::Completed) || root.token().is_hard_stopping());
    for t in observers.iter().chain([&child.token()]) {
        assert_eq!(t.reason(), Some(req("first")));
    }
}

#[test]
fn concurrent_triggers_from_many_threads_leave_exactly_one_reason() {
    const THREADS: usize = 16;
    for round in 0..30 {
        let root = StopSource::new();
        let child = root.token().child();
        let barrier = Arc::new(Barrier::new(THREADS));
        let triggers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (root, barrier) = (root.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let reason = req(&format!("t{i}"));
                    let won = if i % 2 == 0 {
                        root.stop(reason)
                    } else {
                        root.stop_hard(reason)
                    };
                    (i, won, root.token().reason())
                })
            })
            .collect();
        let results: Vec<_> = triggers.into_iter().map(|t| t.join().unwrap()).collect();
        let reason = root.token().reason().expect("stopped");
        let graceful_winners: Vec<usize> = results
            .iter()
            .filter(|(i, won, _)| *won && i % 2 == 0)
            .map(|(i, ..)| *i)
            .collect();
        assert!(graceful_winners.len() <= 1, "round {round}: {results:?}");
        // Every thread saw the one winning reason, right after its trigger.
        for (i, _, seen) in &results {
            assert_eq!(seen.as_ref(), Some(&reason), "round {round}, thread {i}");
        }
        assert_eq!(child.token().reason(), Some(reason.clone()));
        if let Some(w) = graceful_winners.first() {
            assert_eq!(reason, req(&format!("t{w}")), "round {round}");
        }
    }
}

#[test]
fn a_runtime_token_stops_with_the_request_and_its_children_follow() {
    let runtime = rt().build().unwrap();
    let token = runtime.handle().token();
    let child = token.child();
    let handle = runtime.handle();
    let woke = waiter(&child.token(), |t| {
        t.wait();
        t.reason()
    });
    assert!(handle.request("test over"));
    assert!(
        !handle.request("second"),
        "a request during the stop is a no-op"
    );
    assert_eq!(woke.recv_timeout(HANG), Ok(Some(req("test over"))));
    assert!(token.is_stopping());
    let report = runtime.run();
    assert_eq!(report.reason, req("test over"));
    assert_eq!(token.reason(), Some(req("test over")));
}

#[test]
fn stop_reasons_display_in_lower_case_words() {
    assert_eq!(
        StopReason::Signal(winddown::Signal::Terminate).to_string(),
        "signal"
    );
    assert_eq!(req("deploy").to_string(), "requested: deploy");
    assert_eq!(StopReason::Completed.to_string(), "completed");
    let failed = StopReason::JobFailed {
        pool: "hash".into(),
        error: "disk full".into(),
    };
    assert_eq!(failed.to_string(), "job failed in pool hash: disk full");
}
