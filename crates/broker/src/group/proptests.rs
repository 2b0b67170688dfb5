//! Random join/leave/heartbeat/crash/time-jump runs never give one partition
//! to two members of the same generation.
//!
//! Each simulated client behaves like a consumer: it joins (KIP-394 or as a
//! static member), the leader assigns partitions round-robin over the
//! members of its JoinGroup response, everyone syncs, and errors make it
//! rejoin. Crashed clients just stop; a restart joins afresh.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::ResponseError as E;
use proptest::prelude::*;

use super::classic::Group;
use super::member::{JoinRequest, Protocol, Reply};

const PARTITIONS: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    Crash(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize).prop_map(Op::Join),
        3 => (0..4usize).prop_map(Op::Sync),
        3 => (0..4usize).prop_map(Op::Heartbeat),
        1 => (0..4usize).prop_map(Op::Leave),
        1 => (0..4usize).prop_map(Op::Crash),
        2 => (0..15_000i64).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Default, Clone)]
struct Client {
    id: String,
    generation: i32,
    /// The members the leader must assign to, from its JoinGroup response.
    to_assign: Option<Vec<String>>,
    waiting: bool,
    restarts: u32,
}

struct Sim {
    g: Group,
    now: i64,
    next: u64,
    clients: Vec<Client>,
    /// waiter → (client, generation asked for, is sync)
    waiting: HashMap<u64, (usize, i32, bool)>,
    /// generation → partition → owner
    owners: HashMap<i32, HashMap<u8, String>>,
}

impl Sim {
    fn instance(c: usize) -> Option<String> {
        // Clients 0 and 1 are static members.
        (c < 2).then(|| format!("inst-{c}"))
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        match *op {
            Op::Advance(ms) => {
                self.now += ms;
                self.g.advance(self.now, &mut out);
            }
            Op::Join(c) if !self.clients[c].waiting => {
                self.next += 1;
                let cl = &mut self.clients[c];
                cl.waiting = true;
                let req = JoinRequest {
                    member_id: cl.id.clone(),
                    instance_id: Self::instance(c),
                    client_id: format!("c{c}"),
                    client_host: "h".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 20_000,
                    protocol_type: "consumer".into(),
                    protocols: vec![Protocol {
                        name: "rr".into(),
                        metadata: Bytes::new(),
                    }],
                    require_known_member_id: true,
                    fresh_member_id: format!("m{c}-{}-{}", cl.restarts, self.next),
                    waiter: self.next,
                };
                self.waiting.insert(self.next, (c, -1, false));
                self.g.join(req, self.now, &mut out);
            }
            Op::Sync(c) if !self.clients[c].waiting && !self.clients[c].id.is_empty() => {
                self.next += 1;
                let cl = &mut self.clients[c];
                cl.waiting = true;
                let assignments = cl.to_assign.take().map_or_else(Vec::new, |members| {
                    let mut by_member: Vec<(String, Vec<u8>)> =
                        members.iter().map(|m| (m.clone(), Vec::new())).collect();
                    for p in 0..PARTITIONS {
                        let n = by_member.len();
                        by_member[usize::from(p) % n].1.push(p);
                    }
                    by_member
                        .into_iter()
                        .map(|(m, ps)| (m, Bytes::from(ps)))
                        .collect()
                });
                self.waiting.insert(self.next, (c, cl.generation, true));
                let (id, generation, instance) = (cl.id.clone(), cl.generation, Self::instance(c));
                self.g.sync(
                    &id,
                    instance.as_deref(),
                    generation,
                    None,
                    None,
                    assignments,
                    self.next,
                    self.now,
                    &mut out,
                );
            }
            Op::Heartbeat(c) if !self.clients[c].id.is_empty() => {
                let cl = &self.clients[c];
                let instance = Self::instance(c);
                if let Some(e) = self.g.heartbeat(
                    &cl.id,
                    instance.as_deref(),
                    cl.generation,
                    self.now,
                    &mut out,
                ) {
                    if e == E::UnknownMemberId || e == E::FencedInstanceId {
                        self.clients[c].id.clear();
                    }
                }
            }
            Op::Leave(c) if !self.clients[c].id.is_empty() => {
                let id = std::mem::take(&mut self.clients[c].id);
                self.g
                    .leave(&id, Self::instance(c).as_deref(), self.now, &mut out);
                self.forget(&id);
            }
            Op::Crash(c) => {
                // The process dies: its requests are never answered, and a
                // restarted static member comes back without its member id.
                let old = std::mem::take(&mut self.clients[c].id);
                self.waiting.retain(|_, (cc, _, _)| *cc != c);
                let restarts = self.clients[c].restarts + 1;
                self.clients[c] = Client {
                    restarts,
                    ..Client::default()
                };
                self.forget(&old);
            }
            _ => {}
        }
        self.deliver(out)
    }

    /// A member that left or died holds nothing any more.
    fn forget(&mut self, id: &str) {
        for owners in self.owners.values_mut() {
            owners.retain(|_, m| m != id);
        }
    }

    fn deliver(&mut self, out: Vec<Reply>) -> Result<(), TestCaseError> {
        for reply in out {
            let w = match &reply {
                Reply::Join(w, _) | Reply::Sync(w, _) => *w,
            };
            let Some((c, generation, _)) = self.waiting.remove(&w) else {
                continue;
            };
            let cl = &mut self.clients[c];
            cl.waiting = false;
            match reply {
                Reply::Join(_, r) => match r.error {
                    None => {
                        cl.id = r.member_id.clone();
                        cl.generation = r.generation_id;
                        cl.to_assign = (r.leader == r.member_id)
                            .then(|| r.members.iter().map(|m| m.member_id.clone()).collect());
                    }
                    Some(E::MemberIdRequired) => cl.id = r.member_id,
                    Some(_) => cl.id.clear(),
                },
                Reply::Sync(_, r) => {
                    if r.error.is_some() {
                        continue;
                    }
                    let id = cl.id.clone();
                    let owners = self.owners.entry(generation).or_default();
                    for p in &r.assignment {
                        if let Some(prev) = owners.insert(*p, id.clone()) {
                            prop_assert_eq!(
                                &prev,
                                &id,
                                "partition {} twice in generation {}",
                                p,
                                generation
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn no_partition_has_two_owners_in_one_generation(ops in proptest::collection::vec(op(), 1..120)) {
        let mut sim = Sim {
            g: Group::new("g", 0, 0),
            now: 0,
            next: 0,
            clients: vec![Client::default(); 4],
            waiting: HashMap::new(),
            owners: HashMap::new(),
        };
        for op in &ops {
            sim.step(op)?;
        }
    }
}
