//! Serving inter-node calls on the inter-node listener: Raft messages to the
//! quorum member, forwarded proposals and heartbeats to the controller,
//! probes from blank voters.
//!
//! Every call is checked first: the sender must name itself consistently
//! with its certificate (`CN=node-<id>` under mTLS), belong to the same
//! cluster, have the same voter set, and — for Raft's own messages — be a
//! voter or a known learner. A refusal names both nodes and what to fix;
//! the caller logs it, and so does this node, once per problem.

use std::time::Duration;

use super::rpc::{Call, Envelope, Proposed, Reply};
use crate::state::BrokerState;

/// Why a call is refused, or `None` to serve it.
fn refusal(state: &BrokerState, principal: &str, call: &Envelope<Call>) -> Option<String> {
    let cluster = &state.cluster;
    let (me, from) = (cluster.node_id, call.from);
    if let Some(id) = certified_node(principal) {
        if id != from {
            return Some(format!(
                "the caller's certificate names node {id} but it calls as node {from}; each node \
                 needs its own certificate (CN=node-<id>, see veil certs init --nodes)"
            ));
        }
    } else if state.config.cluster.tls.is_some() {
        return Some(format!(
            "node {from} called without a node certificate (CN=node-<id>)"
        ));
    }
    let mine = cluster.client.identity();
    if call.voters != mine.voters {
        return Some(format!(
            "voter sets differ: node {me} has cluster.voters = [{}], node {from} has [{}]; every \
             node needs the same cluster.voters",
            mine.voters, call.voters
        ));
    }
    if let (Some(theirs), Some(ours)) = (&call.cluster_id, state.cluster_id_if_known()) {
        if *theirs != ours {
            return Some(format!(
                "node {from} belongs to cluster {theirs}, node {me} to cluster {ours}; a node that \
                 was part of another cluster needs an empty data directory to join this one"
            ));
        }
    }
    let raft = matches!(
        call.body,
        Call::Vote(_) | Call::Append(_) | Call::Snapshot(_)
    );
    if raft && !cluster.quorum.is_voter(from) && !state.is_learner(from) {
        return Some(format!(
            "node {from} is neither a voter of this quorum nor a learner added by the controller"
        ));
    }
    None
}

/// The node id in a `User:CN=node-<id>,...` principal from a node certificate.
pub fn certified_node(principal: &str) -> Option<i32> {
    let dn = principal.strip_prefix("User:")?;
    dn.split(',').map(str::trim).find_map(|part| {
        part.strip_prefix("CN=")?
            .strip_prefix("node-")?
            .parse()
            .ok()
    })
}

/// Serves one call.
pub async fn serve(state: &BrokerState, principal: &str, call: Envelope<Call>) -> Envelope<Reply> {
    let cluster = &state.cluster;
    let body = if let Some(reason) = refusal(state, principal, &call) {
        cluster.client.notices().report(
            &format!("refusing {} {reason}", call.from),
            &format!(
                "refusing inter-node calls ({}) from node {}: {reason}",
                call.body.name(),
                call.from
            ),
        );
        Reply::Refused(reason)
    } else {
        let quorum = &cluster.quorum;
        match call.body {
            Call::Vote(req) => Reply::Vote(quorum.member().vote(req).await),
            Call::Append(req) => Reply::Append(quorum.member().raft.append_entries(req).await),
            Call::Snapshot(req) => {
                Reply::Snapshot(quorum.member().raft.install_snapshot(req).await)
            }
            Call::Probe => Reply::Probe(Some(quorum.member().probe())),
            Call::Propose(cmd) => {
                let timeout = Duration::from_millis(state.config.cluster.request_timeout_ms);
                let mut outcome = quorum.propose_local(cmd.clone(), timeout).await;
                if let Proposed::Rejected { index, rejection } = &outcome {
                    if super::quorum::already_applied(&cmd, rejection, quorum.view()) {
                        outcome = Proposed::Committed { index: *index };
                    }
                }
                Reply::Propose(outcome)
            }
            Call::Heartbeat(hb) => Reply::Heartbeat(cluster.controller.heartbeat(quorum, hb).await),
        }
    };
    Envelope {
        from: cluster.node_id,
        cluster_id: state.cluster_id_if_known(),
        voters: cluster.client.identity().voters.clone(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::certified_node;

    #[test]
    fn node_ids_come_from_the_certificate_common_name() {
        assert_eq!(certified_node("User:CN=node-3,O=Veil development"), Some(3));
        assert_eq!(certified_node("User:O=x, CN=node-12"), Some(12));
        assert_eq!(certified_node("User:CN=alice"), None);
        assert_eq!(certified_node("User:ANONYMOUS"), None);
    }
}
