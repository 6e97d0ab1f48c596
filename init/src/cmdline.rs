//! The `phase.*` kernel command line parameters (DESIGN §3), read from `/proc/cmdline` in the
//! boot stage right after the early mounts, and again in the target stage.
//!
//! Tokens follow the kernel's rules (`lib/cmdline.c` `next_arg`): words separated by blanks,
//! double quotes group blanks into one word and are removed (`phase.init="/sbin/init -s"`);
//! parsing stops at `--` (what follows is for init's argv). Keys other than `phase.*` are
//! ignored. Unknown `phase.*` keys are returned as warnings, never fatal; a known key with an
//! invalid value is an error (a typo in `phase.mode=privat` must not silently become internet
//! mode and write to disk). Nothing here can switch signature verification off.

use std::path::PathBuf;
use std::time::Duration;

use phase_protocol::{Arch, BootMode};

/// Default for `phase.timeout`: seconds allowed for each network wait (link, DHCP, discovery).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Default for `phase.minrate`: bytes per second a fetch source must average over
/// [`crate::fetch::rate::DEFAULT_WINDOW`] while another source is left (64 KiB/s).
pub const DEFAULT_MIN_RATE: u64 = crate::fetch::rate::DEFAULT_MIN_RATE;

/// Errors of parsing the command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// Reading `/proc/cmdline` failed.
    #[error("reading {path}")]
    Read {
        /// The file read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A known `phase.*` key has a value it does not accept.
    #[error("phase.{key}={value:?}: {reason}")]
    InvalidValue {
        /// Key without the `phase.` prefix.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: String,
    },
}

/// `phase.onfail=`: what PID 1 does when a stage fails (see [`crate::onfail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// Print the error chain, then exec `/bin/sh` if the initramfs has one (else retry).
    Rescue,
    /// Back off, then run the stage machine again.
    Retry,
    /// `reboot(LINUX_REBOOT_CMD_RESTART)`.
    Reboot,
    /// Power off (`LINUX_REBOOT_CMD_POWER_OFF`, falling back to `HALT`).
    Halt,
}

impl OnFail {
    /// The `phase.onfail=` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFail::Rescue => "rescue",
            OnFail::Retry => "retry",
            OnFail::Reboot => "reboot",
            OnFail::Halt => "halt",
        }
    }

    /// The default per mode: internet and private retry (unattended fleets come back by
    /// themselves once the network or a provider is back); local drops to the rescue shell
    /// (someone is at the machine or its console).
    pub fn default_for(mode: BootMode) -> OnFail {
        match mode {
            BootMode::Local => OnFail::Rescue,
            BootMode::Internet | BootMode::Private => OnFail::Retry,
        }
    }
}

/// `phase.kexec=`: whether the boot stage kexecs into the verified kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KexecMode {
    /// kexec into the verified kernel (default).
    #[default]
    Auto,
    /// Stay on the running kernel and hand straight to the target stage.
    Never,
}

/// The typed `phase.*` parameters with their defaults (docs/boot-parameters.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// `phase.mode=` (default internet).
    pub mode: BootMode,
    /// `phase.channel=`; `None` means `/etc/phase/release` `channel=`, else `stable`.
    pub channel: Option<String>,
    /// `phase.arch=` (default: the architecture this binary was built for).
    pub arch: Arch,
    /// `phase.provider=URL`: skip discovery and fetch from this provider.
    pub provider: Option<String>,
    /// `phase.bootstrap=MULTIADDR[,..]`: DHT bootstrap peers.
    pub bootstrap: Vec<String>,
    /// `phase.iface=`: the network interface (default: first with a carrier).
    pub iface: Option<String>,
    /// `phase.timeout=SECONDS` for each network wait (default [`DEFAULT_TIMEOUT_SECS`]).
    pub timeout: Duration,
    /// `phase.onfail=`; `None` means [`OnFail::default_for`] the mode.
    pub onfail: Option<OnFail>,
    /// `phase.kexec=auto|never`.
    pub kexec: KexecMode,
    /// `phase.init=PATH`: exec the rootfs's own init instead of supervising.
    pub init: Option<String>,
    /// `phase.debug` (or `phase.debug=1`): verbose logs.
    pub debug: bool,
    /// `phase.net=on|off` (default on). Off, in private mode, boots the signed release carried
    /// read-only on the boot medium and brings no interface up (seed 003: private mode's
    /// network is optional; issue 16 §6).
    pub net: bool,
    /// `phase.minrate=BYTES_PER_SEC`: an artifact source slower than this on average over 10 s
    /// is dropped for the next one (issue 15 §5); default [`DEFAULT_MIN_RATE`], 0 turns the
    /// floor off (a liveness policy, not a check: nothing here turns a check off).
    pub min_rate: u64,
    /// `phase.peers=on|off` (default on): in local and internet modes, serve verified chunks
    /// to machines booting the same release and take chunks from them (issue 19 §3,
    /// [`crate::peers`]). Private mode never does, whatever this says.
    pub peers: bool,
}

impl Default for BootParams {
    fn default() -> Self {
        BootParams {
            mode: BootMode::default(),
            channel: None,
            arch: Arch::host().unwrap_or(Arch::X86_64),
            provider: None,
            bootstrap: Vec::new(),
            iface: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            onfail: None,
            kexec: KexecMode::Auto,
            init: None,
            debug: false,
            net: true,
            min_rate: DEFAULT_MIN_RATE,
            peers: true,
        }
    }
}

impl BootParams {
    /// The effective failure policy: `phase.onfail` or the mode's default.
    pub fn onfail(&self) -> OnFail {
        self.onfail.unwrap_or(OnFail::default_for(self.mode))
    }

    /// The effective channel: `phase.channel`, else `release_channel`, else `stable`.
    pub fn channel_or<'a>(&'a self, release_channel: Option<&'a str>) -> &'a str {
        self.channel
            .as_deref()
            .or(release_channel)
            .unwrap_or("stable")
    }
}

/// Parsed command line: the parameters plus one warning per unknown `phase.*` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The typed parameters.
    pub params: BootParams,
    /// Unknown keys without the prefix (`phase.colour=1` gives `colour`).
    pub unknown: Vec<String>,
}

/// Splits a command line into words by the kernel's rules: blanks separate, double quotes group
/// and are removed, `--` ends the kernel's part.
pub fn tokens(cmdline: &str) -> Vec<String> {
    raw_tokens(cmdline)
        .into_iter()
        .map(|t| t.replace('"', ""))
        .collect()
}

/// Like [`tokens`] but keeps the quotes, so a word can be copied to another command line as is.
pub fn raw_tokens(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                if cur == "--" {
                    return out;
                }
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() && cur != "--" {
        out.push(cur);
    }
    out
}

/// The key of a word (`phase.mode` of `phase.mode=local`).
pub fn word_key(word: &str) -> &str {
    word.split_once('=')
        .map_or(word, |(k, _)| k)
        .trim_matches('"')
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, CmdlineError> {
    match v {
        None | Some("1" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "no" | "false" | "off") => Ok(false),
        Some(other) => Err(invalid(key, other, "expected 1|0|yes|no|true|false|on|off")),
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> CmdlineError {
    CmdlineError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn need<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, CmdlineError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(key, "", "a value is required")),
    }
}

/// Parses the `phase.*` keys of `cmdline` (later keys override earlier ones, as the kernel does).
/// Errors: [`CmdlineError::InvalidValue`] for a known key with a bad value.
pub fn parse(cmdline: &str) -> Result<Parsed, CmdlineError> {
    let mut p = BootParams::default();
    let mut unknown = Vec::new();
    for word in tokens(cmdline) {
        let Some(rest) = word.strip_prefix("phase.") else {
            continue;
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        match key {
            "mode" => {
                let v = need(key, value)?;
                p.mode = v
                    .parse()
                    .map_err(|_| invalid(key, v, "expected internet|local|private"))?;
            }
            "channel" => p.channel = Some(need(key, value)?.to_string()),
            "arch" => {
                let v = need(key, value)?;
                p.arch = v.parse().map_err(|e: phase_protocol::arch::UnknownArch| {
                    invalid(key, v, &e.to_string())
                })?;
            }
            "provider" => p.provider = Some(need(key, value)?.to_string()),
            "bootstrap" => {
                p.bootstrap = need(key, value)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "iface" => p.iface = Some(need(key, value)?.to_string()),
            "timeout" => {
                let v = need(key, value)?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0 && *s <= 86_400)
                    .ok_or_else(|| invalid(key, v, "expected whole seconds between 1 and 86400"))?;
                p.timeout = Duration::from_secs(secs);
            }
            "onfail" => {
                p.onfail = Some(match need(key, value)? {
                    "rescue" => OnFail::Rescue,
                    "retry" => OnFail::Retry,
                    "reboot" => OnFail::Reboot,
                    "halt" | "poweroff" => OnFail::Halt,
                    v => return Err(invalid(key, v, "expected rescue|retry|reboot|halt")),
                });
            }
            "kexec" => {
                p.kexec = match need(key, value)? {
                    "auto" => KexecMode::Auto,
                    "never" => KexecMode::Never,
                    v => return Err(invalid(key, v, "expected auto|never")),
                };
            }
            "init" => p.init = Some(need(key, value)?.to_string()),
            "debug" => p.debug = parse_bool(key, value)?,
            "net" => p.net = parse_bool(key, value)?,
            "peers" => p.peers = parse_bool(key, value)?,
            "minrate" => {
                let v = need(key, value)?;
                p.min_rate = v.parse().map_err(|_| {
                    invalid(
                        key,
                        v,
                        "expected whole bytes per second (0 turns the floor off)",
                    )
                })?;
            }
            _ => unknown.push(key.to_string()),
        }
    }
    Ok(Parsed { params: p, unknown })
}

/// Reads and parses `/proc/cmdline` (or `path`). Errors: [`CmdlineError::Read`], or as [`parse`].
pub fn read(path: &std::path::Path) -> Result<(String, Parsed), CmdlineError> {
    let text = std::fs::read_to_string(path).map_err(|source| CmdlineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = parse(&text)?;
    Ok((text.trim().to_string(), parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_of_cmdlines() {
        let def = BootParams::default();
        let cases: Vec<(&str, BootParams, Vec<&str>)> = vec![
            ("console=ttyS0 panic=-1", def.clone(), vec![]),
            ("phase.mode=local", BootParams { mode: BootMode::Local, ..def.clone() }, vec![]),
            (
                "phase.mode=private phase.net=off",
                BootParams { mode: BootMode::Private, net: false, ..def.clone() },
                vec![],
            ),
            (
                "phase.mode=private phase.mode=local",
                BootParams { mode: BootMode::Local, ..def.clone() },
                vec![],
            ),
            (
                "phase.channel=beta phase.arch=amd64 phase.iface=eth1",
                BootParams {
                    channel: Some("beta".into()),
                    arch: Arch::X86_64,
                    iface: Some("eth1".into()),
                    ..def.clone()
                },
                vec![],
            ),
            (
                "phase.provider=http://192.0.2.1:8080 phase.timeout=5 phase.onfail=halt phase.kexec=never",
                BootParams {
                    provider: Some("http://192.0.2.1:8080".into()),
                    timeout: Duration::from_secs(5),
                    onfail: Some(OnFail::Halt),
                    kexec: KexecMode::Never,
                    ..def.clone()
                },
                vec![],
            ),
            (
                "phase.bootstrap=/ip4/192.0.2.1/tcp/4001,/ip4/192.0.2.1/tcp/4002 phase.debug phase.reverify=0",
                BootParams {
                    bootstrap: vec!["/ip4/192.0.2.1/tcp/4001".into(), "/ip4/192.0.2.1/tcp/4002".into()],
                    debug: true,
                    ..def.clone()
                },
                // The switch that skipped the target's hashes is gone (DESIGN §3): unknown.
                vec!["reverify"],
            ),
            (
                "phase.init=\"/sbin/init --single\" quiet",
                BootParams { init: Some("/sbin/init --single".into()), ..def.clone() },
                vec![],
            ),
            ("phase.minrate=1048576", BootParams { min_rate: 1 << 20, ..def.clone() }, vec![]),
            ("phase.minrate=0", BootParams { min_rate: 0, ..def.clone() }, vec![]),
            ("phase.peers=off", BootParams { peers: false, ..def.clone() }, vec![]),
            ("phase.colour=blue phase.verify=0", def.clone(), vec!["colour", "verify"]),
            ("-- phase.mode=local", def.clone(), vec![]),
            ("phase.mode=local -- phase.mode=private", BootParams { mode: BootMode::Local, ..def.clone() }, vec![]),
        ];
        for (line, want, unknown) in cases {
            let got = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(got.params, want, "{line}");
            assert_eq!(got.unknown, unknown, "{line}");
        }
    }

    #[test]
    fn invalid_values_are_errors_naming_the_key() {
        for line in [
            "phase.mode=privat",
            "phase.mode",
            "phase.arch=sparc",
            "phase.timeout=abc",
            "phase.timeout=0",
            "phase.onfail=explode",
            "phase.kexec=maybe",
            "phase.debug=2",
            "phase.provider=",
            "phase.minrate=fast",
            "phase.minrate=-1",
            "phase.minrate=64k",
            "phase.minrate",
        ] {
            let e = parse(line).expect_err(line);
            let key = line
                .trim_start_matches("phase.")
                .split('=')
                .next()
                .unwrap_or_default();
            assert!(
                e.to_string().contains(&format!("phase.{key}")),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn verification_cannot_be_switched_off() {
        // phase.verify is not a key: it is reported as unknown and changes nothing.
        let p = parse("phase.verify=0 phase.insecure=1").unwrap();
        assert_eq!(p.params, BootParams::default());
        assert_eq!(p.unknown, ["verify", "insecure"]);
    }

    #[test]
    fn min_rate_defaults_to_64_kib_per_second() {
        assert_eq!(BootParams::default().min_rate, 64 * 1024);
        assert_eq!(
            parse("phase.minrate=131072").unwrap().params.min_rate,
            128 * 1024
        );
    }

    #[test]
    fn onfail_default_depends_on_mode() {
        assert_eq!(
            parse("phase.mode=local").unwrap().params.onfail(),
            OnFail::Rescue
        );
        assert_eq!(
            parse("phase.mode=internet").unwrap().params.onfail(),
            OnFail::Retry
        );
        assert_eq!(
            parse("phase.mode=private").unwrap().params.onfail(),
            OnFail::Retry
        );
        assert_eq!(
            parse("phase.mode=local phase.onfail=reboot")
                .unwrap()
                .params
                .onfail(),
            OnFail::Reboot
        );
    }

    #[test]
    fn quotes_group_blanks_and_raw_tokens_keep_them() {
        assert_eq!(tokens("a \"b c\" d=\"e f\""), ["a", "b c", "d=e f"]);
        assert_eq!(raw_tokens("a d=\"e f\"  g"), ["a", "d=\"e f\"", "g"]);
        assert_eq!(word_key("phase.init=\"/x y\""), "phase.init");
    }

    #[test]
    fn channel_falls_back_to_release_then_stable() {
        let p = BootParams::default();
        assert_eq!(p.channel_or(None), "stable");
        assert_eq!(p.channel_or(Some("edge")), "edge");
        let p = BootParams {
            channel: Some("beta".into()),
            ..p
        };
        assert_eq!(p.channel_or(Some("edge")), "beta");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_cmdlines_never_panic(s in "(phase\\.[a-z]{0,8}(=[ -~]{0,12})?| |\"|[ -~]{0,6}){0,12}") {
            let _ = parse(&s);
            let _ = raw_tokens(&s);
        }

        #[test]
        fn arbitrary_unicode_never_panics(s in "\\PC{0,64}") {
            let _ = parse(&s);
        }
    }
}
