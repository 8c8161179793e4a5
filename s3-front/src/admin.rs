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
//! Requests are signed like any S3 request; only the root user exists so far.

use crate::body::Body;
use crate::error::{err, Code, S3Result};
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
                Ok(json(crate::tier::add(&ctx.engine, name, &text(body).await?, force).await?))
            }
            "POST" => Ok(json(crate::tier::edit(&ctx.engine, name, &text(body).await?).await?)),
            "DELETE" => {
                crate::tier::remove(&ctx.engine, name).await?;
                Ok(Response::new(204))
            }
            _ => err(Code::InvalidRequest, "Unknown admin API call."),
        };
    }
    match (call.req.method.as_str(), key) {
        ("GET", "admin/v1/tier") => Ok(json(crate::tier::list_json(&ctx.engine)?)),
        ("GET", "admin/v1/lifecycle") => Ok(json(crate::lifecycle::counters_json())),
        ("POST", "admin/v1/lifecycle/run") => {
            crate::lifecycle::pass(&ctx.engine, crate::lifecycle::day_ms()).await;
            Ok(json(crate::lifecycle::counters_json()))
        }
        ("GET", "admin/v1/heal") => heal_status(ctx),
        ("POST", "admin/v1/heal") => {
            let rate = match call.q("rate-mib") {
                Some(v) => match v.parse::<u64>() {
                    Ok(mib) => Some(mib << 20),
                    Err(_) => return err(Code::InvalidArgument, "rate-mib must be a whole number of MiB/s"),
                },
                None => None,
            };
            ctx.engine.heal().request("requested through the admin API", rate);
            heal_status(ctx)
        }
        ("POST", "admin/v1/kms/rewrap") => {
            let r = crate::sse::rewrap_all(ctx).await?;
            Ok(json(format!(
                "{{\"objects\":{},\"encrypted\":{},\"rewrapped\":{},\"failed\":{}}}",
                r.objects, r.encrypted, r.rewrapped, r.failed
            )))
        }
        _ if call.req.method == "PUT" && call.key.is_none() => {
            err(Code::InvalidBucketName, "The bucket name ferrite is reserved for the admin API.")
        }
        _ => err(Code::InvalidRequest, "Unknown admin API call."),
    }
}

async fn text(body: &mut Body<'_>) -> S3Result<String> {
    let bytes = crate::ops::read_small_body(body, BODY_BYTES_MAX).await?;
    String::from_utf8(bytes).map_err(|_| crate::error::S3Error::new(Code::InvalidArgument, "the body is not UTF-8"))
}

/// The engine's heal status as JSON.
fn heal_status(ctx: &Ctx) -> S3Result<Response> {
    match serde_json::to_string(&ctx.engine.heal_status()) {
        Ok(text) => Ok(json(text)),
        Err(e) => err(Code::InternalError, format!("cannot render the heal status: {e}")),
    }
}

fn json(body: String) -> Response {
    let mut resp = Response::new(200);
    resp.headers.push(("content-type".into(), "application/json".into()));
    resp.body = RespBody::Bytes(body.into_bytes());
    resp
}
