//! SCRAM credential administration (KIP-554): AlterUserScramCredentials and
//! DescribeUserScramCredentials. Salted passwords are computed by the
//! caller, so no password ever crosses the wire.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::error::{Error, Result};

/// One credential to store: the salted password is `Hi(password, salt, iterations)`.
pub struct ScramUpsert {
    pub user: String,
    /// 1 = SCRAM-SHA-256, 2 = SCRAM-SHA-512 (Kafka's codes).
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramUpsert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramUpsert")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// A user's credentials: (mechanism code, iterations).
#[derive(Debug, Clone)]
pub struct ScramUser {
    pub user: String,
    pub credentials: Vec<(i8, i32)>,
}

impl Admin {
    /// Upserts and deletes credentials; fails on the first per-user error.
    pub async fn alter_scram_credentials(
        &mut self,
        upserts: Vec<ScramUpsert>,
        deletions: Vec<(String, i8)>,
    ) -> Result<()> {
        let req = AlterUserScramCredentialsRequest::default()
            .with_upsertions(
                upserts
                    .into_iter()
                    .map(|u| {
                        ScramCredentialUpsertion::default()
                            .with_name(StrBytes::from_string(u.user))
                            .with_mechanism(u.mechanism)
                            .with_iterations(u.iterations)
                            .with_salt(Bytes::from(u.salt))
                            .with_salted_password(Bytes::from(u.salted_password))
                    })
                    .collect(),
            )
            .with_deletions(
                deletions
                    .into_iter()
                    .map(|(user, mechanism)| {
                        ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_string(user))
                            .with_mechanism(mechanism)
                    })
                    .collect(),
            );
        let resp = self.connection().send(&req).await?;
        for r in resp.results {
            if r.error_code != 0 {
                return Err(Error::kafka(
                    format!("AlterUserScramCredentials for '{}'", r.user),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                ));
            }
        }
        Ok(())
    }

    /// Describes `users`, or every user when `None`.
    pub async fn describe_scram_credentials(
        &mut self,
        users: Option<Vec<String>>,
    ) -> Result<Vec<ScramUser>> {
        let req = DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
            u.into_iter()
                .map(|n| UserName::default().with_name(StrBytes::from_string(n)))
                .collect()
        }));
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "DescribeUserScramCredentials",
                resp.error_code,
                resp.error_message.map(|m| m.to_string()),
            ));
        }
        resp.results
            .into_iter()
            .map(|r| {
                if r.error_code != 0 {
                    return Err(Error::kafka(
                        format!("DescribeUserScramCredentials for '{}'", r.user),
                        r.error_code,
                        r.error_message.map(|m| m.to_string()),
                    ));
                }
                Ok(ScramUser {
                    user: r.user.to_string(),
                    credentials: r
                        .credential_infos
                        .iter()
                        .map(|c| (c.mechanism, c.iterations))
                        .collect(),
                })
            })
            .collect()
    }
}
