//! Build tests for issue 8: the real `phase-layout` binary on the real layout files, with stand-in
//! binaries (the static release build is `make build`'s job), and the image scripts.
//!
//! - two initramfs (and rootfs) builds give the same sha256;
//! - the cpio holds exactly what the layout lists (`cpio -t`), with the right types and modes;
//! - check-kernel-config: Debian's config is usable and lists modules; without KEXEC_FILE it is not;
//! - the disk image's partition table (`sfdisk -d`) and ESP contents (`mdir`) check out.
//!
//! Host tools (cpio, mksquashfs, sfdisk, mtools) come from `make deps`; when one is missing the
//! test prints SKIP, and fails when CI=true.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const TOOL: &str = env!("CARGO_BIN_EXE_phase-layout");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// True if `tool` runs; otherwise prints SKIP (and panics under CI=true).
fn have(tool: &str, test: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {tool} is required in CI (make deps)"
        );
        eprintln!("SKIP {test}: {tool} not installed (run make deps)");
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    out
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stand-in inputs: fake binaries, trust and release files, and a small modules tree with a
/// dependency chain and a built-in, matching kernel-config/modules.list.
struct Inputs {
    dir: tempfile::TempDir,
}

const KVER: &str = "9.9.9-test";

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for b in ["phase-init", "phase", "plasmd"] {
            std::fs::write(bin.join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
        }
        std::fs::write(dir.path().join("busybox"), b"busybox stand-in").unwrap();
        // The rescue tools as scripts/rescue-tools.sh stages them.
        let rescue = dir.path().join("rescue");
        std::fs::create_dir_all(rescue.join("bin")).unwrap();
        std::fs::create_dir_all(rescue.join("lib")).unwrap();
        for t in ["sh", "ls"] {
            let f = rescue.join("bin").join(t);
            std::fs::write(&f, format!("klibc {t} stand-in")).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(rescue.join("lib/klibc-test.so"), b"klibc stand-in").unwrap();
        std::fs::write(dir.path().join("trust.toml"), "threshold = 1\nkeys = []\n").unwrap();
        std::fs::write(dir.path().join("release"), "channel=stable\n").unwrap();
        // Every module of kernel-config/modules.list, virtio_net depending on virtio.
        let list = std::fs::read_to_string(repo().join("kernel-config/modules.list")).unwrap();
        let kdir = dir.path().join("modules").join(KVER);
        std::fs::create_dir_all(kdir.join("kernel/drivers")).unwrap();
        let mut dep = String::from("kernel/drivers/virtio.ko:\n");
        std::fs::write(kdir.join("kernel/drivers/virtio.ko"), b"virtio").unwrap();
        for line in list
            .lines()
            .map(|l| l.split('#').next().unwrap().trim())
            .filter(|l| !l.is_empty())
        {
            let name = line.split_whitespace().next().unwrap();
            std::fs::write(kdir.join(format!("kernel/drivers/{name}.ko")), name).unwrap();
            let deps = if name == "virtio_net" {
                " kernel/drivers/virtio.ko"
            } else {
                ""
            };
            dep.push_str(&format!("kernel/drivers/{name}.ko:{deps}\n"));
        }
        std::fs::write(kdir.join("modules.dep"), dep).unwrap();
        std::fs::write(kdir.join("modules.builtin"), "kernel/fs/ext4.ko\n").unwrap();
        Inputs { dir }
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    fn layout_args(&self, layout: &str) -> Vec<String> {
        let vars: BTreeMap<&str, String> = [
            ("repo", repo().display().to_string()),
            ("bin_dir", self.path("bin")),
            ("busybox", self.path("busybox")),
            ("rescue", self.path("rescue")),
            ("trust", self.path("trust.toml")),
            ("release", self.path("release")),
        ]
        .into();
        let mut args = vec![
            "--layout".to_owned(),
            repo()
                .join("initramfs-layout")
                .join(layout)
                .display()
                .to_string(),
            "--kver".to_owned(),
            KVER.to_owned(),
            "--modules-root".to_owned(),
            self.path("modules"),
        ];
        for (k, v) in vars {
            args.push("--var".to_owned());
            args.push(format!("{k}={v}"));
        }
        args
    }

    fn initramfs(&self, out: &str) -> PathBuf {
        let out = self.dir.path().join(out);
        run_ok(
            Command::new(TOOL)
                .arg("initramfs")
                .args(self.layout_args("initramfs.toml"))
                .arg("--out")
                .arg(&out),
        );
        out
    }
}

#[test]
fn two_initramfs_builds_have_the_same_sha256() {
    let inputs = Inputs::new();
    let a = inputs.initramfs("a.cpio");
    let b = inputs.initramfs("b.cpio");
    assert_eq!(sha256(&a), sha256(&b));
    // The hash depends on the contents: a changed binary gives another archive.
    std::fs::write(inputs.dir.path().join("bin/phase-init"), b"changed").unwrap();
    let c = inputs.initramfs("c.cpio");
    assert_ne!(sha256(&a), sha256(&c));
}

#[test]
fn cpio_holds_exactly_what_the_layout_lists() {
    if !have("cpio", "cpio_holds_exactly_what_the_layout_lists") {
        return;
    }
    let inputs = Inputs::new();
    let archive = inputs.initramfs("i.cpio");
    let listed = run_ok(
        Command::new(TOOL)
            .arg("list")
            .arg("--names")
            .args(inputs.layout_args("initramfs.toml")),
    );
    let listed = String::from_utf8(listed.stdout).unwrap();
    let in_cpio = run_ok(
        Command::new("cpio")
            .args(["--quiet", "-t", "-F"])
            .arg(&archive),
    );
    let in_cpio = String::from_utf8(in_cpio.stdout).unwrap();
    assert_eq!(listed, in_cpio);
    for must in [
        "init",
        "bin/phase",
        "bin/phase-fetch",
        "bin/sh",
        "bin/ls",
        "lib/klibc-test.so",
        "dev/console",
        "etc/phase/trust.toml",
        "etc/phase/modules.list",
        "etc/phase/release",
        "lib/modules/9.9.9-test/modules.dep",
        "lib/modules/9.9.9-test/kernel/drivers/virtio_net.ko",
        "lib/modules/9.9.9-test/kernel/drivers/virtio.ko",
    ] {
        assert!(
            in_cpio.lines().any(|l| l == must),
            "{must} missing from the cpio:\n{in_cpio}"
        );
    }
    // Types, modes and owners as the layout says (cpio -tv: ls -l style).
    let verbose = run_ok(
        Command::new("cpio")
            .args(["--quiet", "-tv", "-F"])
            .arg(&archive),
    );
    let verbose = String::from_utf8(verbose.stdout).unwrap();
    let line = |name: &str| {
        verbose
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} not in\n{verbose}"))
            .to_owned()
    };
    assert!(
        line("init").starts_with("-rwxr-xr-x   1 root     root"),
        "{}",
        line("init")
    );
    assert!(
        line("dev/console").starts_with("crw-------"),
        "{}",
        line("dev/console")
    );
    assert!(
        line("bin/sh").starts_with("-rwxr-xr-x"),
        "{}",
        line("bin/sh")
    );
    assert!(
        !in_cpio.lines().any(|l| l == "bin/busybox"),
        "busybox is the rootfs's, not the initramfs's:\n{in_cpio}"
    );
    assert!(line("etc/phase/trust.toml").starts_with("-rw-r--r--"));
    assert!(
        verbose.lines().all(|l| l.contains(" root     root ")),
        "owner not root:\n{verbose}"
    );
}

#[test]
fn module_list_in_initramfs_has_names_markers_and_parameters_in_load_order() {
    if !have(
        "cpio",
        "module_list_in_initramfs_has_names_markers_and_parameters_in_load_order",
    ) {
        return;
    }
    let inputs = Inputs::new();
    let archive = inputs.initramfs("i.cpio");
    let out = run_ok(
        Command::new("cpio")
            .args(["--quiet", "-i", "--to-stdout", "etc/phase/modules.list"])
            .stdin(std::fs::File::open(&archive).unwrap()),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"virtio_pci @device"));
    // The rootfs mount's modules are the target stage's only.
    for m in [
        "loop @target max_loop=0",
        "squashfs @target",
        "overlay @target",
        "virtio_net @device",
        "e1000 @device",
        "vfat @disk",
    ] {
        assert!(lines.contains(&m), "{m:?} not in {text}");
    }
    assert!(
        lines.iter().all(|n| !n.contains("CONFIG_")
            && n.split(' ').skip(1).all(|w| {
                ["@target", "@device", "@disk"].contains(&w)
                    || phase_layout::kconfig::is_module_param(w)
            })),
        "{text}"
    );
}

/// Builds the initramfs, which must fail without writing it; returns the error output.
fn failed_initramfs_build(inputs: &Inputs) -> String {
    let out = inputs.dir.path().join("x.cpio");
    let res = run(Command::new(TOOL)
        .arg("initramfs")
        .args(inputs.layout_args("initramfs.toml"))
        .arg("--out")
        .arg(&out));
    assert!(!res.status.success());
    assert!(!out.exists());
    String::from_utf8_lossy(&res.stderr).into_owned()
}

#[test]
fn missing_phase_init_fails_the_initramfs_build() {
    let inputs = Inputs::new();
    std::fs::remove_file(inputs.dir.path().join("bin/phase-init")).unwrap();
    let err = failed_initramfs_build(&inputs);
    assert!(err.contains("/init") && err.contains("phase-init"), "{err}");
}

#[test]
fn missing_rescue_tools_fail_the_initramfs_build_naming_them() {
    let inputs = Inputs::new();
    std::fs::remove_dir_all(inputs.dir.path().join("rescue")).unwrap();
    let err = failed_initramfs_build(&inputs);
    assert!(err.contains("rescue"), "{err}");
}

/// The newest /boot/config-<kver> with modules in /lib/modules, if any.
fn host_kernel_config() -> Option<PathBuf> {
    let mut kvers: Vec<String> = std::fs::read_dir("/lib/modules")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    kvers.sort();
    kvers
        .into_iter()
        .rev()
        .map(|k| PathBuf::from(format!("/boot/config-{k}")))
        .find(|p| p.is_file())
}

fn check_config(config: &Path) -> Output {
    run(Command::new(TOOL)
        .current_dir(repo())
        .arg("check-kernel-config")
        .arg("--config")
        .arg(config))
}

#[test]
fn debian_kernel_config_is_usable_and_lists_modules() {
    let Some(config) = host_kernel_config() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "linux-image-amd64 is required in CI"
        );
        eprintln!(
            "SKIP debian_kernel_config_is_usable_and_lists_modules: no /boot/config-* (make deps)"
        );
        return;
    };
    let out = check_config(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(": usable"), "{text}");
    let modules = text
        .lines()
        .find_map(|l| l.strip_prefix("modules: "))
        .unwrap_or_default();
    for m in ["virtio_net", "squashfs", "overlay", "loop"] {
        assert!(
            modules.split(' ').any(|x| x == m),
            "{m} not in modules: {modules}"
        );
    }
}

#[test]
fn kernel_config_without_kexec_file_is_unusable() {
    let Some(config) = host_kernel_config() else {
        eprintln!("SKIP kernel_config_without_kexec_file_is_unusable: no /boot/config-*");
        return;
    };
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("CONFIG_KEXEC_FILE=y\n"));
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("config-no-kexec");
    std::fs::write(&edited, text.replace("CONFIG_KEXEC_FILE=y\n", "")).unwrap();
    let out = check_config(&edited);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("MISSING CONFIG_KEXEC_FILE (required)"),
        "{stdout}"
    );
    assert!(stdout.contains(": unusable"), "{stdout}");
}

#[test]
fn rootfs_squashfs_is_reproducible_and_holds_the_demo_target() {
    let test = "rootfs_squashfs_is_reproducible_and_holds_the_demo_target";
    if !have("mksquashfs", test) || !have("unsquashfs", test) {
        return;
    }
    let inputs = Inputs::new();
    let build = |name: &str| {
        let tree = inputs.dir.path().join(format!("{name}.tree"));
        let img = inputs.dir.path().join(format!("{name}.squashfs"));
        run_ok(
            Command::new(TOOL)
                .arg("rootfs-tree")
                .args(inputs.layout_args("rootfs.toml"))
                .arg("--out")
                .arg(&tree),
        );
        run_ok(
            Command::new("mksquashfs")
                .env_remove("SOURCE_DATE_EPOCH")
                .arg(&tree)
                .arg(&img)
                .args([
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-comp",
                    "zstd",
                    "-all-root",
                    "-all-time",
                    "0",
                    "-mkfs-time",
                    "0",
                    "-no-xattrs",
                    "-reproducible",
                    "-processors",
                    "1",
                ]),
        );
        img
    };
    let a = build("a");
    let b = build("b");
    assert_eq!(sha256(&a), sha256(&b));
    let listing = run_ok(Command::new("unsquashfs").arg("-lls").arg(&a));
    let listing = String::from_utf8(listing.stdout).unwrap();
    for must in [
        "squashfs-root/usr/bin/plasmd",
        "squashfs-root/sbin/phase-init",
        "squashfs-root/bin/busybox",
        "squashfs-root/etc/os-release",
        "squashfs-root/etc/phase/services/plasmd.toml",
        "squashfs-root/var/lib/phase/boot",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(must)),
            "{must} missing:\n{listing}"
        );
    }
    assert!(listing
        .lines()
        .any(|l| l.ends_with("squashfs-root/bin/sh -> busybox")));
    assert!(
        listing
            .lines()
            .filter(|l| l.contains("squashfs-root"))
            .all(|l| l.contains(" root/root ")),
        "{listing}"
    );
}

fn image_tools(test: &str) -> bool {
    ["sfdisk", "mkfs.vfat", "mmd", "mcopy", "mdir", "mtype"]
        .iter()
        .all(|t| have(t, test))
        && Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").is_file()
}

fn make_image(dir: &Path, mode: &str) -> (PathBuf, PathBuf, PathBuf) {
    let kernel = dir.join("kernel");
    let initrd = dir.join("initramfs");
    std::fs::write(&kernel, vec![0x4bu8; 300_000]).unwrap();
    std::fs::write(&initrd, vec![0x49u8; 100_000]).unwrap();
    let img = dir.join(format!("phase-{mode}.img"));
    run_ok(
        Command::new(repo().join("scripts/mkimage.sh"))
            .env("CACHE_MB", "64")
            .arg(&img)
            .arg(mode)
            .arg(&kernel)
            .arg(&initrd),
    );
    (img, kernel, initrd)
}

#[test]
fn image_has_gpt_with_esp_and_phase_cache_and_mode_default() {
    if !image_tools("image_has_gpt_with_esp_and_phase_cache_and_mode_default") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, kernel, initrd) = make_image(dir.path(), "internet");
    let dump = run_ok(Command::new("sfdisk").arg("-d").arg(&img));
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(dump.contains("label: gpt"), "{dump}");
    let parts: Vec<&str> = dump.lines().filter(|l| l.contains(" : start=")).collect();
    assert_eq!(parts.len(), 2, "{dump}");
    assert!(
        parts[0].contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
            && parts[0].contains("start=        2048"),
        "{dump}"
    );
    assert!(parts[1].contains("name=\"phase-cache\""), "{dump}");
    let esp = format!("{}@@{}", img.display(), 2048 * 512);
    let listing = run_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-/", "-b", "-i", &esp, "::"]),
    );
    let listing = String::from_utf8(listing.stdout).unwrap().to_lowercase();
    for f in [
        "::/efi/boot/bootx64.efi",
        "::/loader/loader.conf",
        "::/loader/entries/local.conf",
        "::/phase/kernel",
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} not on the ESP:\n{listing}"
        );
    }
    let loader = run_ok(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &esp,
        "::/loader/loader.conf",
    ]));
    assert!(String::from_utf8_lossy(&loader.stdout)
        .lines()
        .any(|l| l == "default internet.conf"));
    // The checker used by `make image` agrees, including byte-identical kernel and initramfs.
    run_ok(
        Command::new(repo().join("scripts/check-image.sh"))
            .arg(&img)
            .arg("internet")
            .arg(&kernel)
            .arg(&initrd),
    );
}

#[test]
fn image_check_refuses_wrong_default_and_wrong_kernel() {
    if !image_tools("image_check_refuses_wrong_default_and_wrong_kernel") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, kernel, initrd) = make_image(dir.path(), "private");
    let check = repo().join("scripts/check-image.sh");
    let wrong_mode = run(Command::new(&check).arg(&img).arg("local"));
    assert!(!wrong_mode.status.success());
    assert!(String::from_utf8_lossy(&wrong_mode.stderr).contains("default is not local.conf"));
    let swapped = run(Command::new(&check)
        .arg(&img)
        .arg("private")
        .arg(&initrd)
        .arg(&kernel));
    assert!(!swapped.status.success());
    assert!(String::from_utf8_lossy(&swapped.stderr).contains("ESP kernel differs"));
}

#[test]
fn image_with_unknown_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(repo().join("scripts/mkimage.sh"))
        .arg(dir.path().join("x.img"))
        .arg("public")
        .arg("/dev/null")
        .arg("/dev/null"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MODE must be internet, local or private")
    );
    assert!(!dir.path().join("x.img").exists());
}

#[test]
fn write_usb_refuses_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    std::fs::write(&img, b"image").unwrap();
    let out = run(Command::new(repo().join("scripts/write-usb.sh"))
        .arg(&img)
        .arg(&img));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a block device"));
}

#[test]
fn write_usb_refuses_a_disk_with_mounted_filesystems() {
    // The disk holding a mounted filesystem on this machine, if lsblk can name one.
    let Ok(out) = Command::new("lsblk")
        .args(["-nrpo", "NAME,TYPE,MOUNTPOINT"])
        .output()
    else {
        eprintln!("SKIP write_usb_refuses_a_disk_with_mounted_filesystems: no lsblk");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut disk = None;
    let mut current = None;
    for line in text.lines() {
        let cols: Vec<&str> = line.split(' ').collect();
        if cols.get(1) == Some(&"disk") {
            current = Some(cols[0].to_owned());
        }
        if cols.get(2).is_some_and(|m| !m.is_empty()) && current.is_some() {
            disk = current.clone();
            break;
        }
    }
    let Some(disk) = disk else {
        eprintln!(
            "SKIP write_usb_refuses_a_disk_with_mounted_filesystems: no mounted disk visible"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    std::fs::write(&img, b"image").unwrap();
    // stdin is closed: even if the checks passed, nothing would be confirmed.
    let out = run(Command::new(repo().join("scripts/write-usb.sh"))
        .arg(&disk)
        .arg(&img)
        .stdin(std::process::Stdio::null()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mounted filesystems, refusing"),
        "{disk}: {err}"
    );
}

#[test]
fn unknown_arch_is_refused_and_arm64_aliases_aarch64() {
    let out = run(Command::new("make")
        .current_dir(repo())
        .args(["-n", "ARCH=sparc", "build"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ARCH=sparc is unknown"));
    // Both spellings plan the same cross build, into the aarch64 release directory.
    for arch in ["arm64", "aarch64"] {
        let out = run(Command::new("make").current_dir(repo()).args([
            "-n",
            &format!("ARCH={arch}"),
            "release",
        ]));
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(
            plan.contains("--target aarch64-unknown-linux-gnu")
                && plan.contains("/stable/aarch64/manifest.json")
                && plan.contains("--arch aarch64"),
            "ARCH={arch}: {plan}"
        );
    }
}

#[test]
fn no_modules_initramfs_for_a_builtin_kernel_carries_no_modules() {
    if !have(
        "cpio",
        "no_modules_initramfs_for_a_builtin_kernel_carries_no_modules",
    ) {
        return;
    }
    let inputs = Inputs::new();
    let mut args = inputs.layout_args("initramfs.toml");
    // Drop --kver/--modules-root (positions 2..6), as `make initramfs NO_MODULES=1` does.
    args.drain(2..6);
    let out = inputs.dir.path().join("builtin.cpio");
    run_ok(
        Command::new(TOOL)
            .arg("initramfs")
            .args(&args)
            .arg("--no-modules")
            .arg("--out")
            .arg(&out),
    );
    let names = run_ok(Command::new("cpio").args(["--quiet", "-t", "-F"]).arg(&out));
    let names = String::from_utf8(names.stdout).unwrap();
    assert!(names.lines().any(|l| l == "init"));
    assert!(
        !names
            .lines()
            .any(|l| l.starts_with("lib/modules/") || l == "etc/phase/modules.list"),
        "{names}"
    );
    // Without --no-modules and without --kver the layout's [modules] is an error.
    let res = run(Command::new(TOOL)
        .arg("initramfs")
        .args(&args)
        .arg("--out")
        .arg(inputs.dir.path().join("x.cpio")));
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("--kver"));
}
