//! `ferrite admin heal | kms-rewrap | tier | lifecycle`: the admin API
//! (s3-front/src/admin.rs) from the command line, signed with the root credentials.

use std::time::Duration;

use ferrite_tiering::tiers::TierSpec;

use crate::bench::Conn;

const USAGE: &str = "usage: ferrite admin heal [--endpoint URL] [--status] [--wait] [--rate-mib N]
       ferrite admin kms-rewrap [--endpoint URL]
       ferrite admin tier ls [--endpoint URL]
       ferrite admin tier add NAME --azure-endpoint URL --account A --container C
                              [--prefix P] [--access-tier Hot|Cool|Cold]
                              (--account-key KEY | --sas TOKEN | --identity) [--force]
                              [--endpoint URL]
       ferrite admin tier edit NAME (--account-key KEY | --sas TOKEN | --identity) [--endpoint URL]
       ferrite admin tier rm NAME [--endpoint URL]
       ferrite admin lifecycle [run] [--endpoint URL]

  --endpoint URL   the server (default http://127.0.0.1:9000)
  --status         only show the status; do not start a heal
  --wait           follow the heal until it is done, printing progress every second
  --rate-mib N     read at most N MiB/s per core while healing (0: unlimited)

credentials: FERRITE_ROOT_USER / FERRITE_ROOT_PASSWORD (default ferriteadmin / ferriteadmin).
heal: prints the status as JSON; exits 1 when blocks were found unrecoverable or a drive
is offline.
kms-rewrap: after rotating a key in the KMS, re-seals every SSE-S3/SSE-KMS object key under
its newest version without rewriting data; prints what it did; exits 1 when some failed.
tier: remote tiers (Azure Blob containers) that lifecycle rules move objects to (the key or SAS
may come from FERRITE_TIER_ACCOUNT_KEY / FERRITE_TIER_SAS instead of the command line;
--identity signs in with the server's own Entra ID identity: AKS workload identity, a managed
identity, or AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET); adding one
checks it with a test write, read and delete, and refuses a container that holds data unless
--force. lifecycle: what the lifecycle passes did; `run` runs one now.";

const PATH: &str = "/ferrite/admin/v1/heal";

/// Returns false when the heal found unrecoverable blocks.
pub fn run(args: &[String]) -> Result<bool, String> {
    match args.first().map(String::as_str) {
        Some("heal") => heal(&args[1..]),
        Some("kms-rewrap") => kms_rewrap(&args[1..]),
        Some("tier") => tier(&args[1..]),
        Some("lifecycle") => lifecycle(&args[1..]),
        _ => Err(USAGE.to_owned()),
    }
}

/// The endpoint (--endpoint, default local) and a signed connection with the root credentials.
fn connect(endpoint: &str) -> Result<Conn, String> {
    if endpoint.starts_with("https://") {
        return Err("ferrite admin speaks plain HTTP only so far; use the http:// endpoint".into());
    }
    let user = std::env::var("FERRITE_ROOT_USER").unwrap_or_else(|_| "ferriteadmin".into());
    let password = std::env::var("FERRITE_ROOT_PASSWORD").unwrap_or_else(|_| "ferriteadmin".into());
    Ok(Conn::with_credentials(endpoint, &user, &password))
}

fn kms_rewrap(args: &[String]) -> Result<bool, String> {
    let endpoint = match args {
        [] => "http://127.0.0.1:9000".to_owned(),
        [flag, url] if flag == "--endpoint" => url.clone(),
        _ => return Err(USAGE.to_owned()),
    };
    let mut conn = connect(&endpoint)?;
    let reply = conn
        .call("POST", "/ferrite/admin/v1/kms/rewrap", "", &[], &[], true)
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    if reply.status != 200 {
        return Err(format!("{endpoint}: HTTP {}: {body}", reply.status));
    }
    println!("{body}");
    let report: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{endpoint}: {e}: {body}"))?;
    Ok(report.get("failed").and_then(serde_json::Value::as_u64) == Some(0))
}

/// Positional words, and flags as (name, value) pairs.
type Parsed = (Vec<String>, Vec<(String, String)>);

/// Splits arguments into words and flags; `--force` takes no value.
fn flags(args: &[String]) -> Result<Parsed, String> {
    let (mut words, mut pairs) = (Vec::new(), Vec::new());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.strip_prefix("--") {
            Some(flag @ ("force" | "identity")) => pairs.push((flag.to_owned(), "true".to_owned())),
            Some(name) => {
                let value = rest.next().ok_or_else(|| format!("--{name} needs a value"))?;
                pairs.push((name.to_owned(), value.clone()));
            }
            None => words.push(arg.clone()),
        }
    }
    Ok((words, pairs))
}

/// One admin call; prints the answer; Err unless it is 2xx.
fn admin_call(endpoint: &str, method: &str, path: &str, query: &str, body: &str) -> Result<bool, String> {
    let mut conn = connect(endpoint)?;
    let reply = conn.call(method, path, query, &[], body.as_bytes(), true).map_err(|e| format!("{endpoint}: {e}"))?;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    if !(200..300).contains(&reply.status) {
        return Err(format!("{endpoint}: HTTP {}: {text}", reply.status));
    }
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(true)
}

fn tier(args: &[String]) -> Result<bool, String> {
    let (words, pairs) = flags(args)?;
    let get = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let endpoint = get("endpoint").unwrap_or("http://127.0.0.1:9000");
    let body = || {
        // Secrets can come from the environment, out of argv and shell history.
        let secret = |flag: &str, var: &str| {
            get(flag).map(str::to_owned).or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
        };
        let spec = TierSpec {
            endpoint: get("azure-endpoint").map(str::to_owned),
            account: get("account").map(str::to_owned),
            container: get("container").map(str::to_owned),
            prefix: get("prefix").map(str::to_owned),
            access_tier: get("access-tier").map(str::to_owned),
            account_key: secret("account-key", "FERRITE_TIER_ACCOUNT_KEY"),
            sas: secret("sas", "FERRITE_TIER_SAS"),
            identity: get("identity").map(|v| serde_json::Value::String(v.to_owned())),
        };
        serde_json::to_string(&spec).unwrap_or_default()
    };
    let path = |name: &str| format!("/ferrite/admin/v1/tier/{name}");
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["ls"] => admin_call(endpoint, "GET", "/ferrite/admin/v1/tier", "", ""),
        ["add", name] => {
            let query = if get("force").is_some() { "force=true" } else { "" };
            admin_call(endpoint, "PUT", &path(name), query, &body())
        }
        ["edit", name] => admin_call(endpoint, "POST", &path(name), "", &body()),
        ["rm", name] => admin_call(endpoint, "DELETE", &path(name), "", ""),
        _ => Err(USAGE.to_owned()),
    }
}

fn lifecycle(args: &[String]) -> Result<bool, String> {
    let (words, pairs) = flags(args)?;
    let endpoint = pairs.iter().find(|(n, _)| n == "endpoint").map_or("http://127.0.0.1:9000", |(_, v)| v.as_str());
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => admin_call(endpoint, "GET", "/ferrite/admin/v1/lifecycle", "", ""),
        ["run"] => admin_call(endpoint, "POST", "/ferrite/admin/v1/lifecycle/run", "", ""),
        _ => Err(USAGE.to_owned()),
    }
}

fn heal(args: &[String]) -> Result<bool, String> {
    let mut endpoint = "http://127.0.0.1:9000".to_owned();
    let (mut status_only, mut wait, mut rate) = (false, false, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--endpoint" => endpoint = rest.next().ok_or("--endpoint needs a URL")?.clone(),
            "--status" => status_only = true,
            "--wait" => wait = true,
            "--rate-mib" => {
                let value = rest.next().ok_or("--rate-mib needs a number")?;
                rate = Some(value.parse::<u64>().map_err(|_| "--rate-mib must be a number")?);
            }
            _ => return Err(USAGE.to_owned()),
        }
    }
    let mut conn = connect(&endpoint)?;
    let mut call = |method: &str, query: &str| -> Result<String, String> {
        let reply = conn.call(method, PATH, query, &[], &[], true).map_err(|e| format!("{endpoint}: {e}"))?;
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        if reply.status != 200 {
            return Err(format!("{endpoint}: HTTP {}: {body}", reply.status));
        }
        Ok(body)
    };
    let mut status = if status_only {
        call("GET", "")?
    } else {
        call("POST", &rate.map(|r| format!("rate-mib={r}")).unwrap_or_default())?
    };
    if wait {
        // The cores pick the request up within a fraction of a second.
        std::thread::sleep(Duration::from_millis(300));
        loop {
            status = call("GET", "")?;
            if !status.contains("\"state\":\"running\"") {
                break;
            }
            eprintln!("{}", progress_line(&status));
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    println!("{status}");
    let offline = status.matches("\"online\":false").count();
    if offline > 0 {
        eprintln!("ferrite admin heal: {offline} drive(s) offline: the heal could not rebuild them");
    }
    Ok(heal_field(&status, "blocks_unrecoverable") == "0" && offline == 0)
}

/// One numeric field of the status's heal section (the JSON is flat and ours).
fn heal_field(status: &str, name: &str) -> String {
    let heal = status.split("\"scanner\":").next().unwrap_or(status);
    let pattern = format!("\"{name}\":");
    heal.split(&pattern).nth(1).map(|rest| rest.split([',', '}']).next().unwrap_or("").to_owned()).unwrap_or_default()
}

/// "objects 120/400, 1.2 GiB/3.0 GiB, 14 shards repaired, eta 9.5 s" from the status JSON.
fn progress_line(status: &str) -> String {
    let field = |name: &str| heal_field(status, name);
    format!(
        "heal: objects {}/{}, bytes {}/{}, {} shards and {} log records repaired, eta {} s",
        field("objects_done"),
        field("objects_total"),
        field("bytes_done"),
        field("bytes_total"),
        field("shards_repaired"),
        field("log_records_repaired"),
        field("eta_secs")
    )
}
