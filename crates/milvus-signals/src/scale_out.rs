//! Scale-out phases of new query nodes, timed from what the scrape engine already reads.
//!
//! A query node that appears among the scrape targets after the scaler started goes through
//! five phases, each timed in seconds from the round its target was first listed:
//!
//! 1. `up`: its first successful scrape (the process serves `/metrics`);
//! 2. `registered`: its query-node series carry a `node_id` (it registered with the coordinator);
//! 3. `first_segment`: it holds a sealed segment (`milvus_querynode_segment_num`);
//! 4. `settled`: its sealed-segment count stayed the same for [`DEFAULT_SETTLE_ROUNDS`] rounds
//!    in a row while a query coordinator was scraped and no segment or channel moved between nodes
//!    (the inputs of `query_balancing`); timed at the first round of that run;
//! 5. `serving`: it received a search (`milvus_querynode_sq_req_count`).
//!
//! Pure: rounds go in with their timestamps (the clock is the caller's), phase events come out.
//! Memory is one small entry per target currently listed: a target that leaves the list is
//! forgotten. A target listed in the first round was there before the scaler, so its phases are
//! unknown and never reported (not a made-up zero); if it later restarts under a new `node_id`,
//! that new node is reported. A target is reported only once its query-node series carry a
//! `node_id` (proxies and coordinators never are); its `up` is then reported with the time it had.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::SystemTime;

use crate::milvus::TargetSample;

/// Rounds in a row a new node's sealed-segment count must hold, with nothing moving, to count as
/// settled (at a 1 s scrape interval: 3 s without change).
pub const DEFAULT_SETTLE_ROUNDS: u32 = 3;

/// Targets kept at most while the listing is incomplete (a DNS name or target file failing): those
/// listed least recently go first. A complete listing keeps exactly the listed targets.
pub const DEFAULT_MAX_TARGETS: usize = 10_000;

/// One phase of a new query node's scale-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// First successful scrape: the process is up.
    Up,
    /// Its series carry a `node_id`: registered with the query coordinator.
    Registered,
    /// It holds its first sealed segment.
    FirstSegment,
    /// Its segment count is stable and no data moves between query nodes.
    Settled,
    /// It received its first search.
    Serving,
}

impl Phase {
    /// Every phase, in the order a node usually completes them.
    pub const ALL: [Phase; 5] = [
        Phase::Up,
        Phase::Registered,
        Phase::FirstSegment,
        Phase::Settled,
        Phase::Serving,
    ];

    /// The value of the `phase` label.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Up => "up",
            Phase::Registered => "registered",
            Phase::FirstSegment => "first_segment",
            Phase::Settled => "settled",
            Phase::Serving => "serving",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new query node completed a phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseEvent {
    /// The scrape target (URL) of the node.
    pub target: String,
    /// Its `node_id`.
    pub node_id: String,
    /// The phase completed.
    pub phase: Phase,
    /// Seconds from the round its target was first listed to the round the phase completed.
    pub seconds: f64,
}

/// One incarnation of a process at a target address.
#[derive(Debug, Clone)]
struct Node {
    /// Listed in the scaler's first round (or a restart of such a node not yet identified):
    /// its phases are unknown.
    baseline: bool,
    /// When its target was first listed (for a restart: the first failed scrape before it).
    listed_at: SystemTime,
    /// Its `node_id` once registered.
    node_id: Option<String>,
    /// When each phase completed.
    reached: BTreeMap<Phase, SystemTime>,
    /// Phases completed but not reported yet (`up` waits for the `node_id`).
    unreported: BTreeSet<Phase>,
    /// The run of rounds with an unchanged sealed-segment count and nothing moving: its first
    /// round, the count, and how many rounds it has lasted.
    stable: Option<(SystemTime, f64, u32)>,
}

impl Node {
    /// Whether its phases are reported: it appeared after the scaler started and is a query
    /// node (its query-node series carry a `node_id`).
    fn reported(&self) -> bool {
        !self.baseline && self.node_id.is_some()
    }

    fn new(listed_at: SystemTime, baseline: bool) -> Self {
        Self {
            baseline,
            listed_at,
            node_id: None,
            reached: BTreeMap::new(),
            unreported: BTreeSet::new(),
            stable: None,
        }
    }
}

/// What the tracker keeps about one listed target.
#[derive(Debug, Clone)]
struct TargetState {
    node: Node,
    /// The first failed scrape since the node last showed its `node_id`: a restart's new node
    /// is timed from there.
    down_since: Option<SystemTime>,
    /// The first successful scrape after `down_since`: a restart's new node was up from there.
    back_since: Option<SystemTime>,
    /// The round it was last listed in (a round number: the wall clock may step).
    last_listed: u64,
}

/// The per-phase counts of new query nodes currently listed.
pub type PhaseCounts = BTreeMap<Phase, usize>;

/// Times the scale-out phases of new query nodes from successive scrape rounds.
#[derive(Debug, Clone)]
pub struct ScaleOutTracker {
    settle_rounds: u32,
    max_targets: usize,
    started: bool,
    round: u64,
    targets: HashMap<String, TargetState>,
}

impl Default for ScaleOutTracker {
    fn default() -> Self {
        Self::new(DEFAULT_SETTLE_ROUNDS)
    }
}

impl ScaleOutTracker {
    /// A tracker calling a node settled after `settle_rounds` stable rounds (at least 1).
    pub fn new(settle_rounds: u32) -> Self {
        Self {
            settle_rounds: settle_rounds.max(1),
            max_targets: DEFAULT_MAX_TARGETS,
            started: false,
            round: 0,
            targets: HashMap::new(),
        }
    }

    /// The same tracker keeping at most `max` targets while the listing is incomplete (default
    /// [`DEFAULT_MAX_TARGETS`]); the targets listed in the newest round are always kept.
    pub fn with_max_targets(mut self, max: usize) -> Self {
        self.max_targets = max;
        self
    }

    /// Records a round taken at `at`: every target listed (scraped or not), whether that list is
    /// `complete` (no DNS name or target file failed), and the samples of those that answered.
    /// Returns the phases completed (or confirmed, for `settled`) in this round, per target in
    /// phase order.
    ///
    /// An incomplete list forgets no target (beyond the `max_targets` bound, least recently
    /// listed first), and until the first complete one every target counts as present before the
    /// scaler started: a DNS failure must not turn the pods behind it into new nodes.
    pub fn observe(
        &mut self,
        at: SystemTime,
        listed: &BTreeSet<String>,
        complete: bool,
        samples: &BTreeMap<String, TargetSample>,
    ) -> Vec<PhaseEvent> {
        let baseline = !self.started;
        self.round += 1;
        if complete {
            self.started = true;
            self.targets.retain(|name, _| listed.contains(name));
        }
        // Whether data moves between query nodes this round; `None` without a query coordinator
        // (blind: no node can be called settled).
        let moving = samples
            .values()
            .any(|s| s.has_querycoord)
            .then(|| samples.values().any(|s| s.balance_tasks > 0.0));
        let mut events = Vec::new();
        for name in listed {
            let state = self
                .targets
                .entry(name.clone())
                .or_insert_with(|| TargetState {
                    node: Node::new(at, baseline),
                    down_since: None,
                    back_since: None,
                    last_listed: 0,
                });
            state.last_listed = self.round;
            let Some(sample) = samples.get(name) else {
                state.down_since.get_or_insert(at);
                state.back_since = None;
                state.node.stable = None;
                continue;
            };
            if state.down_since.is_some() {
                state.back_since.get_or_insert(at);
            }
            if restarted(&state.node, sample) {
                // A new process at the same address: a new node, listed from its first failed
                // scrape and up from the first answer after it, if seen; else from this round.
                let mut node = Node::new(state.down_since.unwrap_or(at), false);
                node.reached
                    .insert(Phase::Up, state.back_since.unwrap_or(at));
                node.unreported.insert(Phase::Up);
                state.node = node;
            }
            if !sample.querynode_ids.is_empty() {
                // Its node is known again: a later restart is timed from a later failure.
                state.down_since = None;
                state.back_since = None;
            }
            observe_node(&mut state.node, at, sample, moving, self.settle_rounds);
            events.extend(take_events(name, &mut state.node));
        }
        if self.targets.len() > self.max_targets {
            // Only while incomplete (a complete list kept the listed ones only): bounded memory
            // when a failing DNS name hides pods for a long time while other targets churn.
            let mut unlisted: Vec<(u64, String)> = self
                .targets
                .iter()
                .filter(|(_, t)| t.last_listed != self.round)
                .map(|(name, t)| (t.last_listed, name.clone()))
                .collect();
            unlisted.sort();
            let excess = self.targets.len() - self.max_targets;
            for (_, name) in unlisted.into_iter().take(excess) {
                self.targets.remove(&name);
            }
        }
        events
    }

    /// New query nodes currently listed that completed each phase (a node counts in every phase
    /// it completed). Nodes present before the scaler started are not counted.
    pub fn counts(&self) -> PhaseCounts {
        let mut out: PhaseCounts = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for state in self.targets.values() {
            let node = &state.node;
            if !node.reported() {
                continue;
            }
            for phase in node.reached.keys() {
                *out.entry(*phase).or_default() += 1;
            }
        }
        out
    }

    /// Targets currently kept (for tests of the memory bound).
    pub fn tracked(&self) -> usize {
        self.targets.len()
    }
}

/// Whether `sample` comes from another process than `node`: it registered under another
/// `node_id`.
fn restarted(node: &Node, sample: &TargetSample) -> bool {
    node.node_id
        .as_ref()
        .is_some_and(|id| !sample.querynode_ids.is_empty() && !sample.querynode_ids.contains(id))
}

fn observe_node(
    node: &mut Node,
    at: SystemTime,
    sample: &TargetSample,
    moving: Option<bool>,
    settle_rounds: u32,
) {
    // A phase completes once: the first time is kept.
    let reach = |node: &mut Node, phase: Phase, when: SystemTime| {
        if let std::collections::btree_map::Entry::Vacant(e) = node.reached.entry(phase) {
            e.insert(when);
            node.unreported.insert(phase);
        }
    };
    reach(node, Phase::Up, at);
    if node.node_id.is_none()
        && let Some(id) = sample.querynode_ids.iter().next()
    {
        node.node_id = Some(id.clone());
        reach(node, Phase::Registered, at);
    }
    if node.node_id.is_none() {
        return;
    }
    let sealed = sample.sealed_segments.unwrap_or(0.0);
    if sealed > 0.0 {
        reach(node, Phase::FirstSegment, at);
    }
    if sample.querynode_searches.is_some_and(|n| n > 0.0) {
        reach(node, Phase::Serving, at);
    }
    if !node.reached.contains_key(&Phase::FirstSegment) {
        return;
    }
    node.stable = match (moving, node.stable) {
        (Some(false), Some((since, count, rounds))) if count == sealed => {
            Some((since, count, rounds + 1))
        }
        (Some(false), _) => Some((at, sealed, 1)),
        // Data moving, or no coordinator to tell: not settled.
        _ => None,
    };
    if let Some((since, _, rounds)) = node.stable
        && rounds >= settle_rounds
    {
        reach(node, Phase::Settled, since);
    }
}

fn take_events(target: &str, node: &mut Node) -> Vec<PhaseEvent> {
    let (false, Some(node_id)) = (node.baseline, node.node_id.clone()) else {
        return Vec::new();
    };
    let listed_at = node.listed_at;
    std::mem::take(&mut node.unreported)
        .into_iter()
        .filter_map(|phase| {
            let when = *node.reached.get(&phase)?;
            Some(PhaseEvent {
                target: target.to_string(),
                node_id: node_id.clone(),
                phase,
                // A wall clock that stepped back between the two rounds counts as no time.
                seconds: when
                    .duration_since(listed_at)
                    .unwrap_or_default()
                    .as_secs_f64(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::Limits;
    use crate::milvus::parse_target;
    use crate::test_fixtures::fixture;
    use std::time::Duration;

    fn t(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    /// A query node's body: registered as `id` (or not), `sealed` sealed segments (series absent
    /// at 0, as Milvus creates them lazily) and `searches` received (absent at 0).
    fn qn(id: Option<&str>, sealed: u32, searches: u32) -> TargetSample {
        let Some(id) = id else {
            // Up but not registered: only process metrics, no query-node family.
            return parse_target("go_goroutines 12\n", &Limits::default()).unwrap();
        };
        let mut body = format!("milvus_querynode_read_task_ready_len{{node_id=\"{id}\"}} 0\n");
        if sealed > 0 {
            body += &format!(
                "milvus_querynode_segment_num{{collection_id=\"1\",node_id=\"{id}\",segment_state=\"Sealed\"}} {sealed}\n\
                 milvus_querynode_segment_num{{collection_id=\"1\",node_id=\"{id}\",segment_state=\"Growing\"}} 1\n"
            );
        }
        if searches > 0 {
            body += &format!(
                "milvus_querynode_sq_req_count{{node_id=\"{id}\",query_type=\"search\",scope=\"FromLeader\",status=\"total\"}} {searches}\n"
            );
        }
        parse_target(&body, &Limits::default()).unwrap()
    }

    fn querycoord(moving: u32) -> TargetSample {
        let body = format!(
            "milvus_querycoord_querynode_num 2\n\
             milvus_querycoord_task_num{{querycoord_task_type=\"segment_move\"}} {moving}\n"
        );
        parse_target(&body, &Limits::default()).unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// One round: the coordinator (`moving` tasks) plus the given answering targets; `listed`
    /// adds targets that are listed but fail.
    fn round(
        tracker: &mut ScaleOutTracker,
        at: f64,
        moving: u32,
        answering: Vec<(&str, TargetSample)>,
        failing: &[&str],
    ) -> Vec<(String, Phase, f64)> {
        let mut samples: BTreeMap<String, TargetSample> = answering
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        samples.insert("qc".into(), querycoord(moving));
        let mut listed: BTreeSet<String> = samples.keys().cloned().collect();
        listed.extend(set(failing));
        tracker
            .observe(t(at), &listed, true, &samples)
            .into_iter()
            .map(|e| (e.target, e.phase, e.seconds))
            .collect()
    }

    fn ev(target: &str, phase: Phase, seconds: f64) -> (String, Phase, f64) {
        (target.to_string(), phase, seconds)
    }

    #[test]
    fn a_new_node_reports_each_phase_once_timed_from_when_it_was_listed() {
        let mut tr = ScaleOutTracker::new(3);
        // Round 0: the existing node; its phases are unknown, never reported.
        assert_eq!(
            round(&mut tr, 0.0, 0, vec![("old", qn(Some("1"), 6, 50))], &[]),
            vec![]
        );
        // The new target is listed but its process does not answer yet.
        assert_eq!(
            round(
                &mut tr,
                1.0,
                0,
                vec![("old", qn(Some("1"), 6, 60))],
                &["new"]
            ),
            vec![]
        );
        // Up, not registered: nothing reported yet (not known to be a query node).
        assert_eq!(
            round(
                &mut tr,
                3.0,
                0,
                vec![("old", qn(Some("1"), 6, 70)), ("new", qn(None, 0, 0))],
                &[]
            ),
            vec![]
        );
        // Registered: up and registered, timed from t=1.
        assert_eq!(
            round(
                &mut tr,
                4.0,
                0,
                vec![("new", qn(Some("2"), 0, 0))],
                &["old"]
            ),
            vec![ev("new", Phase::Up, 2.0), ev("new", Phase::Registered, 3.0)]
        );
        // Segments move onto it: first segment, not settled while moving.
        assert_eq!(
            round(&mut tr, 5.0, 2, vec![("new", qn(Some("2"), 1, 0))], &[]),
            vec![ev("new", Phase::FirstSegment, 4.0)]
        );
        assert_eq!(
            round(&mut tr, 6.0, 1, vec![("new", qn(Some("2"), 3, 0))], &[]),
            vec![]
        );
        // Nothing moves from t=7; its count holds 3 rounds: settled at 7, reported at 9.
        assert_eq!(
            round(&mut tr, 7.0, 0, vec![("new", qn(Some("2"), 3, 0))], &[]),
            vec![]
        );
        assert_eq!(
            round(&mut tr, 8.0, 0, vec![("new", qn(Some("2"), 3, 0))], &[]),
            vec![]
        );
        assert_eq!(
            round(&mut tr, 9.0, 0, vec![("new", qn(Some("2"), 3, 4))], &[]),
            vec![
                ev("new", Phase::Settled, 6.0),
                ev("new", Phase::Serving, 8.0)
            ]
        );
        // Nothing more to report, ever.
        assert_eq!(
            round(&mut tr, 10.0, 0, vec![("new", qn(Some("2"), 3, 9))], &[]),
            vec![]
        );
        let counts = tr.counts();
        assert!(Phase::ALL.iter().all(|p| counts[p] == 1), "{counts:?}");
    }

    #[test]
    fn settling_needs_a_coordinator_and_an_unbroken_stable_run() {
        let mut tr = ScaleOutTracker::new(2);
        round(&mut tr, 0.0, 0, vec![], &[]);
        round(&mut tr, 1.0, 0, vec![("n", qn(Some("5"), 2, 0))], &[]);
        // Without the coordinator (blind) the run is broken, not extended.
        let samples = BTreeMap::from([("n".to_string(), qn(Some("5"), 2, 0))]);
        assert_eq!(
            tr.observe(t(2.0), &set(&["n", "qc"]), true, &samples),
            vec![]
        );
        // A count change restarts the run; a failed scrape breaks it.
        assert_eq!(
            round(&mut tr, 3.0, 0, vec![("n", qn(Some("5"), 4, 0))], &[]),
            vec![]
        );
        assert_eq!(round(&mut tr, 4.0, 0, vec![], &["n"]), vec![]);
        assert_eq!(
            round(&mut tr, 5.0, 0, vec![("n", qn(Some("5"), 4, 0))], &[]),
            vec![]
        );
        assert_eq!(
            round(&mut tr, 6.0, 0, vec![("n", qn(Some("5"), 4, 0))], &[]),
            // Stable from t=5; listed at t=1.
            vec![ev("n", Phase::Settled, 4.0)]
        );
        let counts = tr.counts();
        assert_eq!((counts[&Phase::Settled], counts[&Phase::Serving]), (1, 0));
    }

    #[test]
    fn a_restart_under_a_new_node_id_is_a_new_node_even_of_a_baseline_target() {
        let mut tr = ScaleOutTracker::new(1);
        round(&mut tr, 0.0, 0, vec![("a", qn(Some("1"), 4, 10))], &[]);
        // Scrapes fail from t=10 (the process stopped), it answers again at 12, registers at 13.
        assert_eq!(round(&mut tr, 10.0, 0, vec![], &["a"]), vec![]);
        assert_eq!(round(&mut tr, 11.0, 0, vec![], &["a"]), vec![]);
        // Answering without a node id: could be the old process recovering; nothing reported.
        assert_eq!(
            round(&mut tr, 12.0, 0, vec![("a", qn(None, 0, 0))], &[]),
            vec![]
        );
        assert_eq!(tr.counts()[&Phase::Up], 0);
        let got = round(&mut tr, 13.0, 0, vec![("a", qn(Some("9"), 4, 0))], &[]);
        // A new node id: a new node, listed from the first failure (10), up from 12.
        assert_eq!(
            got,
            vec![
                ev("a", Phase::Up, 2.0),
                ev("a", Phase::Registered, 3.0),
                ev("a", Phase::FirstSegment, 3.0),
                ev("a", Phase::Settled, 3.0)
            ]
        );
        // The same node id again is the same node: nothing new.
        assert_eq!(
            round(&mut tr, 14.0, 0, vec![("a", qn(Some("9"), 4, 0))], &[]),
            vec![]
        );
    }

    #[test]
    fn a_restart_seen_as_failed_scrapes_is_timed_from_the_first_failure() {
        let mut tr = ScaleOutTracker::new(1);
        round(&mut tr, 0.0, 0, vec![], &[]);
        round(&mut tr, 1.0, 0, vec![("a", qn(Some("2"), 0, 0))], &[]);
        round(&mut tr, 5.0, 0, vec![], &["a"]);
        round(&mut tr, 6.0, 0, vec![], &["a"]);
        assert_eq!(
            round(&mut tr, 8.0, 0, vec![("a", qn(Some("3"), 0, 0))], &[]),
            vec![ev("a", Phase::Up, 3.0), ev("a", Phase::Registered, 3.0)]
        );
        assert_eq!(tr.counts()[&Phase::Registered], 1);
    }

    #[test]
    fn only_query_nodes_are_reported_and_a_baseline_node_never_is() {
        let mut tr = ScaleOutTracker::new(1);
        let proxy = parse_target(
            &fixture("milvus-2.3.5-metrics-idle.prom"),
            &Limits::default(),
        )
        .unwrap();
        // The idle standalone capture is a query node too (node 1): in the first round, baseline.
        assert_eq!(
            round(&mut tr, 0.0, 0, vec![("standalone", proxy)], &[]),
            vec![]
        );
        // A new process that exports no query-node series (a proxy, say) is never reported.
        let other = parse_target(
            "milvus_proxy_req_count{node_id=\"4\",function_name=\"Search\",status=\"total\"} 1\n",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            round(&mut tr, 1.0, 0, vec![("p", other)], &["standalone"]),
            vec![]
        );
        assert!(tr.counts().values().all(|n| *n == 0), "{:?}", tr.counts());
    }

    #[test]
    fn the_real_2_3_5_captures_go_from_registered_to_serving() {
        let limits = Limits::default();
        let idle = parse_target(&fixture("milvus-2.3.5-metrics-idle.prom"), &limits).unwrap();
        let loaded =
            parse_target(&fixture("milvus-2.3.5-metrics-under-load.prom"), &limits).unwrap();
        let mut tr = ScaleOutTracker::new(2);
        assert_eq!(
            tr.observe(t(0.0), &set(&[]), true, &BTreeMap::new()),
            vec![]
        );
        let one = |s: &TargetSample| BTreeMap::from([("qn".to_string(), s.clone())]);
        // Both captures are of a standalone process, so they include the query coordinator:
        // idle registered (node 1) with no segment; the loaded one is node 3 (another process).
        let first = tr.observe(t(2.0), &set(&["qn"]), true, &one(&idle));
        assert_eq!(
            first
                .iter()
                .map(|e| (e.phase, e.node_id.as_str(), e.seconds))
                .collect::<Vec<_>>(),
            vec![(Phase::Up, "1", 0.0), (Phase::Registered, "1", 0.0)]
        );
        // Node 3 at the same address: a restart, a new node; 6 sealed segments, 1942 searches.
        let second = tr.observe(t(4.0), &set(&["qn"]), true, &one(&loaded));
        assert_eq!(
            second
                .iter()
                .map(|e| (e.phase, e.node_id.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (Phase::Up, "3"),
                (Phase::Registered, "3"),
                (Phase::FirstSegment, "3"),
                (Phase::Serving, "3")
            ]
        );
        let third = tr.observe(t(5.0), &set(&["qn"]), true, &one(&loaded));
        assert_eq!(
            third
                .iter()
                .map(|e| (e.phase, e.seconds))
                .collect::<Vec<_>>(),
            vec![(Phase::Settled, 0.0)]
        );
    }

    #[test]
    fn an_incomplete_list_neither_forgets_nor_invents_new_nodes() {
        let mut tr = ScaleOutTracker::new(1);
        let node = || BTreeMap::from([("a".to_string(), qn(Some("1"), 2, 5))]);
        // The first rounds' DNS lookup failed: what answers is from before the scaler.
        assert_eq!(tr.observe(t(0.0), &set(&["a"]), false, &node()), vec![]);
        assert_eq!(
            tr.observe(t(1.0), &set(&[]), false, &BTreeMap::new()),
            vec![]
        );
        assert_eq!(tr.tracked(), 1, "an incomplete list forgets nothing");
        // The first complete list: "a" is still the old node, not a new one.
        assert_eq!(tr.observe(t(2.0), &set(&["a"]), true, &node()), vec![]);
        // A target that appears after a complete list is new.
        let mut two = node();
        two.insert("b".into(), qn(Some("2"), 0, 0));
        let got = tr.observe(t(3.0), &set(&["a", "b"]), true, &two);
        assert_eq!(
            got.iter()
                .map(|e| (e.target.as_str(), e.phase))
                .collect::<Vec<_>>(),
            vec![("b", Phase::Up), ("b", Phase::Registered)]
        );
        // A DNS failure hides "b": it is kept, and not reported again when it is back.
        assert_eq!(tr.observe(t(4.0), &set(&["a"]), false, &node()), vec![]);
        assert_eq!(tr.observe(t(5.0), &set(&["a", "b"]), true, &two), vec![]);
        assert_eq!(tr.counts()[&Phase::Registered], 1);
    }

    #[test]
    fn an_always_incomplete_list_still_keeps_memory_bounded() {
        let mut tr = ScaleOutTracker::new(1).with_max_targets(5);
        assert_eq!(
            tr.observe(t(0.0), &set(&[]), true, &BTreeMap::new()),
            vec![]
        );
        let node = |i: u32| {
            let name = format!("qn-{i}");
            let samples = BTreeMap::from([(name.clone(), qn(Some(&i.to_string()), 1, 0))]);
            (name, samples)
        };
        for i in 1..=200u32 {
            // A DNS name fails every round while the file's pods churn: one new target a round.
            let (name, samples) = node(i);
            let events = tr.observe(t(f64::from(i)), &set(&[&name]), false, &samples);
            assert_eq!(events.len(), 3, "a new node: up, registered, first segment");
            assert!(
                tr.tracked() <= 5,
                "round {i}: {} targets kept",
                tr.tracked()
            );
        }
        // The most recently listed are kept: qn-200 is still the same node, nothing new.
        let (name, samples) = node(200);
        assert_eq!(
            tr.observe(t(300.0), &set(&[&name]), false, &samples),
            vec![]
        );
        // The least recently listed went first: qn-1 is forgotten, so it is new again.
        let (name, samples) = node(1);
        assert_eq!(
            tr.observe(t(301.0), &set(&[&name]), false, &samples).len(),
            3
        );
        assert!(tr.tracked() <= 5);
    }

    #[test]
    fn memory_is_bounded_by_the_listed_targets() {
        let mut tr = ScaleOutTracker::new(3);
        round(&mut tr, 0.0, 0, vec![], &[]);
        for i in 0..500u32 {
            // Each round a new node appears and the one before leaves.
            let name = format!("qn-{i}");
            let id = i.to_string();
            round(
                &mut tr,
                f64::from(i + 1),
                0,
                vec![(&name, qn(Some(&id), 1, 0))],
                &[],
            );
            assert!(
                tr.tracked() <= 2,
                "round {i}: {} targets kept",
                tr.tracked()
            );
        }
        // Only the last node (and the coordinator) remain; the gauge counts only it.
        assert_eq!(tr.tracked(), 2);
        assert_eq!(tr.counts()[&Phase::FirstSegment], 1);
    }
}
