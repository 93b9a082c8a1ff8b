//! The HTTPS client that calls conversion webhooks: one POST per call on a fresh connection,
//! rustls (ring provider) verifying the server against the CRD's `caBundle` only (no system
//! roots), HTTP/1.1 through hyper, the whole call bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The largest webhook answer read.
const MAX_RESPONSE: usize = 64 << 20;

/// Where and how to POST.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// What to connect to: `ip:port` or `host:port`.
    pub connect: String,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
    /// `Host` header.
    pub authority: String,
    /// Path and query of the request.
    pub path_and_query: String,
}

impl Endpoint {
    /// The URL as shown in error messages.
    pub fn url(&self) -> String {
        format!("https://{}{}", self.authority, self.path_and_query)
    }
}

/// POSTs `body` as JSON and returns the answer's body. Errors read like Go's HTTP client's,
/// prefixed with `Post "URL": `.
pub async fn post_json(
    endpoint: &Endpoint,
    ca_pem: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let call = post_inner(endpoint, ca_pem, body);
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("Post \"{}\": {e}", endpoint.url())),
        Err(_) => Err(format!(
            "Post \"{}\": context deadline exceeded (no answer within {} s)",
            endpoint.url(),
            timeout.as_secs_f32()
        )),
    }
}

fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("invalid caBundle certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn post_inner(endpoint: &Endpoint, ca_pem: &[u8], body: Vec<u8>) -> Result<Vec<u8>, String> {
    let config = tls_config(ca_pem)?;
    let name = endpoint
        .server_name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name =
        ServerName::try_from(name).map_err(|e| format!("invalid server name: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(endpoint.connect.as_str())
        .await
        .map_err(|e| format!("dial tcp {}: {e}", endpoint.connect))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::post(endpoint.path_and_query.as_str())
        .header(header::HOST, endpoint.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building request: {e}"))?;
    let answer = sender.send_request(request).await;
    let result = match answer {
        Err(e) => Err(format!("{e}")),
        Ok(response) => {
            let status = response.status();
            let limited = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE);
            match limited.collect().await {
                Err(e) => Err(format!("reading the answer: {e}")),
                Ok(collected) => {
                    let bytes = collected.to_bytes().to_vec();
                    if status.is_success() {
                        Ok(bytes)
                    } else {
                        let text = String::from_utf8_lossy(&bytes);
                        let text: String = text.chars().take(512).collect();
                        Err(format!(
                            "the server responded with the status code {} ({text:?})",
                            status.as_u16()
                        ))
                    }
                }
            }
        }
    };
    drop(sender);
    conn.abort();
    result
}
