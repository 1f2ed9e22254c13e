//! The calls of one goroutine as a tree: a call whose time lies inside another's on the same
//! goroutine is its child. Calls are reported when they end, so children come before their
//! parents; each goroutine's finished calls wait here until a caller adopts them, no caller
//! can still come (nothing that began before them is in flight on their goroutine: see
//! [`Nesting::release_settled`]), the session ends, or the buffer is full (then the oldest
//! goroutine's trees go out without waiting for a caller, and are counted as cut). Used by `--graph`, `--timeline` and anything else that needs
//! each call's parent (span exporters).

use std::collections::HashMap;

/// Where calls nest: one goroutine of one process. System stacks (g0, gsignal: goid 0) are one
/// per thread, so their calls nest per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Goroutine {
    pub pid: u32,
    pub goid: u64,
    /// The thread of a system stack; 0 for a goroutine (it moves between threads).
    pub thread: u32,
}

impl Goroutine {
    pub fn of(pid: u32, goid: u64, tid: u32) -> Goroutine {
        Goroutine {
            pid,
            goid,
            thread: if goid == 0 { tid } else { 0 },
        }
    }
}

/// One call and the calls it made, in the order they happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Node<T> {
    /// Unique in a [`Nesting`], in the order calls were reported.
    pub id: u64,
    pub entry_ns: u64,
    /// The return; for a call that did not return (panicked, exited, abandoned), the end of its
    /// last traced callee, or its entry when it had none.
    pub end_ns: u64,
    pub returned: bool,
    pub item: T,
    pub children: Vec<Node<T>>,
}

impl<T> Node<T> {
    fn calls(&self) -> usize {
        1 + self.children.iter().map(Node::calls).sum::<usize>()
    }

    /// `other` lies within this call.
    fn contains(&self, entry_ns: u64, end_ns: u64) -> bool {
        self.entry_ns <= entry_ns && end_ns <= self.end_ns
    }
}

/// A call no traced call on its goroutine was found to contain, with its callees.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree<T> {
    pub goroutine: Goroutine,
    pub root: Node<T>,
    /// Let out before its caller (if any) was reported: the buffer was full.
    pub cut: bool,
}

impl<T> Tree<T> {
    /// Every call, each before its callees and callees in order: `(call, depth, parent id)`.
    pub fn walk(&self, mut visit: impl FnMut(&Node<T>, usize, Option<u64>)) {
        fn go<T>(
            node: &Node<T>,
            depth: usize,
            parent: Option<u64>,
            visit: &mut impl FnMut(&Node<T>, usize, Option<u64>),
        ) {
            visit(node, depth, parent);
            for child in &node.children {
                go(child, depth + 1, Some(node.id), visit);
            }
        }
        go(&self.root, 0, None, &mut visit);
    }

    pub fn calls(&self) -> usize {
        self.root.calls()
    }
}

/// Nests calls as they are reported; bounded.
#[derive(Debug)]
pub struct Nesting<T> {
    /// Per goroutine, its calls no reported call contains yet, in time order.
    pending: HashMap<Goroutine, Vec<Node<T>>>,
    buffered: usize,
    limit: usize,
    next_id: u64,
    ready: Vec<Tree<T>>,
    cut_trees: u64,
    cut_calls: u64,
}

impl<T> Nesting<T> {
    /// Holds at most `limit` calls (at least one) before letting the oldest trees out.
    pub fn new(limit: usize) -> Self {
        Nesting {
            pending: HashMap::new(),
            buffered: 0,
            limit: limit.max(1),
            next_id: 0,
            ready: Vec::new(),
            cut_trees: 0,
            cut_calls: 0,
        }
    }

    /// A call that has ended: `end_ns` is its return, `None` for a call that did not return
    /// (it ended when it was reported, after every call it contains). Returns its id.
    pub fn push(
        &mut self,
        goroutine: Goroutine,
        entry_ns: u64,
        end_ns: Option<u64>,
        item: T,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let forest = self.pending.entry(goroutine).or_default();
        let returned = end_ns.is_some();
        let end_ns = end_ns.unwrap_or_else(|| {
            // Whatever started after it on its goroutine and was reported before it ran
            // inside it: one stack runs one call at a time.
            forest
                .iter()
                .filter(|n| n.entry_ns >= entry_ns)
                .map(|n| n.end_ns)
                .max()
                .unwrap_or(entry_ns)
                .max(entry_ns)
        });
        let node = Node {
            id,
            entry_ns,
            end_ns,
            returned,
            item,
            children: Vec::new(),
        };
        insert(forest, node);
        self.buffered += 1;
        if self.buffered > self.limit {
            self.cut_oldest();
        }
        id
    }

    /// Lets out the trees no caller can still come for: on each goroutine, those that began
    /// before `before_ns` and before the goroutine's outermost call in flight at that moment
    /// (`in_flight_since(pid, goid)`), if any. Every call that ended before `before_ns` must
    /// have been pushed. System stacks wait for the end.
    pub fn release_settled(
        &mut self,
        before_ns: u64,
        in_flight_since: impl Fn(u32, u64) -> Option<u64>,
    ) {
        let mut settled = Vec::new();
        for (&goroutine, forest) in self.pending.iter_mut() {
            if goroutine.goid == 0 {
                continue;
            }
            let limit = in_flight_since(goroutine.pid, goroutine.goid)
                .map_or(before_ns, |since| since.min(before_ns));
            let n = forest.partition_point(|root| root.entry_ns < limit);
            for root in forest.drain(..n) {
                self.buffered -= root.calls();
                settled.push(Tree {
                    goroutine,
                    root,
                    cut: false,
                });
            }
        }
        self.pending.retain(|_, forest| !forest.is_empty());
        settled.sort_by_key(|t| (t.root.entry_ns, t.goroutine));
        self.ready.extend(settled);
    }

    /// Trees let out before the end (settled, or cut because the buffer was full).
    pub fn take_ready(&mut self) -> Vec<Tree<T>> {
        std::mem::take(&mut self.ready)
    }

    /// Every call still held, as trees ordered by when they began: the session is over, no
    /// caller will come.
    pub fn finish(&mut self) -> Vec<Tree<T>> {
        let mut trees = self.take_ready();
        let mut rest: Vec<Tree<T>> = self
            .pending
            .drain()
            .flat_map(|(goroutine, forest)| {
                forest.into_iter().map(move |root| Tree {
                    goroutine,
                    root,
                    cut: false,
                })
            })
            .collect();
        rest.sort_by_key(|t| (t.root.entry_ns, t.goroutine));
        trees.extend(rest);
        self.buffered = 0;
        trees
    }

    /// Calls held, waiting for a caller.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Trees, and the calls in them, let out before their caller could be reported.
    pub fn cut(&self) -> (u64, u64) {
        (self.cut_trees, self.cut_calls)
    }

    /// Lets out the goroutine whose oldest waiting call began first.
    fn cut_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .filter_map(|(g, forest)| forest.first().map(|n| (n.entry_ns, *g)))
            .min();
        let Some((_, goroutine)) = oldest else {
            return;
        };
        let Some(forest) = self.pending.remove(&goroutine) else {
            return;
        };
        for root in forest {
            let calls = root.calls();
            self.buffered -= calls;
            self.cut_trees += 1;
            self.cut_calls += calls as u64;
            self.ready.push(Tree {
                goroutine,
                root,
                cut: true,
            });
        }
    }
}

/// Puts `node` where it belongs in a time-ordered forest of disjoint calls: inside the call that
/// contains it, or in its place, adopting the calls it contains. Calls usually come children
/// first, but calls drained in flight when tracing stops come in any order.
fn insert<T>(forest: &mut Vec<Node<T>>, mut node: Node<T>) {
    if let Some(parent) = forest
        .iter_mut()
        .find(|n| n.contains(node.entry_ns, node.end_ns) && !node.contains(n.entry_ns, n.end_ns))
    {
        insert(&mut parent.children, node);
        return;
    }
    let first = forest.partition_point(|n| n.entry_ns < node.entry_ns);
    let last = first + forest[first..].partition_point(|n| node.contains(n.entry_ns, n.end_ns));
    node.children.extend(forest.drain(first..last));
    node.children.sort_by_key(|n| n.entry_ns);
    forest.insert(first, node);
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: Goroutine = Goroutine {
        pid: 10,
        goid: 1,
        thread: 0,
    };
    const G2: Goroutine = Goroutine {
        pid: 10,
        goid: 2,
        thread: 0,
    };

    /// `(name, depth, parent name)` in walk order.
    fn shape(
        trees: &[Tree<&'static str>],
    ) -> Vec<(u64, &'static str, usize, Option<&'static str>)> {
        let mut out = Vec::new();
        for t in trees {
            let mut names = HashMap::new();
            t.walk(|n, depth, parent| {
                names.insert(n.id, n.item);
                out.push((t.goroutine.goid, n.item, depth, parent.map(|p| names[&p])));
            });
        }
        out
    }

    #[test]
    fn children_reported_first_nest_under_their_parent_in_order() {
        let mut n = Nesting::new(100);
        // a(0..100) calls b(10..20) and c(30..60); c calls d(40..50). On g2: x(5..15).
        n.push(G1, 10, Some(20), "b");
        n.push(G2, 5, Some(15), "x");
        n.push(G1, 40, Some(50), "d");
        n.push(G1, 30, Some(60), "c");
        n.push(G1, 0, Some(100), "a");
        assert_eq!(n.buffered(), 5);
        let trees = n.finish();
        assert_eq!(
            shape(&trees),
            vec![
                (1, "a", 0, None),
                (1, "b", 1, Some("a")),
                (1, "c", 1, Some("a")),
                (1, "d", 2, Some("c")),
                (2, "x", 0, None),
            ]
        );
        assert_eq!(n.cut(), (0, 0));
    }

    #[test]
    fn a_call_that_did_not_return_contains_what_began_after_it() {
        let mut n = Nesting::new(100);
        // r(0..200) calls p(10..): p called q(20..30) then panicked; r recovered and returned.
        n.push(G1, 20, Some(30), "q");
        n.push(G1, 10, None, "p");
        n.push(G1, 0, Some(200), "r");
        let trees = n.finish();
        assert_eq!(
            shape(&trees),
            vec![
                (1, "r", 0, None),
                (1, "p", 1, Some("r")),
                (1, "q", 2, Some("p")),
            ]
        );
        let p = &trees[0].root.children[0];
        assert_eq!((p.entry_ns, p.end_ns), (10, 30));
    }

    #[test]
    fn calls_drained_in_flight_nest_whatever_their_order() {
        let mut n = Nesting::new(100);
        n.push(G1, 20, Some(30), "leaf");
        // Drained when tracing stopped, outer first.
        n.push(G1, 0, Some(1000), "outer");
        n.push(G1, 10, Some(1000), "inner");
        let trees = n.finish();
        assert_eq!(
            shape(&trees),
            vec![
                (1, "outer", 0, None),
                (1, "inner", 1, Some("outer")),
                (1, "leaf", 2, Some("inner")),
            ]
        );
    }

    #[test]
    fn siblings_stay_apart_and_system_stacks_nest_per_thread() {
        let mut n = Nesting::new(100);
        n.push(G1, 0, Some(10), "a");
        n.push(G1, 20, Some(30), "b");
        let s1 = Goroutine::of(10, 0, 77);
        let s2 = Goroutine::of(10, 0, 78);
        n.push(s1, 0, Some(100), "s1");
        n.push(s2, 5, Some(6), "s2");
        let trees = n.finish();
        assert_eq!(trees.len(), 4);
        assert!(trees.iter().all(|t| t.root.children.is_empty()));
        assert_eq!(Goroutine::of(10, 5, 77).thread, 0);
    }

    #[test]
    fn settled_trees_go_out_while_a_caller_in_flight_keeps_its_callees() {
        let mut n = Nesting::new(100);
        n.push(G1, 0, Some(10), "a");
        n.push(G1, 20, Some(30), "b");
        n.push(G2, 5, Some(8), "x");
        n.push(G2, 50, Some(60), "y");
        // At 40, g1 runs a call begun at 15 (b's caller, still in flight); g2 runs nothing.
        n.release_settled(40, |pid, goid| (pid == 10 && goid == 1).then_some(15));
        let ready = n.take_ready();
        let names: Vec<&str> = ready.iter().map(|t| t.root.item).collect();
        // y began after the moment looked at: its caller may not have been seen yet.
        assert_eq!(names, ["a", "x"]);
        assert!(ready.iter().all(|t| !t.cut));
        assert_eq!(n.buffered(), 2);
        n.push(G1, 15, Some(45), "caller");
        let rest = n.finish();
        assert_eq!(
            shape(&rest),
            vec![
                (1, "caller", 0, None),
                (1, "b", 1, Some("caller")),
                (2, "y", 0, None)
            ]
        );
    }

    #[test]
    fn a_full_buffer_lets_the_oldest_goroutine_out_and_counts_it() {
        let mut n = Nesting::new(3);
        n.push(G1, 0, Some(10), "a");
        n.push(G1, 20, Some(30), "b");
        n.push(G2, 5, Some(8), "x");
        assert!(n.take_ready().is_empty());
        n.push(G2, 9, Some(12), "y");
        let ready = n.take_ready();
        assert_eq!(ready.len(), 2, "{ready:?}");
        assert!(ready.iter().all(|t| t.cut && t.goroutine == G1));
        assert_eq!(n.cut(), (2, 2));
        assert_eq!(n.buffered(), 2);
        // Nothing is lost: the rest comes at the end.
        let rest = n.finish();
        assert_eq!(rest.iter().map(Tree::calls).sum::<usize>(), 2);
        assert!(rest.iter().all(|t| !t.cut));
    }
}
