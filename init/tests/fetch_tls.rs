//! HTTPS with an operator's private CA (issue 5 "HTTPS: rustls with webpki roots, plus
//! `--ca-file`"): a TLS front on 127.0.0.1 whose certificate is issued by a CA made for the
//! test with the `openssl` tool, relaying to the plain test server. With the CA file the release
//! fetches and verifies; without it the TLS handshake is refused and nothing reaches the output
//! directory.

mod fetch_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fetch_support::{data, listing, Behaviour, Server, Signer};
use phase_init::fetch::{fetch_release, FetchOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const MANIFEST: &str = "/stable/x86_64/manifest.json";

/// Makes `ca.pem` and a leaf `leaf.pem`/`leaf.key` for IP 127.0.0.1 signed by it; `None` (with
/// a SKIP line) if the openssl tool is missing and this is not CI.
fn make_pki(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl tool missing in CI"
        );
        eprintln!("SKIP fetch_tls: no openssl tool");
        return None;
    }
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Phase Test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    Some((
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    ))
}

/// A TLS listener on 127.0.0.1 relaying each connection to `backend`; returns its https base.
async fn tls_front(cert: &Path, key: &Path, backend: std::net::SocketAddr) -> String {
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://{addr}")
}

struct Setup {
    _pki: tempfile::TempDir,
    _server: Server,
    ca: PathBuf,
    base: String,
    signer: Signer,
    kernel: Arc<Vec<u8>>,
}

async fn setup() -> Option<Setup> {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki(pki.path())?;
    let server = Server::start().await;
    let signer = Signer::new();
    let kernel = data(200_000, 7);
    let initramfs = data(5_000, 8);
    let manifest = signer.manifest(
        "1.0.0",
        "x86_64",
        &[
            ("kernel", &kernel, vec![]),
            ("initramfs", &initramfs, vec![]),
        ],
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(manifest)));
    server.route("/stable/x86_64/kernel", Behaviour::Serve(kernel.clone()));
    server.route("/stable/x86_64/initramfs", Behaviour::Serve(initramfs));
    let base = tls_front(&cert, &key, server.addr).await;
    Some(Setup {
        _pki: pki,
        _server: server,
        ca,
        base,
        signer,
        kernel,
    })
}

fn options(s: &Setup, out: &Path) -> FetchOptions {
    let mut opts = FetchOptions::new(s.signer.trust.clone(), out.to_owned());
    opts.retries = 1;
    opts.backoff = std::time::Duration::from_millis(10);
    opts.progress = false;
    opts
}

#[tokio::test]
async fn https_with_private_ca_file_fetches_and_verifies() {
    let Some(s) = setup().await else { return };
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(&s, out.path());
    opts.ca_file = Some(s.ca.clone());
    let r = fetch_release(&format!("{}{MANIFEST}", s.base), &opts)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&r.artifacts["kernel"].path).unwrap(),
        *s.kernel
    );
}

#[tokio::test]
async fn https_without_the_private_ca_is_refused_and_writes_nothing() {
    let Some(s) = setup().await else { return };
    let out = tempfile::tempdir().unwrap();
    let opts = options(&s, out.path());
    let err = fetch_release(&format!("{}{MANIFEST}", s.base), &opts)
        .await
        .unwrap_err();
    let chain = phase_init::log::error_chain(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
}
