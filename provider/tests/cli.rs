//! CLI round trips with the built `plasmd` binary: keygen, manifest build, sign, verify, tamper,
//! verify fails; `serve` answering `/health` and `provider status|list` against it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn plasmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plasmd"))
        .args(args)
        .env("PLASMD_LOG", "warn")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_build_sign_verify_then_tampered_manifest_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("rel");
    std::fs::create_dir(&rel).unwrap();
    std::fs::write(rel.join("kernel"), b"kernel").unwrap();
    std::fs::write(rel.join("initramfs"), b"initramfs").unwrap();
    std::fs::write(rel.join("rootfs"), b"rootfs").unwrap();
    let key = dir.path().join("dev.key");

    let out = plasmd(&["keygen", "--out", s(&key)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(dir.path().join("dev.key.pub")).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(public.trim()) && stdout.contains("threshold = 1"),
        "{stdout}"
    );
    // The printed snippet is a usable trust file.
    let trust = dir.path().join("trust.toml");
    std::fs::write(
        &trust,
        format!("threshold = 1\nkeys = [\"{}\"]\n", public.trim()),
    )
    .unwrap();
    // keygen refuses to overwrite a key.
    assert!(!plasmd(&["keygen", "--out", s(&key)]).status.success());

    let unsigned = dir.path().join("unsigned.json");
    let out = plasmd(&[
        "manifest",
        "build",
        "--artifacts",
        s(&rel),
        "--channel",
        "stable",
        "--arch",
        "amd64",
        "--version",
        "0.1.0",
        "--expires-in",
        "30d",
        "--cmdline",
        "console=ttyS0",
        "--out",
        s(&unsigned),
    ]);
    assert!(out.status.success(), "{out:?}");
    let manifest = dir.path().join("manifest.json");
    let out = plasmd(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&unsigned),
        "--out",
        s(&manifest),
    ]);
    assert!(out.status.success(), "{out:?}");

    let out = plasmd(&[
        "manifest",
        "verify",
        "--trust",
        s(&trust),
        s(&manifest),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
    ]);
    let report = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        report.contains("VALID") && report.contains("rootfs") && report.contains("0.1.0"),
        "{report}"
    );

    // Unsigned: refused with the reason.
    let out = plasmd(&["manifest", "verify", "--trust", s(&trust), s(&unsigned)]);
    assert_eq!(out.status.code(), Some(1));
    // Wrong channel: refused.
    let out = plasmd(&[
        "manifest",
        "verify",
        "--trust",
        s(&trust),
        s(&manifest),
        "--channel",
        "beta",
    ]);
    assert_eq!(out.status.code(), Some(1));

    // Tamper with the cmdline: the signature no longer holds.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("console=ttyS0", "console=ttyS0 init=/bin/sh"),
    )
    .unwrap();
    let out = plasmd(&["manifest", "verify", "--trust", s(&trust), s(&manifest)]);
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("REFUSED") && report.contains("bad signature"),
        "{report}"
    );

    // Usage errors exit 2.
    let out = plasmd(&[
        "manifest",
        "verify",
        "--trust",
        s(&dir.path().join("missing.toml")),
        s(&manifest),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = plasmd(&["manifest", "verify"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn manifest_build_without_a_kernel_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("initramfs"), b"i").unwrap();
    let out = plasmd(&[
        "manifest",
        "build",
        "--artifacts",
        s(dir.path()),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
        "--version",
        "0.1.0",
        "--expires-in",
        "1d",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel"));
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` (`-HUP`, `-TERM`) to the plasmd this test started, by its PID.
fn send_signal(child: &Child, sig: &str) {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// A `stable/x86_64` release without a manifest under `root`, a key made by `plasmd keygen`
/// (`root/k`, `root/k.pub`) and a free port for `plasmd serve`: (key path, port).
fn keyed_tree(root: &Path) -> (std::path::PathBuf, u16) {
    let rel = root.join("stable/x86_64");
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::write(rel.join("kernel"), b"kernel").unwrap();
    std::fs::write(rel.join("initramfs"), b"initramfs").unwrap();
    let key = root.join("k");
    assert!(plasmd(&["keygen", "--out", s(&key)]).status.success());
    // Pick a free port, then hand it to plasmd.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (key, port)
}

/// `plasmd serve -a root --key key` on 127.0.0.1:`port` without mDNS and DHT, plus `extra`
/// flags; killed when dropped.
fn serve_keyed(root: &Path, key: &Path, port: u16, extra: &[&str]) -> Child {
    Child(
        Command::new(env!("CARGO_BIN_EXE_plasmd"))
            .args(["serve", "-a", s(root), "-b", "127.0.0.1"])
            .args(["-p", &port.to_string(), "--no-dht", "--no-mdns"])
            .args(["--key", s(key)])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn serve_with_key_generates_a_manifest_and_provider_commands_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key, port) = keyed_tree(dir.path());
    let child = serve_keyed(dir.path(), &key, port, &["--release-version", "2.0.0"]);
    let addr = format!("http://127.0.0.1:{port}");
    let mut listed = String::new();
    for _ in 0..100 {
        let out = plasmd(&["provider", "list", "-a", &addr]);
        listed = String::from_utf8_lossy(&out.stdout).into_owned();
        if listed.contains("version 2.0.0") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        listed.contains("stable/x86_64  version 2.0.0") && listed.contains("kernel"),
        "{listed}"
    );
    let out = plasmd(&["provider", "status", "-a", &addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("health     200 ok"),
        "{text}"
    );
    let out = plasmd(&["provider", "status", "--json", "-a", &addr]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["requests"].as_u64().unwrap() > 0);

    // SIGTERM: a clean exit (status 0) within a bounded time.
    let mut child = child;
    send_signal(&child, "-TERM");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(st) = child.0.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = exited.expect("plasmd did not exit within 5 s of SIGTERM");
    assert!(st.success(), "{st:?}");
}

/// GET `path` from 127.0.0.1:`port` over a raw socket: `Ok(body)` of a 200 answer, or
/// `Err(whole answer)` of any other.
fn get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) if out.starts_with(b"HTTP/1.1 200") => Ok(out.split_off(at + 4)),
        _ => Err(String::from_utf8_lossy(&out).into_owned()),
    }
}

/// The body of a 200 answer to GET `path`; panics with the answer on any other.
fn get_body(port: u16, path: &str) -> Vec<u8> {
    get(port, path).unwrap_or_else(|answer| panic!("{answer}"))
}

/// The manifest a `plasmd serve --key` on `port` generated, once it is served (within 10 s).
fn generated_manifest(port: u16) -> Vec<u8> {
    let addr = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        // The list can answer while the manifest is still being generated (503, "retry
        // shortly"): only a 200 ends the wait.
        if plasmd(&["provider", "list", "-a", &addr]).status.success() {
            if let Ok(body) = get(port, "/stable/x86_64/manifest.json") {
                if body.starts_with(b"{") {
                    return body;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no generated manifest within 10 s");
}

/// `artifacts.<name>.hash` of a manifest.
fn artifact_hash(manifest: &[u8], name: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["artifacts"][name]["hash"].as_str().unwrap().to_owned()
}

#[test]
fn serve_reloads_its_artifacts_on_sighup_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (key, port) = keyed_tree(dir.path());
    let mut child = serve_keyed(dir.path(), &key, port, &[]);
    let first = generated_manifest(port);
    let sha = |b: &[u8]| format!("sha256:{}", phase_protocol::Sha256Digest::of(b).hex());
    assert_eq!(artifact_hash(&first, "kernel"), sha(b"kernel"));
    // A new kernel is not served until the operator says so.
    std::fs::write(dir.path().join("stable/x86_64/kernel"), b"kernel, take two").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get_body(port, "/stable/x86_64/manifest.json"), first);
    send_signal(&child, "-HUP");
    let mut now = first.clone();
    for _ in 0..100 {
        // A 503 while the reload hashes the artifacts is retried like an unchanged manifest.
        now = get(port, "/stable/x86_64/manifest.json").unwrap_or_else(|_| first.clone());
        if now != first {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(artifact_hash(&now, "kernel"), sha(b"kernel, take two"));
    assert_eq!(get_body(port, "/stable/x86_64/kernel"), b"kernel, take two");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "plasmd exited on SIGHUP"
    );
}

#[test]
fn serve_with_key_signs_its_manifest_again_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (key, port) = keyed_tree(dir.path());
    let pubkey = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    let trust = dir.path().join("trust.toml");
    std::fs::write(
        &trust,
        format!("threshold = 1\nkeys = [\"{}\"]\n", pubkey.trim()),
    )
    .unwrap();
    let _child = serve_keyed(dir.path(), &key, port, &["--expires-in", "4s"]);
    let manifest = "/stable/x86_64/manifest.json";
    let first = generated_manifest(port);
    // Half of 4 s is 2 s, checked every second: a new signature within about 3 s.
    let mut second = first.clone();
    for _ in 0..80 {
        std::thread::sleep(Duration::from_millis(100));
        second = get(port, manifest).unwrap_or_else(|_| first.clone());
        if second != first {
            break;
        }
    }
    assert_ne!(second, first, "manifest not signed again within 8 s");
    let created = |b: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v["created_at"].as_str().unwrap().to_owned()
    };
    assert!(created(&second) > created(&first), "created_at moved on");
    let path = dir.path().join("second.json");
    std::fs::write(&path, &second).unwrap();
    let out = plasmd(&["manifest", "verify", "--trust", s(&trust), s(&path)]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn v2_manifest_verify_with_artifacts_names_the_chunk_a_changed_file_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("rel");
    std::fs::create_dir(&rel).unwrap();
    let rootfs: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(rel.join("kernel"), b"kernel").unwrap();
    std::fs::write(rel.join("initramfs"), b"initramfs").unwrap();
    std::fs::write(rel.join("rootfs"), &rootfs).unwrap();
    let key = dir.path().join("k");
    assert!(plasmd(&["keygen", "--out", s(&key)]).status.success());
    let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    let trust = dir.path().join("trust.toml");
    std::fs::write(
        &trust,
        format!("threshold = 1\nkeys = [\"{}\"]\n", public.trim()),
    )
    .unwrap();
    let unsigned = dir.path().join("unsigned.json");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "manifest",
            "build",
            "--artifacts",
            s(&rel),
            "--channel",
            "stable",
            "--arch",
            "x86_64",
            "--version",
            "1.0.0",
            "--expires-in",
            "1d",
            "--out",
            s(&unsigned),
        ];
        args.extend_from_slice(extra);
        plasmd(&args)
    };
    // Chunk sizes outside the rules are usage errors.
    for bad in ["1000", "32K", "32M", "1G", "x"] {
        assert_eq!(
            build(&["--chunk-size", bad]).status.code(),
            Some(2),
            "{bad}"
        );
    }
    assert_eq!(
        build(&["--manifest-version", "1", "--chunk-size", "64K"])
            .status
            .code(),
        Some(2)
    );
    assert!(build(&["--chunk-size", "64K"]).status.success());
    let manifest = rel.join("manifest.json");
    let out = plasmd(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&unsigned),
        "--out",
        s(&manifest),
    ]);
    assert!(out.status.success(), "{out:?}");
    let verify = || {
        plasmd(&[
            "manifest",
            "verify",
            "--trust",
            s(&trust),
            "--artifacts",
            s(&rel),
            s(&manifest),
        ])
    };
    let out = verify();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("manifest_version 2") && report.contains("4 chunks of 65536 bytes"),
        "{report}"
    );
    // One byte of chunk 1 changes: refused, naming chunk 1 and its offset.
    let mut changed = rootfs.clone();
    changed[70_000] ^= 1;
    std::fs::write(rel.join("rootfs"), &changed).unwrap();
    let out = verify();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("REFUSED: rootfs: chunk 1 (bytes 65536..)"),
        "{report}"
    );
}
