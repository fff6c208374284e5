//! Stop tokens: what running code watches, and the sources that stop them.
//!
//! A [`StopSource`] owns one node of a tree; every [`Token`] made from it is a
//! cheap read-only view of that node. A node has two one-way switches:
//!
//! * **graceful** — "stop taking new work"; set by [`StopSource::stop`], by the
//!   runtime's trigger, or by the parent node;
//! * **hard** — "the drain deadline has passed, abort what you are doing";
//!   set by [`StopSource::stop_hard`] (the runtime does it at the deadline) or
//!   by the parent. Setting hard also sets graceful.
//!
//! # Invariants
//!
//! 1. Each switch goes from off to on at most once and never back.
//! 2. The first reason wins: it is stored under the node's lock by the call
//!    that flips graceful, before the flag is published, and never replaced.
//! 3. Stopping a node stops all its live children, with the parent's reason;
//!    it never touches the parent.
//! 4. A child created under a stopped parent is born stopped (and born hard if
//!    the parent is hard), because creation and stopping both take the
//!    parent's lock.
//!
//! # Lock order
//!
//! Only one node lock is ever held at a time: `stop` takes the children out of
//! the node under its lock, releases it, and only then stops the children.
//! Child creation holds the parent's lock while it builds a fresh node nobody
//! else can see yet.
//!
//! # Wake-ups
//!
//! Each switch owns the only `Sender` of a zero-capacity channel on which
//! nothing is ever sent; flipping the switch drops that sender. A disconnected
//! channel stays disconnected, so a waiter that blocks in `recv` after the
//! switch flipped returns at once and one that blocked before is woken by the
//! disconnect: no wake-up can be lost and nothing polls.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

pub(crate) use crate::reason::StopReason;

// ===== Node =====

/// One switch: a flag for the fast check and a channel for blocking waits.
#[derive(Debug)]
struct Switch {
    /// Written once, by `Node::stop`/`Node::stop_hard` with `Release` after
    /// the reason was stored under the lock; read by `is_on` with `Acquire`,
    /// which pairs with that store, so a reader that sees `true` and then
    /// takes the lock finds the reason.
    on: AtomicBool,
    /// Disconnects when the switch flips (its sender lives in `NodeState`).
    rx: Receiver<()>,
}

impl Switch {
    fn new() -> (Switch, Sender<()>) {
        let (tx, rx) = crossbeam_channel::bounded(0);
        let switch = Switch {
            on: AtomicBool::new(false),
            rx,
        };
        (switch, tx)
    }

    #[inline]
    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        if self.is_on() {
            return true;
        }
        match deadline {
            // Nothing is ever sent, so `recv` returns only on disconnect.
            None => self.rx.recv().is_err(),
            Some(d) => matches!(
                self.rx.recv_deadline(d),
                Err(RecvTimeoutError::Disconnected)
            ),
        }
    }
}

#[derive(Debug, Default)]
struct NodeState {
    reason: Option<(StopReason, Instant)>,
    /// Dropped when graceful flips.
    tx: Option<Sender<()>>,
    /// Dropped when hard flips.
    hard_tx: Option<Sender<()>>,
    /// Live children; dead ones are pruned when the list grows.
    children: Vec<Weak<Node>>,
}

#[derive(Debug)]
struct Node {
    graceful: Switch,
    hard: Switch,
    state: Mutex<NodeState>,
}

impl Node {
    fn new() -> Arc<Node> {
        let (graceful, tx) = Switch::new();
        let (hard, hard_tx) = Switch::new();
        Arc::new(Node {
            graceful,
            hard,
            state: Mutex::new(NodeState {
                reason: None,
                tx: Some(tx),
                hard_tx: Some(hard_tx),
                children: Vec::new(),
            }),
        })
    }

    /// Flips graceful with `reason` unless it is already on. Returns whether
    /// this call flipped it (invariant 2: first reason wins).
    fn stop(&self, reason: StopReason, at: Instant) -> bool {
        let (tx, children, reason) = {
            let mut st = self.state.lock();
            if st.reason.is_some() {
                return false;
            }
            st.reason = Some((reason.clone(), at));
            // Release: publishes the reason stored just above.
            self.graceful.on.store(true, Ordering::Release);
            (st.tx.take(), std::mem::take(&mut st.children), reason)
        };
        drop(tx); // wakes every waiter and every select! on the receiver
        for child in children.iter().filter_map(Weak::upgrade) {
            child.stop(reason.clone(), at);
        }
        true
    }

    /// Flips hard (and graceful, with `reason`, if it was still off).
    /// Returns whether this call flipped hard.
    fn stop_hard(&self, reason: StopReason, at: Instant) -> bool {
        self.stop(reason, at);
        let tx = {
            let mut st = self.state.lock();
            // Relaxed is enough: `hard.on` is only written under this lock.
            if self.hard.on.load(Ordering::Relaxed) {
                return false;
            }
            // Release: pairs with the Acquire in `Switch::is_on`.
            self.hard.on.store(true, Ordering::Release);
            st.hard_tx.take()
        };
        drop(tx);
        true
    }

    fn reason(&self) -> Option<StopReason> {
        self.state.lock().reason.as_ref().map(|(r, _)| r.clone())
    }

    fn stopped_at(&self) -> Option<Instant> {
        self.state.lock().reason.as_ref().map(|(_, at)| *at)
    }
}

// ===== StopSource =====

/// The stopping side of a [`Token`]: whoever holds it can stop the token and
/// every token derived from it.
///
/// A runtime owns the root source; [`Token::child`] makes a source for a
/// subtree (a sub-task that must be cancellable on its own). Dropping a
/// source does not stop it.
///
/// # Examples
///
/// ```
/// use winddown::{StopReason, StopSource};
///
/// let source = StopSource::new();
/// let token = source.token();
/// assert!(!token.is_stopping());
/// assert!(source.stop(StopReason::Requested("done".into())));
/// assert!(token.is_stopping());
/// assert_eq!(token.reason(), Some(StopReason::Requested("done".into())));
/// ```
#[derive(Clone)]
pub struct StopSource {
    node: Arc<Node>,
    /// Hard-stop children too: `stop_hard` must reach every descendant, but
    /// `Node::stop` empties the child list. So the source keeps a second,
    /// hard-only list.
    tree: Arc<HardTree>,
}

/// Descendants to hard-stop, kept apart from the graceful child list because
/// a graceful stop consumes that list.
#[derive(Debug, Default)]
struct HardTree {
    children: Mutex<Vec<(Weak<Node>, Weak<HardTree>)>>,
}

impl HardTree {
    fn stop_hard(&self, node: &Node, reason: StopReason, at: Instant) {
        if !node.stop_hard(reason.clone(), at) {
            return;
        }
        // The node's own reason, not the argument: if the graceful stop won
        // with another reason, the children must get that one (invariant 2),
        // even when the graceful stop has not reached them yet.
        let reason = node.reason().unwrap_or(reason);
        let children = std::mem::take(&mut *self.children.lock());
        for (n, t) in children {
            if let (Some(n), Some(t)) = (n.upgrade(), t.upgrade()) {
                // A child of a stopped node keeps the parent's reason.
                let r = n.reason().unwrap_or_else(|| reason.clone());
                t.stop_hard(&n, r, at);
            }
        }
    }
}

impl Default for StopSource {
    fn default() -> Self {
        Self::new()
    }
}

impl StopSource {
    /// Creates a new root source that is not stopped.
    pub fn new() -> StopSource {
        StopSource {
            node: Node::new(),
            tree: Arc::new(HardTree::default()),
        }
    }

    /// Returns a token that watches this source.
    pub fn token(&self) -> Token {
        Token {
            node: self.node.clone(),
            tree: self.tree.clone(),
        }
    }

    /// Begins the graceful stop with `reason`, stopping every descendant
    /// too. Returns `true` if this call stopped it, `false` if it was already
    /// stopped (the first reason is kept).
    pub fn stop(&self, reason: StopReason) -> bool {
        self.node.stop(reason, Instant::now())
    }

    /// Fires the hard stop (and the graceful one first, with `reason`, if it
    /// had not begun), for this source and every descendant. Returns `true`
    /// if this call fired it.
    pub fn stop_hard(&self, reason: StopReason) -> bool {
        let before = self.node.hard.is_on();
        self.tree.stop_hard(&self.node, reason, Instant::now());
        !before && self.node.hard.is_on()
    }

    /// Returns `true` once the graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.node.graceful.is_on()
    }
}

impl fmt::Debug for StopSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSource")
            .field("is_stopping", &self.node.graceful.is_on())
            .field("is_hard_stopping", &self.node.hard.is_on())
            .finish()
    }
}

// ===== Token =====

/// A cheap, cloneable handle that running code watches to learn that it
/// should stop.
///
/// * [`is_stopping`](Token::is_stopping) is one atomic load: check it between
///   work units.
/// * [`wait`](Token::wait), [`wait_timeout`](Token::wait_timeout) and
///   [`wait_deadline`](Token::wait_deadline) block without polling and return
///   as soon as stopping begins.
/// * [`receiver`](Token::receiver) becomes ready (disconnected) on stop, for
///   [`crossbeam_channel::select!`].
/// * The *hard* side ([`is_hard_stopping`](Token::is_hard_stopping),
///   [`wait_hard`](Token::wait_hard), [`hard_receiver`](Token::hard_receiver))
///   fires when the drain deadline passes, for work that must abort mid-way.
///
/// # Examples
///
/// A loop that ticks every 5 seconds until told to stop:
///
/// ```
/// use std::time::Duration;
/// use winddown::{StopReason, StopSource};
///
/// let source = StopSource::new();
/// let token = source.token();
/// let worker = std::thread::spawn(move || {
///     let mut ticks = 0;
///     // `wait_timeout` returns true as soon as the stop begins.
///     while !token.wait_timeout(Duration::from_secs(5)) {
///         ticks += 1;
///     }
///     ticks
/// });
/// source.stop(StopReason::Requested("test".into()));
/// let _ticks = worker.join().unwrap();
/// ```
#[derive(Clone)]
pub struct Token {
    node: Arc<Node>,
    tree: Arc<HardTree>,
}

impl Token {
    /// Returns `true` once stopping has begun. One `Acquire` load.
    #[inline]
    pub fn is_stopping(&self) -> bool {
        self.node.graceful.is_on()
    }

    /// Returns `true` once the hard stop has fired (the drain deadline has
    /// passed). Implies [`is_stopping`](Token::is_stopping).
    #[inline]
    pub fn is_hard_stopping(&self) -> bool {
        self.node.hard.is_on()
    }

    /// Returns the reason for the stop, or `None` while running.
    pub fn reason(&self) -> Option<StopReason> {
        self.node.reason()
    }

    /// Blocks until stopping begins.
    pub fn wait(&self) {
        self.node.graceful.wait_deadline(None);
    }

    /// Blocks until stopping begins or `timeout` elapses. Returns `true` if
    /// stopping has begun. A timeout too large to add to now waits forever.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.node
            .graceful
            .wait_deadline(Instant::now().checked_add(timeout))
    }

    /// Blocks until stopping begins or `deadline` is reached. Returns `true`
    /// if stopping has begun.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.node.graceful.wait_deadline(Some(deadline))
    }

    /// Blocks until the hard stop fires.
    pub fn wait_hard(&self) {
        self.node.hard.wait_deadline(None);
    }

    /// Blocks until the hard stop fires or `timeout` elapses. Returns `true`
    /// if the hard stop has fired.
    pub fn wait_hard_timeout(&self, timeout: Duration) -> bool {
        self.node
            .hard
            .wait_deadline(Instant::now().checked_add(timeout))
    }

    /// Returns a receiver that becomes ready when stopping begins: a `recv`
    /// on it returns `Err(RecvError)` from then on. Nothing is ever sent on
    /// it, so it composes with [`crossbeam_channel::select!`]:
    ///
    /// ```
    /// use std::time::Duration;
    /// use crossbeam_channel::{select, tick};
    /// use winddown::{StopReason, StopSource};
    ///
    /// let source = StopSource::new();
    /// let token = source.token();
    /// source.stop(StopReason::Requested("now".into()));
    /// let ticker = tick(Duration::from_secs(3600));
    /// select! {
    ///     recv(ticker) -> _ => unreachable!("the stop is already ready"),
    ///     recv(token.receiver()) -> _ => {}
    /// }
    /// ```
    pub fn receiver(&self) -> &Receiver<()> {
        &self.node.graceful.rx
    }

    /// Returns a receiver that becomes ready when the hard stop fires, like
    /// [`receiver`](Token::receiver).
    pub fn hard_receiver(&self) -> &Receiver<()> {
        &self.node.hard.rx
    }

    /// Creates a child source: stopping the child leaves this token running;
    /// stopping this token stops the child with the same reason. A child
    /// made under a stopped token is born stopped.
    ///
    /// ```
    /// use winddown::{StopReason, StopSource};
    ///
    /// let root = StopSource::new();
    /// let child = root.token().child();
    /// child.stop(StopReason::Requested("sub-task cancelled".into()));
    /// assert!(child.token().is_stopping());
    /// assert!(!root.token().is_stopping());
    /// ```
    pub fn child(&self) -> StopSource {
        let child = StopSource::new();
        let mut st = self.node.state.lock();
        match &st.reason {
            // Invariant 4: born stopped, with the parent's reason and time.
            Some((reason, at)) => {
                let (reason, at) = (reason.clone(), *at);
                let hard = self.node.hard.is_on();
                drop(st);
                child.node.stop(reason.clone(), at);
                if hard {
                    child.tree.stop_hard(&child.node, reason, at);
                } else {
                    self.register_hard_child(&child);
                }
            }
            None => {
                if st.children.len() == st.children.capacity() {
                    st.children.retain(|w| w.strong_count() > 0);
                }
                st.children.push(Arc::downgrade(&child.node));
                drop(st);
                self.register_hard_child(&child);
            }
        }
        child
    }

    fn register_hard_child(&self, child: &StopSource) {
        let mut list = self.tree.children.lock();
        if list.len() == list.capacity() {
            list.retain(|(n, _)| n.strong_count() > 0);
        }
        list.push((Arc::downgrade(&child.node), Arc::downgrade(&child.tree)));
        drop(list);
        // The parent may have gone hard between the check above and the
        // push; in that case its hard stop already took the list, so fire
        // the child's here (stop_hard is idempotent).
        if self.node.hard.is_on() {
            let reason = self
                .node
                .reason()
                .unwrap_or(StopReason::Requested(String::new()));
            child.tree.stop_hard(&child.node, reason, Instant::now());
        }
    }

    pub(crate) fn stopped_at(&self) -> Option<Instant> {
        self.node.stopped_at()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("is_stopping", &self.is_stopping())
            .field("is_hard_stopping", &self.is_hard_stopping())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> StopReason {
        StopReason::Requested(s.into())
    }

    #[test]
    fn first_reason_wins() {
        let s = StopSource::new();
        assert!(s.stop(req("a")));
        assert!(!s.stop(req("b")));
        assert_eq!(s.token().reason(), Some(req("a")));
    }

    #[test]
    fn hard_implies_graceful_and_reaches_grandchildren() {
        let root = StopSource::new();
        let child = root.token().child();
        let grandchild = child.token().child();
        root.stop_hard(req("deadline"));
        assert!(grandchild.token().is_stopping());
        assert!(grandchild.token().is_hard_stopping());
        assert_eq!(grandchild.token().reason(), Some(req("deadline")));
    }

    #[test]
    fn hard_stop_after_graceful_still_reaches_children() {
        let root = StopSource::new();
        let child = root.token().child();
        root.stop(req("first"));
        assert!(child.token().is_stopping());
        assert!(!child.token().is_hard_stopping());
        root.stop_hard(req("ignored"));
        assert!(child.token().is_hard_stopping());
        assert_eq!(child.token().reason(), Some(req("first")));
    }

    #[test]
    fn dead_children_are_pruned() {
        let root = StopSource::new();
        let token = root.token();
        for _ in 0..10_000 {
            drop(token.child());
        }
        assert!(root.node.state.lock().children.len() < 64);
        assert!(root.tree.children.lock().len() < 64);
    }
}
