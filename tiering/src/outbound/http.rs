//! The outbound HTTP client every other client here uses: ureq (blocking, a pool of kept-alive
//! connections per host) over rustls with the aws-lc-rs provider. Answers are read whole (at
//! most 16 MiB); callers on an executor run requests on its blocking pool (`Client::send`).
//!
//! `https://` trusts the system's CA bundle (the file given as `system_ca_bundle`, or the usual
//! Debian/RHEL/Alpine paths) plus the PEM file `ca_file` (a private CA or a test server's
//! certificate). Redirects are not followed and no proxy is used: every call goes where it
//! was sent, so a credential never travels to a host it was not meant for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use ureq::config::AutoHeaderValue;
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A silent peer: no byte read or written for this long ends the call.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are buffered whole: control answers, and blob ranges of a few MiB. Anything
/// larger is refused.
const REPLY_BYTES_MAX: u64 = 16 << 20;

/// Where CA bundles usually are (Debian/Ubuntu/Alpine, RHEL/Fedora, others).
const SYSTEM_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// Characters escaped in URL paths, query values and form values (all but RFC 3986
/// unreserved).
pub(crate) const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A value percent-encoded for a query string or an `application/x-www-form-urlencoded` body.
pub(crate) fn form(value: &str) -> String {
    utf8_percent_encode(value, ESCAPED).to_string()
}

/// Which certificate authorities outbound TLS trusts (the binary fills it from
/// `SSL_CERT_FILE` and `FERRITE_CA_FILE`).
#[derive(Clone, Debug, Default)]
pub struct HttpSettings {
    /// The system's CA bundle, when not at one of the usual paths.
    pub system_ca_bundle: Option<PathBuf>,
    /// Extra roots: a PEM file of certificates.
    pub ca_file: Option<PathBuf>,
}

/// A transport failure: no connection, TLS refused, a timeout, a malformed or oversized
/// answer. Any HTTP status is a [`Reply`] instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(String);

/// An absolute http:// or https:// URL, split for connecting.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url}: only http:// and https:// URLs are supported"));
        };
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url}: bad IPv6 address"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p}"))?,
            None if tls => 443,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Url { tls, host: host.to_owned(), port, target: target.to_owned() })
    }

    /// The same server with another path and query (which must start with '/').
    pub fn with_target(&self, target: String) -> Url {
        Url { target, ..self.clone() }
    }

    /// The URL without its path, as written: scheme://host[:port].
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// Whether the host is this machine (plain http is allowed there for credentials).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn full(&self) -> String {
        format!("{}{}", self.origin(), self.target)
    }
}

/// A whole answer: status, headers (names lower-case), body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as the JSON document `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The outbound client: cheap to clone (the connection pool is shared by the clones).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// Why https cannot be used (no CA certificate could be loaded); plain http still works.
    tls_problem: Option<Arc<str>>,
}

impl Client {
    /// A client trusting the CAs of `settings`. A CA problem does not fail here: it is the
    /// answer to every https request, so a server that makes none starts anyway.
    pub fn new(settings: &HttpSettings) -> Client {
        let (roots, tls_problem) =
            match root_certificates(settings.system_ca_bundle.as_deref(), settings.ca_file.as_deref()) {
                Ok(roots) => (roots, None),
                Err(why) => (Vec::new(), Some(Arc::from(why))),
            };
        let roots: Vec<ureq::tls::Certificate<'static>> =
            roots.iter().map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()).collect();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .user_agent(AutoHeaderValue::None)
            .accept(AutoHeaderValue::None)
            .accept_encoding(AutoHeaderValue::None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(IO_TIMEOUT))
            .timeout_per_write(Some(IO_TIMEOUT))
            .build();
        Client { agent: config.new_agent(), tls_problem }
    }

    /// One request (blocking). Any status is an Ok reply; Err is a transport failure.
    pub fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, TransportError> {
        if let (true, Some(why)) = (url.tls, &self.tls_problem) {
            return Err(TransportError(why.to_string()));
        }
        let failed = |e: &dyn std::fmt::Display| TransportError(format!("{}: {e}", url.origin()));
        let mut builder = ureq::http::Request::builder().method(method).uri(url.full());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        // A request without a body says nothing about one; any other carries Content-Length
        // (PUT with an empty body included: Azure refuses a PUT without it).
        let no_body = body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE");
        let answer = if no_body {
            builder.body(ureq::SendBody::none()).map_err(|e| failed(&e)).and_then(|r| self.run(r, &failed))
        } else {
            builder.body(body).map_err(|e| failed(&e)).and_then(|r| self.run(r, &failed))
        };
        let mut answer = answer?;
        let status = answer.status().as_u16();
        let headers = answer
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).trim().to_owned()))
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            answer.body_mut().with_config().limit(REPLY_BYTES_MAX).read_to_vec().map_err(|e| failed(&e))?
        };
        Ok(Reply { status, headers, body })
    }

    fn run(
        &self,
        request: ureq::http::Request<impl ureq::AsSendBody>,
        failed: &dyn Fn(&dyn std::fmt::Display) -> TransportError,
    ) -> Result<ureq::http::Response<ureq::Body>, TransportError> {
        self.agent.run(request).map_err(|e| failed(&e))
    }

    /// [`Client::request`] on the executor's blocking pool, for callers on an executor.
    pub async fn send(
        &self,
        method: &'static str,
        url: Url,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Reply, TransportError> {
        let client = self.clone();
        let job = move || {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            client.request(method, &url, &headers, &body)
        };
        match monoio::spawn_blocking(job).await {
            Ok(result) => result,
            Err(_) => Err(TransportError("the request was cancelled".into())),
        }
    }
}

/// The trusted roots: the system's CA bundle (`system_bundle`, or the first of the usual
/// paths that exists) and the certificates in the PEM file `extra_ca`, if given.
pub fn root_certificates(
    system_bundle: Option<&Path>,
    extra_ca: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots: Vec<CertificateDer<'static>> = Vec::new();
    let system =
        system_bundle.map(Path::to_path_buf).or_else(|| SYSTEM_BUNDLES.iter().map(PathBuf::from).find(|p| p.exists()));
    if let Some(path) = system {
        if let Ok(certs) = CertificateDer::pem_file_iter(&path) {
            roots.extend(certs.flatten());
        }
    }
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect())
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        let mut store = rustls::RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(format!("CA file {}: no usable certificate", path.display()));
        }
        roots.extend(certs);
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates: install ca-certificates or give a CA file".into());
    }
    Ok(roots)
}

/// A rustls client configuration (aws-lc-rs) trusting what [`root_certificates`] loads, for
/// clients that speak TLS themselves (`ferrite bench --ca`).
pub fn client_tls_config(
    system_bundle: Option<&Path>,
    extra_ca: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(root_certificates(system_bundle, extra_ca)?);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_target() {
        let u = Url::parse("https://vault.example:8200/v1/transit?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (true, "vault.example", 8200, "/v1/transit?x=1")
        );
        assert_eq!(u.origin(), "https://vault.example:8200");
        assert_eq!(u.full(), "https://vault.example:8200/v1/transit?x=1");
        let u = Url::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.target.as_str(), u.origin().as_str()), (80, "/", "http://127.0.0.1"));
        assert!(u.is_loopback());
        let u = Url::parse("https://[::1]:9000/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.origin().as_str()), ("::1", 9000, "https://[::1]:9000"));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://x:port/").is_err());
        assert!(Url::parse("https:///path").is_err());
        assert_eq!(Url::parse("http://[::1]").unwrap().port, 80);
    }

    #[test]
    fn a_missing_ca_file_is_the_answer_to_https_requests_only() {
        let settings = HttpSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..HttpSettings::default() };
        let client = Client::new(&settings);
        let url = Url::parse("https://127.0.0.1:1/").unwrap();
        let err = client.request("GET", &url, &[], b"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let url = Url::parse("http://127.0.0.1:1/").unwrap();
        assert!(client.request("GET", &url, &[], b"").is_err(), "nothing listens on port 1");
    }
}
