//! The admin API, under the reserved bucket name `ferrite` (as MinIO reserves `minio`):
//!
//! - `GET  /ferrite/admin/v1/heal`: heal, scanner and drive status, as JSON;
//! - `POST /ferrite/admin/v1/heal[?rate-mib=N]`: starts a heal on every core (restarting one
//!   that runs), reading at most N MiB/s per core (0: unlimited); answers the status;
//! - `POST /ferrite/admin/v1/kms/rewrap`: re-seals every SSE-S3/SSE-KMS object key under
//!   the newest version of its KMS key (after a key rotation in the KMS), data untouched;
//! - `GET /ferrite/admin/v1/tier`: the remote tiers (credentials left out);
//!   `PUT /ferrite/admin/v1/tier/NAME[?force=true]` adds one (JSON body: endpoint, account,
//!   container, prefix, access_tier, and account_key or sas), after a test write, read and
//!   delete; `POST .../tier/NAME` replaces its credential; `DELETE .../tier/NAME` removes it;
//! - `GET /ferrite/admin/v1/lifecycle`: what lifecycle passes did since start-up;
//!   `POST /ferrite/admin/v1/lifecycle/run`: runs a pass now and answers when it is done;
//! - `GET /ferrite/metrics`: the Prometheus metrics, answered before SigV4 (Prometheus does
//!   not sign). With `FERRITE_METRICS_TOKEN` set it needs `Authorization: Bearer <token>`;
//!   without, it is public (counts only, no names or keys).
//!
//! Admin requests are signed like any S3 request; only the root user exists so far. One
//! with a body must sign the body too (its SHA-256 in x-amz-content-sha256, or signed
//! aws-chunked chunks): otherwise anyone on the path could rewrite it (a tier's endpoint,
//! say), and it is refused with 403 AccessDenied before a byte of it is read. A tier's secret
//! (an account key or a SAS) is accepted over https, or over plain HTTP only from the same
//! machine (a loopback peer); otherwise it is refused, 400 InvalidRequest, as AWS refuses
//! SSE-C keys sent in the clear. The routes are router.rs's `AdminEndpoint`; the tier and
//! lifecycle work itself is the mover's (`ferrite_tiering`); this module speaks JSON.

use std::net::IpAddr;

use ferrite_tiering::tiers::TierSpec;
use serde::Serialize;

use crate::body::Body;
use crate::error::{Code, S3Error, S3Result};
use crate::http::Request;
use crate::limits::ADMIN_BODY_BYTES_MAX;
use crate::request::{Call, Ctx, Response};
use crate::router::AdminEndpoint;
use crate::sigv4::constant_time_eq;

use super::common::read_small_body;

pub async fn run(ctx: &Ctx, call: &Call<'_>, endpoint: AdminEndpoint<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    if !body.raw_done() && !body.signed() {
        return Err(S3Error::new(
            Code::AccessDenied,
            "Admin requests with a body must sign it: x-amz-content-sha256 must be its SHA-256 (or the chunks signed), not UNSIGNED-PAYLOAD.",
        ));
    }
    match endpoint {
        AdminEndpoint::AddTier { name, force } => {
            json(&ctx.mover.add_tier(name, &tier_spec(call, body).await?, force).await?)
        }
        AdminEndpoint::EditTier { name } => json(&ctx.mover.edit_tier(name, &tier_spec(call, body).await?).await?),
        AdminEndpoint::RemoveTier { name } => {
            ctx.mover.remove_tier(name).await?;
            Ok(Response::new(204))
        }
        AdminEndpoint::ListTiers => json(&ctx.mover.list_tiers()?),
        AdminEndpoint::LifecycleStatus => json(&ctx.mover.status()),
        AdminEndpoint::RunLifecycle => {
            ctx.mover.pass().await;
            json(&ctx.mover.status())
        }
        AdminEndpoint::HealStatus => json(&ctx.engine.heal_status()),
        AdminEndpoint::Heal { rate_bytes_per_sec } => {
            ctx.engine.heal().request("requested through the admin API", rate_bytes_per_sec);
            json(&ctx.engine.heal_status())
        }
        AdminEndpoint::KmsRewrap => json(&crate::sse::rewrap_all(ctx).await?),
    }
}

/// The metrics, once the bearer token (when one is set) matches.
pub fn metrics(ctx: &Ctx, req: &Request) -> S3Result<Response> {
    if let Some(token) = &ctx.config.metrics_token {
        let given = req.header("authorization").and_then(|a| a.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
            return Err(S3Error::new(Code::AccessDenied, "The metrics need the bearer token."));
        }
    }
    let kms_backend = ctx.kms.as_deref().map_or("none", |k| k.backend_name());
    let text = crate::metrics::render(kms_backend, &ctx.mover, &ctx.engine);
    Ok(Response::with_body("text/plain; version=0.0.4", text.into_bytes()))
}

/// The body of a tier add or edit; one carrying a secret only over https or from loopback.
async fn tier_spec(call: &Call<'_>, body: &mut Body<'_>) -> S3Result<TierSpec> {
    let bytes = read_small_body(body, ADMIN_BODY_BYTES_MAX).await?;
    let spec: TierSpec = serde_json::from_slice(&bytes)
        .map_err(|e| S3Error::new(Code::InvalidArgument, format!("the body is not a tier description in JSON: {e}")))?;
    let carries_secret = spec.account_key.is_some() || spec.sas.is_some();
    if carries_secret && !secrets_may_travel(call.req.secure, call.req.peer) {
        return Err(S3Error::new(
            Code::InvalidRequest,
            "A tier's account key or SAS must be sent over https (or from this machine): this one crossed the network in clear text, so rotate it.",
        ));
    }
    Ok(spec)
}

/// Whether a secret may arrive on this connection: over TLS, or from the same machine (a
/// loopback peer, IPv4-mapped ones included), where no network lies between.
pub fn secrets_may_travel(secure: bool, peer: Option<IpAddr>) -> bool {
    secure || peer.is_some_and(|ip| ip.to_canonical().is_loopback())
}

fn json(value: &impl Serialize) -> S3Result<Response> {
    let text = serde_json::to_string(value).map_err(|e| S3Error::new(Code::InternalError, e.to_string()))?;
    Ok(Response::with_body("application/json", text.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_travel_over_tls_or_from_loopback_only() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for loopback in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(secrets_may_travel(false, ip(loopback)), "{loopback}");
        }
        for remote in ["192.0.2.2", "10.0.0.1", "::ffff:10.0.0.1", "fd00::2", "0.0.0.0"] {
            assert!(!secrets_may_travel(false, ip(remote)), "{remote}");
            assert!(secrets_may_travel(true, ip(remote)), "{remote} over TLS");
        }
        // A socket that could not tell its peer is not trusted with a secret in clear.
        assert!(!secrets_may_travel(false, None));
        assert!(secrets_may_travel(true, None));
    }
}
