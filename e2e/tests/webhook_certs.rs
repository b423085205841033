//! The webhook server in `provided` certificate mode, talked to directly over HTTPS:
//! certificate rotation without restart (replace the files, see the new certificate served),
//! HTTP/2 and HTTP/1.1, malformed reviews denied, and the admission latency over 1000 reviews.
//!
//! Certificates come from `webhook-certs/generate.sh`, which this suite thereby tests too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};
use spiderpool_e2e::controller_manager;

struct Suite {
    port: u16,
    dir: PathBuf,
}

fn generate(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook-certs/generate.sh");
    let status = std::process::Command::new(script)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running webhook-certs/generate.sh");
    assert!(status.success(), "webhook-certs/generate.sh failed");
}

fn suite() -> &'static Suite {
    static SUITE: OnceLock<Suite> = OnceLock::new();
    SUITE.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let base = std::env::var_os("SPIDERPOOL_E2E_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("webhook-certs-{}", std::process::id()));
        generate(&dir);
        Suite { port, dir }
    })
}

/// Starts the controller-manager (once per binary) serving the webhooks with the files.
fn start() -> &'static Suite {
    let suite = suite();
    let args = [
        format!("--webhook-addr=127.0.0.1:{}", suite.port),
        "--webhook-cert-mode=provided".to_string(),
        format!("--webhook-cert-dir={}", suite.dir.display()),
        "--webhook-cert-reload-interval=300ms".to_string(),
        "--webhook-configuration-name=".to_string(),
        "--enable-multus-config=false".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime
        .block_on(controller_manager(&args))
        .expect("the controller-manager is ready");
    suite
}

fn client_config(dir: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    spiderpool_e2e::install_crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.crt")).expect("ca.crt"))
        .expect("a CA certificate");
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

fn connect(suite: &Suite, alpn: &[&[u8]]) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("127.0.0.1").expect("an IP server name");
    let connection =
        ClientConnection::new(client_config(&suite.dir, alpn), name).expect("a TLS client");
    let socket =
        TcpStream::connect(("127.0.0.1", suite.port)).expect("connecting to the webhook server");
    socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Without it Nagle's algorithm and delayed ACKs add ~40 ms to every small request.
    socket.set_nodelay(true).ok();
    let mut stream = StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("the TLS handshake (the certificate must verify against ca.crt for 127.0.0.1)");
    }
    stream
}

fn served_certificate(suite: &Suite) -> Vec<u8> {
    let stream = connect(suite, &[b"http/1.1"]);
    stream.conn.peer_certificates().expect("a peer certificate")[0].to_vec()
}

fn file_certificate(dir: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(dir.join("tls.crt"))
        .expect("tls.crt")
        .to_vec()
}

/// One HTTP/1.1 POST on a keep-alive connection; returns status and body.
fn post(
    stream: &mut StreamOwned<ClientConnection, TcpStream>,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("writing the request");
    stream.write_all(body).expect("writing the request body");
    stream.flush().expect("flushing");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("the status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a content length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the response body");
    (status, body)
}

fn review(uid: &str, operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "spiderpool.spidernet.io", "version": "v2beta1", "kind": object["kind"].clone()},
            "resource": {"group": "spiderpool.spidernet.io", "version": "v2beta1", "resource": "spiderippools"},
            "name": object["metadata"]["name"].clone(),
            "operation": operation,
            "userInfo": {"username": "e2e"},
            "object": object,
            "oldObject": null,
            "dryRun": true,
        }
    }))
    .expect("a review")
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[test]
fn provided_certificates_are_rotated_without_restart() {
    let suite = start();
    let before = served_certificate(suite);
    assert_eq!(
        before,
        file_certificate(&suite.dir),
        "the served certificate is the file's"
    );
    // The server negotiates HTTP/2 when offered (the API server uses it).
    let stream = connect(suite, &[b"h2", b"http/1.1"]);
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"h2"[..]));

    generate(&suite.dir);
    let wanted = file_certificate(&suite.dir);
    assert_ne!(wanted, before, "generate.sh made a new serving certificate");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let served = served_certificate(suite);
        if served == wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 20s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn malformed_reviews_are_denied_not_crashed_on() {
    let suite = start();
    let mut stream = connect(suite, &[b"http/1.1"]);
    for body in [&b"not json"[..], b"{}", b"{\"request\": 5}"] {
        let (status, body) = post(
            &mut stream,
            "/validate-spiderpool-spidernet-io-v2beta1-spiderippool",
            body,
        );
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
        assert_eq!(answer["response"]["allowed"], json!(false), "{answer}");
        assert_eq!(answer["response"]["status"]["code"], json!(400), "{answer}");
    }
    // A review of the wrong shape for the route is denied too.
    let wrong = review(
        "u-1",
        "CREATE",
        json!({"apiVersion": "v1", "kind": "SpiderIPPool", "metadata": {"name": "x"}, "spec": {"subnet": 5}}),
    );
    let (_, body) = post(
        &mut stream,
        "/validate-spiderpool-spidernet-io-v2beta1-spiderippool",
        &wrong,
    );
    let answer: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
    assert_eq!(answer["response"]["allowed"], json!(false), "{answer}");
    assert_eq!(answer["response"]["uid"], json!("u-1"));
}

/// Direct HTTPS POSTs of AdmissionReviews (no API server in the path), over one keep-alive
/// connection, one at a time. The IPPool validation lists every pool from the API server on
/// each review (upstream's uncached read); the ReservedIP one is pure. `count` reviews per path,
/// each must be allowed; one report line per path.
fn reviews_over_one_connection(count: usize) -> Vec<String> {
    let suite = start();
    let mut stream = connect(suite, &[b"http/1.1"]);
    let mut report = Vec::new();
    for (path, object) in [
        (
            "/validate-spiderpool-spidernet-io-v2beta1-spiderippool",
            json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
                   "metadata": {"name": "latency-probe"},
                   "spec": {"ipVersion": 4, "subnet": "198.19.100.0/24", "ips": ["198.19.100.1-198.19.100.200"], "gateway": "198.19.100.254"}}),
        ),
        (
            "/mutate-spiderpool-spidernet-io-v2beta1-spiderippool",
            json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
                   "metadata": {"name": "latency-probe"},
                   "spec": {"subnet": "198.19.100.0/24", "ips": ["198.19.100.10", "198.19.100.1-198.19.100.9"]}}),
        ),
        (
            "/validate-spiderpool-spidernet-io-v2beta1-spiderreservedip",
            json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderReservedIP",
                   "metadata": {"name": "latency-probe"}, "spec": {"ipVersion": 4, "ips": ["198.19.101.1-198.19.101.9"]}}),
        ),
    ] {
        let mut durations = Vec::with_capacity(count);
        for index in 0..count {
            let body = review(&format!("uid-{index}"), "CREATE", object.clone());
            let started = Instant::now();
            let (status, answer) = post(&mut stream, path, &body);
            durations.push(started.elapsed());
            assert_eq!(status, 200);
            let answer: Value = serde_json::from_slice(&answer).expect("an AdmissionReview");
            assert_eq!(answer["response"]["allowed"], json!(true), "{answer}");
        }
        durations.sort();
        let (p50, p99) = (percentile(&durations, 0.50), percentile(&durations, 0.99));
        report.push(format!(
            "{path}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            durations[durations.len() - 1].as_secs_f64() * 1000.0
        ));
    }
    report
}

#[test]
fn repeated_reviews_over_one_connection_are_all_answered() {
    assert_eq!(reviews_over_one_connection(20).len(), 3);
}

/// Latency of 1000 direct reviews per path (`make bench`; reported, not asserted).
#[test]
#[ignore = "benchmark: run by make bench"]
fn bench_admission_latency_over_1000_reviews() {
    for line in reviews_over_one_connection(1000) {
        println!("BENCH webhook direct HTTPS review {line}");
    }
}
