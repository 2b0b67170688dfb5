//! DescribeUserScramCredentials (KIP-554): mechanisms and iteration counts
//! per user; never salts or keys.

use std::collections::HashSet;

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::scram::Mechanism;
use crate::auth::Operation;
use crate::context::{RequestContext, ANONYMOUS};

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let resp = DescribeUserScramCredentialsResponse::default();
    if ctx.principal == ANONYMOUS || !ctx.authorize_cluster(Operation::Describe) {
        let code = ResponseError::ClusterAuthorizationFailed.code();
        ctx.count(code);
        return resp.with_error_code(code);
    }
    let infos = |user: &str| -> Vec<CredentialInfo> {
        ctx.broker.with_meta(|m| {
            Mechanism::ALL
                .into_iter()
                .filter_map(|mech| {
                    m.scram_credential(user, mech.name()).map(|c| {
                        CredentialInfo::default()
                            .with_mechanism(mech.code())
                            .with_iterations(c.iterations as i32)
                    })
                })
                .collect()
        })
    };
    let result = |user: &str, code: i16, message: Option<&'static str>, found| {
        ctx.count(code);
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_owned()))
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_static_str))
            .with_credential_infos(found)
    };
    let results = match req.users {
        None => ctx
            .broker
            .with_meta(|m| m.scram_users().map(|(u, _)| u.clone()).collect::<Vec<_>>())
            .into_iter()
            .map(|u| result(&u, 0, None, infos(&u)))
            .collect(),
        Some(users) => {
            let mut seen = HashSet::new();
            let dups: HashSet<String> = users
                .iter()
                .map(|u| u.name.to_string())
                .filter(|u| !seen.insert(u.clone()))
                .collect();
            let mut done = HashSet::new();
            users
                .iter()
                .map(|u| u.name.to_string())
                .filter(|u| done.insert(u.clone()))
                .map(|u| {
                    if dups.contains(&u) {
                        return result(
                            &u,
                            ResponseError::DuplicateResource.code(),
                            Some("Cannot describe SCRAM credentials for the same user twice in a single request"),
                            Vec::new(),
                        );
                    }
                    let found = infos(&u);
                    if found.is_empty() {
                        result(
                            &u,
                            ResponseError::ResourceNotFound.code(),
                            Some("Attempt to describe a user credential that does not exist"),
                            found,
                        )
                    } else {
                        result(&u, 0, None, found)
                    }
                })
                .collect()
        }
    };
    resp.with_results(results)
}
