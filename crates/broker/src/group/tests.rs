//! Transitions of the group state machine, driven by an explicit clock.

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

use super::classic::{Group, GroupState};
use super::coordinator::{Coordinator, CoordinatorConfig, Effects};
use super::member::{JoinRequest, JoinResult, Protocol, Reply, SyncResult};
use super::record::CommittedOffset;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

struct H {
    g: Group,
    now: i64,
    next: u64,
    out: Vec<Reply>,
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: (*n).into(),
            metadata: Bytes::from(format!("meta-{n}")),
        })
        .collect()
}

impl H {
    fn new(delay: i64) -> H {
        H {
            g: Group::new("g", 0, delay),
            now: 0,
            next: 0,
            out: Vec::new(),
        }
    }

    fn req(&mut self, id: &str, instance: Option<&str>, protos: &[&str]) -> JoinRequest {
        self.next += 1;
        JoinRequest {
            member_id: id.into(),
            instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols(protos),
            require_known_member_id: true,
            fresh_member_id: format!("fresh-{}", self.next),
            waiter: self.next,
        }
    }

    fn join(&mut self, id: &str, instance: Option<&str>) -> u64 {
        let r = self.req(id, instance, &["range"]);
        let w = r.waiter;
        self.g.join(r, self.now, &mut self.out);
        w
    }

    fn join_reply(&mut self, w: u64) -> Option<JoinResult> {
        let i = self
            .out
            .iter()
            .position(|r| matches!(r, Reply::Join(x, _) if *x == w))?;
        match self.out.remove(i) {
            Reply::Join(_, r) => Some(r),
            Reply::Sync(..) => None,
        }
    }

    fn sync_reply(&mut self, w: u64) -> Option<SyncResult> {
        let i = self
            .out
            .iter()
            .position(|r| matches!(r, Reply::Sync(x, _) if *x == w))?;
        match self.out.remove(i) {
            Reply::Sync(_, r) => Some(r),
            Reply::Join(..) => None,
        }
    }

    fn sync(&mut self, id: &str, generation: i32, assignments: &[(&str, &str)]) -> u64 {
        self.next += 1;
        let a = assignments
            .iter()
            .map(|(m, a)| ((*m).to_owned(), Bytes::from(a.to_string())))
            .collect();
        self.g.sync(
            id,
            None,
            generation,
            None,
            None,
            a,
            self.next,
            self.now,
            &mut self.out,
        );
        self.next
    }

    fn hb(&mut self, id: &str, generation: i32) -> Option<E> {
        self.g
            .heartbeat(id, None, generation, self.now, &mut self.out)
    }

    fn at(&mut self, now: i64) {
        self.now = now;
        self.g.advance(now, &mut self.out);
    }

    /// A KIP-394 join: MEMBER_ID_REQUIRED, then the join proper.
    fn join_new(&mut self) -> (String, u64) {
        let w = self.join("", None);
        let r = self.join_reply(w).unwrap();
        assert_eq!(r.error, Some(E::MemberIdRequired));
        assert_eq!(r.generation_id, -1);
        let id = r.member_id;
        (id.clone(), self.join(&id, None))
    }

    /// Two members, Stable at generation 1, a leader and a follower.
    fn stable_pair(&mut self) -> (String, String) {
        let (a, wa) = self.join_new();
        let ra = self.join_reply(wa).unwrap();
        assert_eq!(ra.generation_id, 1);
        let sa = self.sync(&a, 1, &[(&a, "A1")]);
        assert!(self.sync_reply(sa).is_some());
        // The second member makes the leader rejoin (its heartbeat says so).
        let (b, wb) = self.join_new();
        assert_eq!(self.hb(&a, 1), Some(E::RebalanceInProgress));
        let wa = self.join(&a, None);
        let ra = self.join_reply(wa).unwrap();
        let rb = self.join_reply(wb).unwrap();
        assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
        assert_eq!(ra.leader, a);
        assert_eq!(ra.members.len(), 2, "the leader sees every member");
        assert!(rb.members.is_empty(), "followers see none");
        let sb = self.sync(&b, 2, &[]);
        assert!(
            self.sync_reply(sb).is_none(),
            "followers wait for the leader"
        );
        let sa = self.sync(&a, 2, &[(&a, "A2"), (&b, "B2"), ("ghost", "X")]);
        assert_eq!(self.sync_reply(sb).unwrap().assignment, "B2");
        assert_eq!(self.sync_reply(sa).unwrap().assignment, "A2");
        assert_eq!(self.g.state, GroupState::Stable);
        (a, b)
    }
}

#[test]
fn kip394_join_then_first_generation_with_no_initial_delay() {
    let mut h = H::new(0);
    let (a, w) = h.join_new();
    assert_eq!(a, "fresh-1");
    let r = h.join_reply(w).unwrap();
    assert_eq!(r.error, None);
    assert_eq!(
        (
            r.generation_id,
            r.leader.as_str(),
            r.protocol_name.as_deref()
        ),
        (1, a.as_str(), Some("range"))
    );
    assert_eq!(r.members[0].metadata, "meta-range");
    assert_eq!(h.g.state, GroupState::CompletingRebalance);
    let s = h.sync(&a, 1, &[(&a, "x")]);
    assert_eq!(h.sync_reply(s).unwrap().assignment, "x");
    assert_eq!(h.g.state, GroupState::Stable);
    assert!(std::mem::take(&mut h.g.dirty), "Stable is persisted");
}

#[test]
fn initial_delay_waits_and_extends_while_members_arrive() {
    let mut h = H::new(3000);
    let (_, wa) = h.join_new();
    h.at(1000);
    let (_, wb) = h.join_new();
    h.at(2999);
    assert!(h.join_reply(wa).is_none());
    h.at(3000);
    assert!(
        h.join_reply(wa).is_none(),
        "a new member extended the delay"
    );
    h.at(6000);
    assert_eq!(h.join_reply(wa).unwrap().members.len(), 2);
    assert_eq!(h.join_reply(wb).unwrap().generation_id, 1);
}

#[test]
fn leader_assigns_followers_wait_and_errors_are_kafkas() {
    let mut h = H::new(0);
    let (a, b) = h.stable_pair();
    assert_eq!(h.hb(&a, 2), None);
    assert_eq!(h.hb(&b, 1), Some(E::IllegalGeneration));
    assert_eq!(h.hb("nobody", 2), Some(E::UnknownMemberId));
    let s = h.sync("nobody", 2, &[]);
    assert_eq!(h.sync_reply(s).unwrap().error, Some(E::UnknownMemberId));
    let s = h.sync(&b, 7, &[]);
    assert_eq!(h.sync_reply(s).unwrap().error, Some(E::IllegalGeneration));
    // A stable follower syncing again gets its assignment back.
    let s = h.sync(&b, 2, &[]);
    assert_eq!(h.sync_reply(s).unwrap().assignment, "B2");
    // A follower rejoining with unchanged metadata gets the current generation.
    let w = h.join(&b, None);
    let r = h.join_reply(w).unwrap();
    assert_eq!((r.generation_id, r.leader.as_str()), (2, a.as_str()));
    assert_eq!(h.g.state, GroupState::Stable);
    // Changed metadata forces a rebalance; SyncGroup then says so.
    let mut r = h.req(&b, None, &["roundrobin", "range"]);
    r.waiter = 999;
    h.g.join(r, h.now, &mut h.out);
    assert_eq!(h.g.state, GroupState::PreparingRebalance);
    let s = h.sync(&a, 2, &[]);
    assert_eq!(h.sync_reply(s).unwrap().error, Some(E::RebalanceInProgress));
    let mut s = Vec::new();
    h.g.sync(
        &a,
        None,
        2,
        Some("consumer"),
        Some("other"),
        vec![],
        1000,
        h.now,
        &mut s,
    );
    assert!(matches!(&s[0], Reply::Sync(_, r) if r.error == Some(E::InconsistentGroupProtocol)));
}

#[test]
fn session_timeout_removes_a_silent_member_and_rebalances() {
    let mut h = H::new(0);
    let (a, b) = h.stable_pair();
    for t in (2000..10_000).step_by(2000) {
        h.at(t);
        assert_eq!(h.hb(&a, 2), None);
    }
    h.at(10_000);
    assert_eq!(h.g.state, GroupState::PreparingRebalance, "b expired");
    assert!(h.g.member(&b).is_none());
    assert_eq!(h.hb(&a, 2), Some(E::RebalanceInProgress));
    let w = h.join(&a, None);
    let r = h.join_reply(w).unwrap();
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
}

#[test]
fn rebalance_timeout_drops_members_that_do_not_rejoin() {
    let mut h = H::new(0);
    let (a, b) = h.stable_pair();
    let w = h.join(&a, None); // the leader rejoining starts a rebalance
    assert_eq!(h.g.state, GroupState::PreparingRebalance);
    for t in (5000..30_000).step_by(5000) {
        h.at(t);
        assert_eq!(
            h.hb(&b, 2),
            Some(E::RebalanceInProgress),
            "heartbeats keep b alive"
        );
    }
    assert!(h.join_reply(w).is_none());
    h.at(30_000);
    let r = h.join_reply(w).unwrap();
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
    assert_eq!(h.hb(&b, 2), Some(E::UnknownMemberId));
}

#[test]
fn sync_timeout_drops_members_that_never_sync() {
    let mut h = H::new(0);
    let (a, b) = h.stable_pair();
    let wa = h.join(&a, None);
    let wb = h.join(&b, None);
    assert_eq!(h.join_reply(wa).unwrap().generation_id, 3);
    assert!(h.join_reply(wb).is_some());
    let s = h.sync(&a, 3, &[(&a, "A3"), (&b, "B3")]);
    assert!(h.sync_reply(s).is_some());
    for t in [8000, 16_000, 24_000] {
        h.at(t);
        assert_eq!((h.hb(&a, 3), h.hb(&b, 3)), (None, None));
    }
    h.at(29_999);
    assert_eq!(h.g.state, GroupState::Stable);
    h.at(30_000);
    assert!(h.g.member(&b).is_none(), "b never synced");
    assert_eq!(h.g.state, GroupState::PreparingRebalance);
}

#[test]
fn leave_rebalances_and_the_last_leave_empties_the_group() {
    let mut h = H::new(0);
    let (a, b) = h.stable_pair();
    assert_eq!(h.g.leave(&b, None, h.now, &mut h.out), None);
    assert_eq!(
        h.g.leave(&b, None, h.now, &mut h.out),
        Some(E::UnknownMemberId)
    );
    assert_eq!(h.g.state, GroupState::PreparingRebalance);
    let w = h.join(&a, None);
    assert_eq!(h.join_reply(w).unwrap().generation_id, 3);
    h.g.dirty = false;
    assert_eq!(h.g.leave(&a, None, h.now, &mut h.out), None);
    assert_eq!((h.g.state, h.g.generation_id), (GroupState::Empty, 4));
    assert!(h.g.dirty, "Empty is persisted");
}

#[test]
fn pending_member_ids_expire_and_stop_blocking_the_join() {
    let mut h = H::new(0);
    let (a, b) = h.stable_pair();
    let w = h.join("", None); // gets an id but never comes back
    assert_eq!(h.join_reply(w).unwrap().error, Some(E::MemberIdRequired));
    let wa = h.join(&a, None);
    let wb = h.join(&b, None);
    assert!(h.join_reply(wa).is_none(), "waits for the pending member");
    h.at(i64::from(SESSION));
    assert_eq!(h.join_reply(wa).unwrap().generation_id, 3);
    assert!(h.join_reply(wb).is_some());
}

#[test]
fn static_member_restart_keeps_assignment_without_rebalance_and_fences_old_id() {
    let mut h = H::new(0);
    let w = h.join("", Some("i1"));
    let r = h.join_reply(w).unwrap();
    let old = r.member_id.clone();
    assert_eq!(r.error, None, "static members skip KIP-394");
    let s = h.sync(&old, 1, &[(&old, "P")]);
    assert!(h.sync_reply(s).is_some());
    // Restart within the session timeout: new id, same generation, no rebalance.
    h.at(5000);
    let w = h.join("", Some("i1"));
    let r = h.join_reply(w).unwrap();
    let new = r.member_id.clone();
    assert_ne!(new, old);
    assert_eq!((r.error, r.generation_id), (None, 1));
    assert_eq!(
        r.leader, old,
        "the previous leader id: the restarted member must not reassign"
    );
    assert_eq!(h.g.state, GroupState::Stable);
    let s = h.sync(&new, 1, &[]);
    assert_eq!(h.sync_reply(s).unwrap().assignment, "P");
    assert_eq!(
        h.g.heartbeat(&old, Some("i1"), 1, h.now, &mut h.out),
        Some(E::FencedInstanceId)
    );
    assert_eq!(h.g.heartbeat(&new, Some("i1"), 1, h.now, &mut h.out), None);
    let mut r = h.req(&old, Some("i1"), &["range"]);
    r.waiter = 77;
    h.g.join(r, h.now, &mut h.out);
    assert_eq!(h.join_reply(77).unwrap().error, Some(E::FencedInstanceId));
    assert_eq!(
        h.g.leave(&old, Some("i1"), h.now, &mut h.out),
        Some(E::FencedInstanceId)
    );
    // Removing by instance id alone (the admin path) works.
    assert_eq!(h.g.leave("", Some("i1"), h.now, &mut h.out), None);
    assert_eq!(h.g.state, GroupState::Empty);
}

#[test]
fn static_member_that_does_not_rejoin_is_kept_until_its_session_expires() {
    let mut h = H::new(0);
    let w = h.join("", Some("s"));
    let s_id = h.join_reply(w).unwrap().member_id;
    let s = h.sync(&s_id, 1, &[(&s_id, "S")]);
    assert!(h.sync_reply(s).is_some());
    let (d, wd) = h.join_new();
    for t in [8000, 16_000, 24_000] {
        h.at(t);
        assert_eq!(h.hb(&s_id, 1), Some(E::RebalanceInProgress));
    }
    h.at(i64::from(REBALANCE));
    let r = h.join_reply(wd).unwrap();
    assert_eq!(
        r.members.len(),
        2,
        "the static member stays in the generation"
    );
    assert_eq!(r.leader, d, "leadership moves to a member that rejoined");
    // The new generation restarts every member's session clock, as Kafka does.
    h.at(i64::from(REBALANCE + SESSION) - 1);
    assert!(h.g.member(&s_id).is_some());
    h.at(i64::from(REBALANCE + SESSION));
    assert!(h.g.member(&s_id).is_none(), "its session ran out");
}

#[test]
fn protocol_is_chosen_by_votes_among_protocols_everyone_supports() {
    let mut h = H::new(10);
    for (i, p) in [
        &["range", "roundrobin"][..],
        &["roundrobin", "range"],
        &["roundrobin", "sticky"],
    ]
    .iter()
    .enumerate()
    {
        let mut r = h.req("", None, p);
        r.require_known_member_id = false;
        r.fresh_member_id = format!("m{i}");
        h.g.join(r, h.now, &mut h.out);
    }
    assert_eq!(h.g.select_protocol().as_deref(), Some("roundrobin"));
    let mut r = h.req("", None, &["sticky"]);
    r.waiter = 50;
    h.g.join(r, h.now, &mut h.out);
    assert_eq!(
        h.join_reply(50).unwrap().error,
        Some(E::InconsistentGroupProtocol)
    );
    let mut r = h.req("", None, &["roundrobin"]);
    r.protocol_type = "connect".into();
    r.waiter = 51;
    h.g.join(r, h.now, &mut h.out);
    assert_eq!(
        h.join_reply(51).unwrap().error,
        Some(E::InconsistentGroupProtocol)
    );
}

#[test]
fn commits_are_checked_against_membership_and_state() {
    let mut h = H::new(0);
    assert_eq!(
        h.g.validate_commit("", None, -1),
        Ok(()),
        "simple consumer, Empty group"
    );
    let (a, b) = h.stable_pair();
    assert_eq!(h.g.validate_commit("", None, -1), Err(E::UnknownMemberId));
    assert_eq!(h.g.validate_commit(&a, None, 1), Err(E::IllegalGeneration));
    assert_eq!(h.g.validate_commit(&b, None, 2), Ok(()));
    let w = h.join(&a, None);
    let _ = h.join(&b, None);
    assert!(h.join_reply(w).is_some());
    assert_eq!(
        h.g.validate_commit(&b, None, 3),
        Err(E::RebalanceInProgress)
    );
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        min_session_timeout_ms: 6000,
        max_session_timeout_ms: 1_800_000,
        offsets_retention_ms: 1000,
    }
}

fn offset(v: i64, at: i64) -> CommittedOffset {
    CommittedOffset {
        offset: v,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: at,
        expire_timestamp: -1,
    }
}

#[test]
fn coordinator_validates_expires_and_restores() {
    let mut c = Coordinator::new(config());
    let mut out = Effects::default();
    let mut h = H::new(0);
    let mut r = h.req("", None, &["range"]);
    r.session_timeout_ms = 100;
    c.join("g", r, 0, &mut out);
    assert!(
        matches!(&out.replies[0], Reply::Join(_, r) if r.error == Some(E::InvalidSessionTimeout))
    );
    let r = h.req("known", None, &["range"]);
    c.join("g", r, 0, &mut out);
    assert!(matches!(&out.replies[1], Reply::Join(_, r) if r.error == Some(E::UnknownMemberId)));
    assert!(c.group("g").is_none(), "bad joins create nothing");
    assert_eq!(c.check_commit("g", "", None, 3), Err(E::IllegalGeneration));
    assert_eq!(c.check_commit("g", "", None, -1), Ok(()));
    c.commit("g", "", vec![("t".into(), 0, offset(5, 0))], 0, &mut out);
    c.commit(
        "other",
        "",
        vec![("t".into(), 0, offset(9, 500))],
        500,
        &mut out,
    );
    assert_eq!(c.fetch("g", None).len(), 1);
    assert_eq!(c.fetch("g", Some(&[("t".into(), 1)]))[0].1, None);
    let records = c.snapshot();
    c.expire_offsets(1200, &mut out);
    assert!(
        c.group("g").is_none(),
        "simple offsets expired, group deleted"
    );
    assert_eq!(c.fetch("other", None)[0].1.as_ref().unwrap().offset, 9);
    let mut restored = Coordinator::new(config());
    for r in records {
        restored.replay(r, 2000);
    }
    assert_eq!(restored.fetch("g", None)[0].1.as_ref().unwrap().offset, 5);
    assert_eq!(restored.delete_group("g", 0, &mut out), None);
    assert_eq!(
        restored.delete_group("g", 0, &mut out),
        Some(E::GroupIdNotFound)
    );
}

#[test]
fn restored_stable_group_accepts_heartbeats_of_its_generation() {
    let mut c = Coordinator::new(config());
    let mut out = Effects::default();
    let mut h = H::new(0);
    let mut r = h.req("", None, &["range"]);
    r.require_known_member_id = false;
    r.fresh_member_id = "m".into();
    c.join("g", r, 0, &mut out);
    c.sync(
        "g",
        "m",
        None,
        1,
        None,
        None,
        vec![("m".into(), Bytes::from_static(b"A"))],
        9,
        0,
        &mut out,
    );
    assert_eq!(c.group("g").unwrap().state, GroupState::Stable);
    assert_eq!(c.delete_group("g", 0, &mut out), Some(E::NonEmptyGroup));
    let mut restored = Coordinator::new(config());
    for r in std::mem::take(&mut out.records) {
        restored.replay(r, 100_000);
    }
    let g = restored.group("g").unwrap();
    assert_eq!(
        (g.state, g.generation_id, g.leader.as_deref()),
        (GroupState::Stable, 1, Some("m"))
    );
    assert_eq!(
        restored.heartbeat("g", "m", None, 1, 100_001, &mut out),
        None
    );
    assert_eq!(restored.describe("g").members[0].assignment, "A");
    // Without heartbeats the restored member expires like any other.
    restored.tick(100_001 + i64::from(SESSION), &mut out);
    assert!(
        restored.group("g").is_none(),
        "emptied without offsets: deleted"
    );
    assert!(matches!(
        out.records.last(),
        Some(super::record::Record::DeleteGroup { .. })
    ));
}
