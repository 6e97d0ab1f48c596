//! The ACPI power button as an evdev input device (issue 7 §3): QEMU's `system_powerdown`
//! presses it, and it reaches PID 1 as `KEY_POWER` on the input device named "Power Button"
//! (`drivers/acpi/button.c`, modules `button` + `evdev`), not as a signal. The device is found by
//! `/sys/class/input/event*/device/name` and read as raw `struct input_event` records
//! (`include/uapi/linux/input.h`), 24 bytes each on 64-bit.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `EV_KEY` event type.
const EV_KEY: u16 = 0x01;
/// `KEY_POWER` key code.
const KEY_POWER: u16 = 116;
/// Size of `struct input_event` on 64-bit Linux: timeval (16) + type, code (2 + 2) + value (4).
const INPUT_EVENT_BYTES: usize = 24;

/// Errors opening or reading an input device.
#[derive(Debug, thiserror::Error)]
pub enum EvdevError {
    /// Opening or reading the device node failed.
    #[error("{call} {path}")]
    Io {
        /// `open` or `read`.
        call: &'static str,
        /// The device node.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// An open, non-blocking input device that reports power-button presses.
#[derive(Debug)]
pub struct PowerButton {
    path: PathBuf,
    file: File,
}

/// Device nodes (`<dev>/input/eventN`) whose `/sys/class/input/eventN/device/name` is
/// `name`, looked up under `sys` (normally `/sys`) and `dev` (normally `/dev`).
pub fn find_input_devices(sys: &Path, dev: &Path, name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys.join("class/input")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/name")).is_ok_and(|n| n.trim() == name)
        })
        .map(|e| dev.join("input").join(e.file_name()))
        .collect();
    found.sort();
    found
}

impl PowerButton {
    /// Opens every "Power Button" device found (ACPI may expose two: the fixed button and the
    /// PNP0C0C one).
    pub fn open_all() -> Vec<Result<PowerButton, EvdevError>> {
        find_input_devices(Path::new("/sys"), Path::new("/dev"), "Power Button")
            .into_iter()
            .map(|path| PowerButton::open(&path))
            .collect()
    }

    /// Opens `path` read-only and non-blocking.
    ///
    /// # Errors
    /// [`EvdevError::Io`] with call `open`.
    pub fn open(path: &Path) -> Result<PowerButton, EvdevError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| EvdevError::Io {
                call: "open",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(PowerButton {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The device node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drains pending events; true if any was a `KEY_POWER` press (value 1).
    ///
    /// # Errors
    /// [`EvdevError::Io`] with call `read` (not for "no data yet").
    pub fn pressed(&mut self) -> Result<bool, EvdevError> {
        let mut buf = [0u8; INPUT_EVENT_BYTES * 16];
        let mut pressed = false;
        for _ in 0..64 {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => pressed |= buf[..n].chunks_exact(INPUT_EVENT_BYTES).any(is_power_press),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(EvdevError::Io {
                        call: "read",
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(pressed)
    }
}

impl AsFd for PowerButton {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// True if the 24-byte `input_event` is `EV_KEY`/`KEY_POWER` with value 1 (press).
fn is_power_press(event: &[u8]) -> bool {
    let field = |at: usize| u16::from_ne_bytes([event[at], event[at + 1]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    event.len() == INPUT_EVENT_BYTES && field(16) == EV_KEY && field(18) == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn key_power_press_is_recognised_and_release_or_other_keys_are_not() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_press(&event(EV_KEY, 28, 1)));
        assert!(!is_power_press(&event(0, KEY_POWER, 1)));
    }

    #[test]
    fn power_button_is_found_by_sysfs_name_only() {
        let sys = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "AT Translated Set 2 keyboard"),
            ("event3", "Power Button"),
        ] {
            let d = sys.path().join("class/input").join(ev).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        let found = find_input_devices(sys.path(), Path::new("/dev"), "Power Button");
        assert_eq!(found, vec![PathBuf::from("/dev/input/event3")]);
    }
}
