//! The serving certificate: PEM files in, a rustls server configuration (ring provider) out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{Error, Result};

/// Reads the certificate chain and private key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| Error::Read {
            path: path.to_path_buf(),
            error,
        })
    };
    server_config(
        &read(cert)?,
        &cert.display().to_string(),
        &read(key)?,
        &key.display().to_string(),
    )
}

/// A server configuration from PEM text: the certificate chain (leaf first) and its key.
/// `cert_name` and `key_name` name the sources in errors. Only HTTP/1.1 is offered.
pub fn server_config(
    cert_pem: &[u8],
    cert_name: &str,
    key_pem: &[u8],
    key_name: &str,
) -> Result<Arc<ServerConfig>> {
    let pem_error = |what: &str, message: String| Error::Pem {
        what: what.to_string(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_name, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(cert_name, "no CERTIFICATE block".to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error(key_name, format!("no usable private key: {e}")))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(Error::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The serving certificate, read again from its files when they change (cert-manager and
/// kubelet rotate a mounted Secret by replacing the files): every new TLS handshake gets the
/// latest good pair, connections already open keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    not_after: Option<i64>,
    /// Modification times and sizes of the files it was read from.
    stamp: (Option<Stamp>, Option<Stamp>),
}

type Stamp = (std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// How long before `notAfter` the reloader starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

impl ReloadingCert {
    /// Reads the pair once; a server configuration that always presents the current pair.
    pub fn load(cert: &Path, key: &Path) -> Result<(Arc<ReloadingCert>, Arc<ServerConfig>)> {
        let current = read_pair(cert, key)?;
        let reloading = Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
        });
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(Error::Tls)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Resolver(reloading.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((reloading, Arc::new(config)))
    }

    /// The current leaf certificate's `notAfter` (seconds since the Unix epoch), when it
    /// could be read.
    pub fn not_after(&self) -> Option<i64> {
        read_lock(&self.current).not_after
    }

    /// Whether the current certificate has expired at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.not_after().is_some_and(|t| now > t)
    }

    /// Reads the files again if their modification time or size changed; `true` when a new
    /// pair is in use. A pair that does not load (half written, key and certificate not
    /// matching yet) is logged and the previous one kept; it is tried again next time.
    pub fn reload_if_changed(&self) -> bool {
        let seen = (stamp(&self.cert), stamp(&self.key));
        if read_lock(&self.current).stamp == seen {
            return false;
        }
        match read_pair(&self.cert, &self.key) {
            Ok(next) => {
                tracing::info!(cert = %self.cert.display(), not_after = next.not_after,
                    "serving certificate reloaded");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the serving certificate changed but does not load: keeping the previous one");
                false
            }
        }
    }

    /// Checks the files every `period` and warns (at most once an hour) while the
    /// certificate is within [`EXPIRY_WARNING`] of expiring or expired.
    pub async fn watch(self: Arc<Self>, period: Duration) {
        let mut warned: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(period).await;
            self.reload_if_changed();
            let now = unix_now();
            if let Some(not_after) = self.not_after() {
                let left = not_after - now;
                let due = warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(3600));
                if left < EXPIRY_WARNING.as_secs() as i64 && due {
                    tracing::warn!(cert = %self.cert.display(), not_after, seconds_left = left,
                        "the serving certificate expires soon or has expired: is its renewal working?");
                    warned = Some(std::time::Instant::now());
                }
            }
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        read_lock(&self.current).key.clone()
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Resolver(Arc<ReloadingCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Current> {
    let stamp = (stamp(cert), stamp(key));
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| Error::Read {
            path: path.to_path_buf(),
            error,
        })
    };
    let pem_error = |path: &Path, message: String| Error::Pem {
        what: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e.to_string()))?;
    let Some(leaf) = certs.first() else {
        return Err(pem_error(cert, "no CERTIFICATE block".to_string()));
    };
    let not_after = not_after(leaf);
    let private = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| pem_error(key, format!("no usable private key: {e}")))?;
    let key = CertifiedKey::from_der(certs, private, &rustls::crypto::ring::default_provider())
        .map_err(Error::Tls)?;
    Ok(Current {
        key: Arc::new(key),
        not_after,
        stamp,
    })
}

/// The `notAfter` of a DER certificate, seconds since the Unix epoch (RFC 5280 4.1:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }).
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, certificate, _) = der(cert)?;
    let (_, mut tbs, _) = der(certificate)?;
    // The optional explicit version.
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (_, validity, _) = der(tbs)?;
    let (_, _, rest) = der(validity)?;
    let (tag, time, _) = der(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    match tag {
        0x17 => parse_time(&format!(
            "{}{text}",
            if text[..2] < *"50" { "20" } else { "19" }
        )),
        0x18 => parse_time(text),
        _ => None,
    }
}

/// One DER element: (tag, contents, what follows).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `YYYYMMDDHHMMSSZ` as seconds since the Unix epoch.
fn parse_time(text: &str) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |range: std::ops::Range<usize>| digits[range].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}
