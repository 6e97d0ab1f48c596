//! HTTPS with `--tls-cert`/`--tls-key`: a self-signed certificate made with the `openssl` tool.

mod common;

use std::process::Command;

#[tokio::test]
async fn tls_serves_artifacts_and_refuses_plain_http_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    common::tree(&root, b"kernel-over-tls", b"i");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(out) if out.status.success() => {}
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssl unavailable: {other:?}"
            );
            eprintln!("SKIP: openssl could not make a test certificate: {other:?}");
            return;
        }
    }
    let server = common::serve(&root, |c| c.tls = Some((cert.clone(), key.clone()))).await;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/stable/x86_64/kernel",
        server.addr.port()
    );
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"kernel-over-tls");
    assert!(
        reqwest::get(server.url("/health")).await.is_err(),
        "plain HTTP answered on the TLS port"
    );
    server.stop().await;
}

#[test]
fn tls_files_without_a_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    let Err(err) = phase_provider::server::load_tls(&empty, &empty) else {
        panic!("empty PEM accepted")
    };
    assert!(
        matches!(
            err,
            phase_provider::server::ServerError::TlsEmpty {
                what: "certificate",
                ..
            }
        ),
        "{err}"
    );
}
