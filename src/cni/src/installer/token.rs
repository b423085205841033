//! The plugins' bearer token: minted with the TokenRequest API for the plugins' ServiceAccount,
//! bound to the node, and renewed at half its lifetime.
//!
//! Why not the installer pod's own projected token, as Multus does: a projected token is bound
//! to its pod and dies the moment that pod is deleted, so every installer restart or rolling
//! update would leave the node with a dead kubeconfig (every ADD and DEL failing) until the new
//! pod writes another one. A token bound to the Node lives until it expires or the node is
//! deleted, whatever happens to the installer pod, and it carries the plugins' identity
//! (`spiderpool-cni`), not the installer's.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

/// The API server refuses shorter tokens (TokenRequest validation: at least 10 minutes).
pub const MINIMUM_LIFETIME: Duration = Duration::from_secs(600);

/// A token and its validity.
#[derive(Clone)]
pub struct Minted {
    pub token: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        formatter
            .debug_struct("Minted")
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Minted {
    /// When the token should be replaced: at half its lifetime, so a failing renewal has the
    /// other half to succeed before any plugin call sees an expired token.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .expires
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        self.issued + lifetime / 2
    }

    /// Whether the token is still valid at `now` with `margin` to spare.
    pub fn valid_at(&self, now: SystemTime, margin: Duration) -> bool {
        now + margin < self.expires
    }
}

/// Mints a token for `namespace/account` valid for `lifetime`, bound to the Node `node` when
/// given (the API server then also ends it when the node object is deleted).
pub async fn mint(
    client: &Client,
    namespace: &str,
    account: &str,
    lifetime: Duration,
    node: Option<&str>,
) -> Result<Minted, String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // Empty: the API server's own audiences, which is what it accepts from clients.
            audiences: None,
            expiration_seconds: Some(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
            bound_object_ref: node.map(|name| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(name.to_string()),
                uid: None,
            }),
        }),
        ..TokenRequest::default()
    };
    let issued = SystemTime::now();
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|error| {
            format!("TokenRequest for ServiceAccount {namespace}/{account}: {error}")
        })?;
    let incomplete = || {
        format!(
            "TokenRequest for ServiceAccount {namespace}/{account}: the answer has no token or expiry"
        )
    };
    let status = answer.status.ok_or_else(incomplete)?;
    let token = status
        .token
        .filter(|token| !token.is_empty())
        .ok_or_else(incomplete)?;
    // The API server may shorten the lifetime (--service-account-max-token-expiration): trust
    // the expiry it reports, not the one asked for.
    let expiry = status
        .expiration_timestamp
        .ok_or_else(incomplete)?
        .0
        .as_second();
    let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(expiry).unwrap_or(0));
    Ok(Minted {
        token,
        issued,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted(issued: u64, expires: u64) -> Minted {
        Minted {
            token: "secret".into(),
            issued: SystemTime::UNIX_EPOCH + Duration::from_secs(issued),
            expires: SystemTime::UNIX_EPOCH + Duration::from_secs(expires),
        }
    }

    #[test]
    fn renewal_is_due_at_half_the_lifetime() {
        assert_eq!(
            minted(1000, 4600).renew_at(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(2800)
        );
    }

    #[test]
    fn an_expiry_before_issue_means_renew_at_once() {
        assert_eq!(
            minted(1000, 900).renew_at(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1000)
        );
    }

    #[test]
    fn validity_keeps_a_margin() {
        let token = minted(0, 600);
        let at = |seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
        assert!(token.valid_at(at(500), Duration::from_secs(60)));
        assert!(!token.valid_at(at(550), Duration::from_secs(60)));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        assert!(!format!("{:?}", minted(0, 1)).contains("secret"));
    }
}
