//! What a handler knows about the request it is serving.

use std::net::IpAddr;
use std::sync::Arc;

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
}
