//! The kubeconfig the CNI plugins use on the node: the API server address, the cluster CA and a
//! bearer token of the plugins' own ServiceAccount. Pure: built from values, written by the
//! installer's loop.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde::Serialize;

/// Name used for the cluster, user and context entries.
const ENTRY: &str = "spiderpool";

/// The API server URL a process in the host network namespace can reach, from the values
/// Kubernetes puts into every container's environment (`KUBERNETES_SERVICE_HOST`/`_PORT`), as
/// Multus does for its node kubeconfig. An explicit `override_url` wins (for clusters whose
/// Service address is not reachable from the host, i.e. without kube-proxy or an equivalent).
pub fn api_server_url(
    override_url: Option<&str>,
    host: Option<&str>,
    port: Option<&str>,
) -> Result<String, String> {
    if let Some(url) = override_url.filter(|url| !url.trim().is_empty()) {
        let url = url.trim();
        if !url.starts_with("https://") {
            return Err(format!(
                "--api-server {url:?}: expected an https:// URL of the API server"
            ));
        }
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = host.map(str::trim).filter(|host| !host.is_empty()).ok_or(
        "KUBERNETES_SERVICE_HOST is not set: run in a pod, or give --api-server".to_string(),
    )?;
    let port = port
        .map(str::trim)
        .filter(|port| !port.is_empty())
        .unwrap_or("443");
    port.parse::<u16>()
        .map_err(|_| format!("KUBERNETES_SERVICE_PORT {port:?} is not a port number"))?;
    // An IPv6 literal needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<Cluster<'a>>; 1],
    users: [Named<User<'a>>; 1],
    contexts: [Named<Context>; 1],
    current_context: &'static str,
}

#[derive(Serialize)]
struct Named<T> {
    name: &'static str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster<'a> {
    cluster: ClusterFields<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterFields<'a> {
    server: &'a str,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User<'a> {
    user: UserFields<'a>,
}

#[derive(Serialize)]
struct UserFields<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct Context {
    context: ContextFields,
}

#[derive(Serialize)]
struct ContextFields {
    cluster: &'static str,
    user: &'static str,
}

/// The kubeconfig text for `server`, the PEM bundle `ca_pem` and the bearer `token`.
pub fn render(server: &str, ca_pem: &[u8], token: &str) -> Result<String, String> {
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: ENTRY,
            value: Cluster {
                cluster: ClusterFields {
                    server,
                    certificate_authority_data: BASE64_STANDARD.encode(ca_pem),
                },
            },
        }],
        users: [Named {
            name: ENTRY,
            value: User {
                user: UserFields { token },
            },
        }],
        contexts: [Named {
            name: ENTRY,
            value: Context {
                context: ContextFields {
                    cluster: ENTRY,
                    user: ENTRY,
                },
            },
        }],
        current_context: ENTRY,
    };
    let text = serde_yaml::to_string(&config).map_err(|error| error.to_string())?;
    Ok(format!(
        "# Written by spiderpool-installer: the identity of the spiderpool CNI plugins on this node.\n\
         # Rewritten before its token expires; do not edit.\n{text}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_the_service_environment() {
        assert_eq!(
            api_server_url(None, Some("10.96.0.1"), Some("443")).unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            api_server_url(None, Some("fd00::1"), Some("6443")).unwrap(),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            api_server_url(None, Some("10.96.0.1"), None).unwrap(),
            "https://10.96.0.1:443"
        );
    }

    #[test]
    fn an_explicit_url_wins_and_must_be_https() {
        assert_eq!(
            api_server_url(Some("https://api.example:6443/"), Some("10.96.0.1"), None).unwrap(),
            "https://api.example:6443"
        );
        let error = api_server_url(Some("http://api"), None, None).unwrap_err();
        assert!(error.contains("https://"), "{error}");
    }

    #[test]
    fn missing_or_bad_environment_is_named() {
        assert!(
            api_server_url(None, None, None)
                .unwrap_err()
                .contains("KUBERNETES_SERVICE_HOST")
        );
        assert!(
            api_server_url(None, Some("10.0.0.1"), Some("https"))
                .unwrap_err()
                .contains("KUBERNETES_SERVICE_PORT")
        );
    }

    #[test]
    fn the_rendered_kubeconfig_is_read_by_kube() {
        let text = render(
            "https://10.96.0.1:443",
            b"-----BEGIN CERTIFICATE-----\n",
            "abc.def",
        )
        .unwrap();
        let parsed: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("spiderpool"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==")
        );
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.token
                .as_ref()
                .map(|token| secrecy::ExposeSecret::expose_secret(token).to_string()),
            Some("abc.def".to_string())
        );
    }
}
