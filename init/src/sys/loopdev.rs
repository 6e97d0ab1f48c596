//! Read-only loop devices for the target stage's root filesystem (issue 7 §2): the verified
//! `/phase/boot/rootfs` squashfs image becomes a block device that can be mounted as the overlay's
//! lowerdir. Uses `LOOP_CTL_GET_FREE` on `/dev/loop-control` and `LOOP_CONFIGURE` (Linux 5.8+,
//! `Documentation/admin-guide/devices.txt`, `include/uapi/linux/loop.h`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `LOOP_CTL_GET_FREE` ioctl number (`include/uapi/linux/loop.h`).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` ioctl number (`include/uapi/linux/loop.h`, Linux 5.8).
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LO_FLAGS_READ_ONLY`: the device refuses writes.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the device detaches itself when its last user (fd or mount) goes away.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// How many times a free device number is requested again when another process configured it
/// first (`EBUSY`).
const MAX_ATTEMPTS: usize = 8;

/// `struct loop_info64` (`include/uapi/linux/loop.h`), 232 bytes.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (`include/uapi/linux/loop.h`), 304 bytes.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Errors from attaching a loop device; each names the call and its arguments.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// Opening `/dev/loop-control`, the loop device node or the backing file failed.
    #[error("open {path}")]
    Open {
        /// The path that could not be opened.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `ioctl(/dev/loop-control, LOOP_CTL_GET_FREE)` failed.
    #[error("ioctl(/dev/loop-control, LOOP_CTL_GET_FREE)")]
    GetFree(#[source] std::io::Error),
    /// `ioctl(<device>, LOOP_CONFIGURE, fd=<file>)` failed.
    #[error("ioctl({device}, LOOP_CONFIGURE, backing={file}, flags=READ_ONLY|AUTOCLEAR)")]
    Configure {
        /// The loop device.
        device: PathBuf,
        /// The backing file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Every free device found was taken by someone else before it could be configured.
    #[error("no free loop device after {attempts} attempts")]
    Exhausted {
        /// Attempts made.
        attempts: usize,
    },
}

/// An attached read-only loop device. With `LO_FLAGS_AUTOCLEAR` the kernel detaches it when the
/// last user goes away, so keep this value alive until the device is mounted; after that the
/// mount holds the device and this value may be dropped.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    _device: File,
}

impl LoopDevice {
    /// The device node, e.g. `/dev/loop0`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Attaches `file` read-only (and autoclear) to a free loop device.
///
/// # Errors
/// [`LoopError`] naming the failing open or ioctl; [`LoopError::Exhausted`] after
/// `MAX_ATTEMPTS` races lost to other processes.
pub fn attach_read_only(file: &Path) -> Result<LoopDevice, LoopError> {
    let backing = File::open(file).map_err(|source| LoopError::Open {
        path: file.to_path_buf(),
        source,
    })?;
    let control_path = Path::new("/dev/loop-control");
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(control_path)
        .map_err(|source| LoopError::Open {
            path: control_path.to_path_buf(),
            source,
        })?;
    for _ in 0..MAX_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1; the fd
        // is a valid open descriptor owned by `control` for the duration of the call.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(LoopError::GetFree(std::io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|source| LoopError::Open {
                path: path.clone(),
                source,
            })?;
        let mut config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        let name = file.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: `config` is a properly laid out `struct loop_config` that lives across the
        // call; the kernel only reads it. Both fds are open and owned by live `File`s.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &mut config as *mut LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(LoopDevice {
                path,
                _device: device,
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(LoopError::Configure {
                device: path,
                file: file.to_path_buf(),
                source: err,
            });
        }
    }
    Err(LoopError::Exhausted {
        attempts: MAX_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn missing_backing_file_is_reported_with_its_path() {
        let err = attach_read_only(Path::new("/nonexistent/phase-rootfs")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/phase-rootfs"),
            "{err}"
        );
    }
}
