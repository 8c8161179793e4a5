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
//! Admin requests are signed like any S3 request; only the root user exists so far. The
//! routes are router.rs's `AdminEndpoint`; the tier and lifecycle work itself is the mover's
//! (`ferrite_tiering`); this module speaks JSON.

use ferrite_tiering::tiers::TierSpec;
use serde::Serialize;

use crate::body::Body;
use crate::error::{Code, S3Error, S3Result};
use crate::http::Request;
use crate::limits::ADMIN_BODY_BYTES_MAX;
use crate::request::{Ctx, Response};
use crate::router::AdminEndpoint;
use crate::sigv4::constant_time_eq;

use super::common::read_small_body;

pub async fn run(ctx: &Ctx, endpoint: AdminEndpoint<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    match endpoint {
        AdminEndpoint::AddTier { name, force } => {
            json(&ctx.mover.add_tier(name, &tier_spec(body).await?, force).await?)
        }
        AdminEndpoint::EditTier { name } => json(&ctx.mover.edit_tier(name, &tier_spec(body).await?).await?),
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

/// The body of a tier add or edit.
async fn tier_spec(body: &mut Body<'_>) -> S3Result<TierSpec> {
    let bytes = read_small_body(body, ADMIN_BODY_BYTES_MAX).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| S3Error::new(Code::InvalidArgument, format!("the body is not a tier description in JSON: {e}")))
}

fn json(value: &impl Serialize) -> S3Result<Response> {
    let text = serde_json::to_string(value).map_err(|e| S3Error::new(Code::InternalError, e.to_string()))?;
    Ok(Response::with_body("application/json", text.into_bytes()))
}
