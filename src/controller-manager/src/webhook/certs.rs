//! Serving certificates of the webhook server.
//!
//! - `auto`: a CA and a serving certificate made with rcgen and kept in a Secret
//!   (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`, type `kubernetes.io/tls`), so every replica
//!   serves the same chain and a restart reuses it. The serving certificate is re-issued (by the
//!   same CA) when its names change or it has less than 30 days left; a new CA is made only when
//!   the Secret has none. Replicas racing to create the Secret settle on the first one written.
//! - `provided`: `tls.crt` / `tls.key` (and optionally `ca.crt`) read from a directory — a
//!   mounted Secret, e.g. cert-manager's — and reloaded when the files change, without restart.
//!
//! Private keys never leave the Secret or the directory; nothing here logs them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The common name upstream's Helm chart gives both certificates.
const COMMON_NAME: &str = "spidernet.io";
const SANS_ANNOTATION: &str = "spiderpool.spidernet.io/webhook-cert-sans";
const NOT_AFTER_ANNOTATION: &str = "spiderpool.spidernet.io/webhook-cert-not-after";
const SERVING_VALIDITY_DAYS: i64 = 365;
const CA_VALIDITY_DAYS: i64 = 3650;
const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing Secret {namespace}/{name}: {source}")]
    WriteSecret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A CA and a serving certificate signed by it, PEM encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub ca_cert: String,
    pub ca_key: Option<String>,
    pub cert: String,
    pub key: String,
    /// Unix seconds after which the serving certificate is invalid (0 when unknown).
    pub not_after: i64,
    pub sans: Vec<String>,
}

impl std::fmt::Debug for CertBundle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CertBundle")
            .field("sans", &self.sans)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The names a serving certificate needs: the Service's DNS names and the extra names (IP
/// literals become IP SANs).
pub fn service_sans(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        COMMON_NAME.to_string(),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ];
    for name in extra {
        if !name.is_empty() && !sans.contains(name) {
            sans.push(name.clone());
        }
    }
    sans
}

fn distinguished_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, COMMON_NAME);
    name
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Makes a serving certificate for `sans`, signed by the given CA or by a new one.
pub fn issue(ca: Option<(&str, &str)>, sans: &[String]) -> Result<CertBundle, CertError> {
    let (ca_cert, ca_key_pem, ca_key) = match ca {
        Some((cert, key)) => (cert.to_string(), key.to_string(), KeyPair::from_pem(key)?),
        None => {
            let key = KeyPair::generate()?;
            let mut params = ca_params();
            params.not_before = now() - time::Duration::hours(1);
            params.not_after = now() + time::Duration::days(CA_VALIDITY_DAYS);
            let cert = params.self_signed(&key)?;
            (cert.pem(), key.serialize_pem(), key)
        }
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = distinguished_name();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now() - time::Duration::hours(1);
    let not_after = now() + time::Duration::days(SERVING_VALIDITY_DAYS);
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertBundle {
        ca_cert,
        ca_key: Some(ca_key_pem),
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after: not_after.unix_timestamp(),
        sans: sans.to_vec(),
    })
}

/// Whether a stored bundle can be served for `sans` now.
pub fn reusable(bundle: &CertBundle, sans: &[String]) -> bool {
    let mut wanted = sans.to_vec();
    wanted.sort();
    let mut have = bundle.sans.clone();
    have.sort();
    wanted == have
        && bundle.not_after - now().unix_timestamp() > RENEW_BEFORE_DAYS * 86_400
        && KeyPair::from_pem(&bundle.key).is_ok()
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .filter(|text| !text.is_empty())
}

fn bundle_from_secret(secret: &Secret) -> Option<CertBundle> {
    let annotations = secret.annotations();
    Some(CertBundle {
        ca_cert: secret_text(secret, "ca.crt")?,
        ca_key: secret_text(secret, "ca.key"),
        cert: secret_text(secret, "tls.crt")?,
        key: secret_text(secret, "tls.key")?,
        not_after: annotations
            .get(NOT_AFTER_ANNOTATION)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0),
        sans: annotations
            .get(SANS_ANNOTATION)
            .map(|value| value.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

fn secret_from_bundle(name: &str, namespace: &str, bundle: &CertBundle) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        "ca.crt".to_string(),
        ByteString(bundle.ca_cert.clone().into_bytes()),
    );
    if let Some(ca_key) = &bundle.ca_key {
        data.insert(
            "ca.key".to_string(),
            ByteString(ca_key.clone().into_bytes()),
        );
    }
    data.insert(
        "tls.crt".to_string(),
        ByteString(bundle.cert.clone().into_bytes()),
    );
    data.insert(
        "tls.key".to_string(),
        ByteString(bundle.key.clone().into_bytes()),
    );
    let mut secret = Secret {
        data: Some(data),
        type_: Some("kubernetes.io/tls".to_string()),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(namespace.to_string());
    secret.metadata.annotations = Some(BTreeMap::from([
        (SANS_ANNOTATION.to_string(), bundle.sans.join(",")),
        (
            NOT_AFTER_ANNOTATION.to_string(),
            bundle.not_after.to_string(),
        ),
    ]));
    secret
}

/// `auto` mode: returns the bundle stored in the Secret, creating or renewing it as needed.
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    sans: &[String],
) -> Result<CertBundle, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read_error = |source| CertError::ReadSecret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    let write_error = |source| CertError::WriteSecret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    for _attempt in 0..5 {
        let existing = api.get_opt(name).await.map_err(read_error)?;
        let stored = existing.as_ref().and_then(bundle_from_secret);
        if let Some(bundle) = &stored
            && reusable(bundle, sans)
        {
            return Ok(bundle.clone());
        }
        let ca = stored.as_ref().and_then(|bundle| {
            bundle
                .ca_key
                .as_deref()
                .map(|key| (bundle.ca_cert.as_str(), key))
        });
        let bundle = issue(ca, sans)?;
        let mut secret = secret_from_bundle(name, namespace, &bundle);
        let written = match existing {
            None => api.create(&PostParams::default(), &secret).await,
            Some(existing) => {
                secret.metadata.resource_version = existing.metadata.resource_version.clone();
                secret.metadata.labels = existing.metadata.labels.clone();
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = name, sans = ?bundle.sans, "stored a new webhook serving certificate");
                return Ok(bundle);
            }
            // Another replica wrote first: use what it wrote.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(write_error(error)),
        }
    }
    let secret = api.get(name).await.map_err(read_error)?;
    bundle_from_secret(&secret).ok_or_else(|| {
        write_error(kube::Error::Service(
            format!("Secret {namespace}/{name} keeps changing without a usable certificate").into(),
        ))
    })
}

/// The PEM files of `provided` mode.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub dir: PathBuf,
}

/// The contents of the files, compared to notice a change.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContents {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Option<Vec<u8>>,
}

impl CertFiles {
    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub async fn read(&self) -> Result<FileContents, CertError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| CertError::ReadFile { path, source })
        };
        Ok(FileContents {
            cert: read(self.path("tls.crt")).await?,
            key: read(self.path("tls.key")).await?,
            ca: tokio::fs::read(self.path("ca.crt")).await.ok(),
        })
    }
}

/// Polls the files every `interval` and calls `on_change` with new contents that form a usable
/// certificate (a half-written pair is retried on the next tick).
pub async fn watch_files<F, Fut>(
    files: CertFiles,
    mut current: FileContents,
    interval: Duration,
    mut on_change: F,
) where
    F: FnMut(FileContents) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match files.read().await {
            Ok(contents) if contents != current => {
                if on_change(contents.clone()).await {
                    current = contents;
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the webhook certificate files"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_the_names_and_are_reused_until_they_change() {
        let sans = service_sans(
            "spiderpool-controller",
            "kube-system",
            &["127.0.0.1".to_string()],
        );
        assert!(sans.contains(&"spiderpool-controller.kube-system.svc".to_string()));
        let bundle = issue(None, &sans).unwrap();
        assert!(bundle.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.key.contains("PRIVATE KEY"));
        assert!(reusable(&bundle, &sans));
        let mut other = sans.clone();
        other.push("10.0.0.1".into());
        assert!(!reusable(&bundle, &other));
        // Re-issuing from the stored CA keeps the CA.
        let renewed = issue(
            Some((&bundle.ca_cert, bundle.ca_key.as_deref().unwrap())),
            &other,
        )
        .unwrap();
        assert_eq!(renewed.ca_cert, bundle.ca_cert);
        assert_ne!(renewed.cert, bundle.cert);
        let secret = secret_from_bundle("s", "ns", &renewed);
        assert_eq!(bundle_from_secret(&secret), Some(renewed.clone()));
        assert!(!format!("{renewed:?}").contains("PRIVATE"));
    }

    #[test]
    fn served_certificate_verifies_against_the_ca() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bundle = issue(None, &["127.0.0.1".to_string(), "svc.ns.svc".to_string()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca =
            rustls::pki_types::CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()).unwrap();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
            .build()
            .unwrap();
        let leaf =
            rustls::pki_types::CertificateDer::from_pem_slice(bundle.cert.as_bytes()).unwrap();
        for name in ["127.0.0.1", "svc.ns.svc"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &server_name,
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap();
        }
    }
}
