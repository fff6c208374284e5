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
//! # The tree
//!
//! There is one tree, and its child lists serve both switches. Links are
//! strong both ways: a node holds an `Arc` to each child and each child
//! holds an `Arc` to its parent. Every [`StopSource`] and every [`Token`] is
//! a *handle* of its node, counted in the node (`Clone` adds one, `Drop`
//! removes one). When the last handle of a node goes, nobody can observe the
//! node any more, so it leaves the tree: it takes itself out of its parent's
//! list and hands its children to that parent (or makes them roots when it
//! has none). Ancestry between the nodes that still have handles is thereby
//! kept: a grandchild whose parent's handles are all gone hangs directly
//! under its grandparent, so a stop of the grandparent still reaches it.
//!
//! A detached node owns no other node, so the `Arc`s never nest deeper than
//! one level when they are dropped, and a chain of any depth drops without
//! recursion. Propagating a stop walks the subtree with an explicit worklist,
//! so its stack use does not depend on the depth either.
//!
//! # Invariants
//!
//! 1. Each switch goes from off to on at most once and never back.
//! 2. The first reason wins: it is stored under the node's lock by the call
//!    that flips graceful, before the flag is published, and never replaced.
//! 3. Stopping a node stops all its descendants with the node's reason and
//!    time (a descendant already stopped keeps its own); it never touches the
//!    parent. A hard stop likewise makes every descendant hard.
//! 4. A child created under a stopped parent is born stopped (and born hard if
//!    the parent is hard), because creation and stopping both take the
//!    parent's lock.
//! 5. `child.parent == Some(p)` exactly when `child` is in `p`'s list, at
//!    index `child.parent_idx`; both sides change only with both locks held.
//! 6. A hard-stopped node has an empty list and takes no new children: its
//!    children are hard forever, so there is nothing left to propagate.
//! 7. *Catch-up:* whenever a child is less stopped than its parent (parent
//!    stopped and child not, or parent hard and child not), some thread holds
//!    the parent on its worklist and will bring the child up to date. The
//!    call that flips a node puts it on its own worklist; a node leaving the
//!    tree brings the children it hands on up to its own state and to the
//!    new parent's before it lets go of them, and propagates from them.
//! 8. A node whose handle count is zero has no parent and no children, or
//!    is being detached by the thread that dropped its last handle.
//!
//! A `stop` returns once this call's worklist is empty. A subtree that
//! another thread is handing on at that moment (its node's last handle is
//! being dropped) is brought up to date by that thread before its `drop`
//! returns, not necessarily before `stop` returns.
//!
//! # Deadlock safety
//!
//! Lock order: **parent before child**, and more precisely **older before
//! younger**. A thread holding node locks blocks only on the lock of a child
//! of the last node it locked: `propagate` and `child` lock a parent, then a
//! child; `detach` locks the parent, the node, then the node's children one
//! at a time. Going the other way, from a node to its parent, is done with
//! `try_lock`; when that fails, `detach` releases the node, locks the parent,
//! relocks the node and checks that the parent has not changed (retrying if
//! it has: the node was moved up or cut off meanwhile).
//!
//! Why that cannot deadlock: a node only ever gets a parent created before
//! it (a child is made under an existing node; a node handed on moves up to
//! its grandparent, which is older still). So every blocking lock is on a
//! node younger than every lock the thread already holds — including the
//! relock in `detach`'s retry, as the parent it holds was the node's parent
//! and so is older. Creation order is a global order, so there is no cycle
//! of threads each waiting for a lock another holds; `try_lock` never waits.
//! Two siblings are never locked together: the index a node keeps for its
//! place in the parent's list is an atomic guarded by the parent's lock, so
//! moving a sibling within that list needs no lock on the sibling. No lock
//! is held while user code runs or while a waiter is woken.
//!
//! # Wake-ups
//!
//! Each switch owns the only `Sender` of a zero-capacity channel on which
//! nothing is ever sent; flipping the switch drops that sender. A disconnected
//! channel stays disconnected, so a waiter that blocks in `recv` after the
//! switch flipped returns at once and one that blocked before is woken by the
//! disconnect: no wake-up can be lost and nothing polls. The senders are
//! dropped after the node locks are released, so a woken waiter that asks
//! for the reason does not queue on a lock held by the stopper.

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, MutexGuard};

pub(crate) use crate::reason::StopReason;

// ===== Node =====

/// One switch: a flag for the fast check and a channel for blocking waits.
#[derive(Debug)]
struct Switch {
    /// Written once, under the node's lock, with `Release` after the reason
    /// was stored; read by `is_on` with `Acquire`, which pairs with that
    /// store, so a reader that sees `true` and then takes the lock finds the
    /// reason. The graceful flag is stored before the hard one, so a reader
    /// that sees hard on also sees graceful on.
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

/// What a node's lock guards. The truth about the switches, under the lock,
/// is `reason.is_some()` (graceful) and `hard_tx.is_none()` (hard); the
/// atomic flags mirror it for lock-free readers.
///
/// Neither this nor `Node` derives `Debug`: through the parent and child
/// links it would print the whole tree.
struct NodeState {
    reason: Option<(StopReason, Instant)>,
    /// Dropped when graceful flips.
    tx: Option<Sender<()>>,
    /// Dropped when hard flips.
    hard_tx: Option<Sender<()>>,
    /// `None` for a root, and for a node that left the tree or was cut off
    /// by its parent's hard stop (invariants 5 and 6).
    parent: Option<Arc<Node>>,
    /// Children that still have handles, or are being detached right now.
    children: Vec<Arc<Node>>,
}

impl NodeState {
    fn is_hard(&self) -> bool {
        self.hard_tx.is_none()
    }
}

struct Node {
    graceful: Switch,
    hard: Switch,
    /// Live `StopSource`s and `Token`s of this node.
    handles: AtomicUsize,
    /// Where this node sits in its parent's `children`. Read and written only
    /// with the parent's lock held (invariant 5), which orders every access,
    /// so `Relaxed` suffices; it is atomic only so that the parent can fix
    /// it without taking this node's lock.
    parent_idx: AtomicUsize,
    state: Mutex<NodeState>,
}

/// Senders whose drop wakes waiters; dropped once no lock is held.
type Wakers = Vec<Sender<()>>;

impl Node {
    /// A fresh node with one handle (the caller's).
    fn new(parent: Option<Arc<Node>>) -> Arc<Node> {
        let (graceful, tx) = Switch::new();
        let (hard, hard_tx) = Switch::new();
        Arc::new(Node {
            graceful,
            hard,
            handles: AtomicUsize::new(1),
            parent_idx: AtomicUsize::new(0),
            state: Mutex::new(NodeState {
                reason: None,
                tx: Some(tx),
                hard_tx: Some(hard_tx),
                parent,
                children: Vec::new(),
            }),
        })
    }

    /// Flips this node's switches, with `st` its locked state: graceful with
    /// `reason` if `reason` is given and graceful is off, then hard if `hard`
    /// and hard is off. Returns which of the two this call flipped.
    ///
    /// Hard needs a reason to be on already, so a caller asking for hard
    /// passes one (the first reason still wins).
    fn flip(
        &self,
        st: &mut NodeState,
        reason: Option<&(StopReason, Instant)>,
        hard: bool,
        wakers: &mut Wakers,
    ) -> (bool, bool) {
        let mut flipped = (false, false);
        if let (None, Some(r)) = (&st.reason, reason) {
            st.reason = Some(r.clone());
            // Release: publishes the reason stored just above.
            self.graceful.on.store(true, Ordering::Release);
            wakers.extend(st.tx.take());
            flipped.0 = true;
        }
        if hard && !st.is_hard() {
            debug_assert!(st.reason.is_some(), "hard implies graceful");
            // Release: publishes the reason and the graceful flag, both
            // written before (invariant: hard implies graceful).
            self.hard.on.store(true, Ordering::Release);
            wakers.extend(st.hard_tx.take());
            flipped.1 = true;
        }
        flipped
    }

    /// Brings `child` (locked as `cst`) up to the stop state of a node whose
    /// locked state is `from`. Returns whether anything flipped.
    fn catch_up(child: &Node, cst: &mut NodeState, from: &NodeState, wakers: &mut Wakers) -> bool {
        let (g, h) = child.flip(cst, from.reason.as_ref(), from.is_hard(), wakers);
        g || h
    }

    /// Stops this node (and hard-stops it if `hard`), then every descendant.
    /// Returns which switches this call flipped on this node.
    fn stop(self: &Arc<Node>, reason: StopReason, hard: bool) -> (bool, bool) {
        let mut wakers = Wakers::new();
        let flipped = {
            let mut st = self.state.lock();
            let reason = (reason, Instant::now());
            self.flip(&mut st, Some(&reason), hard, &mut wakers)
        };
        drop(wakers);
        if flipped.0 || flipped.1 {
            propagate(vec![self.clone()]);
        }
        flipped
    }

    fn reason(&self) -> Option<StopReason> {
        self.state.lock().reason.as_ref().map(|(r, _)| r.clone())
    }

    fn stopped_at(&self) -> Option<Instant> {
        self.state.lock().reason.as_ref().map(|(_, at)| *at)
    }

    /// Adds a handle. Only called through an existing handle, so the count
    /// is already at least one and cannot be racing towards zero: `Relaxed`
    /// is enough (as for `Arc::clone`).
    fn acquire(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a handle; the last one detaches the node (invariant 8).
    fn release(self: &Arc<Node>) {
        // Release here and the Acquire fence below (the `Arc` pattern): what
        // the other handles did happens before the detach. The locks taken by
        // `detach` would order it anyway; this keeps the argument local.
        if self.handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        self.detach();
    }

    /// Takes this handle-less node out of the tree: out of its parent's list,
    /// its children handed to the parent (or made roots), each brought up to
    /// date first (invariant 7).
    fn detach(self: &Arc<Node>) {
        let mut wakers = Wakers::new();
        let mut moved = Vec::new();
        loop {
            let mut st = self.state.lock();
            let Some(parent) = st.parent.clone() else {
                hand_on(&mut st, None, &mut moved, &mut wakers);
                break;
            };
            // Parent before child: we hold the child, so only try the parent.
            let mut pst = match parent.state.try_lock() {
                Some(pst) => pst,
                None => {
                    drop(st);
                    let pst = parent.state.lock();
                    st = self.state.lock();
                    let same = st.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &parent));
                    if !same {
                        // Moved up or cut off meanwhile; look again.
                        continue;
                    }
                    pst
                }
            };
            // Out of the parent's list (invariant 5).
            let idx = self.parent_idx.load(Ordering::Relaxed);
            debug_assert!(Arc::ptr_eq(&pst.children[idx], self));
            pst.children.swap_remove(idx);
            if let Some(other) = pst.children.get(idx) {
                other.parent_idx.store(idx, Ordering::Relaxed);
            }
            st.parent = None;
            hand_on(&mut st, Some((&parent, &mut pst)), &mut moved, &mut wakers);
            break;
        }
        drop(wakers);
        propagate(moved);
    }
}

/// Hands every child of a detaching node (`st`) to `parent` (its locked
/// state beside it), or makes them roots when there is none or the parent is
/// hard (invariant 6). Each child is first brought up to the node's state and
/// the parent's, so a stop in progress above cannot miss it; children that
/// changed are pushed on `moved` for propagation.
fn hand_on(
    st: &mut NodeState,
    mut parent: Option<(&Arc<Node>, &mut MutexGuard<'_, NodeState>)>,
    moved: &mut Vec<Arc<Node>>,
    wakers: &mut Wakers,
) {
    for child in std::mem::take(&mut st.children) {
        // Parent, node, then the node's child: parent before child.
        let mut cst = child.state.lock();
        let mut changed = Node::catch_up(&child, &mut cst, st, wakers);
        cst.parent = None;
        if let Some((p, pst)) = parent.as_mut() {
            changed |= Node::catch_up(&child, &mut cst, pst, wakers);
            if !pst.is_hard() {
                child
                    .parent_idx
                    .store(pst.children.len(), Ordering::Relaxed);
                pst.children.push(child.clone());
                cst.parent = Some(Arc::clone(p));
            }
        }
        drop(cst);
        if changed {
            moved.push(child);
        }
    }
}

/// Brings every descendant of the nodes on `work` up to date, one node at a
/// time, without recursion (invariant 7). A hard node's list is emptied and
/// its children cut off (invariant 6).
fn propagate(mut work: Vec<Arc<Node>>) {
    let mut wakers = Wakers::new();
    while let Some(node) = work.pop() {
        let mut st = node.state.lock();
        if st.reason.is_none() {
            continue;
        }
        let hard = st.is_hard();
        let children = if hard {
            std::mem::take(&mut st.children)
        } else {
            Vec::new()
        };
        let list = if hard { &children } else { &st.children };
        for child in list {
            // Node before child: parent before child.
            let mut cst = child.state.lock();
            if Node::catch_up(child, &mut cst, &st, &mut wakers) {
                work.push(child.clone());
            }
            if hard {
                cst.parent = None;
            }
        }
        drop(st);
        // Wake this node's children now rather than at the end of the walk.
        wakers.clear();
        // `children` (the cut-off list) drops here: a child without handles
        // is kept alive by the thread detaching it, so nothing is freed that
        // still owns nodes.
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
pub struct StopSource {
    /// One handle of the node (see the module docs).
    node: Arc<Node>,
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
            node: Node::new(None),
        }
    }

    /// Returns a token that watches this source.
    pub fn token(&self) -> Token {
        self.node.acquire();
        Token {
            node: self.node.clone(),
        }
    }

    /// Begins the graceful stop with `reason`, stopping every descendant
    /// too. Returns `true` if this call stopped it, `false` if it was already
    /// stopped (the first reason is kept).
    pub fn stop(&self, reason: StopReason) -> bool {
        self.node.stop(reason, false).0
    }

    /// Fires the hard stop (and the graceful one first, with `reason`, if it
    /// had not begun), for this source and every descendant. Returns `true`
    /// if this call fired it.
    pub fn stop_hard(&self, reason: StopReason) -> bool {
        self.node.stop(reason, true).1
    }

    /// Returns `true` once the graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.node.graceful.is_on()
    }
}

impl Clone for StopSource {
    fn clone(&self) -> Self {
        self.node.acquire();
        StopSource {
            node: self.node.clone(),
        }
    }
}

impl Drop for StopSource {
    fn drop(&mut self) {
        self.node.release();
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
///   [`crossbeam_channel::select!`][select].
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
///
/// [select]: https://docs.rs/crossbeam-channel/0.5/crossbeam_channel/macro.select.html
pub struct Token {
    /// One handle of the node (see the module docs).
    node: Arc<Node>,
}

impl Token {
    /// Returns `true` once stopping has begun. One `Acquire` load.
    #[inline]
    pub fn is_stopping(&self) -> bool {
        self.node.graceful.is_on()
    }

    /// The graceful switch's flag, for a check made before every item of a
    /// parallel iterator (`par.rs`): the caller keeps the reference in a
    /// register and loads it `Relaxed`. That load needs no happens-before
    /// with the stop: it only decides whether to start an item, and the
    /// reason, if ever read, is read through the lock. A stale `false`
    /// starts one more item, which is counted like any other.
    #[cfg(feature = "rayon")]
    #[inline]
    pub(crate) fn stop_flag(&self) -> &AtomicBool {
        &self.node.graceful.on
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

    /// Blocks until the hard stop fires or `deadline` is reached. Returns
    /// `true` if the hard stop has fired; a graceful stop alone does not end
    /// the wait. A deadline already past only checks.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use winddown::{StopReason, StopSource};
    ///
    /// let source = StopSource::new();
    /// let token = source.token();
    /// source.stop(StopReason::Requested("graceful".into()));
    /// assert!(!token.wait_hard_deadline(Instant::now() + Duration::from_millis(1)));
    /// source.stop_hard(StopReason::Requested("deadline".into()));
    /// assert!(token.wait_hard_deadline(Instant::now()));
    /// ```
    pub fn wait_hard_deadline(&self, deadline: Instant) -> bool {
        self.node.hard.wait_deadline(Some(deadline))
    }

    /// Returns a receiver that becomes ready when stopping begins: a `recv`
    /// on it returns `Err(RecvError)` from then on. Nothing is ever sent on
    /// it, so it composes with [`crossbeam_channel::select!`][select]:
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
    ///
    /// [select]: https://docs.rs/crossbeam-channel/0.5/crossbeam_channel/macro.select.html
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
        let mut wakers = Wakers::new();
        let mut pst = self.node.state.lock();
        let child = Node::new(None);
        {
            // Nobody else can see the child yet; its lock is uncontended.
            let mut cst = child.state.lock();
            // Invariant 4: born with the parent's reason, time and hardness.
            Node::catch_up(&child, &mut cst, &pst, &mut wakers);
            // Invariant 6: a hard parent takes no children.
            if !pst.is_hard() {
                child
                    .parent_idx
                    .store(pst.children.len(), Ordering::Relaxed);
                pst.children.push(child.clone());
                cst.parent = Some(self.node.clone());
            }
        }
        drop(pst);
        drop(wakers);
        StopSource { node: child }
    }

    pub(crate) fn stopped_at(&self) -> Option<Instant> {
        self.node.stopped_at()
    }
}

impl Clone for Token {
    fn clone(&self) -> Self {
        self.node.acquire();
        Token {
            node: self.node.clone(),
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.node.release();
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

    fn children(s: &StopSource) -> usize {
        s.node.state.lock().children.len()
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
        assert_eq!(children(&root), 0);
        let kept: Vec<StopSource> = (0..3).map(|_| token.child()).collect();
        assert_eq!(children(&root), 3);
        drop(kept);
        assert_eq!(children(&root), 0);
    }

    #[test]
    fn children_get_the_parents_time_and_a_child_born_stopped_too() {
        let root = StopSource::new();
        let child = root.token().child();
        let grandchild = child.token().child();
        drop(child);
        root.stop(req("t"));
        let at = root.token().stopped_at().expect("stopped");
        assert_eq!(grandchild.token().stopped_at(), Some(at));
        assert_eq!(root.token().child().token().stopped_at(), Some(at));
    }

    #[test]
    fn a_handle_less_middle_node_hands_its_children_to_its_parent() {
        let root = StopSource::new();
        let middle = root.token().child();
        let leaves: Vec<StopSource> = (0..4).map(|_| middle.token().child()).collect();
        let watcher = middle.token();
        drop(middle);
        assert_eq!(children(&root), 1, "a token still holds the middle node");
        drop(watcher);
        assert_eq!(children(&root), 4, "the leaves now hang under the root");
        for leaf in &leaves {
            let parent = leaf.node.state.lock().parent.clone().expect("attached");
            assert!(Arc::ptr_eq(&parent, &root.node));
        }
        drop(leaves);
        assert_eq!(children(&root), 0);
    }

    #[test]
    fn a_hard_stop_empties_the_list_and_cuts_the_children_off() {
        let root = StopSource::new();
        let child = root.token().child();
        root.stop(req("graceful"));
        assert_eq!(children(&root), 1, "kept for the hard stop");
        root.stop_hard(req("hard"));
        assert_eq!(children(&root), 0);
        assert!(child.node.state.lock().parent.is_none());
        let late = root.token().child();
        assert!(late.token().is_hard_stopping());
        assert_eq!(children(&root), 0, "a hard parent takes no children");
    }

    #[test]
    fn detached_nodes_own_no_other_node() {
        let root = StopSource::new();
        let child = root.token().child();
        let grandchild = child.token().child();
        let child_node = child.node.clone();
        drop(child);
        let st = child_node.state.lock();
        assert!(st.parent.is_none() && st.children.is_empty());
        drop(st);
        drop(grandchild);
        assert_eq!(Arc::strong_count(&child_node), 1);
        assert_eq!(Arc::strong_count(&root.node), 1);
    }
}
