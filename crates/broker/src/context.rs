//! What a handler knows about the request it is serving.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::acl_matcher::Action;
use crate::auth::{Operation, ResourceType};
use crate::error::Error;
use crate::state::BrokerState;

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub broker: Arc<BrokerState>,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The listener the connection arrived on.
    pub listener: String,
    /// The API's metric label.
    pub api: &'static str,
    /// Who is asking, in Kafka's `Type:name` form (`User:ANONYMOUS` until
    /// the connection authenticates).
    pub principal: String,
    /// The client's address, for host-based ACLs and logs.
    pub client_host: IpAddr,
}

/// The principal of an unauthenticated connection, as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl RequestContext {
    pub fn now_ms(&self) -> i64 {
        self.broker.clock.now_ms()
    }

    /// The Kafka error code for `err`, counted in metrics.
    pub fn code(&self, err: &Error) -> i16 {
        let code = err.code();
        self.count(code);
        code
    }

    /// Counts an error code set directly by a handler (0 is not counted).
    pub fn count(&self, code: i16) {
        self.broker.metrics.error(self.api, code);
    }

    /// Whether the principal may perform `operation` on the named resource
    /// (Kafka's ACL rules; logged at debug and counted). Always true while
    /// the authorizer is disabled. Cluster checks name [`crate::auth::CLUSTER_NAME`].
    pub fn authorize(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let action = Action {
            principal: &self.principal,
            host: self.client_host,
            operation,
            resource_type,
            name,
        };
        self.broker
            .authorizer
            .authorize(&self.broker.metrics, action)
    }

    /// [`Self::authorize`] on the cluster resource.
    pub fn authorize_cluster(&self, operation: Operation) -> bool {
        self.authorize(operation, ResourceType::Cluster, crate::auth::CLUSTER_NAME)
    }

    /// Whether the principal may perform `operation` on *some* resource of
    /// the type (Kafka's `authorizeByResourceType`; InitProducerId uses
    /// WRITE on any topic).
    pub fn authorize_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        self.broker.authorizer.authorize_any(
            &self.broker.metrics,
            &self.principal,
            self.client_host,
            operation,
            resource_type,
        )
    }

    /// Whether the principal may see `topic` at all: false for a blind topic
    /// without an active share and a grant (BLIND.md §6b). Callers answer
    /// as if the topic did not exist.
    pub fn blind_visible(&self, topic: &str) -> bool {
        self.broker.blind.visible(&self.principal, topic)
    }

    /// `topics.get` filtered by [`Self::blind_visible`].
    pub fn visible_topic(&self, name: &str) -> Option<Arc<crate::topics::Topic>> {
        self.broker
            .topics
            .get(name)
            .filter(|t| self.blind_visible(&t.name))
    }

    /// `topics.get_by_id` filtered by [`Self::blind_visible`].
    pub fn visible_topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<crate::topics::Topic>> {
        self.broker
            .topics
            .get_by_id(id)
            .filter(|t| self.blind_visible(&t.name))
    }

    /// The authorized-operations bitfield of a resource (Metadata,
    /// DescribeCluster, DescribeGroups).
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        self.broker.authorizer.authorized_operations(
            &self.principal,
            self.client_host,
            resource_type,
            name,
        )
    }
}
