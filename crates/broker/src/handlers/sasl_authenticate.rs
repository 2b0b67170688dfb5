//! SaslAuthenticate on a listener without SASL: ILLEGAL_SASL_STATE, as
//! Kafka answers. SASL listeners handle it in [`crate::auth::sasl::Session`].

use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::context::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    _req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let code = ResponseError::IllegalSaslState.code();
    ctx.count(code);
    SaslAuthenticateResponse::default()
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_static_str(
            "this listener does not use SASL",
        )))
}
