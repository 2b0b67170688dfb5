//! ApiVersions: the served API table, derived from [`crate::dispatch::SERVED`].

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use crate::context::RequestContext;
use veil_blind::protocol::VeilApi;

use crate::dispatch::SERVED;

pub async fn handle(ctx: &RequestContext, req: ApiVersionsRequest) -> ApiVersionsResponse {
    // v3+ clients name themselves; Kafka validates the names' characters.
    let valid = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
    };
    if ctx.api_version >= 3
        && !(valid(&req.client_software_name) && valid(&req.client_software_version))
    {
        ctx.count(ResponseError::InvalidRequest.code());
        return table().with_error_code(ResponseError::InvalidRequest.code());
    }
    table()
}

/// The answer to an ApiVersions request at a version we do not serve: v0
/// layout, UNSUPPORTED_VERSION, and our ranges so the client can retry.
pub fn unsupported_version() -> ApiVersionsResponse {
    table().with_error_code(ResponseError::UnsupportedVersion.code())
}

fn table() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SERVED
            .iter()
            .map(|&(key, min, max)| (key as i16, min, max))
            .chain(VeilApi::ALL.iter().map(|api| {
                let (min, max) = api.versions();
                (api.key(), min, max)
            }))
            .map(|(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn table_lists_every_served_api_once() {
        let t = table();
        assert_eq!(t.api_keys.len(), SERVED.len() + VeilApi::ALL.len());
        assert!(t.api_keys.iter().any(|k| k.api_key == 32104));
        let produce = t
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .unwrap();
        assert!(produce.min_version <= 3 && produce.max_version >= 7);
        assert_eq!(unsupported_version().error_code, 35);
    }
}
