//! SaslHandshake on a listener without SASL.
//!
//! SASL listeners answer SaslHandshake in [`crate::auth::sasl::Session`],
//! which owns the connection's authentication state; this handler serves
//! every other listener and, like Kafka, answers ILLEGAL_SASL_STATE.

use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::ResponseError;

use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, _req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let code = ResponseError::IllegalSaslState.code();
    ctx.count(code);
    SaslHandshakeResponse::default().with_error_code(code)
}
