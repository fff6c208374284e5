//! The token tree's shape under stress: random trees whose handles are
//! dropped in random order and then stopped (checked against a model), chains
//! 10,000 deep stopped and dropped on a small stack, and threads that make,
//! drop and stop nodes at once. Threads are sequenced with barriers and
//! joins, never sleeps.
//!
//! The random tests print their seed on failure; set `WINDDOWN_TEST_SEED` to
//! replay one.

use std::sync::{Arc, Barrier};
use std::thread;

use winddown::{StopReason, StopSource, Token};

fn req(s: &str) -> StopReason {
    StopReason::Requested(s.into())
}

/// The base seed: `WINDDOWN_TEST_SEED` if set, else a fresh random one.
fn seed() -> u64 {
    match std::env::var("WINDDOWN_TEST_SEED") {
        Ok(s) => s.trim().parse().expect("WINDDOWN_TEST_SEED must be a u64"),
        Err(_) => fastrand::u64(..),
    }
}

/// Runs `f` on a thread with a 256 KiB stack, so that recursion as deep as
/// the tree would overflow it, and passes its panic on.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    let worker = thread::Builder::new()
        .name("small-stack".into())
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

// ===== Random trees against a model =====

enum Handle {
    Source(StopSource),
    Token(Token),
}

impl Handle {
    fn token(&self) -> Token {
        match self {
            Handle::Source(s) => s.token(),
            Handle::Token(t) => t.clone(),
        }
    }
}

/// What a node should look like: its reason once stopped, and whether hard.
#[derive(Clone, Debug, Default, PartialEq)]
struct Expect {
    reason: Option<StopReason>,
    hard: bool,
}

/// The tree as built (ancestry never changes, whatever handles are dropped),
/// the expected state of every node, and the handles still held.
struct World {
    parent: Vec<Option<usize>>,
    expect: Vec<Expect>,
    handles: Vec<(usize, Handle)>,
}

impl World {
    fn is_below(&self, mut node: usize, ancestor: usize) -> bool {
        loop {
            if node == ancestor {
                return true;
            }
            match self.parent[node] {
                Some(p) => node = p,
                None => return false,
            }
        }
    }

    /// The model of `stop`/`stop_hard` on `target`: nodes below it that are
    /// not stopped take its (first) reason; a hard stop makes all hard.
    fn model_stop(&mut self, target: usize, reason: &StopReason, hard: bool) {
        let reason = self.expect[target]
            .reason
            .clone()
            .unwrap_or_else(|| reason.clone());
        for n in 0..self.parent.len() {
            if self.is_below(n, target) {
                let e = &mut self.expect[n];
                if e.reason.is_none() {
                    e.reason = Some(reason.clone());
                }
                e.hard |= hard;
            }
        }
    }

    /// Makes a child of the node of handle `h`, as a new node of the model.
    fn make_child(&mut self, h: usize) {
        let (parent, ref handle) = self.handles[h];
        let child = handle.token().child();
        let id = self.parent.len();
        self.parent.push(Some(parent));
        // Born with the parent's state.
        self.expect.push(self.expect[parent].clone());
        self.handles.push((id, Handle::Source(child)));
    }

    fn check(&self, what: &str) {
        for (node, handle) in &self.handles {
            let t = handle.token();
            let want = &self.expect[*node];
            let got = Expect {
                reason: t.reason(),
                hard: t.is_hard_stopping(),
            };
            assert_eq!(&got, want, "{what}: node {node}");
            assert_eq!(
                t.is_stopping(),
                want.reason.is_some(),
                "{what}: node {node}"
            );
            if let Handle::Source(s) = handle {
                assert_eq!(
                    s.is_stopping(),
                    want.reason.is_some(),
                    "{what}: node {node}"
                );
            }
        }
    }
}

fn random_round(rng: &mut fastrand::Rng, nodes: usize, ctx: &str) {
    let mut w = World {
        parent: vec![None],
        expect: vec![Expect::default()],
        handles: vec![(0, Handle::Source(StopSource::new()))],
    };
    // Build: each new node hangs under the node of a random handle; some
    // nodes get extra tokens, so some inner nodes are watched by tokens
    // only once their sources go.
    while w.parent.len() < nodes {
        let h = rng.usize(..w.handles.len());
        w.make_child(h);
        let id = w.parent.len() - 1;
        for _ in 0..rng.usize(0..3) {
            let t = w.handles.last().expect("just pushed").1.token();
            w.handles.push((id, Handle::Token(t)));
        }
    }
    // Drop random handles (about two thirds) in random order: sources and
    // tokens, roots, leaves and inner nodes alike.
    rng.shuffle(&mut w.handles);
    let keep = rng.usize(1..=w.handles.len() / 3 + 1);
    w.handles.truncate(keep);
    w.check(&format!("{ctx}: after the drops"));
    // Stop random nodes (those that still have a source), checking after
    // each; make children of random handles in between (born stopped or not).
    for step in 0..rng.usize(1..4) {
        let sources: Vec<usize> = (0..w.handles.len())
            .filter(|&h| matches!(w.handles[h].1, Handle::Source(_)))
            .collect();
        if sources.is_empty() {
            break;
        }
        let h = sources[rng.usize(..sources.len())];
        let node = w.handles[h].0;
        let reason = req(&format!("step {step} at node {node}"));
        let hard = rng.bool();
        let Handle::Source(source) = &w.handles[h].1 else {
            unreachable!()
        };
        let was = w.expect[node].clone();
        let flipped = if hard {
            source.stop_hard(reason.clone())
        } else {
            source.stop(reason.clone())
        };
        let expect_flip = if hard {
            !was.hard
        } else {
            was.reason.is_none()
        };
        assert_eq!(flipped, expect_flip, "{ctx}: step {step}: return value");
        w.model_stop(node, &reason, hard);
        w.check(&format!("{ctx}: step {step}: {hard:?} stop of node {node}"));
        for _ in 0..rng.usize(0..4) {
            let h = rng.usize(..w.handles.len());
            w.make_child(h);
        }
        // And drop a few more, then check again.
        for _ in 0..rng.usize(0..4) {
            if w.handles.len() > 1 {
                let h = rng.usize(..w.handles.len());
                w.handles.swap_remove(h);
            }
        }
        w.check(&format!("{ctx}: step {step}: after new children and drops"));
    }
}

#[test]
fn random_trees_with_random_drops_stop_exactly_the_subtree_below_the_stop() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..300 {
        let ctx = format!("WINDDOWN_TEST_SEED={seed} round {round}");
        random_round(&mut rng, 200, &ctx);
    }
}

// ===== Deep chains =====

const DEPTH: usize = 10_000;

/// A chain `DEPTH` deep below a root, every source kept (root first).
fn chain(depth: usize) -> Vec<StopSource> {
    let mut chain = vec![StopSource::new()];
    for _ in 0..depth {
        let next = chain.last().expect("non-empty").token().child();
        chain.push(next);
    }
    chain
}

#[test]
fn a_chain_ten_thousand_deep_stops_without_recursion() {
    on_small_stack(|| {
        let chain = chain(DEPTH);
        let deepest = chain.last().expect("non-empty").token();
        let middle = chain[DEPTH / 2].token();
        assert!(chain[0].stop(req("deep")));
        assert!(deepest.is_stopping());
        assert!(!deepest.is_hard_stopping());
        assert_eq!(deepest.reason(), Some(req("deep")));
        assert_eq!(middle.reason(), Some(req("deep")));
        assert!(chain[0].stop_hard(req("ignored")));
        assert!(deepest.is_hard_stopping());
        assert_eq!(deepest.reason(), Some(req("deep")));
        drop(chain);
        assert!(deepest.is_hard_stopping());
    });
}

#[test]
fn a_chain_ten_thousand_deep_hard_stops_from_the_middle() {
    on_small_stack(|| {
        let chain = chain(DEPTH);
        let deepest = chain.last().expect("non-empty").token();
        assert!(chain[DEPTH / 2].stop_hard(req("middle")));
        assert!(deepest.is_hard_stopping());
        assert_eq!(deepest.reason(), Some(req("middle")));
        assert!(!chain[DEPTH / 2 - 1].is_stopping(), "the parent runs on");
        assert!(!chain[0].is_stopping());
    });
}

#[derive(Clone, Copy, Debug)]
enum Stopped {
    No,
    Graceful,
    Hard,
}

#[test]
fn chains_deeper_than_ten_thousand_drop_without_recursion() {
    on_small_stack(|| {
        for stopped in [Stopped::No, Stopped::Graceful, Stopped::Hard] {
            for root_first in [true, false] {
                let mut chain = chain(2 * DEPTH);
                let deepest = chain.last().expect("non-empty").token();
                match stopped {
                    Stopped::No => {}
                    Stopped::Graceful => assert!(chain[0].stop(req("g"))),
                    Stopped::Hard => assert!(chain[0].stop_hard(req("h"))),
                }
                if root_first {
                    drop(chain);
                } else {
                    while let Some(last) = chain.pop() {
                        drop(last);
                    }
                }
                let case = format!("{stopped:?}, root first: {root_first}");
                assert_eq!(
                    deepest.is_stopping(),
                    !matches!(stopped, Stopped::No),
                    "{case}"
                );
                assert_eq!(
                    deepest.is_hard_stopping(),
                    matches!(stopped, Stopped::Hard),
                    "{case}"
                );
            }
        }
    });
}

#[test]
fn a_chain_watched_only_by_tokens_drops_without_recursion() {
    on_small_stack(|| {
        // Keep a token per level, drop every source: each node is then
        // held by its token only, and the tokens go root first, then leaf
        // first.
        for root_first in [true, false] {
            let mut tokens = vec![StopSource::new().token()];
            for _ in 0..2 * DEPTH {
                let next = tokens.last().expect("non-empty").child().token();
                tokens.push(next);
            }
            if !root_first {
                tokens.reverse();
            }
            drop(tokens);
        }
    });
}

#[test]
fn a_chain_whose_middle_handles_are_gone_still_carries_the_stop_to_the_leaf() {
    on_small_stack(|| {
        let root = StopSource::new();
        let mut leaf = root.token().child();
        for _ in 0..DEPTH {
            leaf = leaf.token().child();
        }
        root.stop_hard(req("through"));
        assert!(leaf.token().is_hard_stopping());
        assert_eq!(leaf.token().reason(), Some(req("through")));
    });
}

// ===== Concurrency =====

/// Threads make children of the nodes they hold, drop random ones and stop
/// some of their own, while the main thread stops the root. Afterwards
/// every node still held is stopped, with the root's reason or the one its
/// own thread gave it.
#[test]
fn making_dropping_and_stopping_children_from_many_threads_races_the_root_stop() {
    const THREADS: usize = 4;
    let seed = seed();
    for round in 0..20u64 {
        let hard = round % 2 == 1;
        let root = StopSource::new();
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let workers: Vec<_> = (0..THREADS as u64)
            .map(|i| {
                let (token, barrier) = (root.token(), barrier.clone());
                let mut rng = fastrand::Rng::with_seed(seed ^ (round << 8) ^ i);
                thread::spawn(move || {
                    let mut held: Vec<StopSource> = vec![token.child()];
                    barrier.wait();
                    for _ in 0..600 {
                        match rng.u8(..10) {
                            0..=4 => {
                                let parent = &held[rng.usize(..held.len())];
                                let child = parent.token().child();
                                held.push(child);
                            }
                            5..=7 if held.len() > 1 => {
                                held.swap_remove(rng.usize(..held.len()));
                            }
                            8 => {
                                let s = &held[rng.usize(..held.len())];
                                s.stop(req("local"));
                            }
                            _ => {
                                let s = &held[rng.usize(..held.len())];
                                let _watch = s.token();
                            }
                        }
                    }
                    held
                })
            })
            .collect();
        barrier.wait();
        if hard {
            root.stop_hard(req("root"));
        } else {
            root.stop(req("root"));
        }
        for (i, w) in workers.into_iter().enumerate() {
            for (j, s) in w.join().expect("worker").iter().enumerate() {
                let t = s.token();
                let ctx = format!("WINDDOWN_TEST_SEED={seed} round {round} thread {i} node {j}");
                assert!(t.is_stopping(), "{ctx}: missed the stop");
                assert_eq!(t.is_hard_stopping(), hard, "{ctx}");
                let reason = t.reason().expect("stopped");
                assert!(
                    reason == req("root") || reason == req("local"),
                    "{ctx}: {reason:?}"
                );
            }
        }
    }
}

/// The middle of a chain is dropped by several threads at once, in random
/// order, while the root stops: the leaf must end up stopped.
#[test]
fn a_chain_dropped_from_the_middle_by_many_threads_while_the_root_stops() {
    const THREADS: usize = 4;
    const LEN: usize = 400;
    let seed = seed();
    for round in 0..20u64 {
        let hard = round % 2 == 0;
        let mut rng = fastrand::Rng::with_seed(seed ^ round);
        let mut chain = chain(LEN);
        let root = chain.remove(0);
        let leaf = chain.pop().expect("non-empty").token();
        // Deal the middle sources out to the threads in random order.
        rng.shuffle(&mut chain);
        let mut shares: Vec<Vec<StopSource>> = (0..THREADS).map(|_| Vec::new()).collect();
        for (k, s) in chain.into_iter().enumerate() {
            shares[k % THREADS].push(s);
        }
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let droppers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    drop(share);
                })
            })
            .collect();
        barrier.wait();
        if hard {
            root.stop_hard(req("root"));
        } else {
            root.stop(req("root"));
        }
        for d in droppers {
            d.join().expect("dropper");
        }
        let ctx = format!("WINDDOWN_TEST_SEED={seed} round {round}");
        assert!(leaf.is_stopping(), "{ctx}: the leaf missed the stop");
        assert_eq!(leaf.is_hard_stopping(), hard, "{ctx}");
        assert_eq!(leaf.reason(), Some(req("root")), "{ctx}");
        // Everything in between is gone: the leaf hangs under the root, and
        // a later hard stop still reaches it.
        root.stop_hard(req("later"));
        assert!(leaf.is_hard_stopping(), "{ctx}");
    }
}

/// Threads stop, hard-stop and drop different levels of one chain at once;
/// afterwards every surviving level is consistent: hard implies graceful, a
/// level below a hard-stopped survivor is hard, below a stopped one stopped.
#[test]
fn concurrent_stops_at_different_levels_leave_a_consistent_chain() {
    const THREADS: usize = 4;
    const LEN: usize = 200;
    let seed = seed();
    for round in 0..20u64 {
        let mut rng = fastrand::Rng::with_seed(seed ^ round.rotate_left(17));
        let chain = chain(LEN);
        let tokens: Vec<Token> = chain.iter().map(StopSource::token).collect();
        let chain: Vec<Arc<StopSource>> = chain.into_iter().map(Arc::new).collect();
        let barrier = Arc::new(Barrier::new(THREADS));
        let plans: Vec<Vec<(usize, u8)>> = (0..THREADS)
            .map(|_| (0..20).map(|_| (rng.usize(..=LEN), rng.u8(..3))).collect())
            .collect();
        let workers: Vec<_> = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                let (chain, barrier) = (chain.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for (level, op) in plan {
                        match op {
                            0 => drop(chain[level].token().child()),
                            1 => {
                                chain[level].stop(req(&format!("t{i}")));
                            }
                            _ => {
                                chain[level].stop_hard(req(&format!("h{i}")));
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        let ctx = format!("WINDDOWN_TEST_SEED={seed} round {round}");
        for level in 1..=LEN {
            let (above, here) = (&tokens[level - 1], &tokens[level]);
            if here.is_hard_stopping() {
                assert!(here.is_stopping(), "{ctx}: level {level}");
            }
            if above.is_stopping() {
                assert!(here.is_stopping(), "{ctx}: level {level}");
            }
            if above.is_hard_stopping() {
                assert!(here.is_hard_stopping(), "{ctx}: level {level}");
            }
        }
    }
}

/// One shared random tree whose handles are dealt out to several threads,
/// which then drop them, stop and hard-stop through them and make children
/// under them, all at once (the paths where a node leaves the tree while its
/// parent or child stops). A watchdog turns a deadlock into a failure.
/// Afterwards, across the tree as built: a descendant of a stopped node is
/// stopped, of a hard one hard, and every reason names an ancestor-or-self.
#[test]
fn a_shared_tree_dropped_stopped_and_grown_from_many_threads_stays_consistent() {
    const THREADS: usize = 4;
    const NODES: usize = 300;
    let seed = seed();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        for round in 0..10u64 {
            shared_tree_round(seed, round, THREADS, NODES);
        }
        done_tx.send(()).expect("the test waits");
    });
    match done_rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(()) => {}
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("WINDDOWN_TEST_SEED={seed}: deadlock (no progress in 120 s)")
        }
        // The round panicked: say so with the seed (its message is above).
        Err(e) => panic!("WINDDOWN_TEST_SEED={seed}: {e}"),
    }
}

fn shared_tree_round(seed: u64, round: u64, threads: usize, nodes: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    let ctx = format!("WINDDOWN_TEST_SEED={seed} round {round}");
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(round.wrapping_mul(0x9e37)));
    let mut parent: Vec<Option<usize>> = vec![None];
    let mut handles: Vec<(usize, Handle)> = vec![(0, Handle::Source(StopSource::new()))];
    while parent.len() < nodes {
        let (p, ref h) = handles[rng.usize(..handles.len())];
        let child = h.token().child();
        let id = parent.len();
        parent.push(Some(p));
        if rng.bool() {
            handles.push((id, Handle::Token(child.token())));
        }
        handles.push((id, Handle::Source(child)));
    }
    rng.shuffle(&mut handles);
    let mut shares: Vec<Vec<(usize, Handle)>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, h) in handles.into_iter().enumerate() {
        shares[k % threads].push(h);
    }
    let next_id = Arc::new(AtomicUsize::new(nodes));
    let born = Arc::new(Mutex::new(Vec::<(usize, usize)>::new()));
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(i, mut mine)| {
            let (next_id, born, barrier) = (next_id.clone(), born.clone(), barrier.clone());
            let mut rng = fastrand::Rng::with_seed(rng.u64(..) ^ i as u64);
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..150 {
                    if mine.is_empty() {
                        break;
                    }
                    let k = rng.usize(..mine.len());
                    match rng.u8(..10) {
                        0..=3 => drop(mine.swap_remove(k)),
                        4..=5 => {
                            let (p, ref h) = mine[k];
                            let child = h.token().child();
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            born.lock().expect("born").push((id, p));
                            mine.push((id, Handle::Source(child)));
                        }
                        6..=7 => {
                            if let (n, Handle::Source(s)) = &mine[k] {
                                s.stop(req(&format!("{n}")));
                            }
                        }
                        8 => {
                            if let (n, Handle::Source(s)) = &mine[k] {
                                s.stop_hard(req(&format!("{n}")));
                            }
                        }
                        _ => {
                            let t = mine[k].1.token();
                            let _ = (t.is_stopping(), t.reason());
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let mut survivors: Vec<(usize, Handle)> = Vec::new();
    for w in workers {
        survivors.extend(w.join().expect("worker"));
    }
    let total = next_id.load(Ordering::Relaxed);
    parent.resize(total, None);
    for &(id, p) in born.lock().expect("born").iter() {
        parent[id] = Some(p);
    }
    let is_below = |mut n: usize, a: usize| loop {
        if n == a {
            return true;
        }
        match parent[n] {
            Some(p) => n = p,
            None => return false,
        }
    };
    let state: Vec<(usize, Token)> = survivors.iter().map(|(n, h)| (*n, h.token())).collect();
    for (d, dt) in &state {
        if dt.is_hard_stopping() {
            assert!(dt.is_stopping(), "{ctx}: node {d}: hard but not graceful");
        }
        if let Some(StopReason::Requested(r)) = dt.reason() {
            let k: usize = r.parse().expect("a node id");
            assert!(
                is_below(*d, k),
                "{ctx}: node {d} has reason {k}, not an ancestor"
            );
        }
        for (a, at) in &state {
            if a != d && is_below(*d, *a) {
                if at.is_stopping() {
                    assert!(dt.is_stopping(), "{ctx}: node {d} below stopped {a}");
                }
                if at.is_hard_stopping() {
                    assert!(dt.is_hard_stopping(), "{ctx}: node {d} below hard {a}");
                }
            }
        }
    }
}
