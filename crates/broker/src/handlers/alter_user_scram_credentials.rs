//! AlterUserScramCredentials (KIP-554): upsert and delete SCRAM credentials.
//!
//! The request carries a salted password; the broker derives StoredKey and
//! ServerKey from it and keeps only those. Results are per user: any bad
//! operation fails all of that user's operations, as in Kafka.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::{MetaCommand, ScramCredentialRecord};

use crate::auth::scram::{Credential, Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::auth::Operation;
use crate::context::{RequestContext, ANONYMOUS};

type Failure = (ResponseError, &'static str);

pub async fn handle(
    ctx: &RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Only an authenticated caller with ALTER on the cluster may manage
    // credentials; anonymous connections never may.
    let allowed = ctx.principal != ANONYMOUS && ctx.authorize_cluster(Operation::Alter);
    let mut per_user: BTreeMap<String, Result<Vec<MetaCommand>, Failure>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let deletions = req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism, None));
    let upsertions = req
        .upsertions
        .iter()
        .map(|u| (u.name.to_string(), u.mechanism, Some(u)));
    for (user, mech_code, upsert) in deletions.chain(upsertions) {
        let op = if allowed {
            command(ctx, &user, mech_code, upsert, &mut seen)
        } else {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                "not authorized to alter SCRAM credentials",
            ))
        };
        let slot = per_user.entry(user).or_insert_with(|| Ok(Vec::new()));
        match (slot.as_mut(), op) {
            (Ok(cmds), Ok(cmd)) => cmds.push(cmd),
            (Ok(_), Err(e)) => *slot = Err(e),
            (Err(_), _) => {}
        }
    }
    let mut results = Vec::with_capacity(per_user.len());
    for (user, outcome) in per_user {
        let outcome = match outcome {
            Ok(cmds) => apply(ctx, cmds).await,
            Err(e) => Err(e),
        };
        let (code, message) = match outcome {
            Ok(()) => (0, None),
            Err((e, m)) => (e.code(), Some(StrBytes::from_static_str(m))),
        };
        ctx.count(code);
        if code == 0 {
            tracing::info!(user = %user, "SCRAM credentials altered");
        }
        results.push(
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user))
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn command(
    ctx: &RequestContext,
    user: &str,
    mech_code: i8,
    upsert: Option<
        &kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion,
    >,
    seen: &mut HashSet<(String, i8)>,
) -> Result<MetaCommand, Failure> {
    if user.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "Username must not be empty",
        ));
    }
    if !seen.insert((user.to_owned(), mech_code)) {
        return Err((
            ResponseError::DuplicateResource,
            "A user credential cannot be altered twice in the same request",
        ));
    }
    let mech = Mechanism::from_code(mech_code).ok_or((
        ResponseError::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism",
    ))?;
    let mechanism = mech.name().to_owned();
    let Some(u) = upsert else {
        let exists = ctx
            .broker
            .with_meta(|m| m.scram_credential(user, &mechanism).is_some());
        if !exists {
            return Err((
                ResponseError::ResourceNotFound,
                "Attempt to delete a user credential that does not exist",
            ));
        }
        return Ok(MetaCommand::DeleteScramCredential {
            user: user.to_owned(),
            mechanism,
        });
    };
    let iterations = u32::try_from(u.iterations).unwrap_or(0);
    if iterations < MIN_ITERATIONS {
        return Err((ResponseError::UnacceptableCredential, "Too few iterations"));
    }
    if iterations > MAX_ITERATIONS {
        return Err((ResponseError::UnacceptableCredential, "Too many iterations"));
    }
    if u.salt.is_empty() || u.salted_password.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "Salt and salted password must not be empty",
        ));
    }
    let c = Credential::from_salted(mech, &u.salt, iterations, &u.salted_password);
    Ok(MetaCommand::UpsertScramCredential {
        user: user.to_owned(),
        mechanism,
        credential: ScramCredentialRecord {
            salt: c.salt,
            iterations: c.iterations,
            stored_key: c.stored_key,
            server_key: c.server_key,
        },
    })
}

async fn apply(ctx: &RequestContext, cmds: Vec<MetaCommand>) -> Result<(), Failure> {
    for cmd in cmds {
        if let Err(e) = ctx.broker.commit(cmd).await {
            tracing::warn!(error = %e, "could not store a SCRAM credential change");
            return Err((
                ResponseError::UnknownServerError,
                "could not store the change",
            ));
        }
    }
    Ok(())
}
