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
//!   `POST /ferrite/admin/v1/lifecycle/run`: runs a pass now and answers when it is done.
//!
//! Requests are signed like any S3 request; only the root user exists so far. The tier and
//! lifecycle work itself is the mover's (`ferrite_tiering`); this module speaks HTTP and JSON.

use ferrite_tiering::tiers::TierSpec;
use serde::Serialize;

use crate::body::Body;
use crate::error::{err, Code, S3Error, S3Result};
use crate::server::{Call, Ctx, RespBody, Response};

/// Admin request bodies are small JSON documents.
const BODY_BYTES_MAX: usize = 64 << 10;

/// No bucket of this name can be created: its paths are the admin API.
pub const RESERVED_BUCKET: &str = "ferrite";

pub async fn route(ctx: &Ctx, call: &Call<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    let key = call.key.as_deref().unwrap_or("");
    if let Some(name) = key.strip_prefix("admin/v1/tier/") {
        return match call.req.method.as_str() {
            "PUT" => {
                let force = call.q("force") == Some("true");
                json(&ctx.mover.add_tier(name, &tier_spec(body).await?, force).await?)
            }
            "POST" => json(&ctx.mover.edit_tier(name, &tier_spec(body).await?).await?),
            "DELETE" => {
                ctx.mover.remove_tier(name).await?;
                Ok(Response::new(204))
            }
            _ => err(Code::InvalidRequest, "Unknown admin API call."),
        };
    }
    match (call.req.method.as_str(), key) {
        ("GET", "admin/v1/tier") => json(&ctx.mover.list_tiers()?),
        ("GET", "admin/v1/lifecycle") => json(&ctx.mover.status()),
        ("POST", "admin/v1/lifecycle/run") => {
            ctx.mover.pass().await;
            json(&ctx.mover.status())
        }
        ("GET", "admin/v1/heal") => json(&ctx.engine.heal_status()),
        ("POST", "admin/v1/heal") => {
            let rate = match call.q("rate-mib") {
                Some(v) => match v.parse::<u64>() {
                    Ok(mib) => Some(mib << 20),
                    Err(_) => return err(Code::InvalidArgument, "rate-mib must be a whole number of MiB/s"),
                },
                None => None,
            };
            ctx.engine.heal().request("requested through the admin API", rate);
            json(&ctx.engine.heal_status())
        }
        ("POST", "admin/v1/kms/rewrap") => json(&crate::sse::rewrap_all(ctx).await?),
        _ if call.req.method == "PUT" && call.key.is_none() => {
            err(Code::InvalidBucketName, "The bucket name ferrite is reserved for the admin API.")
        }
        _ => err(Code::InvalidRequest, "Unknown admin API call."),
    }
}

/// The body of a tier add or edit.
async fn tier_spec(body: &mut Body<'_>) -> S3Result<TierSpec> {
    let bytes = crate::ops::read_small_body(body, BODY_BYTES_MAX).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| S3Error::new(Code::InvalidArgument, format!("the body is not a tier description in JSON: {e}")))
}

fn json(value: &impl Serialize) -> S3Result<Response> {
    let text = serde_json::to_string(value).map_err(|e| S3Error::new(Code::InternalError, e.to_string()))?;
    Ok(json_text(text))
}

fn json_text(body: String) -> Response {
    let mut resp = Response::new(200);
    resp.headers.push(("content-type".into(), "application/json".into()));
    resp.body = RespBody::Bytes(body.into_bytes());
    resp
}
