//! The `phase` tool as a real process: `phase verify` exit statuses, the `phase-verify` link
//! name, `phase fetch` end to end, and ENOSPC in the output directory (issue 5); the init
//! binary called by the tool's names (issue 18 §1, one multicall binary).

mod fetch_support;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use fetch_support::{data, Behaviour, Server, Signer};
use tokio::process::Command;

const PHASE_INIT: &str = env!("CARGO_BIN_EXE_phase-init");
const MANIFEST: &str = "/stable/x86_64/manifest.json";

/// The host's `phase` tool as `make build` installs it: a link named `phase` to the one
/// multicall binary (issue 18 §1), under cargo's scratch directory for integration tests.
/// Made once per test process; the rename makes it safe for the processes nextest runs at once.
fn phase() -> &'static Path {
    static LINK: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    LINK.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("phase-tool");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("phase");
        let tmp = dir.join(format!("phase.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(PHASE_INIT, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        link
    })
}

async fn run(cmd: &mut Command) -> Output {
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes trust.toml, manifest.json and the artifacts into `dir`; returns the manifest bytes.
fn release_dir(signer: &Signer, dir: &Path, kernel: &[u8], initramfs: &[u8]) -> Vec<u8> {
    let m = signer.manifest(
        "1.2.3",
        "x86_64",
        &[("kernel", kernel, vec![]), ("initramfs", initramfs, vec![])],
    );
    std::fs::write(dir.join("trust.toml"), signer.trust.to_toml()).unwrap();
    std::fs::write(dir.join("manifest.json"), &m).unwrap();
    std::fs::write(dir.join("kernel"), kernel).unwrap();
    std::fs::write(dir.join("initramfs"), initramfs).unwrap();
    m
}

#[tokio::test]
async fn verify_exit_status_is_0_valid_1_refused_2_usage() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    release_dir(&signer, d, &data(100, 1), &data(200, 2));
    let verify = |args: &[&str]| {
        let mut c = Command::new(phase());
        c.arg("verify").args(args);
        c
    };
    let trust = d.join("trust.toml");
    let trust = trust.to_str().unwrap();
    let manifest = d.join("manifest.json");
    let manifest = manifest.to_str().unwrap();

    let ok = run(&mut verify(&["--trust", trust, manifest])).await;
    assert_eq!(ok.status.code(), Some(0));
    assert!(
        text(&ok).contains("phase: manifest ok version=1.2.3 signers=1 in "),
        "{}",
        text(&ok)
    );

    let other = Signer::new();
    std::fs::write(d.join("other.toml"), other.trust.to_toml()).unwrap();
    let refused = run(&mut verify(&[
        "--trust",
        d.join("other.toml").to_str().unwrap(),
        manifest,
    ]))
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("manifest failed after"),
        "{}",
        text(&refused)
    );

    let wrong_arch = run(&mut verify(&[
        "--trust", trust, "--arch", "arm64", manifest,
    ]))
    .await;
    assert_eq!(wrong_arch.status.code(), Some(1));

    let no_trust = run(&mut verify(&[
        "--trust",
        d.join("none.toml").to_str().unwrap(),
        manifest,
    ]))
    .await;
    assert_eq!(no_trust.status.code(), Some(2));
    let bad_flag = run(&mut verify(&["--bogus", manifest])).await;
    assert_eq!(bad_flag.status.code(), Some(2));
}

#[tokio::test]
async fn verify_with_artifacts_refuses_a_tampered_file() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    release_dir(&signer, d, &data(100, 1), &data(200, 2));
    let args = |c: &mut Command| {
        c.args(["verify", "--trust"])
            .arg(d.join("trust.toml"))
            .arg("--artifacts")
            .arg(d)
            .arg(d.join("manifest.json"));
    };
    let mut c = Command::new(phase());
    args(&mut c);
    let ok = run(&mut c).await;
    assert_eq!(ok.status.code(), Some(0));
    assert!(
        text(&ok).contains("phase: verify ok version=1.2.3 artifacts=2 in "),
        "{}",
        text(&ok)
    );

    let mut k = std::fs::read(d.join("kernel")).unwrap();
    k[7] ^= 1;
    std::fs::write(d.join("kernel"), &k).unwrap();
    let mut c = Command::new(phase());
    args(&mut c);
    let bad = run(&mut c).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("artifact kernel:") && text(&bad).contains("has hash"),
        "{}",
        text(&bad)
    );

    std::fs::write(d.join("kernel"), b"short").unwrap();
    let mut c = Command::new(phase());
    args(&mut c);
    let short = run(&mut c).await;
    assert_eq!(short.status.code(), Some(1));
    assert!(
        text(&short).contains("is 5 bytes, manifest says 100"),
        "{}",
        text(&short)
    );
}

#[tokio::test]
async fn link_named_phase_verify_runs_the_verify_subcommand() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    release_dir(&signer, d, &data(100, 1), &data(200, 2));
    let link = d.join("phase-verify");
    std::os::unix::fs::symlink(phase(), &link).unwrap();
    let out = run(Command::new(&link)
        .arg("--trust")
        .arg(d.join("trust.toml"))
        .arg(d.join("manifest.json")))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("manifest ok version=1.2.3"));
}

/// Issue 18 §1: in the initramfs `/bin/phase` and `/bin/phase-verify` are links to `/init`
/// (phase-init). Not PID 1 and called by those names, the init binary is the tool.
#[tokio::test]
async fn init_binary_called_as_phase_or_phase_verify_is_the_tool() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    release_dir(&signer, d, &data(100, 1), &data(200, 2));
    for name in ["phase-verify", "phase"] {
        let link = d.join(name);
        std::os::unix::fs::symlink(PHASE_INIT, &link).unwrap();
        let mut c = Command::new(&link);
        if name == "phase" {
            c.arg("verify");
        }
        let out = run(c
            .arg("--trust")
            .arg(d.join("trust.toml"))
            .arg(d.join("manifest.json")))
        .await;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(text(&out).contains("manifest ok version=1.2.3"), "{name}");
    }
    // The tool's usage errors, not the init's: `phase` without a subcommand exits 2.
    let out = run(&mut Command::new(d.join("phase"))).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("Usage: phase"), "{}", text(&out));
    // By its own name and not PID 1, the init refuses to run instead of mounting and rebooting.
    let out = run(&mut Command::new(PHASE_INIT)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("runs only as PID 1"), "{}", text(&out));
}

/// Issue 18 §1: a container whose entrypoint is `phase verify` runs it as PID 1 of its PID
/// namespace; the tool's name still selects the tool, not the init. Run under `unshare --pid
/// --fork` with new mount and network namespaces too, so an init started by mistake could not
/// touch the host's mounts or links. Needs root and util-linux `unshare`.
#[tokio::test]
async fn the_tool_as_pid_1_of_a_container_is_still_the_tool() {
    let unshare = ["/usr/bin/unshare", "/bin/unshare"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (true, Some(unshare)) = (rustix::process::geteuid().is_root(), unshare) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but cannot run: needs root and unshare"
        );
        eprintln!("SKIP: needs root and util-linux unshare");
        return;
    };
    let pid1 = |cmd: &mut Command| {
        cmd.args(["--pid", "--fork", "--mount", "--net", "--kill-child"])
            .kill_on_drop(true);
    };
    // The set-up is what it claims: the first process in it is PID 1.
    let mut sh = Command::new(unshare);
    pid1(&mut sh);
    let out = run(sh.args(["sh", "-c", "echo pid=$$"])).await;
    assert_eq!(text(&out).trim(), "pid=1", "{}", text(&out));

    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    release_dir(&signer, d, &data(100, 1), &data(200, 2));
    let mut c = Command::new(unshare);
    pid1(&mut c);
    let out = run(c
        .arg(phase())
        .arg("verify")
        .arg("--trust")
        .arg(d.join("trust.toml"))
        .arg(d.join("manifest.json")))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("manifest ok version=1.2.3"),
        "{}",
        text(&out)
    );
}

async fn serve_release(signer: &Signer, kernel: &Arc<Vec<u8>>, initramfs: &Arc<Vec<u8>>) -> Server {
    let server = Server::start().await;
    let m = signer.manifest(
        "1.2.3",
        "x86_64",
        &[("kernel", kernel, vec![]), ("initramfs", initramfs, vec![])],
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(m)));
    server.route("/stable/x86_64/kernel", Behaviour::Serve(kernel.clone()));
    server.route(
        "/stable/x86_64/initramfs",
        Behaviour::Serve(initramfs.clone()),
    );
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_writes_verified_artifacts_and_prints_stage_lines() {
    let signer = Signer::new();
    let (kernel, initramfs) = (data(300_000, 1), data(5_000, 2));
    let server = serve_release(&signer, &kernel, &initramfs).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("trust.toml"), signer.trust.to_toml()).unwrap();
    let out = run(Command::new(phase())
        .args([
            "fetch",
            "--manifest-url",
            &server.url(MANIFEST),
            "--arch",
            "amd64",
            "--channel",
            "stable",
        ])
        .arg("--trust")
        .arg(d.join("trust.toml"))
        .arg("--out")
        .arg(d.join("out"))
        .arg("--state")
        .arg(d))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("phase: manifest ok version=1.2.3 signers=1 in "),
        "{t}"
    );
    assert!(t.contains("phase: fetch ok kernel 300000 bytes in "), "{t}");
    assert!(
        t.contains("phase: fetch ok initramfs 5000 bytes in "),
        "{t}"
    );
    assert_eq!(std::fs::read(d.join("out/kernel")).unwrap(), *kernel);
    assert!(std::fs::read_to_string(d.join("state.json"))
        .unwrap()
        .contains("\"1.2.3\""));

    // A failing fetch exits 1 and names the failure.
    server.route("/stable/x86_64/kernel", Behaviour::Status(404));
    let out = run(Command::new(phase())
        .args(["fetch", "-q", "--manifest-url", &server.url(MANIFEST)])
        .arg("--trust")
        .arg(d.join("trust.toml"))
        .arg("--out")
        .arg(d.join("out2")))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("phase: fetch failed after"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("/stable/x86_64/kernel: HTTP 404"),
        "{}",
        text(&out)
    );
}

/// Root and mount namespaces are needed; without them the test says why and skips (and fails
/// under CI=true).
fn can_unshare_mounts() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but mount namespaces are unavailable"
        );
        eprintln!("SKIP: needs root and `unshare --mount` for a private tmpfs");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_in_the_output_dir_fails_and_removes_the_partial() {
    if !can_unshare_mounts() {
        return;
    }
    let signer = Signer::new();
    // A 1 MiB kernel into a 256 KiB tmpfs.
    let (kernel, initramfs) = (data(1 << 20, 1), data(1000, 2));
    let server = serve_release(&signer, &kernel, &initramfs).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("trust.toml"), signer.trust.to_toml()).unwrap();
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // In a private mount namespace: mount a tiny tmpfs on out, fetch, then list out (the tmpfs
    // disappears with the namespace, so the listing is taken inside it).
    let script = format!(
        "mount -t tmpfs -o size=256k phase-enospc {out} && {phase} fetch -q --manifest-url {url} --trust {trust} --out {out}; rc=$?; echo \"LISTING:$(ls -A {out} | tr '\\n' ' ')\"; exit $rc",
        out = out_dir.display(),
        phase = phase().display(),
        url = server.url(MANIFEST),
        trust = d.join("trust.toml").display(),
    );
    let out = run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]))
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("local file system error") && t.contains("No space left on device"),
        "{t}"
    );
    let listing = t
        .lines()
        .find_map(|l| l.strip_prefix("LISTING:"))
        .unwrap_or("?");
    assert!(!listing.contains("kernel"), "left behind: {listing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_drops_a_slow_source_naming_its_url_rate_and_window() {
    let signer = Signer::new();
    let (kernel, initramfs) = (data(300_000, 1), data(5_000, 2));
    let server = serve_release(&signer, &kernel, &initramfs).await;
    // 1 KiB/s from the manifest's own provider; the full rate from a second provider.
    server.route(
        "/stable/x86_64/kernel",
        Behaviour::Paced(kernel.clone(), 256, std::time::Duration::from_millis(250)),
    );
    let mirror = Server::start().await;
    mirror.route("/stable/x86_64/kernel", Behaviour::Serve(kernel.clone()));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("trust.toml"), signer.trust.to_toml()).unwrap();
    let out = run(Command::new(phase())
        .args(["fetch", "-q", "--manifest-url", &server.url(MANIFEST)])
        .args(["--provider", &mirror.base()])
        .args(["--min-rate", "65536", "--min-rate-window", "500"])
        .args(["--total-timeout-ms", "20000"])
        .arg("--trust")
        .arg(d.join("trust.toml"))
        .arg("--out")
        .arg(d.join("out")))
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let prefix = format!(
        "phase: fetch kernel: dropping slow source {}: ",
        server.url("/stable/x86_64/kernel")
    );
    let line = t
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no drop line in {t}"));
    assert!(
        line.contains(" KiB/s over ")
            && line.contains("ms, minimum 64.0 KiB/s; resuming at byte ")
            && line.ends_with(" from the next source"),
        "{line}"
    );
    assert_eq!(std::fs::read(d.join("out/kernel")).unwrap(), *kernel);
    let hits = mirror.hits_for("/stable/x86_64/kernel");
    assert!(
        hits.len() == 1 && hits[0].range.is_some(),
        "the mirror resumed: {hits:?}"
    );
}

#[tokio::test]
async fn fetch_help_documents_the_minimum_rate_flags_and_defaults() {
    let out = run(Command::new(phase()).args(["fetch", "--help"])).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for needle in [
        "--min-rate <BYTES_PER_SEC>",
        "[default: 65536]",
        "--min-rate-window <MS>",
        "[default: 10000]",
        "0 turns the floor off",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cache_fails_the_state_save_but_not_the_fetch_and_keeps_the_old_state() {
    if !can_unshare_mounts() {
        return;
    }
    let signer = Signer::new();
    let (kernel, initramfs) = (data(20_000, 1), data(1000, 2));
    let server = serve_release(&signer, &kernel, &initramfs).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("trust.toml"), signer.trust.to_toml()).unwrap();
    // The state the cache holds: 1.0.0 accepted. The fetch brings 1.2.3.
    let prepared = d.join("prepared");
    std::fs::create_dir(&prepared).unwrap();
    let mut old = phase_init::fetch::RollbackState::empty();
    old.releases.insert(
        "stable/x86_64".into(),
        phase_init::fetch::state::AcceptedRelease {
            version: semver::Version::new(1, 0, 0),
            created_at: chrono::Utc::now() - chrono::Duration::days(1),
        },
    );
    old.save(&prepared).unwrap();
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    // In a private mount namespace: a 64 KiB tmpfs as the cache, the old state copied in, the
    // rest filled with zeros, then the fetch; the state is read back inside the namespace.
    let script = format!(
        "mount -t tmpfs -o size=64k phase-state {st} && cp {pre}/state.json {pre}/state.json.bak {st}/ && \
         {{ dd if=/dev/zero of={st}/fill bs=4096 2>/dev/null; true; }} && \
         {phase} fetch -q --manifest-url {url} --trust {trust} --out {out} --state {st}; rc=$?; \
         echo \"STATE:$(tr -d ' \\n' < {st}/state.json)\"; echo \"LISTING:$(ls -A {st} | tr '\\n' ' ')\"; exit $rc",
        st = state.display(),
        pre = prepared.display(),
        phase = phase().display(),
        url = server.url(MANIFEST),
        trust = d.join("trust.toml").display(),
        out = d.join("out").display(),
    );
    let out = run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]))
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("phase: state save failed, the floors on disk stay as last saved; using the verified release: write ")
            && t.contains("No space left on device"),
        "{t}"
    );
    assert_eq!(std::fs::read(d.join("out/kernel")).unwrap(), *kernel);
    let saved = t
        .lines()
        .find_map(|l| l.strip_prefix("STATE:"))
        .unwrap_or("?");
    assert!(
        saved.contains("\"1.0.0\"") && !saved.contains("1.2.3"),
        "{saved}"
    );
    let listing = t
        .lines()
        .find_map(|l| l.strip_prefix("LISTING:"))
        .unwrap_or("?");
    assert!(!listing.contains(".tmp"), "left behind: {listing:?}");
}
