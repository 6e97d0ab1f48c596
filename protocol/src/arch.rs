//! CPU architectures and their aliases (seed 003 "Architecture Aliasing Pattern").
//!
//! Rust names the architectures `x86_64` and `aarch64`; Debian and most distributions say `amd64`
//! and `arm64`. Both spellings mean the same [`Arch`]; [`Arch::as_str`] gives the canonical
//! (Rust) name and [`Arch::aliases`] every spelling, canonical first.

use std::fmt;
use std::str::FromStr;

/// A CPU architecture that Phase Boot knows how to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// `x86_64`, alias `amd64`.
    X86_64,
    /// `aarch64`, alias `arm64`.
    Aarch64,
    /// `riscv64`, no alias.
    Riscv64,
}

/// An architecture name that is not one of [`Arch`]'s spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture {0:?} (known: x86_64/amd64, aarch64/arm64, riscv64)")]
pub struct UnknownArch(pub String);

impl Arch {
    /// The canonical name: `x86_64`, `aarch64` or `riscv64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// Every spelling of this architecture, canonical first (`["x86_64", "amd64"]`).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["x86_64", "amd64"],
            Arch::Aarch64 => &["aarch64", "arm64"],
            Arch::Riscv64 => &["riscv64"],
        }
    }

    /// The architecture this binary was built for; `None` on one Phase Boot cannot name.
    pub fn host() -> Option<Arch> {
        std::env::consts::ARCH.parse().ok()
    }

    /// True when `name` is any spelling of this architecture.
    pub fn matches(self, name: &str) -> bool {
        self.aliases().contains(&name)
    }
}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// Parses any alias: `amd64` and `x86_64` both give [`Arch::X86_64`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Arch::X86_64, Arch::Aarch64, Arch::Riscv64]
            .into_iter()
            .find(|a| a.matches(s))
            .ok_or_else(|| UnknownArch(s.to_owned()))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_parse_to_the_same_arch() {
        assert_eq!("amd64".parse::<Arch>(), Ok(Arch::X86_64));
        assert_eq!("x86_64".parse::<Arch>(), Ok(Arch::X86_64));
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!("aarch64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!(Arch::Aarch64.to_string(), "aarch64");
    }

    #[test]
    fn unknown_arch_is_an_error_that_names_it() {
        let err = "mips".parse::<Arch>().unwrap_err();
        assert!(err.to_string().contains("\"mips\""));
        assert!(!Arch::X86_64.matches("arm64"));
    }
}
