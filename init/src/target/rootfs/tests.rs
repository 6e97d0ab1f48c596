use std::path::{Path, PathBuf};

use super::*;
use crate::sys::fake::Recording;

struct FakeLoops(Vec<PathBuf>);

impl LoopAttach for FakeLoops {
    fn attach(&mut self, image: &Path) -> Result<PathBuf, LoopError> {
        self.0.push(image.to_path_buf());
        Ok(PathBuf::from("/dev/loop7"))
    }
}

fn flags(bits: libc::c_ulong) -> String {
    format!("{:?}", ms(bits))
}

#[test]
fn overlay_plan_mounts_lower_upper_overlay_bind_and_moves_in_order() {
    let sys = Recording::new();
    let mut loops = FakeLoops(Vec::new());
    execute(&plan(&Layout::default()), &sys, &mut loops).unwrap();
    assert_eq!(loops.0, [PathBuf::from("/phase/boot/rootfs")]);
    let ro = format!("{:?}", MountFlags::RDONLY);
    let none = format!("{:?}", MountFlags::empty());
    let bind = format!("{:?}", MountFlags::BIND);
    let mut want = vec![
        "mkdir /run/phase/lower 755".to_owned(),
        format!("mount /dev/loop7 /run/phase/lower squashfs {ro} -"),
        "mkdir /run/phase/overlay 755".to_owned(),
        format!("mount tmpfs /run/phase/overlay tmpfs {none} mode=0755"),
        "mkdir /run/phase/overlay/upper 755".to_owned(),
        "mkdir /run/phase/overlay/work 755".to_owned(),
        "mkdir /newroot 755".to_owned(),
        format!(
            "mount overlay /newroot overlay {none} lowerdir=/run/phase/lower,upperdir=/run/phase/overlay/upper,workdir=/run/phase/overlay/work"
        ),
        "mkdir /newroot/var/lib/phase/boot 755".to_owned(),
        format!("mount /phase/boot /newroot/var/lib/phase/boot  {bind} -"),
        format!("mount none /newroot/var/lib/phase/boot  {} -", flags(libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY)),
    ];
    for fs in ["proc", "sys", "dev", "run"] {
        want.push(format!("mkdir /newroot/{fs} 755"));
        want.push(format!(
            "mount /{fs} /newroot/{fs}  {} -",
            flags(libc::MS_MOVE)
        ));
    }
    assert_eq!(sys.calls(), want);
}

#[test]
fn failed_overlay_mount_stops_the_plan_and_names_the_step() {
    let sys = Recording::new();
    sys.fail_on("mount overlay", libc::EINVAL);
    let err = execute(&plan(&Layout::default()), &sys, &mut FakeLoops(Vec::new())).unwrap_err();
    let chain = crate::log::error_chain(&err);
    assert!(
        chain.starts_with("mount -t overlay -o lowerdir=/run/phase/lower"),
        "{chain}"
    );
    assert!(chain.contains("Invalid argument"), "{chain}");
    assert!(
        sys.calls().last().unwrap().starts_with("mount overlay"),
        "later steps ran: {:?}",
        sys.calls()
    );
}

#[test]
fn free_initramfs_deletes_files_but_keeps_boot_dir_and_its_ancestors() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for f in [
        "init",
        "bin/phase",
        "etc/phase/trust.toml",
        "phase/boot/rootfs",
        "phase/boot/manifest.json",
        "phase/other",
    ] {
        std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
        std::fs::write(r.join(f), b"x").unwrap();
    }
    std::os::unix::fs::symlink("phase", r.join("bin/sh")).unwrap();
    let freed = free_initramfs(r, &[r.join("phase/boot")]);
    assert!(freed.failed.is_empty(), "{:?}", freed.failed);
    assert!(r.join("phase/boot/rootfs").exists() && r.join("phase/boot/manifest.json").exists());
    for gone in ["init", "bin", "etc", "phase/other"] {
        assert!(!r.join(gone).exists(), "{gone} not deleted");
    }
    assert_eq!(freed.bytes, 4);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn free_initramfs_does_not_cross_mount_points() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root (CI=true)"
        );
        eprintln!("SKIP free_initramfs_does_not_cross_mount_points: needs root to mount a tmpfs");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("newroot");
    std::fs::create_dir(&mnt).unwrap();
    rustix::mount::mount("tmpfs", &mnt, "tmpfs", MountFlags::empty(), None).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = crate::sys::switch_root::unmount(&self.0, true);
        }
    }
    let _guard = Unmount(mnt.clone());
    std::fs::write(mnt.join("precious"), b"keep").unwrap();
    std::fs::write(root.path().join("junk"), b"x").unwrap();
    let freed = free_initramfs(root.path(), &[]);
    assert!(mnt.join("precious").exists(), "crossed into a mount point");
    assert!(!root.path().join("junk").exists());
    assert!(mnt.is_dir(), "mount point removed");
    assert!(freed.failed.is_empty(), "{:?}", freed.failed);
}

#[test]
fn real_squashfs_overlay_is_writable_and_bind_is_read_only() {
    if !is_root()
        || !Path::new("/usr/bin/mksquashfs").exists()
        || !Path::new("/dev/loop-control").exists()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root, mksquashfs, /dev/loop-control (CI=true)"
        );
        eprintln!("SKIP real_squashfs_overlay_is_writable_and_bind_is_read_only: needs root, mksquashfs, /dev/loop-control");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"target\n").unwrap();
    let boot = t.path().join("boot");
    std::fs::create_dir(&boot).unwrap();
    let image = boot.join("rootfs");
    let status = std::process::Command::new("mksquashfs")
        .args([src.as_os_str(), image.as_os_str()])
        .args(["-noappend", "-quiet", "-no-progress"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let layout = Layout {
        boot_dir: boot.clone(),
        rootfs_image: image,
        lower: t.path().join("run/lower"),
        overlay: t.path().join("run/overlay"),
        newroot: t.path().join("newroot"),
        served_at: PathBuf::from("/var/lib/phase/boot"),
        moved: Vec::new(),
    };
    // Unmount in reverse order whatever got mounted, even if an assertion fails.
    struct Cleanup(Vec<PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in self.0.iter().rev() {
                let _ = crate::sys::switch_root::unmount(p, true);
            }
        }
    }
    let served = layout.newroot.join("var/lib/phase/boot");
    let _cleanup = Cleanup(vec![
        layout.lower.clone(),
        layout.overlay.clone(),
        layout.newroot.clone(),
        served.clone(),
    ]);
    let mut loops = LoopDevices::default();
    execute(&plan(&layout), &crate::sys::linux::Linux, &mut loops).unwrap();
    drop(loops); // the mount now holds the loop device
    assert_eq!(
        std::fs::read(layout.newroot.join("etc/hostname")).unwrap(),
        b"target\n"
    );
    std::fs::write(layout.newroot.join("etc/hostname"), b"changed\n").unwrap();
    assert_eq!(
        std::fs::read(layout.overlay.join("upper/etc/hostname")).unwrap(),
        b"changed\n"
    );
    assert!(
        std::fs::write(layout.lower.join("etc/hostname"), b"x").is_err(),
        "lower layer is writable"
    );
    assert!(served.join("rootfs").exists());
    let err = std::fs::write(served.join("rootfs"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "bind mount of the boot dir is writable"
    );
}
